"""The Dynamic-Deep predictor's pieces that need no trained weights: the QRS part of the task
error, the streaming history features, level choice and the conformal calibration."""

import numpy as np
import pytest

from wardmodels.dd_edge import HISTORY, with_history
from wardmodels.predictor import LEVELS, Predictor, TaskWeights, calibrate, chosen_error, violation_rate, window_qrs_error


def test_qrs_error_counts_missed_extra_and_timing_per_window():
    ref = np.array([0.5, 1.5, 2.5, 3.5])
    det = np.array([0.5, 1.55, 3.0, 3.5, 5.0])  # exact, 50 ms late, 2.5 missed + 3.0 extra, exact, extra
    e = window_qrs_error(ref, det, n_windows=3)
    # window 0: two beats, one 50 ms late -> timing mean 25 ms = 0.5 units
    assert e[0] == pytest.approx(0.5)
    # window 1: 2.5 missed, 3.0 extra, 3.5 exact -> 2 / 2 beats + 0 timing
    assert e[1] == pytest.approx(1.0)
    # window 2: no reference beat, one extra
    assert e[2] == pytest.approx(1.0)  # 5.0 s lies past the last window: counted in it
    assert window_qrs_error(ref, ref, 3).sum() == 0


def test_history_features_stream_equals_batch():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(12, 3)).astype(np.float32)
    batch = with_history(f)
    hist = np.zeros((0, 3), np.float32)
    rows = []
    for t in range(len(f)):
        rows.append(with_history(f[t:t + 1], hist)[0])
        hist = np.concatenate([hist, f[t:t + 1]])[-HISTORY:]
    np.testing.assert_allclose(np.stack(rows), batch, rtol=1e-6)
    np.testing.assert_allclose(batch[6, 3:], f[2:6].mean(0), rtol=1e-5)
    np.testing.assert_allclose(batch[0, 3:], f[0])


def _dummy(bounds=np.zeros(0), lams=np.zeros(0)):
    z = np.zeros(1, np.float32)
    return Predictor(z, z, z, z, z, z, TaskWeights(), 0.05, bounds, lams, {})


def test_choose_takes_the_highest_level_under_the_bound():
    p = _dummy()
    pred = np.log1p(np.array([[0.01, 0.02, 0.1, 0.3, 0.9],
                              [0.5, 0.6, 0.7, 0.8, 0.9]]))
    assert p.choose(pred, 0.35, lam=0.0).tolist() == [4, 0]
    assert p.choose(pred, 1.0, lam=0.0).tolist() == [5, 5]
    assert p.choose(pred, 1.0, lam=0.0, allowed=(1, 2, 3)).tolist() == [3, 3]
    err = np.exp(pred) - 1
    assert chosen_error(np.array([4, 0]), err).tolist() == [err[0, 3], 0.0]


def test_slack_of_a_bound_between_grid_points_is_the_lower_ones():
    p = _dummy(np.array([0.1, 0.2, 0.4]), np.array([0.5, 0.4, 0.3]))
    assert p.slack(0.2) == 0.4 and p.slack(0.3) == 0.4 and p.slack(5.0) == 0.3
    assert p.slack(0.05) == float("inf")
    assert p.choose(np.zeros((1, 5)), 0.05).tolist() == [0]  # below the grid: raw


def test_calibration_keeps_violations_under_alpha_on_fresh_data():
    """Noisy predictions of monotone level errors: uncalibrated, the policy breaks the bound far
    more often than alpha; calibrated on one sample, it holds on another."""
    rng = np.random.default_rng(1)

    def draw(n):
        base = rng.gamma(2.0, 0.05, (n, 1)) * np.array([1, 2, 4, 8, 16])[None, :]
        err = base * rng.lognormal(0, 0.3, base.shape)
        pred = np.log1p(base) + rng.normal(0, 0.15, base.shape)
        return pred, err

    bounds = np.array([0.2, 0.5, 1.0])
    pc, ec = draw(4000)
    lams = calibrate(pc, ec, bounds, alpha=0.05)
    pt, et = draw(4000)
    p = _dummy(bounds, lams)
    for b in bounds:
        raw_rate = violation_rate(p.choose(pt, b, lam=0.0), et, b)
        cal = p.choose(pt, b)
        assert raw_rate > 0.1
        assert violation_rate(cal, et, b) <= 0.06
        assert (cal > 0).mean() > 0.3  # still compresses
    assert len(LEVELS) == 5


