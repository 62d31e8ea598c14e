"""`wardstream eval alarms`: MIT-BIH records through the pipeline's own code, scored against the
annotations.

Every record is one bed. Per 2-s window: the device encoder the simulator uses (by default the
Dynamic-Deep device at the deployed bound), the wire format both ways, the worker's batch decode,
then `processors.stages.run_batch` — bed step, QRS, vitals, classifiers, alarm engine — exactly
as the Faust agent runs it, all beds of a step in one batch. No broker is involved: the
transport is tested elsewhere; this measures what the alarms say.

Reference events (from the annotations, at 360 Hz, times in seconds):

* ventricular runs: >= 3 consecutive beats annotated ``V`` whose mean rate exceeds 100 bpm (the
  alarm's own definition; slower idioventricular runs are counted separately, not scored);
* AF episodes: ``(AFIB`` rhythm segments, >= 30 s and >= 60 s;
* for false-alarm accounting: any run of >= 3 V beats (any rate) or annotated ventricular rhythm
  episode (``(VT``, ``(VFL``: ventricular flutter has no beat annotations, only flutter waves, yet a
  ventricular-tachycardia alarm during it is the right life-threatening alarm), AF anywhere, heart
  rate from the annotated beats (median RR over 10 s), pauses of >= 4 s between annotated beats.

A simulated clinician acknowledges every alarm ``ACK_AFTER_S`` after it sounds (a latched alarm
whose condition has gone then resolves; one whose condition persists stays acknowledged until it
clears), so a later event can raise a new episode. An alarm episode (active -> resolved) counts as
detecting a reference event when it is open at some time within the event (or within ``TOL_S``
after its end). An alarm episode is false when no reference event of its kind lies within
``TOL_S`` of its onset. Technical alarms are reported but not scored as false.

Ventricular runs: ``vt_runs`` counts a run as detected by either run alarm (``nsvt``, medium
priority, for 3 to ``vtach_beats`` - 1 beats; ``vtach``, high priority, from ``vtach_beats``);
``vt_runs_high_priority`` (runs of >= ``vtach_beats``) and ``vt_runs_8plus`` only by the
high-priority ``vtach`` alarm. Both run alarms are scored for false alarms against the same
reference; only ``vtach`` counts in ``false_high_priority_per_bed_day``.
``vt_run_list``: every fast run (record, start, beats, rate), whether either alarm and the
high-priority one caught it, and the ECG level each of its windows was sent at (devices that
choose their level per window may send a run's windows at the coarse levels).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace

import numpy as np

log = logging.getLogger(__name__)

TOL_S = 10.0
ACK_AFTER_S = 20.0  # the simulated clinician's response time (before the 30-s escalation)
CLOCK0_US = 1_700_000_000_000_000
SCORED = ("vtach", "nsvt", "afib", "asystole", "brady", "tachy", "ectopy")  # conditions scored against annotations


def _v_runs(times: np.ndarray, syms: np.ndarray, min_beats: int = 3) -> list[tuple[float, float, int, float]]:
    """(start s, end s, beats, mean rate bpm) of every run of consecutive V beats."""
    runs, cur = [], []
    for t, s, b in zip(times, syms, _is_beat(syms)):
        if not b:
            continue
        if s == "V":
            cur.append(t)
            continue
        if len(cur) >= min_beats:
            runs.append(cur)
        cur = []
    if len(cur) >= min_beats:
        runs.append(cur)
    return [(r[0], r[-1], len(r), 60.0 * (len(r) - 1) / max(r[-1] - r[0], 1e-6)) for r in runs]


VENTRICULAR_RHYTHMS = ("(VT", "(VFL")


def _episodes(rec, end_s: float, labels: tuple[str, ...]) -> list[tuple[float, float]]:
    """(start s, end s) of every rhythm segment annotated with one of ``labels``."""
    bounds = np.append(rec.rhythm_times_s, end_s)
    return [(bounds[k], bounds[k + 1]) for k, lab in enumerate(rec.rhythm_labels) if lab in labels]


def _af_episodes(rec, end_s: float) -> list[tuple[float, float]]:
    return _episodes(rec, end_s, ("(AFIB",))


def _open_intervals(events, condition: str, end_s: float) -> list[tuple[float, float, float]]:
    """(opened, closed, t of 'active') per alarm episode of ``condition``, in record seconds."""
    out, start = [], None
    for e in events:
        if e.condition != condition:
            continue
        t = (e.t_ms * 1000 - CLOCK0_US) / 1e6
        if e.state == "active":
            start = t
        elif e.state == "resolved" and start is not None:
            out.append((start, t, start))
            start = None
    if start is not None:
        out.append((start, end_s, start))
    return out


def _is_beat(syms: np.ndarray) -> np.ndarray:
    from wardstream.datasets import BEAT_SYMBOLS

    return np.isin(syms, list(BEAT_SYMBOLS))


def _hr_reference(bt: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Heart rate from annotated beat times ``bt``: median RR over the 10 s before each time."""
    out = np.full(len(at), np.nan)
    for i, t in enumerate(at):
        w = bt[(bt > t - 10) & (bt <= t)]
        if len(w) >= 2:
            out[i] = 60.0 / np.median(np.diff(w))
    return out


