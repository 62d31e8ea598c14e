"""The deployed (LAQ-packed) classifiers: what is stored, what it scores, on held-out data only."""

import os

import numpy as np
import pytest

from wardmodels.classifier import BEAT_CLASSES
from wardmodels.clf_runtime import classifier_manifest, load_deployed_classifier
from wardmodels.runtime import WEIGHTS_DIR, verify_hash
from wardstream.datasets import DataMissing


@pytest.mark.parametrize("kind", ["rhythm", "beat"])
def test_packed_model_is_what_the_manifest_says(kind):
    e = classifier_manifest()[kind]
    path = verify_hash(WEIGHTS_DIR / e["packed"])
    assert path.stat().st_size == e["model_bytes"]
    assert e["compression_ratio"] == pytest.approx(e["fp32_bytes"] / e["model_bytes"])
    clf = load_deployed_classifier(kind)
    assert set(clf.meta["bits"].values()) == set(e["bits"].values())
    assert all(1 <= b <= 8 for b in e["bits"].values())
    assert e["reproduce"], "the manifest says how to rebuild it"


def test_committed_rhythm_candidates_load_at_their_bit_widths_and_say_how_to_rebuild_them():
    """Candidates (opt-in with WARDSTREAM_RHYTHM_WEIGHTS) are committed like the deployed model."""
    from wardmodels.clf_runtime import load_packed

    cands = classifier_manifest().get("rhythm_candidates", [])
    assert cands
    for e in cands:
        path = verify_hash(WEIGHTS_DIR / e["packed"])
        assert path.stat().st_size == e["model_bytes"] and e["reproduce"]
        assert (WEIGHTS_DIR / e["source"]).exists()
        clf = load_packed(path)
        assert all(1 <= b <= 8 for b in clf.meta["bits"].values())
        x = np.random.default_rng(0).standard_normal((2, clf.model.cfg.in_channels, clf.model.cfg.in_samples))
        p = clf.proba(x.astype(np.float32))
        assert p.shape == (2, len(clf.classes)) and np.allclose(p.sum(1), 1, atol=1e-3)


def test_rhythm_on_held_out_cinc_records(data_dir, tmp_path):
    """A held-out directory of the shared layout: 300 validation records, scored per record."""
    from wardstream.eval_classifier import eval_cinc

    d = eval_cinc(load_deployed_classifier("rhythm"), data_dir, "test", level=1, codec_model=2, levels=[1],
                  encoder="fp32", max_records=300)
    assert d["records"] == 300
    assert d["f1_cinc"] > 0.7, d["f1"]
    assert d["f1_cinc_reconstructed"] > d["f1_cinc"] - 0.05
    assert np.array(d["confusion"]).sum() == 300


def test_beats_of_a_ds2_record(data_dir, tmp_path):
    """Record 233 (DS2, never trained on): 831 ventricular beats among 2,230 normal ones."""
    from wardstream.eval_classifier import eval_mitdb

    sub = tmp_path / "data" / "mitdb"
    sub.mkdir(parents=True)
    for ext in ("hea", "dat", "atr"):
        os.symlink(data_dir / "mitdb" / f"233.{ext}", sub / f"233.{ext}")
    d = eval_mitdb(load_deployed_classifier("beat"), None, tmp_path / "data", "all", level=1, codec_model=2,
                   encoder="fp32")
    assert d["records"] == ["233"]
    assert d["support"]["V"] > 800
    assert d["sensitivity"]["V"] > 0.85 and d["ppv"]["V"] > 0.85, d
    assert d["detected_beats"]["sensitivity"]["V"] > 0.8
    assert set(d["sensitivity"]) == set(BEAT_CLASSES)
    (r,) = d["per_record"]  # one record: its counts are the confusion's
    c = np.array(d["confusion"])
    assert (r["V"], r["V_detected_as_V"], r["called_V"]) == (c[2].sum(), c[2, 2], c[:, 2].sum())
    assert (r["S"], r["S_detected_as_S"], r["called_S"]) == (c[1].sum(), c[1, 1], c[:, 1].sum())


def test_eval_says_what_is_missing(tmp_path):
    from wardstream.eval_classifier import evaluate

    with pytest.raises(DataMissing):
        evaluate(tmp_path, "cinc2017", "test", codec_model=2, level=1)
    (tmp_path / "mitdb").mkdir()
    with pytest.raises(DataMissing):
        evaluate(tmp_path, "mitdb", "test", codec_model=2, level=1)


def test_scores_of_a_class_absent_from_the_records_are_undefined_not_zero():
    """A directory holding a subset of the records may lack a class: a model that calls five
    normal records normal scores CinC F1 1.0 over the classes present (it read 0.333 before, the
    absent A and O counted as F1 0), and a class never true has no sensitivity."""
    from wardstream.eval_classifier import _rhythm_scores, class_scores

    d = _rhythm_scores(np.zeros(5, int), np.zeros(5, int))
    assert d["f1_cinc"] == 1.0 and d["f1_cinc_classes"] == ["N"]
    assert d["f1"] == {"N": 1.0, "A": None, "O": None, "~": None} and d["sensitivity"]["A"] is None
    # an absent class that is called: PPV 0 and F1 0 (false calls), sensitivity undefined
    d = _rhythm_scores(np.zeros(4, int), np.array([0, 0, 0, 1]))
    assert d["f1"]["A"] == 0.0 and d["ppv"]["A"] == 0.0 and d["sensitivity"]["A"] is None
    assert d["f1_cinc"] == pytest.approx((6 / 7 + 0) / 2) and d["f1_cinc_classes"] == ["N", "A"]
    full = _rhythm_scores(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 2]))
    assert "f1_cinc_classes" not in full and full["f1_cinc"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    sc = class_scores(np.array([[3, 1], [0, 0]]), ["N", "V"])
    assert sc["sensitivity"] == {"N": 0.75, "V": None} and sc["ppv"] == {"N": 1.0, "V": 0.0}


def test_compute_choice_is_validated_and_bf16_agrees_with_fp32(data_dir):
    """bf16 arithmetic (the default where the CPU has it) against fp32 on 200 real 10-s crops."""
    from wardmodels.clf_data import cinc_split, crops_for_record
    from wardmodels.clf_runtime import compute_dtype
    from wardmodels.frontend import filter_record

    assert compute_dtype("fp32") == "fp32" and compute_dtype("bf16") == "bf16"
    assert compute_dtype("auto") in ("fp32", "bf16")
    with pytest.raises(ValueError, match="WARDSTREAM_CLF_COMPUTE"):
        compute_dtype("fp16")
    cal = cinc_split(data_dir, "calib")
    x = np.concatenate([crops_for_record(filter_record(s))[:1] for s in cal.signals[:200]])
    p32 = load_deployed_classifier("rhythm", "fp32").proba(x)
    p16 = load_deployed_classifier("rhythm", "bf16").proba(x)
    assert load_deployed_classifier("rhythm", "bf16").meta["compute"] == "bf16"
    assert p16.dtype == np.float32 and np.allclose(p16.sum(1), 1, atol=1e-4)
    assert (p32.argmax(1) == p16.argmax(1)).mean() >= 0.98
    assert np.abs(p32 - p16).max() < 0.1
