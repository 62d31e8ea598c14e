"""Audit of the devices' predicted task error: does the bound mean in the ward what it meant in
calibration?

A device that predicts its task error (`wardmodels.wire_codec.DynamicEncoder`) sends the
prediction for the level it chose in every frame (wire v2: in the ECG level byte, flag bit 5, when it fits; else flag bit 1). Every
``WARDSTREAM_AUDIT_EVERY_S`` it also sends, for ``stream.wire.AUDIT_WINDOWS`` consecutive windows
(10 s, the rhythm classifier's span; the schedule is ``stream.wire.in_burst``), the ECG as its encoder saw it (flag bit 2: raw, after the device's
front end). On the last window of such a burst the worker has the original and its own
reconstruction of the same 10 s and computes the task error the predictor was trained to
predict (`wardmodels.predictor`): ``w_kl * KL(p_orig || p_recon)`` of the deployed rhythm
classifier on the 10 s, plus ``w_qrs *`` the streaming QRS detector's error on the last window
(missed + extra beats per beat, plus mean |Δt| in 50-ms units), plus, when the predictor's task
error has it, ``w_beat *`` the beat term of the last window (`wardmodels.predictor.beat_term`),
with the weights that ship with the predictor that made the prediction: the one whose id the
burst's frames carry (wire v2 flag bit 7, `predictor_weights`), else the ward's (`task_weights`).
A device whose predictor the worker does not know (neither the ward's nor a committed file) gets
``kl`` and ``qrs`` but no ``observed`` and no slack correction: its task error is not known here.
One difference from training, kept on purpose: the reconstruction is what was actually sent, so
under the dynamic policy the 10 s may mix levels.

Points: ``task_error,bed=B,level=L predicted=..`` on every window with a prediction, and on an
audited window also ``observed``, ``kl``, ``qrs`` (same point: predicted and observed side by side)
and ``slack``, the bed's correction after this audit (below), and ``predictor``, the id the
frames carried.

Per-bed correction (`slack_offset`): the bed keeps the residuals ``log1p(observed) -
log1p(predicted)`` of its last `RESIDUALS_KEPT` audits at a VQ level; their `AUDIT_QUANTILE` (the
quantile the predictor was fitted to), floored at 0, is the slack the device should add to its
calibrated one. The worker publishes it on the control topic under the bed's own ``slack-NNNNNN``
key whenever it moves by `SLACK_STEP` or more (`device_sim.control`). Offline, on the test split
(`wardstream eval dynamic-deep --audit-every`), this brought MIT-BIH DS2's violation rate from
0.061 to 0.036 with one observed window per 5-min audit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from processors.influx_sink import line

AUDIT_QUANTILE = 0.8  # the predictor's pinball quantile (`wardstream train dynamic-deep --quantile`)
RESIDUALS_KEPT = 64  # audits per bed the correction remembers
SLACK_STEP = 0.01  # log1p units: a smaller change is not sent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditCase:
    bed: str
    ts_ms: int
    level: int
    predicted: float | None
    original: np.ndarray  # float32, the burst's windows as the device's encoder saw them
    received: np.ndarray  # float32, the same span as the worker reconstructed it (after its front end)
    fs: int
    n_samples: int
    model_id: int
    predictor_id: str | None = None  # the id of the device's predictor, when its frames carry it


def task_weights(model_id: int, predictor: str = "default"):
    """The task-error weights the ward's devices' predictor (``predictor``: a kind or a predictor
    file, `Settings.dd_predictor`) was trained with; the defaults for a raw or unknown model. For
    devices whose frames do not name their predictor (wire v1, firmware of blob version 4): they
    are taken to run the ward's (the simulator and the workers read the same
    ``WARDSTREAM_DD_PREDICTOR``). `predictor_weights` for those that do."""
    from wardmodels.predictor import TaskWeights

    _, pred = _ward_predictor(model_id, predictor)
    return pred.weights if pred is not None else TaskWeights()


def _ward_predictor(model_id: int, ward: str):
    """(codec, the ward's predictor ``ward`` of codec ``model_id``); (None, None) for a raw or
    unknown model or one without a Dynamic-Deep predictor."""
    from wardmodels.runtime import load_deployed

    try:
        codec = load_deployed(model_id)
        return (codec, codec.predictor_of(ward)) if codec.predictor is not None else (None, None)
    except Exception:  # noqa: BLE001 - a raw or unknown model predicts nothing
        return None, None


@lru_cache(maxsize=64)
def predictor_by_id(model_id: int, predictor_id: str, ward: str = "default"):
    """The predictor whose id (`wardmodels.predictor.Predictor.digest`) is ``predictor_id``: the
    ward's (``ward``, a kind or file of codec ``model_id``, `Settings.dd_predictor`) or a committed
    predictor file (``wardmodels/weights/predictor-<id>.npz``, hash-verified); None if neither."""
    from wardmodels.runtime import WEIGHTS_DIR

    codec, pr = _ward_predictor(model_id, ward)
    if pr is None:
        return None
    if pr.digest == predictor_id:
        return pr
    path = WEIGHTS_DIR / f"predictor-{predictor_id}.npz"
    return codec.predictor_of(str(path)) if path.is_file() else None


def predictor_weights(case: AuditCase, ward: str = "default"):
    """The task weights to audit ``case`` with: its device's predictor's when its frames name it
    (None when that predictor is unknown here), else the ward's (`task_weights`)."""
    if case.predictor_id is None:
        return task_weights(case.model_id, ward)
    pr = predictor_by_id(case.model_id, case.predictor_id, ward)
    if pr is None:
        log.warning("bed %s runs edge predictor %s, which this worker does not know (not the ward's %s, "
                    "not in wardmodels/weights): its audit has no observed task error",
                    case.bed, case.predictor_id, ward)
        return None
    return pr.weights


def residual(observed: float, predicted: float) -> float:
    """How far the device's prediction fell short, in the predictor's own units (log1p)."""
    return float(np.log1p(max(observed, 0.0)) - np.log1p(max(predicted, 0.0)))


def slack_offset(residuals: list[float]) -> float:
    """The slack a bed's device should add: the `AUDIT_QUANTILE` of its audited residuals, >= 0,
    on a `SLACK_STEP` grid (0 with no residuals)."""
    if not residuals:
        return 0.0
    q = max(0.0, float(np.quantile(np.asarray(residuals, np.float64), AUDIT_QUANTILE)))
    return round(round(q / SLACK_STEP) * SLACK_STEP, 6)


def update_slack(state, case: AuditCase, observed: float | None) -> float | None:
    """Add this audit's residual to the bed's state (`processors.bed.BedState`); the bed's new
    slack correction if it moved by `SLACK_STEP` or more since the one last sent, else None. An
    audit without a prediction or an observed error, or of a raw window (error 0 by definition),
    teaches nothing."""
    if case.predicted is None or observed is None or case.level <= 0:
        return None
    state.audit_res = (state.audit_res + [residual(observed, case.predicted)])[-RESIDUALS_KEPT:]
    offset = slack_offset(state.audit_res)
    if abs(offset - state.slack_sent) < SLACK_STEP - 1e-9:
        return None
    state.slack_sent = offset
    return offset


def points(cases: list[AuditCase], scored: list[dict]) -> list[str]:
    """``task_error`` points of scored audits (`score`)."""
    return [line("task_error", {"bed": c.bed, "level": str(c.level)}, f, c.ts_ms) for c, f in zip(cases, scored)]


def score(cases: list[AuditCase], rhythm, beat=None, predictor: str = "default") -> list[dict]:
    """Per completed audit: ``observed``, ``kl``, ``qrs`` (and ``beat``, when the device's predictor's
    task error has the beat term: `wardmodels.predictor.beat_term` of the last window, with the
    ``beat`` classifier) and, when the device sent them, ``predicted`` and ``predictor`` (its id).
    The argument ``predictor`` is the ward's setting, for frames that name none (`predictor_weights`).
    No ``observed`` when the device's predictor is unknown here."""
    if not cases:
        return []
    from wardmodels.classifier import rhythm_input
    from wardmodels.predictor import beat_term, kl_rows, window_qrs_error
    from processors.qrs import detect_stream

    p = rhythm.proba(rhythm_input(np.stack([c.original for c in cases] + [c.received for c in cases])))
    kl = kl_rows(p[:len(cases)], p[len(cases):])
    out = []
    for c, k in zip(cases, kl.tolist()):
        weights = predictor_weights(c, predictor)
        ref = detect_stream(c.original, c.fs, c.n_samples, roundtrip=False)
        det = detect_stream(c.received, c.fs, c.n_samples, roundtrip=False)
        n_win = len(c.original) // c.n_samples
        qrs = float(window_qrs_error(ref, det, n_win, c.n_samples / c.fs)[-1])
        fields = {"kl": k, "qrs": qrs}
        if weights is not None:
            fields["observed"] = weights.kl * k + weights.qrs * qrs
            if weights.beat:
                if beat is None:
                    raise ValueError("the device's predictor's task error has the beat term: the audit needs "
                                     "the beat model")
                b = float(beat_term(beat, np.asarray(c.original, np.float64), np.asarray(c.received)[None])[-1, 0])
                fields["beat"] = b
                fields["observed"] += weights.beat * b
        if c.predicted is not None:
            fields["predicted"] = c.predicted
        if c.predictor_id is not None:
            fields["predictor"] = c.predictor_id
        out.append(fields)
    return out
