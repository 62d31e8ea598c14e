import json

import numpy as np
import pytest

from device_sim.sources import SyntheticBed
from processors.qrs import QrsState, ecg_peaks_stream
from wardstream.eval_qrs import detect_stream, evaluate, match_beats
from wardstream.settings import default_data_dir

FS = 128


def _feed(x, window=256, state=None):
    beats = []
    for i in range(0, x.size - x.size % window, window):
        state, b = ecg_peaks_stream(x[i:i + window], FS, state)
        beats.extend(b.samples.tolist())
    return state, np.asarray(beats)


def test_synthetic_beds_match_ground_truth():
    tp = fn = fp = 0
    for bed in range(6):
        src = SyntheticBed(bed, seed=3)
        x = np.concatenate([src.next_window()[0] for _ in range(60)])  # 2 minutes
        _, det = _feed(x)
        ref = np.asarray([t for t in src.true_beats_s if t < x.size / FS - 0.4])
        a, b, c = match_beats(ref, det / FS, 0.15)
        tp, fn, fp = tp + a, fn + b, fp + c
    assert tp > 600  # 6 beds x 2 min at 50-110 bpm
    assert fn / (tp + fn) < 0.01
    assert fp / (tp + fp) < 0.01


def test_beat_on_window_edge_found_once():
    # a clean 75-bpm train whose beats fall on every window boundary offset in turn
    src = SyntheticBed(1, seed=0, hr_bpm=75.0, amplitude_mv=1.0)
    x = np.concatenate([src.next_window()[0] for _ in range(30)])
    _, whole = _feed(x, window=x.size - x.size % 256)
    for window in (256, 200, 97):
        _, det = _feed(x[: x.size - x.size % (256 * 97)], window=window)
        assert np.all(np.diff(det) > 0.2 * FS), "a beat was reported twice"
    _, det = _feed(x)
    ref = np.asarray([t for t in src.true_beats_s if t < x.size / FS - 0.4])
    tp, fn, fp = match_beats(ref, det / FS, 0.15)
    assert fp <= 2 and fn <= 2
    assert whole.size >= det.size - 3


@pytest.mark.parametrize("signal", ["zeros", "nan", "clipped", "huge", "short"])
def test_never_crashes(signal):
    rng = np.random.default_rng(0)
    x = {"zeros": np.zeros(2560), "nan": np.full(2560, np.nan),
         "clipped": np.clip(rng.standard_normal(2560) * 50, -1, 1),
         "huge": rng.standard_normal(2560) * 1e6, "short": rng.standard_normal(40)}[signal]
    state, det = _feed(x.astype(np.float32), window=min(256, x.size))
    assert np.all(np.diff(det) >= int(0.2 * FS))  # refractory period holds even on noise
    if signal in ("zeros", "nan", "short"):
        assert det.size == 0
    json.dumps(state.to_dict())


def test_state_round_trips_through_json():
    src = SyntheticBed(4, seed=0)
    x = np.concatenate([src.next_window()[0] for _ in range(20)])
    state, det_a = _feed(x[:2560])
    restored = QrsState.from_dict(json.loads(json.dumps(state.to_dict())))
    _, more_a = _feed(x[2560:], state=state)
    _, more_b = _feed(x[2560:], state=restored)
    assert np.array_equal(more_a, more_b)


def _data():
    d = default_data_dir()
    if not (d / "mitdb" / "100.hea").exists():
        pytest.skip(f"MIT-BIH not found under {d}")
    return d


def test_golden_real_records():
    """Change-aversion: detector output on three real records, as measured when written."""
    r = evaluate(_data(), records=["100", "105", "208"], jobs=1)
    by = {x["record"]: x for x in r["per_record"]}
    assert by["100"]["fn"] + by["100"]["fp"] <= 3
    assert by["105"]["sensitivity"] > 0.99 and by["105"]["ppv"] > 0.98
    assert by["208"]["sensitivity"] > 0.985 and by["208"]["ppv"] > 0.995
    # fiducial point against the annotated R peaks on a PVC-rich record: the largest deflection
    # (before 2026-12-02) was 95 ms off at the 95th percentile, jumping to the S lobe
    assert by["208"]["timing_abs_ms_p95"] < 70
    assert by["100"]["timing_abs_ms_p95"] < 10


@pytest.mark.parametrize("record", ["208", "119"])
def test_fiducial_point_stable_under_small_noise(record):
    """A little noise must not move beats from one lobe of the QRS to another: the task error of
    the Dynamic-Deep levels and the RR intervals of reconstructed ECG depend on it. With the
    largest deflection as the fiducial 1.4 % (208) and 1.8 % (119) of the beats moved 3 samples
    or more under 0.02 mV of noise."""
    from wardmodels.frontend import filter_record
    from wardstream.datasets import load_mitdb
    from wardstream.eval_qrs import match_indices

    x = filter_record(load_mitdb(_data(), record).ecg_mv)[: FS * 300]
    y = x + np.random.default_rng(0).normal(0, 0.02, x.size).astype(np.float32)
    a, b = detect_stream(x), detect_stream(y)
    m = match_indices(a, b, 0.15)
    ok = m >= 0
    assert ok.mean() > 0.99
    moved = np.abs(b[m[ok]] - a[ok]) * FS >= 3
    assert moved.mean() < 0.005


def test_detect_stream_matches_window_loop():
    x = np.concatenate([SyntheticBed(9, seed=0).next_window()[0] for _ in range(10)])
    _, det = _feed(x)
    assert np.allclose(detect_stream(x), det / FS)
