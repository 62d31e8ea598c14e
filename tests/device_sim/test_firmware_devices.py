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
        if policy == "dynamic" and k in (12, 20):  # a fidelity hold (the worker's, on an open alarm) on and off
            for devs in (py, fw):
                devs[0].encoder.max_level = devs[3].encoder.max_level = 1 if k == 12 else None
        a, b = next_frames(py), next_frames(fw)
        assert [r for r, _ in a] == [r for r, _ in b], f"window {k}"
        if policy == "dynamic" and 12 <= k < 20:
            assert all(b[i][1].channels[0].level <= 1 for i in (0, 3)), f"window {k}"
        assert [f.seq for _, f in a] == [f.seq for _, f in b]
        levels |= {f.channels[0].level for _, f in b}
        refs += sum(f.reference is not None for _, f in b)
        assert all((f.predictor_id is not None) == (f.reference is not None) for _, f in b)
    assert all(d.encoder.name.endswith("(firmware)") for d in fw)
    if policy == "dynamic":
        assert len(levels) >= 2, levels
    else:
        assert levels == {level}
    assert refs >= 2 * len(beds)  # audit bursts (every 9 windows here) carry the reference ECG
    assert all(d.seq == 24 for d in fw)


def test_a_firmware_device_applies_only_its_own_signed_fresh_control_frames(tmp_path):
    """Downlink control frames (`stream.downlink`, checked in C by `ws_control.c`): the device applies
    a frame signed with its key, for its bed, with a counter above the last it applied; it refuses
    (and keeps its bound and slack) a tampered or unsigned frame, one signed with another key, one
    for another bed, one played back, and a malformed one — the codes of `ws_control.h`."""
    from device_sim.firmware import firmware_factory
    from device_sim.ward import Device, make_sources
    from stream.downlink import Control, ControlError, decode_control, encode_control

    make = firmware_factory(DD_MODEL, 1, "dynamic", 0.0, 2, "default", tmp_path / "fw")
    key = b"k" * 32
    dev = Device(7, make_sources("synthetic", [7], None, seed=1)[7], 1_800_000_000_000_000, make(), key,
                 lossless=True, coded=True)
    dev.next_frame()  # the C device exists from the first window on; the ward's bound reached it as frame 1
    enc, lib = dev.encoder, dev.encoder.model.lib
    h = enc.handle

    def send(buf: bytes) -> int:
        return lib.wsh_device_control(h, buf, len(buf))

    good = encode_control(Control(7, 5, 0.25, 0.125), key)
    assert decode_control(good, key) == Control(7, 5, 0.25, 0.125)
    assert send(good) == 0 and lib.wsh_device_bound(h) == 0.25 and lib.wsh_device_slack(h) == 0.125
    import struct
    import zlib

    forged = good[:10] + struct.pack(">d", 3.0) + good[18:26]  # a laxer bound, the CRC made to match
    forged += struct.pack(">I", zlib.crc32(forged)) + good[30:]
    refused = {
        "tampered": (bytearray(good[:29]) + b"\0" + good[30:], -1),  # the CRC catches it first
        "bound forged": (forged, -2),
        "tag forged": (good[:30] + bytes(16), -2),
        "unsigned": (encode_control(Control(7, 6, 3.0, 0.0)), -2),
        "other key": (encode_control(Control(7, 6, 3.0, 0.0), b"x" * 32), -2),
        "other bed": (encode_control(Control(8, 6, 3.0, 0.0), key), -3),
        "played back": (good, -4),
        "older": (encode_control(Control(7, 4, 3.0, 0.0), key), -4),
        "not a frame": (b"\xc1" + bytes(10), -1),
    }
    for name, (buf, code) in refused.items():
        assert send(bytes(buf)) == code, name
        assert lib.wsh_device_bound(h) == 0.25 and lib.wsh_device_slack(h) == 0.125, name
    for name in ("tampered", "bound forged", "tag forged", "other key"):
        with pytest.raises(ControlError):
            decode_control(bytes(refused[name][0]), key)
    with pytest.raises(ControlError):
        encode_control(Control(7, 9, float("nan"), 0.0), key)
    assert send(encode_control(Control(7, 6, 0.0, 0.0), key)) == 0  # 0: back to the deployed bound
    assert lib.wsh_device_bound(h) == pytest.approx(float(enc.model.codec.predictor.meta["deployed_bound"]))
    # a fidelity hold travels as one more byte (flag bit 1); a level beyond 7 is refused on both sides
    import hashlib
    import hmac

    held = encode_control(Control(7, 7, 0.25, 0.0, 1), key)
    assert len(held) == len(good) + 1 and decode_control(held, key) == Control(7, 7, 0.25, 0.0, 1)
    assert send(held) == 0
    body = held[:26] + b"\x08"
    body += struct.pack(">I", zlib.crc32(body))
    too_high = body + hmac.new(key, body, hashlib.sha256).digest()[:16]
    assert send(too_high) == -1
    with pytest.raises(ControlError):
        decode_control(too_high, key)
    for bad in (8, -1, True):
        with pytest.raises(ControlError):
            encode_control(Control(7, 9, 0.25, 0.0, bad), key)


def test_a_fixed_level_codec_device_obeys_fidelity_holds_in_python_and_in_c(tmp_path):
    """Devices of a codec without the Dynamic-Deep edge (model 4, `ward-hf`, at its level 2) obey a
    fidelity hold too — the worker's on an open alarm, or a clinician's request down to raw: level 2
    capped at 1, or every ECG window raw (with the front end's state after a codec window), the EEG
    at its level; the C device sends the Python device's frames byte for byte throughout."""
    from device_sim.ward import Device, encoder_factory, make_sources, next_frames

    beds = [4, 5]

    def devices(encoder: str):
        make = encoder_factory(4, 2, encoder, "fixed", 0.0, 2, "default", tmp_path / "fw")
        sources = make_sources("synthetic", beds, None, seed=3)
        return [Device(b, sources[b], 1_800_000_000_000_000 + 5_000 * b, make(), None, lossless=True, coded=True)
                for b in beds]

    py, fw = devices("int8"), devices("firmware")
    seen = []
    for k in range(14):
        if k in (4, 10):  # holds on (bed 4 to level 1, bed 5 to raw), then off
            for devs in (py, fw):
                devs[0].encoder.max_level, devs[1].encoder.max_level = (1, 0) if k == 4 else (None, None)
        a, b = next_frames(py), next_frames(fw)
        assert [r for r, _ in a] == [r for r, _ in b], f"window {k}"
        seen.append([(f.channels[0].level, f.channels[0].zi is not None, f.channels[1].level) for _, f in b])
    for k, ((l4, z4, e4), (l5, z5, e5)) in enumerate(seen):
        held = 4 <= k < 10
        assert (l4, l5) == ((1, 0) if held else (2, 2)), f"window {k}"
        assert e4 == e5 == 2 and not z4  # the EEG stays at its level; a codec section carries no state
        assert z5 == (k == 4), f"window {k}"  # the state: on the first raw window after codec ones
    assert all(d.encoder.name.endswith("(firmware)") for d in fw)
