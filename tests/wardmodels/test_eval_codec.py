"""`eval codec` on a directory that holds only part of the layout (as a held-out set may)."""

import os

import pytest

from wardmodels import DD_MODEL
from wardstream.datasets import DataMissing
from wardstream.eval_codec import evaluate


def test_eval_runs_on_a_subset_directory_and_reports_every_key(data_dir, tmp_path):
    sub = tmp_path / "data" / "mitdb"
    sub.mkdir(parents=True)
    for ext in ("hea", "dat", "atr"):
        os.symlink(data_dir / "mitdb" / f"100.{ext}", sub / f"100.{ext}")
    # the devices' codec (what `eval codec` runs without --model-id): the deployed Dynamic-Deep model, whose
    # Dynamic-Deep chain levels 3-5 have their own codebooks and encodes
    d = evaluate(tmp_path / "data", split="all", jobs=1, model_id=DD_MODEL)
    assert d["ecg_records"] == ["100"] and d["eeg_recordings"] == []
    for key in ("ecg_prd", "ecg_snr_db", "ecg_coherence", "qrs_sensitivity", "qrs_ppv",
                "qrs_sensitivity_original", "qrs_ppv_original", "codebook_usage", "bits_per_window",
                "compression_ratio", "encoder_int8_bytes", "int8_index_agreement"):
        assert d[key] is not None, key
    assert set(d["ecg_prd"]) >= {"mean", "median", "p90"}
    assert 0 < d["ecg_prd"]["mean"] < 15  # record 100 is an easy one for a trained codec
    lv1, lv2 = d["levels"][1], d["levels"][2]
    assert lv2["bits_per_window"]["fixed_per_modality"] < lv1["bits_per_window"]["fixed_per_modality"]
    assert lv1["bits_per_window"]["entropy_coder"]["ecg"]["round_trip_checked_windows"] > 0
    # as devices send it: entropy-coded on the wire (flag bit 6) in fewer bits than bit-packed
    for lv in (lv1, lv2):
        b = lv["bits_per_window"]
        assert b["wire_coded_per_modality"]["ecg"] < b["fixed_per_modality"]
        assert lv["compression_ratio"]["wire_coded"]["ecg"] > lv["compression_ratio"]["fixed"]
    chain = [d["levels"][lv] for lv in (3, 4, 5)]
    assert [c["indices"] for c in chain] == [16, 8, 4]
    fixed = [c["bits_per_window"]["fixed_per_modality"] for c in [lv2] + chain]
    assert fixed == sorted(fixed, reverse=True) and len(set(fixed)) == 4
    prd = [c["ecg_prd"]["mean"] for c in [lv2] + chain]
    assert prd == sorted(prd)  # fewer bits, more error
    for c in chain:
        assert c["ecg_prd"]["mean"] < 90  # a real decode: sending nothing is PRD 100
        assert c["qrs_sensitivity"] > 0.9
        assert c["int8_index_agreement"]["ecg"] >= 0.95
        assert 0 < c["codebook_usage"]["ecg"]["fraction"] <= 1


def test_eval_says_what_is_missing(tmp_path):
    with pytest.raises(DataMissing):
        evaluate(tmp_path, split="test", jobs=1)


def test_eval_scores_bonn_eeg_per_set_the_unseen_sets_as_the_test_split(data_dir, tmp_path):
    """Bonn's sets N, F (interictal) and S (seizures) were never trained on: they are `eval codec`'s
    held-out EEG beside eegmat's subjects (key ``eeg_bonn``, per set); Z and O (training data) only
    under ``train`` / ``all``. Here on a directory holding only part of a Bonn archive."""
    import numpy as np

    src = data_dir / "bonn" / "bonn_eeg.npz"
    if not src.exists():
        pytest.skip(f"no Bonn archive under {data_dir}")
    with np.load(src) as z:
        pick = np.concatenate([np.flatnonzero(z["set"] == s)[:2] for s in ("Z", "S")])
        (tmp_path / "bonn").mkdir()
        np.savez(tmp_path / "bonn" / "bonn_eeg.npz", eeg=z["eeg"][pick], set=z["set"][pick],
                 segment=z["segment"][pick], fs=z["fs"])
    d = evaluate(tmp_path, split="test", jobs=1, model_id=DD_MODEL)
    assert list(d["eeg_bonn"]) == ["S"] and d["eeg_recordings"] == [] and d["ecg_records"] == []
    s = d["eeg_bonn"]["S"]
    # 2 segments of 23.6 s at 128 Hz: 11 whole windows each, none flat (seizures are large)
    assert s["segments"] == 2 and s["windows_scored"] == 22 and s["windows_flat"] == 0
    assert 0 < s["eeg_prd"]["mean"] < 40 and s["eeg_prd"]["n"] == 22  # a real decode: sending nothing is 100
    assert 0.5 < s["eeg_coherence"] <= 1 and set(s["eeg_bandpower_error"]) == {"delta", "theta", "alpha", "beta"}
    prd = [d["levels"][lv]["eeg_bonn"]["S"]["eeg_prd"]["mean"] for lv in (1, 2, 3)]
    assert prd == sorted(prd)  # fewer bits, more error
    assert list(evaluate(tmp_path, split="all", jobs=1, model_id=DD_MODEL)["eeg_bonn"]) == ["Z", "S"]
