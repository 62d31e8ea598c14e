"""The cloud's audit of the devices' predicted task error (processors/audit.py), offline: real
deployed codec, classifiers and wire format, no broker."""

from __future__ import annotations

import numpy as np
import pytest

from device_sim.ward import Device, SyntheticBed, next_frames
from processors.bed import BedState
from processors.classify import Classifiers
from processors.stages import run_batch
from stream.topics import bed_key
from stream.wire import AUDIT_WINDOWS, decode_frame, in_burst, pred_code, pred_value

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def classifiers():
    return Classifiers()


def _run(level: int, n_windows: int, audit_every: int, classifiers, beds=(4, 9)):
    from wardmodels.wire_codec import DynamicEncoder, decode_frames, register_deployed

    register_deployed()
    devs = [Device(b, SyntheticBed(b, seed=b), 1_800_000_000_000_000,
                   DynamicEncoder(3, 0.0, 1 if level <= 2 else 2, "fp32", fixed_level=level), None,
                   audit_every=audit_every) for b in beds]
    states: dict = {}
    points, sent, audits = [], [], 0
    for _ in range(n_windows):
        out = next_frames(devs)
        frames = [decode_frame(raw) for raw, _ in out]
        sent += [(f, len(raw), d.encoder.last_pred) for f, (raw, _), d in zip(frames, out, devs)]
        sig = decode_frames(frames)
        res = run_batch([(bed_key(f.bed_id), f, s, len(raw)) for f, s, (raw, _) in zip(frames, sig, out)],
                        lambda key: states.get(key) or BedState(), classifiers)
        states.update(res.states)
        points += [p for p in res.points if p.startswith("task_error,")]
        audits += res.audits
    return points, sent, audits


def _fields(p: str) -> dict:
    return dict(kv.split("=") for kv in p.split(" ")[1].split(","))


def test_bursts_spread_beds_over_the_period():
    every = 30
    burst = [[in_burst(s, b, every) for s in range(3 * every)] for b in range(1, 200)]
    assert all(sum(x) == 3 * AUDIT_WINDOWS for x in burst)  # 5 windows per period, every bed
    starts = {next(s for s in range(every) if x[s] and not x[s - 1]) for x in burst if not all(x[:AUDIT_WINDOWS])}
    assert len(starts) > every // 2  # not every bed at the same time
    assert not any(in_burst(s, 3, 0) for s in range(100))


def test_every_window_carries_the_prediction_and_bursts_carry_the_reference(classifiers):
    from wardmodels.runtime import load_deployed

    pid = load_deployed(3).predictor.digest
    points, sent, audits = _run(1, 12, 6, classifiers)
    for f, n, pred in sent:
        assert f.pred_error == pytest.approx(pred_value(pred_code(pred)))
        assert (f.reference is not None) == in_burst(f.seq, f.bed_id, 6)
        assert f.predictor_id == (pid if f.reference is not None else None)  # and with it, its predictor's id
        if f.reference is not None:  # the reference costs its bytes on the wire
            assert n >= 18 + 1 + 8 + 2 * 256  # v2 header, pred byte, f32 side, int16 samples
    predicted = [p for p in points if "predicted=" in p and "observed=" not in p]
    assert len(predicted) == len(sent)  # one per window (an audited one's merges with its observation)
    observed = [_fields(p) for p in points if "observed=" in p]
    assert audits == len(observed) >= 2  # each bed completed a burst
    for f in observed:
        assert float(f["observed"]) == pytest.approx(float(f["kl"]) + float(f["qrs"]))  # weights 1, 1
        assert float(f["observed"]) >= 0 and "predicted" in f
        assert f["predictor"] == f'"{pid}"'


def test_the_audit_sees_a_coarser_level_do_more_harm(classifiers):
    """Same beds, same signal: the observed error at level 5 (4 indices per window) must exceed
    level 1's (64 indices) — the audit measures the reconstruction, not a constant."""
    obs = {}
    for level in (1, 5):
        points, _, _ = _run(level, 10, 5, classifiers)
        obs[level] = [float(_fields(p)["observed"]) for p in points if "observed=" in p]
        assert len(obs[level]) == 4  # 2 beds x 2 continuous bursts of 5
    assert np.mean(obs[5]) > np.mean(obs[1]) + 0.05


def _case(level=3, predicted=0.1):
    from processors.audit import AuditCase

    z = np.zeros(1280, np.float32)
    return AuditCase("7", 0, level, predicted, z, z, 128, 256, 3)


