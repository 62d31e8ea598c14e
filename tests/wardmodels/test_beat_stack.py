"""The beat CNN's second stage (`wardmodels.beat_stack`): what it may change, that it learns
prematurity, and what the deployed one does on a held-out patient."""

import numpy as np
import pytest

from wardmodels.beat_stack import BeatStack, StackedBeats, combine, fit_stack, stack_features
from wardmodels.classifier import BEAT_CLASSES, FS, aami_labels


def test_combine_leaves_fusion_and_confident_ventricular_beats_alone():
    p = np.array([[0.6, 0.1, 0.3, 0.0], [0.02, 0.01, 0.95, 0.02], [0.3, 0.3, 0.2, 0.2], [0.3, 0.1, 0.6, 0.0]],
                 np.float32)
    logits = np.array([[0.0, 2.0, 9.0, 9.0], [5.0, -5.0, -9.0, 0.0], [0.0, 0.0, -9.0, 3.0], [4.0, 0.0, 0.0, 0.0]])
    q = combine(p, logits, f_keep=0.0)  # every F call kept: the stage alone
    np.testing.assert_allclose(q[:, 3], p[:, 3])  # F is the CNN's
    assert q[1, 2] == pytest.approx(0.95)  # V at >= 0.9 (what the run alarms count) is the CNN's
    np.testing.assert_allclose(q.sum(1), 1, atol=1e-6)
    assert q[0, 2] == pytest.approx(0.3)  # the stage never raises V (its logit 9 here)
    assert q[0].argmax() == 1  # ... but re-divides N + S by its odds
    assert q[2, 0] == pytest.approx(q[2, 1]) and q[2, 2] < 0.01  # a doubtful V it disagrees with goes
    assert q[3].argmax() == 0 and q[3, 2] < 0.1  # the CNN's 0.6 V, the stage says N: N
    assert (q[:, 2] <= p[:, 2] + 1e-7).all()