def test_patient_bootstrap_calibration_is_at_least_as_cautious():
    """Windows of a patient share an offset (not exchangeable with each other): the slack that
    keeps the patient-resampled upper bound under alpha is never below the plain conformal one,
    and is above it for some bound."""
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(30), 100)
    base = rng.gamma(2.0, 0.05, (len(groups), 1)) * np.array([1, 2, 4, 8, 16])[None, :]
    shift = rng.lognormal(0, 0.4, 30)[groups][:, None]
    err = base * shift * rng.lognormal(0, 0.2, base.shape)
    pred = np.log1p(base)
    bounds = np.array([0.2, 0.5, 1.0])
    plain = calibrate(pred, err, bounds, alpha=0.05)
    boot = calibrate(pred, err, bounds, alpha=0.05, groups=groups, delta=0.1)
    assert np.all(boot >= plain) and np.any(boot > plain)
    with pytest.raises(ValueError, match="group"):
        calibrate(pred, err, bounds, alpha=0.05, delta=0.1)


def test_per_stratum_calibration_holds_on_the_minority_population():
    """A minority population (a fifth of the windows) whose errors the predictor underestimates:
    the pooled slack keeps the pooled violation rate under alpha but not the minority's; with
    strata each population keeps it on fresh data, and the slack is the larger of theirs."""
    rng = np.random.default_rng(3)

    def draw(n):
        minority = rng.random(n) < 0.2
        base = rng.gamma(2.0, 0.05, (n, 1)) * np.array([1, 2, 4, 8, 16])[None, :]
        err = base * rng.lognormal(0, 0.3, base.shape) * np.where(minority, 2.0, 1.0)[:, None]
        pred = np.log1p(base) + rng.normal(0, 0.1, base.shape)
        return pred, err, minority

    bounds = np.array([0.3, 0.6])
    pc, ec, sc = draw(6000)
    pooled = calibrate(pc, ec, bounds, alpha=0.05)
    strat = calibrate(pc, ec, bounds, alpha=0.05, strata=sc)
    alone = [calibrate(pc[sc == v], ec[sc == v], bounds, alpha=0.05) for v in (False, True)]
    np.testing.assert_array_equal(strat, np.maximum(*alone))
    assert np.all(strat > pooled)
    pt, et, st = draw(6000)
    for b in bounds:
        lv_pooled = _dummy(bounds, pooled).choose(pt, b)
        lv_strat = _dummy(bounds, strat).choose(pt, b)
        assert violation_rate(lv_pooled[st], et[st], b) > 0.07
        for m in (st, ~st):
            assert violation_rate(lv_strat[m], et[m], b) <= 0.065
        assert (lv_strat > 0).mean() > 0.2  # still compresses
    with pytest.raises(ValueError, match="strata"):
        calibrate(pc, ec, bounds, alpha=0.05, strata=sc[:10])


def _synthetic_ecg(rr_s, noise=0.0, fs=128, seed=0):
    """Band-passed beats (R, S, T) at the given RR intervals, plus white noise (mV)."""
    from wardmodels.frontend import filter_record

    t = np.cumsum(rr_s)
    n = int((t[-1] + 1) * fs) // 256 * 256
    tt = np.arange(n) / fs
    x = np.zeros(n)
    for b in t:
        x += np.exp(-0.5 * ((tt - b) / 0.012) ** 2) - 0.15 * np.exp(-0.5 * ((tt - b - 0.03) / 0.01) ** 2) \
            + 0.2 * np.exp(-0.5 * ((tt - b - 0.25) / 0.05) ** 2)
    return filter_record(x + noise * np.random.default_rng(seed).standard_normal(n))


