"""The rhythm model's robustness evaluation (`wardstream.eval_robust`)."""

from __future__ import annotations

import numpy as np
import pytest

from wardmodels.classifier import FS
from wardmodels.codec_data import FLAT_ECG_MV
from wardmodels.frontend import filter_record
from wardstream import eval_robust as er


def _ecg_like(n: int, seed: int = 0) -> np.ndarray:
    """Spiky beats at ~75 bpm on a wandering baseline (mV): enough to have a filtered power."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    for b in np.arange(40, n - 10, int(0.8 * FS)):
        x[b:b + 6] += np.array([0.1, 0.6, 1.2, 0.5, -0.2, -0.1])
    return x + 0.3 * np.sin(2 * np.pi * 0.2 * np.arange(n) / FS) + 0.01 * rng.standard_normal(n)


@pytest.mark.parametrize("kind", ["white", "muscle", "motion"])
@pytest.mark.parametrize("snr", [12.0, 0.0, -6.0])
def test_noise_is_scaled_to_its_snr_after_the_front_end(kind, snr):
    raw = [_ecg_like(30 * FS, 1), _ecg_like(9 * FS, 2)]
    clean = er.perturbed(raw, "clean", None, seed=3)
    noisy = er.perturbed(raw, kind, snr, seed=3)
    for c, y in zip(clean, noisy):
        n = y.astype(np.float64) - c
        got = 10 * np.log10(np.var(c) / np.var(n))
        assert got == pytest.approx(snr, abs=0.01)
    again = er.perturbed(raw, kind, snr, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(noisy, again))  # deterministic per seed
    assert not np.array_equal(noisy[0], er.perturbed(raw, kind, snr, seed=4)[0])


def test_muscle_noise_lies_above_20_hz_and_motion_below_the_beats():
    rng = np.random.default_rng(0)
    f = np.fft.rfftfreq(60 * FS, 1 / FS)
    m = np.abs(np.fft.rfft(er.noise("muscle", 60 * FS, rng))) ** 2
    assert m[f >= 20].sum() / m.sum() > 0.9
    w = np.abs(np.fft.rfft(er.noise("motion", 60 * FS, rng))) ** 2
    assert w[f < 5].sum() / w.sum() > 0.8
    with pytest.raises(ValueError, match="unknown noise"):
        er.noise("hum", 10, rng)


def test_lead_off_leaves_the_amplifier_noise_only_from_where_it_starts():
    raw = [_ecg_like(40 * FS)]
    full, = er.perturbed(raw, "lead_off", None, seed=0)
    half, = er.perturbed(raw, "lead_off_half", None, seed=0)
    clean, = er.perturbed(raw, "clean", None, seed=0)
    assert full[2 * FS:].std() < FLAT_ECG_MV
    mid = len(half) // 2
    assert np.array_equal(half[:mid], clean[:mid])  # causal: the first half is the record's
    assert half[mid + 2 * FS:].std() < FLAT_ECG_MV < clean[mid + 2 * FS:].std()


def test_one_quality_value_per_decision():
    from wardmodels.clf_data import crops_for_record

    sig = [filter_record(_ecg_like(n)) for n in (5 * FS, 10 * FS, 31 * FS, 60 * FS + 7)]
    q = er.crop_sqi(sig)
    assert [len(v) for v in q] == [len(crops_for_record(s)) for s in sig]
    assert all(((v >= 0) & (v <= 1)).all() for v in q)


def test_the_deployed_model_calls_lead_off_noisy_and_its_clean_score_is_the_evals(data_dir):
    """Held-out CinC records and eegmat's real recordings: the lead-off traces (synthetic and the
    three real ones) are called noisy and never AF; no sinus decision of eegmat is AF; "clean" is
    `eval_cinc`'s record-level score on the same records."""
    from wardmodels.clf_runtime import load_deployed_classifier
    from wardstream.eval_classifier import eval_cinc

    clf = load_deployed_classifier("rhythm")
    r = er.robustness(clf, data_dir, "test", max_records=40)
    e = eval_cinc(clf, data_dir, "test", level=1, codec_model=5, levels=[], max_records=40)
    assert r["records"] == 40 and r["conditions"]["clean"]["f1_cinc"] == round(e["f1_cinc"], 4)
    assert set(r["conditions"]) == {"clean"} | {f"{k}_{s:g}dB" for k, ss in er.SNRS_DB.items() for s in ss}
    for part in (r["lead_off"], r["lead_off_half"], r["eegmat"]["lead_off"]):
        assert part["decisions"] > 0 and part["share_af"] == 0.0 and part["share_noisy"] >= 0.95, part
    assert set(r["eegmat"]["lead_off"]["recordings"]) == set(er.EEGMAT_LEAD_OFF)
    assert r["eegmat"]["sinus"]["recordings"] > 50 and r["eegmat"]["sinus"]["share_af"] == 0.0
    # heavy white noise: most windows end up called noisy
    assert r["conditions"]["white_0dB"]["noisy_share"] > 0.5