def test_combine_gives_a_fusion_call_the_cnn_is_unsure_of_to_normal():
    p = np.array([[0.1, 0.05, 0.05, 0.8], [0.02, 0.01, 0.02, 0.95], [0.3, 0.3, 0.2, 0.2]], np.float32)
    logits = np.zeros((3, 4))
    q = combine(p, logits)  # F_KEEP = 0.9
    assert q[0, 3] == 0 and q[0].argmax() == 0 and q[0, 0] > 0.8  # its 0.8 of F went to N
    assert q[1, 3] == pytest.approx(0.95) and q[1].argmax() == 3  # a sure one stays F
    assert q[2, 3] == 0 and q[2, 0] == pytest.approx(combine(p, logits, f_keep=0.0)[2, 0] + 0.2)
    np.testing.assert_allclose(q.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(q[:, 1:3], combine(p, logits, f_keep=0.0)[:, 1:3])  # S and V untouched


def _rows(rng, n, premature):
    """A CNN that cannot tell N from S (0.5 / 0.5) and RR context: S beats come 30 % early."""
    p = np.tile(np.array([0.49, 0.49, 0.01, 0.01], np.float32), (n, 1))
    pre = np.where(premature, 0.55, 0.8) * rng.uniform(0.95, 1.05, n)
    post = np.where(premature, 1.05, 0.8) * rng.uniform(0.95, 1.05, n)
    long = np.full(n, 0.8)
    f = np.stack([np.log(pre / long), np.log(post / long), np.zeros(n), np.log(pre / post), pre, rng.uniform(0, 0.05, n),
                  np.log(pre / 0.85)], 1)
    return p, f.astype(np.float32)


def test_fit_learns_prematurity_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    y = np.where(rng.random(4000) < 0.1, 1, 0)
    y[:40] = 2  # a few ventricular rows so every class the fit weighs exists
    p, ctx = _rows(rng, len(y), y == 1)
    groups = np.repeat(np.arange(8), len(y) // 8)
    stack, report = fit_stack(p, ctx, y, groups, folds=4)
    assert report["cv"]["sensitivity"]["S"] > 0.95 and report["cv"]["ppv"]["S"] > 0.95, report
    assert report["cnn"]["sensitivity"]["S"] in (0.0, 1.0)  # the CNN alone is a coin with one side
    path = stack.save(tmp_path)
    assert path.name.startswith("beatstack-") and len(path.stem.split("-")[1]) == 12
    again = BeatStack.load(path)
    np.testing.assert_allclose(again.proba(p[:50], ctx[:50]), stack.proba(p[:50], ctx[:50]), atol=1e-5)
    assert again.meta["fit"]["rows"] == len(y)
    assert stack.meta["context_columns"] == 7 and stack_features(p[:3], ctx[:3]).shape == (3, 43)
    assert stack.proba(p[:0], ctx[:0]).shape == (0, len(BEAT_CLASSES))


def test_a_stage_fitted_on_six_context_columns_reads_only_those():
    """A stage saved before the prematurity column (no ``context_columns`` in its record) is fed
    the first six columns of today's 7-column context: the same inputs, the same output."""
    rng = np.random.default_rng(1)
    y = np.where(rng.random(2000) < 0.1, 1, 0)
    y[:20] = 2
    p, ctx = _rows(rng, len(y), y == 1)
    groups = np.repeat(np.arange(8), len(y) // 8)
    legacy, _ = fit_stack(p, ctx[:, :6], y, groups, folds=4)
    assert stack_features(p[:3], ctx[:3, :6], 6).shape == (3, 35)
    del legacy.meta["context_columns"]
    assert legacy.context_columns == 6
    np.testing.assert_array_equal(legacy.proba(p, ctx), legacy.proba(p, ctx[:, :6]))
    with pytest.raises(ValueError, match="7 context columns"):
        stack_features(p, ctx[:, :6])


def test_deployed_stage_on_a_held_out_patient(data_dir, monkeypatch):
    """Record 232 (DS2, never trained on): 1,382 atrial premature beats in sinus bradycardia -- the
    record where the CNN alone finds fewest of them."""
    from wardmodels.clf_data import beat_table
    from wardmodels.clf_runtime import classifier_manifest, load_deployed_classifier
    from wardmodels.frontend import filter_record
    from wardmodels.runtime import WEIGHTS_DIR, verify_hash
    from wardstream import datasets as ds

    verify_hash(WEIGHTS_DIR / classifier_manifest()["beat"]["stack"])
    stacked = load_deployed_classifier("beat")
    assert isinstance(stacked, StackedBeats)
    monkeypatch.setenv("WARDSTREAM_BEAT_STACK", "0")
    cnn = load_deployed_classifier("beat")
    assert not isinstance(cnn, StackedBeats)
    rec = ds.load_mitdb(data_dir, "232")
    x = filter_record(rec.ecg_mv)
    b = np.round(rec.beat_times_s * FS).astype(np.int64)
    y = aami_labels(rec.beat_symbols)
    w, ctx, _ = beat_table(x, b, None)
    ok = (y >= 0) & (b >= 48) & (b < len(x) - 64)
    p0, p1 = cnn.proba(w[ok], ctx[ok]), stacked.proba(w[ok], ctx[ok])
    sure_f = p0[:, 3] >= 0.9  # a sure fusion call is the CNN's, an unsure one is gone
    np.testing.assert_allclose(p1[sure_f, 3], p0[sure_f, 3], atol=1e-6)
    assert (p1[~sure_f, 3] == 0).all()
    sure = p0[:, 2] >= 0.9
    np.testing.assert_allclose(p1[sure, 2], p0[sure, 2], atol=1e-6)
    assert (p1[:, 2] <= p0[:, 2] + 1e-6).all()
    s = y[ok] == 1
    assert s.sum() > 1300
    se0, se1 = (p0[s].argmax(1) == 1).mean(), (p1[s].argmax(1) == 1).mean()
    assert se1 > 0.35 and se1 > se0 + 0.15, (se0, se1)
    n = y[ok] == 0
    assert (p1[n].argmax(1) == 1).mean() < 0.02  # its few normal beats stay normal


def test_stage_keeps_the_ventricular_beats_the_run_alarms_count():
    """`combine` leaves V alone from the probability at which the alarms count a beat as V."""
    from processors.alarms import Thresholds
    from wardmodels.beat_stack import V_KEEP

    assert V_KEEP == Thresholds().v_min_p