def test_task_features_see_beats_rhythm_and_noise():
    from processors.qrs import detect_stream
    from wardmodels.dd_edge import TASK_FEATURES, task_features

    regular = _synthetic_ecg(np.full(40, 1.0))
    irregular = _synthetic_ecg(np.random.default_rng(1).uniform(0.5, 1.3, 60))
    noisy = _synthetic_ecg(np.full(40, 1.0), noise=0.15)
    f_reg, f_irr, f_noisy = (task_features(x) for x in (regular, irregular, noisy))
    assert f_reg.shape == (len(regular) // 256, TASK_FEATURES)
    for x, f in ((regular, f_reg), (irregular, f_irr), (noisy, f_noisy)):
        # the pipeline's own detector, window by window: the same beats
        assert round(np.expm1(f[:, 0]).sum()) == len(detect_stream(x, roundtrip=False))
        assert ((f[:, 1] >= 0) & (f[:, 1] <= 3)).all()
    late = slice(6, None)  # once 10 s of beats are in
    np.testing.assert_allclose(f_reg[late, 6], 0.6, atol=0.01)  # 60 bpm / 100
    assert f_reg[late, 3].max() < 0.02 < 0.15 < f_irr[late, 3].mean()
    # noise: candidates nearer the threshold, a lower signal/noise level, more high frequency
    assert f_noisy[late, 1].mean() < 0.5 * f_reg[late, 1].mean()
    assert f_noisy[late, 2].sum() > f_reg[late, 2].sum()
    assert f_noisy[late, 4].mean() < f_reg[late, 4].mean() - 1
    assert f_noisy[late, 5].mean() > f_reg[late, 5].mean()


def test_decode_check_knows_what_each_level_does_to_the_beats():
    """The device's decode check (`DecodeCheck`): per level, the QRS part of the task error of the
    window just ended (beats decided so far) and of the one before — the latter the task error's
    own QRS part (`window_qrs_error` over the whole record) once the detectors have decided."""
    from processors.qrs import detect_stream
    from wardmodels.dd_edge import DECODE_FEATURES, N_LEVELS, decode_features

    x = _synthetic_ecg(np.random.default_rng(2).uniform(0.7, 1.1, 50))
    n = len(x) // 256
    rng = np.random.default_rng(3)
    dropped = x.copy()
    dropped[256 * 8 + 40:256 * 8 + 216] = 0.0  # beats gone from window 8 (a coarse level's failure)
    spiky = x + np.where(rng.random(len(x)) < 0.004, 2.0, 0.0)  # extra beats
    recon = np.stack([x, dropped, np.roll(x, 3), spiky, 0.5 * x])  # levels 1..5
    f = decode_features(x, recon)
    assert f.shape == (n, DECODE_FEATURES)
    cur, prev = np.expm1(f[:, :N_LEVELS]), np.expm1(f[:, N_LEVELS:])
    assert (f[:, [0, 4, 5, 9]] == 0).all()  # identical beats (a scaled copy too): no error
    assert cur[8, 1] + prev[9, 1] >= 0.5 and cur[:8, 1].max() == 0 and prev[:9, 1].max() == 0
    # 3 samples late = 23.4 ms = 0.47 units of 50 ms on every beat, once it is decided
    assert np.median(prev[2:, 2]) == pytest.approx(3 / 128 / 0.05, abs=1e-6)
    assert prev[:, 3].sum() > 3
    ref = detect_stream(x, roundtrip=False)
    for j in range(N_LEVELS):
        full = window_qrs_error(ref, detect_stream(recon[j], roundtrip=False), n)
        agree = np.isclose(prev[1:, j], full[:-1], atol=1e-5)
        assert agree.mean() >= 0.9, (j, prev[1:, j], full[:-1])


def test_edge_feature_layout_follows_the_predictor():
    from wardmodels.dd_edge import DECODE_FEATURES, FEATURES, TASK_FEATURES, edge_features, predictor_inputs, reads_decode

    hist = np.ones((3, 2 * FEATURES), np.float32)
    task = np.full((3, TASK_FEATURES), 2.0, np.float32)
    assert edge_features(hist, None, 2 * FEATURES) is hist  # a predictor without task features
    both = edge_features(hist, task, 2 * FEATURES + TASK_FEATURES)
    assert both.shape == (3, 2 * FEATURES + TASK_FEATURES) and (both[:, -TASK_FEATURES:] == 2).all()
    with pytest.raises(ValueError, match="task features"):
        edge_features(hist, None, 2 * FEATURES + TASK_FEATURES)
    with pytest.raises(ValueError, match="no edge feature layout"):
        edge_features(hist, task, 2 * FEATURES + 1)
    dec = np.full((3, DECODE_FEATURES), 3.0, np.float32)
    n_all = predictor_inputs(True, True)
    assert n_all == 2 * FEATURES + TASK_FEATURES + DECODE_FEATURES and reads_decode(n_all)
    all3 = edge_features(hist, task, n_all, dec)
    assert (all3[:, -DECODE_FEATURES:] == 3).all() and (all3[:, :-DECODE_FEATURES] == both).all()
    with pytest.raises(ValueError, match="decode check"):
        edge_features(hist, task, n_all)
    from wardmodels.dd_edge import RHYTHM_CHECK_FEATURES, reads_rhythm

    rhy = np.full((3, RHYTHM_CHECK_FEATURES), 4.0, np.float32)
    n_rhy = predictor_inputs(True, True, True)
    assert n_rhy == n_all + RHYTHM_CHECK_FEATURES and reads_rhythm(n_rhy) and reads_decode(n_rhy)
    assert not reads_rhythm(n_all)
    all4 = edge_features(hist, task, n_rhy, dec, rhy)
    assert (all4[:, -RHYTHM_CHECK_FEATURES:] == 4).all() and (all4[:, :-RHYTHM_CHECK_FEATURES] == all3).all()
    with pytest.raises(ValueError, match="small rhythm model"):
        edge_features(hist, task, n_rhy, dec)


def test_out_of_fold_predictions_never_see_their_own_patient():
    """Cross-fit calibration: a window is predicted by an MLP fitted without its patient. Two
    patients with the same features but different errors: each one's out-of-fold prediction is the
    other's error level, where a model that saw it would predict its own."""
    from wardstream.eval_dynamic import out_of_fold

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 6)).astype(np.float32)
    groups = np.repeat([0, 1], 1000)
    y = np.where(groups[:, None] == 0, 0.0, 3.0) * np.ones((1, len(LEVELS)))
    oof = out_of_fold(x, y, groups, k=2, seed=0)
    assert oof.shape == y.shape
    assert oof[groups == 0].mean() > 0.9  # log1p(3) = 1.39, learnt from patient 1 only
    assert oof[groups == 1].mean() < 0.4  # log1p(0) = 0, learnt from patient 0 only
    assert np.array_equal(oof, out_of_fold(x, y, groups, k=2, seed=0))
    with pytest.raises(ValueError):
        out_of_fold(x, y, groups, k=1)


