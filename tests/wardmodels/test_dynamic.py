"""The deployed Dynamic-Deep codec (wire model `wardmodels.DD_MODEL`): its levels on the wire, at the edge and in the
cloud, on recordings never trained on."""

import numpy as np
import pytest

from stream.wire import REGISTRY, Channel, Frame, Modality, decode_frame, encode_frame
from wardmodels import DD_MODEL, runtime
from wardmodels.frontend import normalise
from wardmodels.wire_codec import DynamicEncoder, decode_frames, register_deployed

MODEL = DD_MODEL


@pytest.fixture(scope="module")
def dd():
    register_deployed()
    return runtime.load_deployed(MODEL)


def test_levels_on_the_wire_count_every_byte(dd):
    spec = REGISTRY[MODEL]
    # v1: modality, level, count (4 B) + scale code (1 B) + payload; raw: 2 x f32 side + int16 samples
    assert [spec.level(L).section_bytes(256, 1) for L in range(6)] == [524, 69, 37, 19, 12, 9]
    # v2 (what devices send): the level byte alone heads a section
    assert [spec.level(L).section_bytes(256) for L in range(6)] == [521, 66, 34, 16, 9, 6]
    assert [dd.n_indices(L) for L in range(1, 6)] == [64, 32, 16, 8, 4]


def test_edge_fits_the_budget(dd):
    e = dd.entry
    chains = sum(c.nbytes() for c in dd.chains.values())
    assert e["encoder_bytes"] == dd.edge.nbytes() - dd.edge.prior_nbytes() + chains
    assert dd.predictor is not None, "the deployed model carries its calibrated predictor"
    assert e["encoder_bytes"] + dd.predictor.nbytes() <= 480_000
    assert e["reproduce"]


def test_int8_chain_agrees_with_its_float_reference(dd, ecg_windows, eeg_windows):
    import torch

    for m, w in (("ecg", ecg_windows), ("eeg", eeg_windows[0])):
        x, codes = normalise(w, m)
        idx, feats = dd.analyse(m, x, codes)
        assert np.isfinite(feats).all()
        with torch.no_grad():
            ys = dd.dd.chain[m](dd.dd.trunk(m, torch.from_numpy(x.astype(np.float32))))
        for i, L in enumerate((3, 4, 5)):
            b, w_, t = ys[i].shape
            ref = dd.dd.vq[m][i].nearest(ys[i].permute(0, 2, 1).reshape(-1, w_)).view(b, t).numpy()
            assert (ref == idx[L]).mean() >= 0.96, (m, L, (ref == idx[L]).mean())
        # the base levels come out of the same integer pass as model 2's encoder
        np.testing.assert_array_equal(idx[1], dd.edge.encode(m, x).reshape(len(x), -1))


def test_fewer_indices_cost_fidelity_in_order(dd, ecg_windows):
    x, codes = normalise(ecg_windows, "ecg")
    idx, _ = dd.analyse("ecg", x, codes)
    prd = []
    for L in range(1, 6):
        rec = dd.decode({"ecg": idx[L], "eeg": None}, {"ecg": codes, "eeg": None})["ecg"]
        assert rec.shape == ecg_windows.shape and np.isfinite(rec).all()
        prd.append(np.sqrt(((rec - ecg_windows) ** 2).sum() / (ecg_windows ** 2).sum()))
    assert all(a < b for a, b in zip(prd, prd[1:])), prd
    assert prd[2] < 0.45  # 16 indices still carry the waveform (record 100, held out)