def test_slack_correction_follows_the_beds_residuals():
    from processors.audit import RESIDUALS_KEPT, residual, slack_offset, update_slack

    assert slack_offset([]) == 0.0
    assert slack_offset([-0.5, -0.2, -0.1]) == 0.0  # predicted well (or pessimistically): nothing
    assert residual(np.e - 1, 0.0) == pytest.approx(1.0)
    st = BedState()
    assert update_slack(st, _case(predicted=0.1), 0.1) is None  # residual 0: offset 0, already "sent"
    first = update_slack(st, _case(predicted=0.1), 1.0)  # the device underestimated this bed
    assert first is not None and first > 0 and st.slack_sent == first
    assert update_slack(st, _case(predicted=0.1), 1.0) in (None, st.slack_sent)
    # raw windows and windows without a prediction teach nothing
    n = len(st.audit_res)
    assert update_slack(st, _case(level=0), 5.0) is None and update_slack(st, _case(predicted=None), 5.0) is None
    assert len(st.audit_res) == n
    # good audits bring it back down; the memory is bounded and survives the changelog
    for _ in range(RESIDUALS_KEPT):
        update_slack(st, _case(predicted=0.5), 0.0)
    assert st.slack_sent == 0.0 and len(st.audit_res) == RESIDUALS_KEPT
    back = BedState.from_bytes(st.to_bytes())
    assert back.audit_res == pytest.approx(st.audit_res, abs=1e-12) and back.slack_sent == st.slack_sent


def test_run_batch_reports_the_corrections_it_records(classifiers):
    """Through the real pipeline (deployed codec at level 5): every audit with a prediction adds a
    residual to its bed's state, and a bed's update equals the offset of its residuals."""
    from device_sim.ward import Device, SyntheticBed, next_frames
    from processors.audit import SLACK_STEP, slack_offset
    from wardmodels.wire_codec import DynamicEncoder, decode_frames, register_deployed

    register_deployed()
    for correct in (True, False):
        devs = [Device(b, SyntheticBed(b, seed=b), 1_800_000_000_000_000, DynamicEncoder(3, 0.0, 2, "fp32", fixed_level=5),
                       None, audit_every=5) for b in (4, 9)]
        states, updates, slack_fields = {}, {}, {}
        for _ in range(10):
            out = next_frames(devs)
            frames = [decode_frame(raw) for raw, _ in out]
            sig = decode_frames(frames)
            res = run_batch([(bed_key(f.bed_id), f, s, len(raw)) for f, s, (raw, _) in zip(frames, sig, out)],
                            lambda key: states.get(key) or BedState(), classifiers, slack_correction=correct)
            states.update(res.states)
            updates.update(res.slack_updates)
            for p in res.points:
                if p.startswith("task_error,") and "observed=" in p:
                    slack_fields[int(p.split("bed=")[1].split(",")[0])] = _fields(p).get("slack")
        for b in (4, 9):
            st = states[bed_key(b)]
            if correct:
                assert len(st.audit_res) == 2  # two bursts of 5 windows in 10
                assert abs(st.slack_sent - slack_offset(st.audit_res)) < SLACK_STEP  # sent when it moved
                assert updates.get(b, 0.0) == st.slack_sent
                assert float(slack_fields[b]) == pytest.approx(st.slack_sent)  # InfluxDB sees it too
            else:
                assert st.audit_res == [] and not updates and slack_fields[b] is None