def replay(settings, th, signals: dict[str, np.ndarray]) -> tuple[dict, dict, dict, dict, object, dict]:
    """Every signal (ECG in mV at 128 Hz) as one bed through the pipeline's code, all beds of a
    2-s step in one batch: the simulator's device encoder, the wire both ways, the worker's batch
    decode, `processors.stages.run_batch`, a simulated clinician acknowledging every alarm.
    Returns (alarm events, final bed states, windows, the ECG level of each window sent, the
    classifiers, and per window (ECG level, its section's bytes, whether a hold was on)) per name.
    The worker's fidelity holds (`processors.hold`, the settings' ``alarm_hold_*``) reach the
    bed's device before its next window, as the control topic carries them."""
    import torch

    from device_sim.ward import encode_windows, encoder_factory
    from processors.alarms import AlarmState, acknowledge
    from processors.bed import BedState
    from processors.classify import Classifiers
    from processors.hold import HoldPolicy
    from processors.stages import run_batch
    from stream.topics import bed_key
    from stream.wire import Frame, Modality, decode_frame, encode_as_sent
    from wardmodels.wire_codec import decode_frames, register_deployed

    torch.set_num_threads(1)
    register_deployed()
    records = list(signals)
    make = encoder_factory(settings.codec_model, settings.codec_level, settings.sim_encoder,
                           settings.level_policy, settings.dd_bound, settings.eeg_level, settings.dd_predictor)
    beds = {r: i + 1 for i, r in enumerate(records)}
    encs = {r: make() for r in records}
    n_win = {r: len(signals[r]) // 256 for r in records}
    classifiers = Classifiers()
    states: dict = {}
    events = {r: [] for r in records}
    levels: dict[str, list[int]] = {r: [] for r in records}
    acks: list[tuple[int, bytes, str]] = []
    hold = HoldPolicy.from_settings(settings)
    sent: dict[str, list] = {r: [] for r in records}
    for k in range(max(n_win.values())):
        live = [r for r in records if k < n_win[r]]
        chans = encode_windows([encs[r] for r in live], [signals[r][k * 256:(k + 1) * 256] for r in live],
                               [None] * len(live))
        frames = []
        for r, ch in zip(live, chans):
            # as a device sends it: raw sections lossless-coded (the settings'), the sections
            # entropy-coded when that is shorter
            f = Frame(beds[r], k, CLOCK0_US + k * 2_000_000, 128, 256, encs[r].model_id, ch,
                      lossless=settings.raw_lossless)
            raw, _ = encode_as_sent(f, coded=settings.wire_coded)
            frames.append((r, decode_frame(raw), len(raw)))
            levels[r].append(ch[0].level)
            sent[r].append((ch[0].level, frames[-1][1].channel(Modality.ECG).wire_bytes,
                                getattr(encs[r], "max_level", None) is not None))
        rec = decode_frames([f for _, f, _ in frames])
        decoded = [(bed_key(f.bed_id), f, sig, n) for (_, f, n), sig in zip(frames, rec)]
        out = run_batch(decoded, lambda key: states.get(key) or BedState(), classifiers, th,
                        audit_predictor=settings.dd_predictor, hold=hold)
        states.update(out.states)
        for bed, (max_level, _, _) in out.hold_updates.items():  # from the device's next window on
            enc = encs[records[bed - 1]]
            if hasattr(enc, "max_level"):
                enc.max_level = max_level
        by_bed = {beds[r]: r for r in live}
        for e in out.alarm_events:
            events[by_bed[e.bed]].append(e)
            if e.state == "active":
                acks.append((e.t_ms + int(ACK_AFTER_S * 1000), bed_key(e.bed), e.condition))
        # the simulated clinician acknowledges every alarm ACK_AFTER_S after it sounded
        now_ms = (CLOCK0_US + (k + 1) * 2_000_000) // 1000
        due = [a for a in acks if a[0] <= now_ms]
        acks = [a for a in acks if a[0] > now_ms]
        for t_ack, key, cond in due:
            st = states[key]
            ast = AlarmState.from_dict(st.alarms)
            for e in acknowledge(int(key[4:]), ast, cond, "simulated-clinician", t_ack):
                events[by_bed.get(e.bed) or records[e.bed - 1]].append(e)
            st.alarms = ast.to_dict()
        if k % 150 == 0:
            log.info("window %d/%d", k, max(n_win.values()))
    return events, {r: states.get(bed_key(beds[r])) for r in records}, n_win, levels, classifiers, sent


def evaluate(settings, split: str = "test", records: list[str] | None = None,
             limits: dict | None = None) -> dict:
    """``limits``: alarm limits over the `Thresholds` defaults for every bed (checked as
    ``WARDSTREAM_ALARM_LIMITS`` entries are), e.g. ``{"afib_p": 0.6}`` to tune the AF alarm."""
    from processors.alarms import Thresholds, check_limits
    from wardstream import datasets as ds

    over = check_limits(limits or {}, "--limits")
    th = Thresholds(**over)
    if records is None:
        present = ds.mitdb_records_present(settings.data_dir)
        if not present:
            raise ds.DataMissing(f"no MIT-BIH records under {settings.data_dir}/mitdb")
        records = ds.mitdb_records(settings.data_dir, split, paced=False)
        if not records:
            raise ds.DataMissing(f"no MIT-BIH records of split {split!r} (paced ones excluded) under "
                                 f"{settings.data_dir}/mitdb")
    recs = {r: ds.load_mitdb(settings.data_dir, r) for r in records}
    events, _, n_win, levels, classifiers, sent = replay(settings, th, {r: recs[r].ecg_mv for r in records})
    used = {"rhythm": classifiers.rhythm.name, "beat": classifiers.beat.name,
            "rhythm_streaming": classifiers.stream is not None}
    out = {"limits": over, "classifiers": used, **score(recs, events, n_win, levels, settings, th)}
    out["device"].update(_sent_summary(settings, sent))
    return out


def _device_bound(settings) -> float:
    """The bound the replay's level-picking devices ran at: the ward's, else their predictor's own."""
    from device_sim.ward import deployed_bound

    return float(settings.dd_bound) if settings.dd_bound else deployed_bound(settings.codec_model, settings.dd_predictor)


def _sent_summary(settings, by_name: dict) -> dict:
    """The ECG's compression over the replay (vs 16-bit samples, each window's section as sent,
    entropy-coded where that is shorter) and the fidelity holds' share of windows."""
    sent = [w for ws in by_name.values() for w in ws]
    if not sent:
        return {}
    b = np.array([8.0 * w[1] for w in sent])
    return {"ecg_mean_compression_gain": round(float((4096.0 / b).mean()), 3),
            "ecg_aggregate_compression_gain": round(float(4096.0 * len(b) / b.sum()), 3),
            "fidelity_hold": {"seconds": settings.alarm_hold_s, "max_level": settings.alarm_hold_level,
                              "conditions": settings.alarm_hold_conditions,
                              "windows_held": int(sum(w[2] for w in sent))} if settings.alarm_hold_s > 0 else None}


def score(recs: dict, events: dict, n_win: dict, levels: dict, settings, th=None) -> dict:
    """``levels``: per record, the ECG level each window was sent at (`replay`; may be empty)."""
    from processors.alarms import DEFAULT_CONDITIONS, Thresholds

    high = tuple(c for c in SCORED if DEFAULT_CONDITIONS[c].priority == "high")
    vt = {"total": 0, "detected": 0}
    vt5 = {"total": 0, "detected": 0}
    vt8 = {"total": 0, "detected": 0}
    th = th or Thresholds()
    af30 = {"total": 0, "detected": 0}
    af60 = {"total": 0, "detected": 0}
    delays, false_by, false_high, false_list = [], {}, [], []
    missed, run_list = [], []
    per_record = {}
    hours = sum(n * 2 for n in n_win.values()) / 3600.0
    for r, rec in recs.items():
        end_s = n_win[r] * 2.0
        ev = events[r]
        runs = [x for x in _v_runs(rec.beat_times_s, rec.beat_symbols) if x[0] < end_s]
        fast = [x for x in runs if x[3] > 100]
        vt_open = _open_intervals(ev, "vtach", end_s)
        run_open = sorted(vt_open + _open_intervals(ev, "nsvt", end_s), key=lambda o: o[2])
        for s, e, n, rate in fast:
            # any run: the VT or the non-sustained-VT alarm; a long run: the high-priority VT alarm
            hit = [o for o in run_open if o[0] <= e + TOL_S and o[1] >= s]
            hit_high = [o for o in vt_open if o[0] <= e + TOL_S and o[1] >= s]
            vt["total"] += 1
            vt["detected"] += bool(hit)
            for d, k in ((vt5, th.vtach_beats), (vt8, 8)):
                if n >= k:
                    d["total"] += 1
                    d["detected"] += bool(hit_high)
            if hit:
                delays.append(max(0.0, hit[0][2] - s))
            sent = levels.get(r) or []
            # each run, found or not, with the levels its windows went out at: what choosing levels
            # per window (Dynamic-Deep) does to the ventricular-run alarm, run by run
            run_list.append({"record": r, "start_s": round(s, 2), "beats": n, "rate_bpm": round(rate),
                             "detected": bool(hit), "detected_high_priority": bool(hit_high),
                             "ecg_levels": sent[int(s // 2.0):int(e // 2.0) + 1]})
            if n >= 8 and not hit_high:
                missed.append({"record": r, "kind": "vt", "start_s": s, "beats": n, "rate_bpm": round(rate),
                               "nsvt_alarm": bool(hit)})
        afs = [x for x in _af_episodes(rec, end_s) if x[0] < end_s]
        af_open = _open_intervals(ev, "afib", end_s)
        for s, e in afs:
            if e - s < 30:
                continue
            hit = [o for o in af_open if o[0] <= e + TOL_S and o[1] >= s]
            for d in (af30, af60) if e - s >= 60 else (af30,):
                d["total"] += 1
                d["detected"] += bool(hit)
            if hit:
                delays.append(max(0.0, hit[0][2] - s))
            elif e - s >= 60:
                missed.append({"record": r, "kind": "af", "start_s": s, "duration_s": e - s})
        # false alarms per condition
        bt = rec.beat_times_s
        beats = bt[_is_beat(rec.beat_symbols)]
        ref_vt = [(s, e) for s, e, _, _ in runs] + _episodes(rec, end_s, VENTRICULAR_RHYTHMS)
        gaps = np.diff(beats)
        why = {(e.condition, round((e.t_ms * 1000 - CLOCK0_US) / 1e6, 3)): e.why for e in ev if e.state == "active"}
        false_here: dict[str, int] = {}
        for cond in SCORED + ("signal_quality", "seq_gap"):
            for o0, o1, t in _open_intervals(ev, cond, end_s):
                if cond in ("vtach", "nsvt"):
                    true = any(s - TOL_S <= t <= e + TOL_S for s, e in ref_vt)
                elif cond == "afib":
                    true = any(s - TOL_S <= t <= e + TOL_S for s, e in afs)
                elif cond == "asystole":
                    j = np.searchsorted(beats, t)
                    true = bool(len(gaps)) and any(gaps[max(0, j - 3):j + 1] >= 4.0)
                elif cond in ("brady", "tachy"):
                    hr = _hr_reference(beats, np.array([t - 5, t]))
                    hr = hr[np.isfinite(hr)]
                    true = bool(len(hr)) and (hr.min() < th.brady_bpm if cond == "brady" else hr.max() > th.tachy_bpm)
                elif cond == "ectopy":
                    nv = int(((bt > t - 60) & (bt <= t + TOL_S) & (rec.beat_symbols == "V")).sum())
                    true = nv >= 8
                else:
                    true = True  # technical: not scored against annotations
                if not true:
                    false_by[cond] = false_by.get(cond, 0) + 1
                    false_here[cond] = false_here.get(cond, 0) + 1
                    if cond in SCORED:  # each false alarm, why it fired and what the annotations say
                        k = np.searchsorted(rec.rhythm_times_s, t, side="right") - 1
                        near = (bt > t - 30.0) & (bt <= t)
                        false_list.append({"record": r, "condition": cond, "onset_s": round(t, 1),
                                           "duration_s": round(o1 - o0, 1), "why": why.get((cond, round(t, 3)), ""),
                                           "annotated_rhythm": rec.rhythm_labels[k] if k >= 0 else "",
                                           "annotated_beats_30s_before": "".join(rec.beat_symbols[near])})
                    if cond in high:
                        near = (bt > t - 8.0) & (bt < t + 2.0)
                        false_high.append({"record": r, "condition": cond, "onset_s": round(t, 1),
                                           "why": why.get((cond, round(t, 3)), ""),
                                           "annotated_beats_8s_before_to_2s_after": "".join(rec.beat_symbols[near])})
        per_record[r] = {"alarms": {c: len(_open_intervals(ev, c, end_s)) for c in SCORED + ("signal_quality",)},
                         "false_alarms": false_here,
                         "fast_v_runs": len(fast), "af_episodes_30s": sum(1 for s, e in afs if e - s >= 30)}
    bed_days = hours / 24.0
    fhp = sum(false_by.get(c, 0) for c in high)
    return {
        "split_records": list(recs), "hours": round(hours, 2), "bed_days": round(bed_days, 4),
        "device": {"codec_model": settings.codec_model, "level_policy": settings.level_policy,
                   **({"edge_predictor": settings.dd_predictor, "bound": _device_bound(settings)}
                      if settings.level_policy == "dynamic" else {}),
                   "ecg_levels_sent": {str(k): v for k, v in sorted(Counter(x for lv in levels.values() for x in lv).items())}},
        "vt_runs": vt, "vt_run_list": run_list, "vt_runs_high_priority": {"min_beats": th.vtach_beats, **vt5}, "vt_runs_8plus": vt8, "af_episodes": af30, "af_episodes_60s_plus": af60,
        "false_alarms": false_by,
        "false_alarms_per_bed_day": {c: round(n / bed_days, 2) for c, n in false_by.items()},
        "false_high_priority_per_bed_day": round(fhp / bed_days, 2),
        "false_alarm_list": false_list,
        "median_detection_delay_s": float(np.median(delays)) if delays else None,
        "missed_goal_events": missed, "false_high_priority_alarms": false_high, "per_record": per_record,
        "definitions": __doc__,
    }


def threshold_rows(p: np.ndarray, y: np.ndarray, thresholds) -> list[dict]:
    """Alarm at ``p >= threshold`` against boolean truth ``y``: tp / fp / fn / F1 per threshold."""
    rows = []
    for th in thresholds:
        pred = p >= th
        tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
        rows.append({"threshold": round(float(th), 3), "tp": tp, "fp": fp, "fn": fn,
                     "f1": round(2 * tp / max(2 * tp + fp + fn, 1), 4)})
    return rows


def af_threshold_curve(settings) -> dict:
    """The AF alarm's probability threshold against the CinC ``calib`` records (held out from the
    rhythm model's fitting, never the test split): per record of >= ``afib_s`` seconds, the alarm's
    own rule — the median AF probability of the decisions (every 2 s, each over the last 10 s)
    spanning its last ``afib_s`` seconds — against the record's label being AF."""
    import torch

    from processors.alarms import Thresholds
    from wardmodels.classifier import RHYTHM_CLASSES
    from wardmodels.clf_data import cinc_split, record_proba
    from wardmodels.clf_runtime import load_deployed_classifier
    from wardmodels.frontend import FS, filter_record

    torch.set_num_threads(2)
    th = Thresholds()
    cal = cinc_split(settings.data_dir, "calib")
    sig = [filter_record(x) for x in cal.signals]
    keep = [i for i, x in enumerate(sig) if len(x) >= th.afib_s * FS]
    _, per = record_proba(load_deployed_classifier("rhythm"), [sig[i] for i in keep])
    n_dec = int(round((th.afib_s - 10.0) / 2.0)) + 1
    a = RHYTHM_CLASSES.index("A")
    med = np.array([np.median(p[-n_dec:, a]) for p in per])
    y = np.array([cal.labels[i] == "A" for i in keep])
    rows = threshold_rows(med, y, np.arange(0.30, 0.91, 0.05))
    return {"data": "CinC 2017 calib records (held out from fitting)", "records": len(keep),
            "af_records": int(y.sum()), "decisions_per_record": n_dec, "deployed_threshold": th.afib_p,
            "rows": rows, "best_f1": max(rows, key=lambda r: r["f1"])}


def af_irregularity_curve(settings, limits=np.round(np.arange(0.0, 0.201, 0.01), 3), part: str = "calib",
                          entropy_limits=np.round(np.append(0.0, np.arange(0.5, 1.801, 0.05)), 3),
                          n_min_ps=(0.0, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95),
                          s_max=np.round(np.append(0.0, np.arange(0.1, 0.801, 0.05)), 3)) -> dict:
    """The AF alarm's RR-irregularity limit (``afib_irr``) against the CinC ``calib`` records (held
    out from the rhythm model's fitting, never the test split): every record of >= ``afib_s``
    seconds as one bed through the pipeline's code (`replay`: device, wire, decode, QRS, beat and
    rhythm classifiers), then at its end the alarm's own two quantities — the median AF probability
    of the decisions of the last ``afib_s`` - 10 s and the irregularity of the RR intervals between
    normal beats of the last ``afib_s`` (`processors.alarms.rr_irregularity`; unknown when too few
    normal beats: no alarm) — against the record's label being AF. Per limit: the alarm's
    tp / fp / fn / F1 with the deployed ``afib_p`` (limit 0: the irregularity not required);
    ``entropy``: the same per RR-entropy limit (`processors.alarms.rr_entropy` of all beats of the
    last ``afib_s``) on top of the deployed irregularity limit; ``n_min_p``: per N probability a
    beat needs to count as normal in the irregularity (``afib_n_min_p``; a replay each);
    ``s_share``: per largest share of beats called S (``afib_s_max``, `processors.alarms.s_share`;
    unknown: no block) on top of the deployed irregularity limit.
    ``part``: the CinC records (`wardmodels.clf_data.cinc_split`; ``all`` for any directory)."""
    from processors.alarms import AlarmState, Thresholds, rr_entropy, rr_irregularity, s_share
    from wardmodels.clf_data import cinc_split
    from wardmodels.frontend import FS

    th = Thresholds()
    cal = cinc_split(settings.data_dir, part)
    keep = [i for i, x in enumerate(cal.signals) if len(x) >= th.afib_s * FS]
    if not keep:
        raise ValueError(f"no CinC {part} record of >= {th.afib_s:.0f} s under {settings.data_dir}")
    names = [str(cal.records[i]) for i in keep]
    signals = {n: cal.signals[i] for n, i in zip(names, keep)}
    label = np.array([str(cal.labels[i]) for i in keep])

    def at_end(t):
        """Each record replayed under ``t``: (median AF probability, irregularity, entropy, S share)
        at its end."""
        _, states, _, _, clfs, _ = replay(settings, t, signals)
        rows = []
        for n in names:
            ast = AlarmState.from_dict(states[n].alarms)
            v, _ = rr_irregularity(ast.classified)
            e = rr_entropy([b[0] for b in ast.classified])
            sh = s_share(ast.classified)
            rows.append((float(np.median([h[1] for h in ast.af_hist])) if ast.af_hist else 0.0,
                         np.nan if v is None else v, np.inf if e is None else e,  # unknown entropy: no block
                         0.0 if sh is None else sh))  # unknown share: no block
        return np.array(rows).T, clfs

    (med, irr, ent, share), classifiers = at_end(th)
    y = label == "A"

    def row(alarm: np.ndarray, value: float, **extra) -> dict:
        """The alarm (one boolean per record) against the AF labels at one limit value."""
        r = threshold_rows(alarm.astype(float), y, [0.5])[0]
        return {**r, "threshold": float(value), **extra,
                "fp_by_label": {c: int((alarm & (label == c)).sum()) for c in sorted(set(label)) if c != "A"}}

    rows = [row((med >= th.afib_p) & ((irr >= lim) if lim > 0 else True), lim) for lim in limits]
    cand = (med >= th.afib_p) & (irr >= th.afib_irr)

    def on_top(values: np.ndarray, limits, holds) -> tuple[list[dict], list[dict], dict]:
        """A limit on ``values`` on top of the deployed irregularity limit (0: off; ``holds(values,
        limit)``: the records it lets alarm): its rows, those keeping every AF alarm of the
        candidates, and the candidates' values."""
        rows_ = [row(cand & (holds(values, lim) if lim > 0 else True), lim) for lim in limits]
        return rows_, [r for r in rows_ if r["tp"] == rows_[0]["tp"]], {
            "af_candidates": sorted(round(float(v), 3) for v in values[cand & y]),
            "false_candidates": sorted(round(float(v), 3) for v in values[cand & ~y])}

    # the RR-entropy limit (`afib_entropy`): at least this
    entropy_rows, keeps_all, ent_cands = on_top(ent, entropy_limits, lambda v, lim: v >= lim)
    # the N probability a beat needs to count as normal in the irregularity (`afib_n_min_p`):
    # every record replayed again under each value (the beats' letters are made in the replay)
    n_rows = []
    for p_min in n_min_ps:
        (m2, i2, _, _), _ = (at_end(replace(th, afib_n_min_p=float(p_min))) if p_min > 0
                             else ((med, irr, ent, share), None))
        n_rows.append(row((m2 >= th.afib_p) & (i2 >= th.afib_irr), p_min,
                          irregularity_unknown=int((~np.isfinite(i2)).sum())))
    no_loss = [r for r in n_rows if r["tp"] >= n_rows[0]["tp"] and r["f1"] >= n_rows[0]["f1"]]
    # the largest share of S-called beats (`afib_s_max`): at most this
    s_rows, s_keep, s_cands = on_top(share, s_max, lambda v, lim: v <= lim)
    af_irr = irr[y & np.isfinite(irr)]
    prob_fp = (med >= th.afib_p) & ~y
    return {"data": f"CinC 2017 {part} records" + (" (held out from fitting)" if part == "calib" else ""),
            "records": len(keep), "af_records": int(y.sum()), "afib_p": th.afib_p, "deployed_limit": th.afib_irr,
            "classifiers": {"rhythm": classifiers.rhythm.name, "beat": classifiers.beat.name},
            "device": {"level_policy": settings.level_policy, "codec_model": settings.codec_model},
            "af_irregularity_percentiles": {str(q): round(float(np.percentile(af_irr, q)), 4)
                                            for q in (1, 2, 5, 10, 25, 50)} if len(af_irr) else {},
            "af_irregularity_unknown": int((y & ~np.isfinite(irr)).sum()),
            "non_af_over_afib_p_irregularity": sorted(round(float(v), 4) for v in irr[prob_fp & np.isfinite(irr)]),
            "rows": rows, "best_f1": max(rows, key=lambda r: (r["f1"], -r["threshold"])),
            "entropy": {"deployed_limit": th.afib_entropy, "with_afib_irr": th.afib_irr, **ent_cands,
                        "rows": entropy_rows,
                        "best_f1": max(entropy_rows, key=lambda r: (r["f1"], -r["threshold"])),
                        "largest_keeping_every_af_alarm": max(keeps_all, key=lambda r: r["threshold"])},
            "n_min_p": {"deployed": th.afib_n_min_p, "with_afib_irr": th.afib_irr, "rows": n_rows,
                        "largest_without_loss": max(no_loss, key=lambda r: r["threshold"])},
            "s_share": {"deployed": th.afib_s_max, "with_afib_irr": th.afib_irr, **s_cands,
                        "rows": s_rows,
                        "smallest_keeping_every_af_alarm": min((r for r in s_keep if r["threshold"] > 0),
                                                               key=lambda r: r["threshold"], default=None)}}
