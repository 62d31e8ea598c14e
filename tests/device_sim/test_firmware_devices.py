"""Simulated beds that run the C firmware (`WARDSTREAM_SIM_ENCODER=firmware`, `device_sim.firmware`)
send the very frames the Python simulator's devices with the integer encoder send: the same
windows, keys, sequence numbers, bounds and slack corrections changed mid-stream, audit bursts,
ECG-only beds."""

from __future__ import annotations

import pytest

from wardmodels import DD_MODEL


def _devices(encoder: str, tmp_path, policy: str, level: int, source: str, beds: list[int], keyed: bool):
    from device_sim.ward import Device, encoder_factory, make_sources
    from wardstream.settings import Settings

    s = Settings(device_secret="firmware-test-secret" if keyed else "")
    make = encoder_factory(DD_MODEL, level, encoder, policy, 0.0, 2, "default", tmp_path / "fw")
    sources = make_sources(source, beds, s.data_dir, seed=5)
    return [Device(b, sources[b], 1_800_000_000_123_456 + 7_000 * b, make(), s.device_key(b), audit_every=9,
                   lossless=True, coded=True) for b in beds]


@pytest.mark.parametrize("policy, level, source, keyed", [
    ("dynamic", 1, "synthetic", True),   # levels picked per window, bounds changed on the way
    ("fixed", 1, "synthetic", False),    # the main job's devices: level 1 and the predicted error
    ("dynamic", 1, "mitdb", False),      # ECG-only beds (MIT-BIH replay)
])
def test_firmware_devices_send_the_python_devices_frames(tmp_path, policy, level, source, keyed):
    from device_sim.ward import next_frames
    from wardstream.settings import default_data_dir

    if source == "mitdb" and not (default_data_dir() / "mitdb" / "100.hea").exists():
        pytest.skip("MIT-BIH not found")
    beds = [1, 2, 3, 17]
    py = _devices("int8", tmp_path, policy, level, source, beds, keyed)
    fw = _devices("firmware", tmp_path, policy, level, source, beds, keyed)
    levels, refs = set(), 0
    for k in range(24):
        if k == 8:  # the control topic: a bed bound and a slack correction, then the ward's bound back
            for devs in (py, fw):
                devs[1].encoder.bound, devs[2].encoder.slack_offset = 0.1, 0.25
        if k == 16:
            for devs in (py, fw):
                devs[1].encoder.bound = devs[0].encoder.bound
        a, b = next_frames(py), next_frames(fw)
        assert [r for r, _ in a] == [r for r, _ in b], f"window {k}"
        assert [f.seq for _, f in a] == [f.seq for _, f in b]
        levels |= {f.channels[0].level for _, f in b}
        refs += sum(f.reference is not None for _, f in b)
    assert all(d.encoder.name.endswith("(firmware)") for d in fw)
    if policy == "dynamic":
        assert len(levels) >= 2, levels
    else:
        assert levels == {level}
    assert refs >= 2 * len(beds)  # audit bursts (every 9 windows here) carry the reference ECG
    assert all(d.seq == 24 for d in fw)