def test_the_audit_scores_with_the_wards_predictor_and_its_beat_term(classifiers, tmp_path):
    """The observed task error is the one the ward's predictor was trained to predict: with the
    default predictor kl + qrs, with a predictor whose task error has the beat term (a file, as
    ``WARDSTREAM_DD_PREDICTOR`` may name) kl + qrs + beat, where beat is `predictor.beat_term` of
    the burst's last window (MIT-BIH 200, DS2, sent at level 5)."""
    import dataclasses

    from processors.audit import AuditCase, score, task_weights
    from wardmodels import DD_MODEL
    from wardmodels.frontend import filter_record
    from wardmodels.predictor import TaskWeights, beat_term
    from wardmodels.runtime import load_deployed
    from wardstream.datasets import load_mitdb
    from wardstream.eval_dynamic import _recons
    from wardstream.settings import default_data_dir

    data = default_data_dir()
    if not (data / "mitdb" / "200.hea").exists():
        pytest.skip(f"recordings not found under {data}")
    codec = load_deployed(DD_MODEL)
    base = codec.predictor
    path = dataclasses.replace(base, weights=TaskWeights(1.0, 1.0, 1.0), meta=dict(base.meta)).save(tmp_path)
    assert task_weights(DD_MODEL) == base.weights and task_weights(DD_MODEL, str(path)).beat == 1.0
    x = filter_record(load_mitdb(data, "200").ecg_mv)[128 * 60: 128 * 70].astype(np.float32)  # 10 s, ventricular beats
    rec = _recons(codec, x.astype(np.float64))[4].astype(np.float32)  # level 5
    case = AuditCase("200", 0, 5, 0.3, x, rec, 128, 256, DD_MODEL)
    (plain,), (beat,) = score([case], classifiers.task_model), score([case], classifiers.task_model,
                                                                      classifiers.beat, str(path))
    assert "beat" not in plain and plain["observed"] == pytest.approx(plain["kl"] + plain["qrs"])
    assert beat["kl"] == plain["kl"] and beat["qrs"] == plain["qrs"]
    want = float(beat_term(classifiers.beat, x.astype(np.float64), rec[None])[-1, 0])
    assert want > 0  # level 5 changes some ventricular beat's probabilities
    assert beat["beat"] == pytest.approx(want) and beat["observed"] == pytest.approx(plain["observed"] + want)
    with pytest.raises(ValueError, match="beat model"):
        score([case], classifiers.task_model, None, str(path))
    # frames that name their device's predictor (wire flag bit 7) are scored with that one's task
    # error, whatever the ward's: the committed rhythm kind has the beat term, the default has not
    from processors.audit import update_slack

    rhythm = codec.predictor_of("rhythm")
    assert rhythm.weights == TaskWeights(1.0, 1.0, 1.0) and base.weights == TaskWeights()

    def named(pid):
        return dataclasses.replace(case, predictor_id=pid)

    (r,), (d,) = score([named(rhythm.digest)], classifiers.task_model, classifiers.beat), \
        score([named(base.digest)], classifiers.task_model, classifiers.beat, str(path))
    assert r["observed"] == pytest.approx(beat["observed"]) and r["predictor"] == rhythm.digest
    assert "beat" not in d and d["observed"] == pytest.approx(plain["observed"])
    # the ward's own predictor file is known by its id; one neither the ward's nor committed is
    # not: no observed error and nothing for the slack correction
    pid = path.stem.rsplit("-", 1)[1]
    (w,), (u,) = score([named(pid)], classifiers.task_model, classifiers.beat, str(path)), \
        score([named(pid)], classifiers.task_model, classifiers.beat)
    assert w["observed"] == pytest.approx(beat["observed"])
    assert "observed" not in u and u["kl"] == plain["kl"] and u["predictor"] == pid
    st = BedState()
    assert update_slack(st, named(pid), u.get("observed")) is None and st.audit_res == []


def test_a_mixed_ward_is_audited_with_each_devices_own_predictor(classifiers):
    """Two devices of one ward on codec model 5, one running the rhythm predictor kind (its task
    error has the beat term), one the default, the ward's setting the default: through the real
    devices, wire and worker batch, each burst is scored with the task error of the predictor its
    frames name (wire flag bit 7) — the rhythm device's with the beat term, the other's without."""
    from wardmodels import DD_MODEL
    from wardmodels.runtime import load_deployed
    from wardmodels.wire_codec import DynamicEncoder, decode_frames, register_deployed

    register_deployed()
    codec = load_deployed(DD_MODEL)
    kinds = {4: "rhythm", 9: "default"}
    devs = [Device(b, SyntheticBed(b, seed=b), 1_800_000_000_000_000,
                   DynamicEncoder(DD_MODEL, 0.0, 2, "fp32", fixed_level=4, predictor=kinds[b]), None, audit_every=5)
            for b in kinds]
    states, observed = {}, {}
    for _ in range(5):
        out = next_frames(devs)
        frames = [decode_frame(raw) for raw, _ in out]
        res = run_batch([(bed_key(f.bed_id), f, s, len(raw)) for f, s, (raw, _) in zip(frames, decode_frames(frames), out)],
                        lambda key: states.get(key) or BedState(), classifiers)
        states.update(res.states)
        observed.update({int(p.split("bed=")[1].split(",")[0]): _fields(p) for p in res.points
                         if p.startswith("task_error,") and "observed=" in p})
    assert sorted(observed) == [4, 9]  # one burst each
    for b, f in observed.items():
        assert f["predictor"] == f'"{codec.predictor_of(kinds[b]).digest}"'
    r, d = observed[4], observed[9]
    assert float(r["observed"]) == pytest.approx(float(r["kl"]) + float(r["qrs"]) + float(r["beat"]), rel=1e-5)
    assert "beat" not in d and float(d["observed"]) == pytest.approx(float(d["kl"]) + float(d["qrs"]), rel=1e-5)