def test_audit_correction_raises_the_slack_only_of_beds_it_underestimates():
    """Offline per-bed correction: a bed whose audited errors are far above the prediction goes
    raw after its first audit; a bed predicted well keeps sending the highest level."""
    from wardmodels.dd_edge import predictor_inputs
    from wardmodels.predictor import RecordAnalysis
    from wardstream.eval_dynamic import Part, audit_corrected_levels

    n_in, T, K = predictor_inputs(False), 40, len(LEVELS)
    z = np.zeros
    pred = Predictor(z(n_in, np.float32), np.ones(n_in, np.float32), z((4, n_in), np.float32), z(4, np.float32),
                     z((K, 4), np.float32), np.full(K, 0.05, np.float32), TaskWeights(1.0, 0.0), 0.05,
                     np.array([0.1]), np.array([0.0]), {})
    def bed(err):
        return RecordAnalysis(z((T, n_in), np.float32), np.full((T, K), err), z((T, K)), z((T, 4)), z((K, T, 4)))
    part = Part("t", [bed(1.0), bed(0.0)], ["mitdb", "mitdb"], [None, None], [None, None])
    lv = audit_corrected_levels(part, pred, bound=0.3, every=10)
    bad, good = lv[:T], lv[T:]
    assert (bad[:10] == LEVELS[-1]).all() and (bad[10:] == 0).all()
    assert (good == LEVELS[-1]).all()
    # without audits both beds send the highest level
    assert (audit_corrected_levels(part, pred, 0.3, every=T) == LEVELS[-1]).all()


