"""The worker's per-batch work after decoding, as one function the Faust agent and the offline
replays (`wardstream eval alarms`) share: bed steps in order, one classifier batch, the alarm
stage. Pure apart from the classifiers' inference; the caller owns I/O.

Alarm stage: each processed window's evidence (`processors.bed.WindowEvidence`) plus what the
classifiers said about it (the rhythm decision's AF probability, the classes of the beats that
became classifiable) advance the bed's `processors.alarms.AlarmState`. Points:

* ``alarm,bed=B,condition=C,priority=P,state=S episode=..,why="..",by=".."`` per transition, at
  its time (tags include the state, so two transitions at one instant are two points);
* ``alarm_level,bed=B highest=0..4,open=N`` per window (4 high, 3 medium, 2 low, 1 technical,
  0 none): the ward overview's "highest active alarm" tile.

Waveform strips (``waveform_hz`` > 0): ``waveform,bed=B ecg=..,eeg=..`` per sample time of the
decoded signals, block-averaged down to ``waveform_hz`` (ECG mV, EEG µV), one point carrying both
modalities (a point per modality and sample, as before 2026-12-04, wrote twice the bytes: the bed's
tags and the timestamp twice), kept apart in ``BatchOutput.strip_points`` because they go to a
short retention policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from processors import alarms as al
from processors import audit
from processors.bed import BedState, batch_features, process_frame
from processors.hold import HoldPolicy
from processors.hold import published_by as hold_by
from processors.hold import step as hold_step
from processors.influx_sink import line
from stream.wire import Frame

PRIORITY_CODE = {"high": 4, "medium": 3, "low": 2, "technical": 1}


@dataclass
class BatchOutput:
    states: dict = field(default_factory=dict)  # key -> BedState
    points: list[str] = field(default_factory=list)
    strip_points: list[str] = field(default_factory=list)  # decoded waveform strips
    written: list[int] = field(default_factory=list)  # window end (µs) of every window written
    alarm_events: list[al.AlarmEvent] = field(default_factory=list)
    replays: int = 0
    late: int = 0
    gaps: int = 0
    rhythm_decisions: int = 0
    beats_classified: int = 0
    audits: int = 0  # audit bursts completed (observed task error computed)
    slack_updates: dict = field(default_factory=dict)  # bed id -> slack correction to publish
    # bed id -> (max level, or None to end it; why): fidelity holds to publish (`processors.hold`)
    hold_updates: dict = field(default_factory=dict)


def alarm_points(events: list[al.AlarmEvent]) -> list[str]:
    return [line("alarm", {"bed": str(e.bed), "condition": e.condition, "priority": e.priority, "state": e.state},
                 {"episode": e.episode, "why": e.why, "by": e.by}, e.t_ms) for e in events]


def waveform_points(frame: Frame, signals: dict, hz: int) -> list[str]:
    """The decoded window, block-averaged to ``hz`` samples/s (a no-op when ``hz`` does not
    divide the frame's rate): one point per sample time (ms) with a field per modality (``ecg``,
    ``eeg``); a non-finite value is left out of its point, a point with none is not written."""
    fs = frame.fs
    if hz <= 0 or fs % hz or not signals:
        return []
    k = fs // hz
    cols = {}
    for mod, x in sorted(signals.items(), key=lambda kv: kv[0].name):
        n = (len(x) // k) * k
        cols[mod.name.lower()] = np.asarray(x[:n], dtype=np.float64).reshape(-1, k).mean(axis=1)
    m = max(len(y) for y in cols.values())
    ts = ((frame.t_start_us + np.arange(m) * (k * 1_000_000 // fs)) // 1000).tolist()
    head = f"waveform,bed={int(frame.bed_id)} "
    if all(len(y) == m and np.isfinite(y).all() for y in cols.values()):
        # one %-format per point (a per-sample np.isfinite cost twice the formatting)
        fmt = head + ",".join(f"{name}=%.5g" for name in cols) + " %d"
        return [fmt % row for row in zip(*(y.tolist() for y in cols.values()), ts)]
    out = []
    for i, t in enumerate(ts):
        fields = ",".join(f"{name}={y[i]:.5g}" for name, y in cols.items() if i < len(y) and np.isfinite(y[i]))
        if fields:
            out.append(f"{head}{fields} {t}")
    return out


def run_batch(decoded: list[tuple], get_state, classifiers, thresholds=al.Thresholds(),
              waveform_hz: int = 0, conditions: dict | None = None,
              recent_windows: dict | None = None, slack_correction: bool = True,
              audit_predictor: str = "default", hold: HoldPolicy | None = None) -> BatchOutput:
    """``decoded``: (key, frame, signals, wire_len) per frame; ``get_state(key)`` -> BedState;
    ``thresholds``: the alarm limits, one `Thresholds` or ``bed -> Thresholds``;
    ``recent_windows``: key -> windows of the present that arrived in the last 10 s (the
    worker's frame-flood count; None offline); ``slack_correction``: compute the per-bed slack
    corrections of the audits (`BatchOutput.slack_updates`, `processors.audit.slack_offset`);
    ``audit_predictor``: the predictor the ward's devices run (its task weights are the audit's);
    ``hold``: the fidelity hold's policy (`processors.hold`; None: no holds)."""
    out = BatchOutput()
    feats = {}
    for fs in {frame.fs for _, frame, _, _ in decoded}:
        items = [(i, d) for i, d in enumerate(decoded) if d[1].fs == fs]
        feats.update(zip([i for i, _ in items], batch_features([d[2] for _, d in items], fs)))
    # per bed in sequence order: Kafka keeps one partition in order, but a rebalance re-seek can
    # hand the agent a window again after later ones (bed.process_frame also copes with that)
    # (device time first: a rebooted device restarts its sequence numbers with a later clock)
    order = sorted(range(len(decoded)), key=lambda i: (decoded[i][0], decoded[i][1].t_start_us, decoded[i][1].seq))
    clf_inputs, windows, audits = [], [], []
    for i in order:
        key, frame, signals, wire_len = decoded[i]
        st = out.states.get(key)
        if st is None:
            st = get_state(key)
        st, res = process_frame(st, frame, signals, wire_len, feats[i])
        out.states[key] = st
        if res.replay:
            out.replays += 1
            continue
        out.late += int(res.late)
        out.gaps += res.gap
        out.points.extend(res.points)
        if waveform_hz:
            out.strip_points.extend(waveform_points(frame, signals, waveform_hz))
        if res.classify is not None:
            clf_inputs.append(res.classify)
        if res.audit is not None:
            audits.append((key, res.audit))
        windows.append((key, res))
        out.written.append(frame.window_end_us)
    clf_points, results, out.rhythm_decisions, out.beats_classified = classifiers.run(clf_inputs)
    out.points.extend(clf_points)
    cases = [c for _, c in audits]
    scored = audit.score(cases, classifiers.task_model, classifiers.beat, audit_predictor)
    out.audits = len(audits)
    for (key, c), f in zip(audits, scored):
        if not slack_correction:
            continue
        offset = audit.update_slack(out.states[key], c, f.get("observed"))
        if offset is not None:
            out.slack_updates[int(c.bed)] = offset
        if c.predicted is not None:
            f["slack"] = out.states[key].slack_sent  # the bed's correction after this audit
    out.points.extend(audit.points(cases, scored))
    by_input = {id(c): r for c, r in zip(clf_inputs, results)}
    alarm_states: dict = {}
    for key, res in windows:
        ev = res.evidence
        if ev is None:  # a late window: its stream has moved on; alarms follow the live stream
            continue
        p_af, classified = by_input.get(id(res.classify), (None, []))
        ast = alarm_states.get(key)
        if ast is None:
            ast = alarm_states[key] = al.AlarmState.from_dict(out.states[key].alarms)
        beats = [(t, None) for t in ev.beats_ms] + list(classified)
        conf = conditions or al.DEFAULT_CONDITIONS
        th = thresholds(ev.bed) if callable(thresholds) else thresholds
        events = al.step(ev.bed, ast, al.Evidence(ev.t_end_ms, ev.window_ms, ev.hr_bpm, ev.sqi, beats, p_af,
                                                  ev.gap, (recent_windows or {}).get(key)), th, conf)
        out.alarm_events.extend(events)
        out.points.extend(alarm_points(events))
        open_ = ast.open_alarms()
        highest = max((PRIORITY_CODE[conf[c].priority] for c in open_), default=0)
        out.points.append(line("alarm_level", {"bed": str(ev.bed)}, {"highest": highest, "open": len(open_)},
                               ev.t_end_ms - ev.window_ms))
        if hold is not None or out.states[key].hold_level >= 0 or out.states[key].manual_until_ms:
            change = hold_step(out.states[key], open_, ev.t_end_ms, hold)
            if change is not None:
                out.hold_updates[int(ev.bed)] = (*change, hold_by(out.states[key]))
                out.points.append(line("fidelity_hold", {"bed": str(ev.bed)},
                                       {"on": int(change[0] is not None),
                                        "max_level": -1 if change[0] is None else change[0], "why": change[1]},
                                       ev.t_end_ms - ev.window_ms))
    for key, ast in alarm_states.items():
        out.states[key].alarms = ast.to_dict()
    return out


def new_state(raw: bytes | None) -> BedState:
    return BedState.from_bytes(raw)