def test_mixed_levels_round_trip_through_the_wire(dd, ecg_windows, eeg_windows):
    x, codes = normalise(ecg_windows[:6], "ecg")
    idx, _ = dd.analyse("ecg", x, codes)
    xe, ce = normalise(eeg_windows[0][:6], "eeg")
    ide, _ = dd.analyse("eeg", xe, ce)
    frames = []
    for k, L in enumerate((1, 2, 3, 4, 5, 5)):
        chans = (Channel(Modality.ECG, L, float(codes[k]), 0.0, idx[L][k]),
                 Channel(Modality.EEG, 3, float(ce[k]), 0.0, ide[3][k]))
        f = Frame(7, k, 1_000_000 * k, 128, 256, MODEL, chans)
        frames.append(decode_frame(encode_frame(f)))
        assert frames[-1] == f
    # and, in the same batch (one decoder pass for all levels), a window whose ECG went raw
    raw_ecg = np.round(ecg_windows[0] / 0.005) * 0.005
    chans = (Channel(Modality.ECG, 0, 0.005, 0.0, np.round(raw_ecg / 0.005).astype(np.int16)),
             Channel(Modality.EEG, 3, float(ce[0]), 0.0, ide[3][0]))
    f = Frame(7, 6, 6_000_000, 128, 256, MODEL, chans)
    frames.append(decode_frame(encode_frame(f)))
    rec = decode_frames(frames)
    for k, L in enumerate((1, 2, 3, 4, 5, 5)):
        want = dd.decode({"ecg": idx[L][k:k + 1], "eeg": ide[3][k:k + 1]},
                         {"ecg": codes[k:k + 1], "eeg": ce[k:k + 1]})
        np.testing.assert_allclose(rec[k][Modality.ECG], want["ecg"][0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(rec[k][Modality.EEG], want["eeg"][0], rtol=1e-4, atol=1e-4)
    want = dd.decode({"ecg": None, "eeg": ide[3][:1]}, {"ecg": None, "eeg": ce[:1]})
    np.testing.assert_allclose(rec[6][Modality.EEG], want["eeg"][0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rec[6][Modality.ECG], raw_ecg, atol=1e-6)


def test_a_device_follows_its_bound_from_the_next_window(dd, data_dir):
    from wardmodels.dd_edge import HISTORY
    from wardstream.datasets import load_mitdb

    ecg = load_mitdb(data_dir, "100").ecg_mv[: 40 * 256].reshape(40, 256)
    enc = DynamicEncoder(MODEL, bound=50.0)
    lax = [enc.channels(w, None)[0].level for w in ecg[:20]]
    assert len(enc.history) == HISTORY
    enc.bound = 1e-6  # below every calibrated bound: nothing but raw is safe
    strict = [enc.channels(w, None)[0] for w in ecg[20:]]
    assert min(lax) >= 3, lax  # a clean sinus rhythm under a lax bound: low-rate levels
    assert {c.level for c in strict} == {0}
    raw = strict[0].physical()
    np.testing.assert_allclose(raw, ecg[20], atol=0.0006)  # 1 µV steps


def test_a_device_adds_the_clouds_slack_correction_from_the_next_window(dd, data_dir):
    from wardstream.datasets import load_mitdb

    ecg = load_mitdb(data_dir, "100").ecg_mv[: 30 * 256].reshape(30, 256)
    plain, corrected = DynamicEncoder(MODEL, bound=0.3543), DynamicEncoder(MODEL, bound=0.3543)
    levels = []
    for t, w in enumerate(ecg):
        if t == 10:
            corrected.slack_offset = 0.3  # the audits say this bed's errors run higher than predicted
        if t == 20:
            corrected.slack_offset = 10.0  # no level's prediction survives this: raw
        levels.append((plain.channels(w, None)[0].level, corrected.channels(w, None)[0].level))
    a, b = np.array(levels).T
    assert np.array_equal(a[:10], b[:10]) and a[:10].min() >= 1  # same windows, same choices
    assert (b[10:20] <= a[10:20]).all() and (b[10:20] < a[10:20]).any(), levels
    assert set(b[20:]) == {0}


@pytest.mark.parametrize("kind", ["default", "decode", "rhythm"])
def test_a_device_chooses_what_the_evaluation_assumes(dd, data_dir, kind):
    """The device's streaming features (filter, integer analysis, history ring, its own QRS
    detector; with the decode predictor also its decode of every level and a detector on each;
    with the rhythm predictor also its small rhythm model on every level's last 10 s) give the
    levels the offline analysis of the same record scores."""
    from wardmodels.dd_edge import decode_features, edge_features, reads_decode, reads_rhythm, task_features, with_history
    from wardmodels.edge_rhythm import rhythm_features
    from wardmodels.frontend import filter_record
    from wardstream.datasets import load_mitdb

    n = 60
    raw = load_mitdb(data_dir, "100").ecg_mv[: n * 256]
    pr = dd.predictor_of(kind)
    bound = pr.meta["deployed_bound"]
    enc = DynamicEncoder(MODEL, bound=bound, predictor=kind)
    device = np.array([enc.channels(w, None)[0].level for w in raw.reshape(n, 256)])
    x = filter_record(raw)
    xn, codes = normalise(x.reshape(n, 256), "ecg")
    idx, f = dd.analyse("ecg", xn, codes)
    dec = rhy = None
    recon = np.stack([dd.decode({"ecg": idx[L], "eeg": None}, {"ecg": codes, "eeg": None})["ecg"].ravel()
                      for L in range(1, 6)])
    if reads_decode(pr.n_in):  # the decode check: every level decoded as the analysis does
        dec = decode_features(x, recon)
    if reads_rhythm(pr.n_in):
        rhy = rhythm_features(dd.edge_rhythm, x, recon)
    offline = pr.choose(pr.predict(edge_features(with_history(f), task_features(x), pr.n_in, dec, rhy)), bound)
    assert len(set(device.tolist())) > 1  # levels do switch on this record
    assert (device == offline).mean() >= 0.95, (device, offline)


def test_chains_can_train_without_the_calibration_patients():
    from wardmodels.train_dynamic import training_records
    from wardstream.datasets import DS1
    from wardstream.eval_dynamic import N_DS1_TRAIN

    mit, cinc_part = training_records(exclude_calib=True)
    calib = DS1[N_DS1_TRAIN:]  # the MIT-BIH patients `eval_dynamic` calibrates the slack on
    assert calib and mit and not set(mit) & set(calib) and set(mit) | set(calib) == set(DS1)
    assert cinc_part == "fit"  # the CinC training split without its seeded calib part
    assert training_records(exclude_calib=False) == (None, "train")  # the deployed chains' data


def test_the_task_phase_qrs_term_sees_the_beats(data_dir):
    import torch

    from wardmodels.dynamic import qrs_envelope, qrs_envelope_loss
    from wardmodels.frontend import filter_record
    from wardstream.datasets import load_mitdb

    rec = load_mitdb(data_dir, "100")
    x = torch.from_numpy(filter_record(rec.ecg_mv)[: 4 * 1280].reshape(4, 1280).astype(np.float32))
    env = qrs_envelope(x)[0].numpy()
    beats = rec.beat_times_s[rec.beat_times_s < 10.0] * 128 - 1  # annotated beats of the first crop
    near = np.zeros(len(env), bool)
    for t in beats:
        near[max(0, int(t) - 19):int(t) + 20] = True
    # every annotated beat has envelope energy within 0.1 s; away from the beats (> 0.15 s) it is low
    assert min(env[max(0, int(t) - 13):int(t) + 13].max() for t in beats) > 0.4 * env.max()
    assert env[~near].max() < 0.15 * env.max()
    assert torch.all(qrs_envelope_loss(x, x) == 0)
    smooth = torch.fft.irfft(torch.fft.rfft(x) * (torch.fft.rfftfreq(1280, 1 / 128) < 4), n=1280)
    assert torch.all(qrs_envelope_loss(x, smooth) > 0.9)  # no QRS energy left in a < 4 Hz copy
    y = (0.5 * x).requires_grad_(True)
    qrs_envelope_loss(x, y).mean().backward()
    assert y.grad.abs().sum() > 0  # differentiable, so the chains can learn from it


def test_the_beat_term_sees_only_waveform_changes(data_dir):
    """`predictor.beat_term`: zero where every level is the original itself; on record 200 (DS2,
    many ventricular beats) the coarse levels change some beats' class probabilities, bounded by 1 (a
    total-variation distance), and more at level 5 than at level 1."""
    from wardmodels.clf_runtime import load_deployed_classifier
    from wardmodels.frontend import filter_record
    from wardmodels.predictor import beat_term
    from wardmodels.runtime import load_deployed
    from wardstream.datasets import load_mitdb
    from wardstream.eval_dynamic import _recons

    x = filter_record(load_mitdb(data_dir, "200").ecg_mv)[: 128 * 120]
    clf = load_deployed_classifier("beat")
    same = beat_term(clf, x, np.stack([x] * 5))
    assert same.shape == (60, 5) and not same.any()
    t = beat_term(clf, x, _recons(load_deployed(DD_MODEL), x))
    assert t.shape == (60, 5) and (t >= 0).all() and (t <= 1 + 1e-6).all()
    assert (t > 0).mean() > 0.5
    assert t[:, 4].mean() > t[:, 0].mean()