def test_level_offsets_move_the_choice_not_the_prediction_and_travel_with_the_weights():
    pred = np.log1p(np.array([[0.01, 0.02, 0.1, 0.3, 0.9]]))
    p = _dummy()
    assert p.choose(pred, 0.35, lam=0.0).tolist() == [4] and not p.offsets.any()
    p.offsets = np.array([0, 0, 0, 0.2, 0], np.float32)  # level 4 needs 0.2 more headroom now
    assert p.choose(pred, 0.35, lam=0.0).tolist() == [3]
    p.lams, p.bounds = np.array([0.0]), np.array([0.1])
    back = Predictor.from_bytes(p.to_bytes())
    np.testing.assert_array_equal(back.offsets, p.offsets)
    assert back.choose(pred, 0.35).tolist() == [3]
    assert back.nbytes() == _dummy(p.bounds, p.lams).nbytes() + 4 * 5  # five f32 offsets
    # a predictor saved without offsets (before 2026-12-03) loads with zeros
    assert not Predictor.from_bytes(_dummy(p.bounds, p.lams).to_bytes()).offsets.any()


def test_selected_offsets_lose_neither_gain_and_keep_the_calibrated_rate():
    """Where one level's predictions are too optimistic, spending the violation budget elsewhere
    is better: the selection finds offsets that raise the gains and keep violations under alpha
    on the rows they were chosen on."""
    from wardstream.eval_dynamic import select_offsets

    rng = np.random.default_rng(3)
    n = 6000
    groups = np.repeat(np.arange(60), n // 60)
    base = rng.gamma(2.0, 0.05, (n, 1)) * np.array([1, 2, 4, 8, 16])[None, :]
    err = base * rng.lognormal(0, 0.3, base.shape)
    pred = np.log1p(base) + rng.normal(0, 0.1, base.shape)
    pred[:, 2] -= 0.3 * rng.random(n)  # level 3's predictions are optimistic and noisy
    bits = {0: 4168, 1: 528, 2: 272, 3: 128, 4: 72, 5: 48}
    offs, sc = select_offsets(pred, err, groups, bits, None, 0.5, 0.05, None)
    assert offs.shape == (5,) and offs.any()
    best, none = sc["selected"], sc["none"]
    assert best["mean_compression_gain"] >= none["mean_compression_gain"]
    assert best["aggregate_compression_gain"] >= none["aggregate_compression_gain"]
    assert (best["aggregate_compression_gain"] + best["mean_compression_gain"] / 10
            > none["aggregate_compression_gain"] + none["mean_compression_gain"] / 10)
    assert best["violation_rate"] <= 0.05


def test_the_beat_weight_is_stored_only_when_used():
    """Files fitted without the beat term keep their bytes and so their hash names: every committed
    predictor loads and writes back to the same bytes; one with the term keeps its weight."""
    from pathlib import Path

    from wardmodels.runtime import WEIGHTS_DIR

    files = sorted(Path(WEIGHTS_DIR).glob("predictor-*.npz"))
    assert files
    for p in files:
        assert Predictor.load(p).to_bytes() == p.read_bytes(), p.name
    pr = _dummy()
    pr.weights = TaskWeights(1.0, 1.0, 0.5)
    back = Predictor.from_bytes(pr.to_bytes())
    assert back.weights == TaskWeights(1.0, 1.0, 0.5)
    assert Predictor.from_bytes(_dummy().to_bytes()).weights == TaskWeights()


def test_a_task_error_with_the_beat_term_needs_it_in_the_analysis():
    from wardmodels.predictor import RecordAnalysis

    kl, qrs, beat = np.full((3, 5), 0.1), np.full((3, 5), 0.2), np.arange(15.0).reshape(3, 5) / 15
    r = RecordAnalysis(np.zeros((3, 2)), kl, qrs, np.zeros((3, 4)), np.zeros((5, 3, 4)))
    np.testing.assert_allclose(r.error(TaskWeights()), 0.3)
    with pytest.raises(ValueError, match="beat term"):
        r.error(TaskWeights(beat=1.0))
    r.beat = beat
    np.testing.assert_allclose(r.error(TaskWeights(1.0, 1.0, 2.0)), 0.3 + 2 * beat)
    np.testing.assert_allclose(r.error(TaskWeights()), 0.3)  # weight 0: the term is not read

