"""A raw window that follows codec-level windows: the worker band-passes it as the device did.

The codec levels carry the device's band-passed ECG; a raw window carries the unfiltered input, and
the worker runs the same causal filter over it. After codec windows the worker has not seen the
input and cannot continue the filter, so a level-picking device sends the filter's state with such
a window (wire v2, `stream.wire.Channel.zi`). Real devices, wire format and worker batch; no broker."""

from __future__ import annotations

import numpy as np
import pytest

from device_sim.ward import Device, SyntheticBed, next_frames
from processors.bed import BedState
from processors.stages import run_batch
from stream.topics import bed_key
from stream.wire import Modality, decode_frame

torch = pytest.importorskip("torch")

# a level schedule with every kind of transition: codec -> raw (state sent), raw -> raw, raw -> codec
LEVELS = [2, 3, 0, 0, 4, 1, 0, 5, 0]


def _run(version: int):
    """-> per window (level, whether the ECG section has a state, relative RMS error of the worker's
    band-passed window against the device's own)."""
    from processors.classify import Classifiers
    from wardmodels import DD_MODEL
    from wardmodels.wire_codec import DynamicEncoder, decode_frames, register_deployed

    register_deployed()
    enc = DynamicEncoder(DD_MODEL, 0.0, 2, "fp32", fixed_level=LEVELS[0])
    dev = Device(6, SyntheticBed(6, seed=6), 1_800_000_000_000_000, enc, None, lossless=True, coded=True,
                 wire_version=version)
    clf, states, out = Classifiers(), {}, []
    for L in LEVELS:
        enc.fixed_level = L
        raw, _ = next_frames([dev])[0]
        f = decode_frame(raw)
        res = run_batch([(bed_key(6), f, decode_frames([f])[0], len(raw))],
                        lambda key: states.get(key) or BedState(), clf)
        states.update(res.states)
        seen = states[bed_key(6)].ecg_buf[-256:].astype(np.float64)  # what every later stage reads
        truth = enc.last_filtered.astype(np.float64)
        rel = float(np.sqrt(np.mean((seen - truth) ** 2)) / np.sqrt(np.mean(truth ** 2)))
        out.append((f.channel(Modality.ECG).level, f.channel(Modality.ECG).zi is not None, rel))
    return out


def test_a_raw_window_after_codec_windows_is_the_devices_band_passed_signal():
    got = _run(2)
    assert [lv for lv, _, _ in got] == LEVELS
    # the state travels exactly on the raw windows that follow a codec-level window
    assert [z for _, z, _ in got] == [k > 0 and LEVELS[k] == 0 and LEVELS[k - 1] > 0 for k in range(len(LEVELS))]
    # raw windows: the device's signal up to the raw level's 1-µV steps and the buffer's float16
    raw_err = [e for lv, _, e in got if lv == 0]
    assert max(raw_err) < 2e-3, raw_err


def test_without_the_state_such_a_window_is_off_by_as_much_as_a_codec_level():
    """The control: wire v1 has no room for the state, and a v1 device's raw window after codec
    windows is filtered from rest, as every device's was before the state travelled."""
    got = _run(1)
    assert not any(z for _, z, _ in got)
    after_codec = [e for k, (lv, _, e) in enumerate(got) if lv == 0 and LEVELS[k - 1] > 0]
    raw_after_raw = [e for k, (lv, _, e) in enumerate(got) if lv == 0 and LEVELS[k - 1] == 0]
    assert min(after_codec) > 0.02 and max(raw_after_raw) < 0.01, (after_codec, raw_after_raw)
