"""The alarm model: onset delay, hysteresis, latching, de-duplication, acknowledgement and
escalation, and the conditions' definitions, on hand-made evidence."""

import json
import re

import numpy as np
import pytest

from processors.alarms import (AlarmState, Evidence, Thresholds, acknowledge, check_limits, discharge, rr_entropy,
                              rr_irregularity, s_share, step)

W = 2000


def _run(windows, st=None, bed=1):
    st = st or AlarmState()
    events = []
    for ev in windows:
        events += step(bed, st, ev)
    return st, events


def _sinus(t0, n, hr=75, sqi=0.9, cls="N", p_af=0.0):
    out = []
    rr = int(60000 / hr)
    for k in range(n):
        end = t0 + (k + 1) * W
        beats = [(b, cls) for b in range(end - W + rr // 2, end, rr)]
        out.append(Evidence(end, W, hr, sqi, beats, p_af))
    return out


# RR intervals of an irregularly irregular rhythm (ms), repeated: median successive difference
# over median interval ~ 0.33
AF_RR = [620, 910, 540, 780, 1010, 600, 850, 500, 720, 960, 580, 830]


def _af(t0, n, p_af=0.9, cls="N"):
    """n windows of an irregular rhythm whose beats are all of class ``cls``."""
    out, b, k = [], t0 + 300, 0
    for w in range(n):
        end = t0 + (w + 1) * W
        beats = []
        while b < end:
            beats.append((b, cls))
            b += AF_RR[k % len(AF_RR)]
            k += 1
        out.append(Evidence(end, W, 80, 0.9, beats, p_af))
    return out


def test_asystole_after_four_silent_seconds_latches_until_acknowledged():
    pre = _sinus(0, 5)
    flat = [Evidence(10_000 + (k + 1) * W, W, 0.0, 0.9, []) for k in range(4)]
    st, ev = _run(pre + flat)
    act = [e for e in ev if e.condition == "asystole"]
    assert [e.state for e in act] == ["active"]
    assert act[0].priority == "high"
    last_beat = max(b for w in pre for b, _ in w.beats)
    assert act[0].t_ms - last_beat >= 4000 and act[0].t_ms - last_beat <= 4000 + W
    # beats return: the condition clears but the high-priority alarm stays until acknowledged
    st, ev = _run(_sinus(18_000, 6), st)
    assert [e.state for e in ev if e.condition == "asystole"] == ["cleared"]
    assert st.open_alarms()["asystole"] == "active"
    ack = acknowledge(1, st, "asystole", "nurse-7", 31_000)
    assert [e.state for e in ack] == ["acknowledged", "resolved"] and ack[0].by == "nurse-7"
    assert "asystole" not in st.open_alarms()


def test_no_asystole_on_a_lead_off_signal():
    pre = _sinus(0, 5)
    off = [Evidence(10_000 + (k + 1) * W, W, None, 0.1, []) for k in range(6)]
    _, ev = _run(pre + off)
    assert not [e for e in ev if e.condition == "asystole"]
    tech = [e for e in ev if e.condition == "signal_quality"]
    assert tech and tech[0].priority == "technical" and tech[0].state == "active"


def test_ventricular_run_of_three_fast_beats_alarms_once_per_episode_as_nonsustained_vt():
    ws = _sinus(0, 3)
    ws.append(Evidence(8000, W, 140, 0.9, [(6300, "N"), (6700, "V"), (7100, "V"), (7500, "V")]))
    ws.append(Evidence(10000, W, 140, 0.9, [(8200, "N"), (8600, "V"), (9400, "N")]))
    st, ev = _run(ws + _sinus(10_000, 2))
    ns = [e for e in ev if e.condition == "nsvt"]
    assert [e.state for e in ns] == ["active"], ns
    assert ns[0].priority == "medium" and "run of 3 ventricular beats" in ns[0].why
    assert not [e for e in ev if e.condition == "vtach"]  # 3 beats < the VT run limit (5)


def test_a_run_reaching_the_vt_run_limit_raises_high_priority_vt_instead():
    ws = _sinus(0, 3)
    ws.append(Evidence(8000, W, 140, 0.9, [(6300, "N"), (6700, "V"), (7100, "V"), (7500, "V")]))
    ws.append(Evidence(10000, W, 140, 0.9, [(7900, "V"), (8300, "V"), (8700, "V"), (9400, "N")]))
    st, ev = _run(ws + _sinus(10_000, 2))
    vt = [e for e in ev if e.condition == "vtach"]
    assert [e.state for e in vt] == ["active"] and vt[0].priority == "high" and vt[0].t_ms == 10_000
    assert "run of 6 ventricular beats" in vt[0].why
    ns = [e for e in ev if e.condition == "nsvt"]
    assert ns[0].state == "active" and ns[0].t_ms == 8000  # the first 3 beats, before VT was reached
    # a bed configured for VT from 3 beats alarms high priority at once
    st3 = AlarmState()
    ev3 = [e for w in ws for e in step(1, st3, w, Thresholds(vtach_beats=3))]
    assert [(e.condition, e.t_ms) for e in ev3 if e.condition in ("vtach", "nsvt")] == [("vtach", 8000)]


def test_slow_ventricular_beats_are_not_vtach_but_count_as_ectopy():
    ws = []
    for k in range(30):  # one isolated V beat every window: 30 per minute, never a fast run
        end = (k + 1) * W
        ws.append(Evidence(end, W, 60, 0.9, [(end - 1500, "N"), (end - 500, "V")]))
    _, ev = _run(ws)
    assert not [e for e in ev if e.condition == "vtach"]
    ect = [e for e in ev if e.condition == "ectopy"]
    assert ect[0].state == "active" and ect[0].priority == "low"


def test_af_needs_thirty_seconds_and_resolves_with_hysteresis():
    st, ev = _run(_af(0, 11))  # decisions from t=2 s, each covering the last 10 s
    af = [e for e in ev if e.condition == "afib"]
    assert [e.state for e in af] == ["active"] and af[0].t_ms == 22_000  # 30 s of AF by then
    st, ev = _run(_sinus(22_000, 20, p_af=0.05), st)
    assert [e.state for e in ev if e.condition == "afib"] == ["resolved"]
    res = [e for e in ev if e.condition == "afib"][0]
    assert res.t_ms - 22_000 >= 20_000  # absent for the clear delay


def _afib_windows(beats):
    """40 windows of good signal whose rhythm decisions all say AF (0.9), with these beats."""
    return [Evidence(end, W, 80, 0.9, [b for b in beats if end - W <= b[0] < end], 0.9)
            for end in range(W, 41 * W, W)]


def _afib_events(ws, th):
    st, ev = AlarmState(), []
    for w in ws:
        ev += step(1, st, w, th)
    return [e for e in ev if e.condition == "afib"]


def test_rr_irregularity_leaves_out_intervals_next_to_ectopic_beats():
    regular = [[i * 800, "N"] for i in range(20)]
    assert rr_irregularity(regular) == (0.0, 18)
    irregular = [[sum(AF_RR[:i]), "N"] for i in range(len(AF_RR) + 1)]
    irr, pairs = rr_irregularity(irregular)
    assert pairs == len(AF_RR) - 1 and 0.25 < irr < 0.5
    # ventricular bigeminy: short-long pairs, but every interval touches a V beat
    t, big = 0, []
    for i in range(20):
        big.append([t, "V" if i % 2 else "N"])
        t += 500 if i % 2 == 0 else 1100
    assert rr_irregularity(big) == (None, 0)
    # one premature beat in sinus rhythm: its two intervals are left out, the rest is regular
    sinus = [[i * 800 - (300 if i == 10 else 0), "S" if i == 10 else "N"] for i in range(20)]
    irr, pairs = rr_irregularity(sinus)
    assert irr == 0.0 and pairs == 15


def test_the_rr_irregularity_limit_keeps_a_regular_rhythm_from_an_af_alarm():
    """With ``afib_irr`` set, the rhythm model's AF probability is high, but the RR intervals are
    regular (sinus), or irregular only through ventricular bigeminy: no AF alarm; the same
    probability over an irregular rhythm alarms. Without it (``afib_irr=0``) the probability
    decides. It is on by default."""
    assert Thresholds().afib_irr == 0.05
    gate = Thresholds(afib_irr=0.05)
    windows, run = _afib_windows, _afib_events

    sinus = windows([(300 + 800 * i, "N") for i in range(100)])
    assert not run(sinus, gate)
    assert [e.state for e in run(sinus, Thresholds(afib_irr=0.0))] == ["active"]
    beats = [(300 + 1500 * i + (450 if v else 0), "V" if v else "N") for i in range(27) for v in (0, 1)]
    assert not run(windows(beats), gate)
    af = run(_af(0, 20), gate)
    assert [e.state for e in af] == ["active"] and "RR irregularity 0.3" in af[0].why


def test_rr_entropy_tells_random_intervals_from_repeating_ones():
    rng = np.random.default_rng(0)
    af = np.cumsum(rng.uniform(400, 1000, 40))
    bigeminy = np.cumsum(np.tile([600, 900], 20))
    sinus = np.cumsum(800 + rng.normal(0, 10, 40))
    e_af, e_big, e_sinus = (rr_entropy(list(t)) for t in (af, bigeminy, sinus))
    assert e_af > 1.5 and e_big < 0.5 and e_sinus < 0.5
    # COSEn (Lake & Moorman) is this minus ln(2 x 30 ms); by hand for a short series
    rr = np.array([0.8, 0.6, 0.8, 0.6, 0.8, 0.6, 0.8, 0.61, 0.9])
    t = np.concatenate([[0.0], np.cumsum(rr)]) * 1000
    m1 = sum(abs(rr[i] - rr[j]) <= 0.03 for i in range(8) for j in range(i + 1, 8))
    m2 = sum(abs(rr[i] - rr[j]) <= 0.03 and abs(rr[i + 1] - rr[j + 1]) <= 0.03 for i in range(8) for j in range(i + 1, 8))
    assert rr_entropy(list(t)) == pytest.approx(-np.log(m2 / m1) - np.log(rr.mean()))
    assert rr_entropy(list(t[:8])) is None  # 7 intervals: too few
    assert rr_entropy(list(np.cumsum([500, 900, 650, 1200, 580, 1010, 760, 840, 430]))) == float("inf")


def test_the_rr_entropy_limit_is_opt_in_and_keeps_a_repeating_pattern_from_an_af_alarm():
    """Premature beats read as normal can make a rhythm irregular enough for ``afib_irr``; with
    ``afib_entropy`` set the intervals must also be random. Off by default."""
    assert Thresholds().afib_entropy == 0.0
    windows, run = _afib_windows, _afib_events

    # sinus at 1,100 ms with an atrial premature beat (called N) after every second beat
    t, beats = 300, []
    for i in range(60):
        beats.append((t, "N"))
        t += 600 if i % 3 == 2 else (1100 if i % 3 == 0 else 1000)
    assert [e.state for e in run(windows(beats), Thresholds())] == ["active"]  # irregular enough
    gate = Thresholds(afib_entropy=0.75)
    assert not run(windows(beats), gate)
    # atrial fibrillation: random intervals (the `_af` helper's repeat a 12-interval cycle)
    rr = np.random.default_rng(1).uniform(450, 1000, 120)
    af = run(windows([(300 + int(t), "N") for t in np.concatenate([[0], np.cumsum(rr)])]), gate)
    assert [e.state for e in af] == ["active"] and "RR entropy" in af[0].why


def test_doubtful_normal_calls_can_be_left_out_of_the_irregularity():
    """Atrial premature beats the beat model calls N with doubt make a sinus rhythm read
    irregular; with ``afib_n_min_p`` an N call below that probability breaks the triples."""
    assert Thresholds().afib_n_min_p == 0.0
    t, beats = 300, []
    for i in range(60):  # sinus at 1,000-1,100 ms, every third beat premature (called N at 0.6)
        premature = i % 3 == 2
        beats.append((t, "N", 0.6 if premature else 0.99))
        t += 600 if premature else (1100 if i % 3 == 0 else 1000)
    assert [e.state for e in _afib_events(_afib_windows(beats), Thresholds())] == ["active"]
    assert not _afib_events(_afib_windows(beats), Thresholds(afib_n_min_p=0.85))
    # atrial fibrillation called N with confidence still alarms
    rr = np.random.default_rng(2).uniform(450, 1000, 120)
    af = [(300 + int(x), "N", 0.98) for x in np.concatenate([[0], np.cumsum(rr)])]
    ev = _afib_events(_afib_windows(af), Thresholds(afib_n_min_p=0.85))
    assert [e.state for e in ev] == ["active"]
    with pytest.raises(ValueError, match="probability"):
        check_limits({"afib_n_min_p": 1.5}, "limits")


def test_a_share_of_supraventricular_calls_can_hold_the_af_alarm():
    """With ``afib_s_max`` set (off by default), AF needs at most that share of the last
    ``afib_s``'s beats called S (`s_share`): a stretch of atrial premature beats that the beat model
    finds, irregular among the normal beats left, does not alarm; AF with a few S calls does."""
    assert Thresholds().afib_s_max == 0.0
    assert s_share([[i, "N"] for i in range(9)]) is None
    assert s_share([[i, "S" if i % 4 == 0 else "N"] for i in range(20)]) == pytest.approx(0.25)
    rng = np.random.default_rng(3)
    rr = rng.uniform(450, 1000, 120)
    t = np.concatenate([[0], np.cumsum(rr)])
    # irregular intervals, two beats in three called S: not AF under the limit
    apb = [(300 + int(x), "N" if i % 3 == 0 else "S") for i, x in enumerate(t)]
    assert [e.state for e in _afib_events(_afib_windows(apb), Thresholds(afib_irr=0.0))] == ["active"]
    assert not _afib_events(_afib_windows(apb), Thresholds(afib_irr=0.0, afib_s_max=0.5))
    af = [(300 + int(x), "S" if i % 10 == 0 else "N") for i, x in enumerate(t)]
    ev = _afib_events(_afib_windows(af), Thresholds(afib_s_max=0.5))
    assert [e.state for e in ev] == ["active"] and "S share 0.1" in ev[0].why
    with pytest.raises(ValueError, match="at most 1"):
        check_limits({"afib_s_max": 1.5}, "limits")
    assert check_limits({"afib_s_max": 0}, "limits") == {"afib_s_max": 0.0}


def test_brady_needs_its_onset_delay_and_per_bed_thresholds():
    st, ev = _run(_sinus(0, 4, hr=35))
    assert not [e for e in ev if e.condition == "brady"]  # 8 s < 10 s onset delay
    st, ev = _run(_sinus(8000, 2, hr=35), st)
    assert [e.state for e in ev if e.condition == "brady"] == ["active"]
    st2 = AlarmState()
    ev2 = []
    for w in _sinus(0, 8, hr=35):
        ev2 += step(2, st2, w, Thresholds(brady_bpm=30))
    assert not [e for e in ev2 if e.condition == "brady"]


def test_a_discharge_resolves_every_open_alarm_and_the_next_stay_starts_clean():
    """Discharging a bed resolves its open alarms (a latched one whose condition has gone and an
    acknowledged one alike, by whoever discharged), forgets the evidence of the stay, and keeps
    each condition's episode count so the next patient's alarms get new event ids."""
    pre = _sinus(0, 5)
    flat = [Evidence(10_000 + (k + 1) * W, W, 0.0, 0.9, []) for k in range(4)]
    st, _ = _run(pre + flat + _sinus(18_000, 6))  # asystole: latched, condition gone
    st, _ = _run(_af(30_000, 20), st)
    acknowledge(1, st, "afib", "nurse", 70_000)
    assert st.open_alarms() == {"asystole": "active", "afib": "acknowledged"}
    episodes = {k: c.episode for k, c in st.conditions.items()}
    fresh, ev = discharge(1, st, "dr-adt", 71_000)
    assert sorted((e.condition, e.state, e.by, e.t_ms) for e in ev) == [
        ("afib", "resolved", "dr-adt", 71_000), ("asystole", "resolved", "dr-adt", 71_000)]
    assert all(e.why == "patient discharged" for e in ev)
    assert ({e.condition: e.episode for e in ev} == {"afib": episodes["afib"], "asystole": episodes["asystole"]})
    assert fresh.open_alarms() == {} and fresh.af_hist == [] and fresh.classified == [] and fresh.last_beat_ms is None
    assert discharge(1, fresh, "dr-adt", 72_000)[1] == []  # nothing left to resolve
    # the next patient: the same condition is a new episode, whose event ids differ from the last stay's
    fresh = AlarmState.from_dict(fresh.to_dict())
    _, ev2 = _run(_sinus(100_000, 5) + [Evidence(110_000 + (k + 1) * W, W, 0.0, 0.9, []) for k in range(4)], fresh)
    (new,) = [e for e in ev2 if e.condition == "asystole"]
    assert new.state == "active" and new.episode == episodes["asystole"] + 1


def test_unacknowledged_high_priority_escalates_once_and_acknowledging_stops_it():
    pre = _sinus(0, 5)
    flat = [Evidence(10_000 + (k + 1) * W, W, 0.0, 0.9, []) for k in range(25)]
    _, ev = _run(pre + flat)
    assert [e.state for e in ev if e.condition == "asystole"] == ["active", "escalated"]
    st, ev = _run(pre + flat[:3])
    st, ev = _run(flat[3:4], st)
    acknowledge(1, st, "asystole", "nurse", flat[3].t_end_ms)
    st, ev = _run(flat[4:], st)
    assert "escalated" not in [e.state for e in ev if e.condition == "asystole"]


def test_state_survives_serialisation():
    gate = Thresholds(afib_irr=0.05)
    st = AlarmState()
    for w in _af(0, 10):
        step(1, st, w, gate)
    st2 = AlarmState.from_dict(st.to_dict())
    assert st2.to_dict() == st.to_dict() and st2.classified == st.classified
    # the beats are stored packed (first time, gaps, one letter per class); the pairs form of
    # states written before that still loads
    packed = st.to_dict()["cb"]
    assert packed[0] == st.classified[0][0] and packed[2] == "".join(b[1] for b in st.classified)
    old = {**st.to_dict(), "cb": [list(b) for b in st.classified]}
    assert AlarmState.from_dict(old).classified == st.classified
    a = step(1, st, _af(20_000, 1)[0], gate)
    b = step(1, st2, _af(20_000, 1)[0], gate)
    assert a == b and [e.condition for e in a] == ["afib"]


def test_one_odd_rhythm_decision_does_not_reset_an_af_episode():
    ws = _af(0, 16)
    ws[8] = Evidence(ws[8].t_end_ms, W, 75, 0.9, ws[8].beats, 0.1)  # one decision says "not AF"
    _, ev = _run(ws)
    assert [e.state for e in ev if e.condition == "afib"] == ["active"]


def test_uncertain_ventricular_calls_do_not_make_a_run():
    ws = _sinus(0, 3)
    ws.append(Evidence(8000, W, 140, 0.9, [(6700, "V", 0.6), (7100, "V", 0.7), (7500, "V", 0.55)]))
    _, ev = _run(ws + _sinus(8000, 2))
    assert not [e for e in ev if e.condition in ("vtach", "nsvt")]
    ws[-1] = Evidence(8000, W, 140, 0.9, [(6700, "V", 0.97), (7100, "V", 0.95), (7500, "V", 0.99)])
    _, ev = _run(ws + _sinus(8000, 2))
    assert [e.state for e in ev if e.condition == "nsvt"] == ["active"]


def test_frame_flood_counts_only_windows_of_the_present_beyond_the_factor():
    st = AlarmState()
    ok = Evidence(10_000, W, 70, 0.9, [(9000, "N")], recent_windows=5)
    assert not [e for e in step(1, st, ok) if e.condition == "frame_flood"]
    flood = Evidence(12_000, W, 70, 0.9, [(11000, "N")], recent_windows=16)  # > 3 x 5 per 10 s
    ev = [e for e in step(1, st, flood) if e.condition == "frame_flood"]
    assert [(e.state, e.priority) for e in ev] == [("active", "technical")] and "16 windows" in ev[0].why
    offline = Evidence(14_000, W, 70, 0.9, [(13000, "N")])  # replays do not count arrivals
    assert not [e for e in step(2, AlarmState(), offline) if e.condition == "frame_flood"]


def test_device_silent_is_raised_by_the_timer_and_resolved_by_the_next_window():
    from processors.alarms import link_step

    st = AlarmState()
    ev = link_step(4, st, "device_silent", True, "no window for 12 s", 30_000)
    assert [(e.condition, e.state, e.priority) for e in ev] == [("device_silent", "active", "technical")]
    assert link_step(4, st, "device_silent", True, "no window for 14 s", 32_000) == []  # one per episode
    back = step(4, st, Evidence(34_000, W, 70, 0.9, [(33_000, "N")]))
    assert [(e.condition, e.state) for e in back if e.condition == "device_silent"] == [("device_silent", "resolved")]


def test_alarm_config_overrides_per_condition_and_rejects_nonsense():
    from processors.alarms import conditions_from

    conf = conditions_from('{"tachy": {"onset_s": 5}, "seq_gap": {"priority": "high", "escalate_after_s": 4}}')
    assert conf["tachy"].onset_s == 5 and conf["tachy"].priority == "medium"
    assert conf["seq_gap"].priority == "high" and conf["seq_gap"].escalate_after_s == 4
    for bad in ('{"nope": {}}', '{"tachy": {"volume": 3}}', '{"tachy": {"priority": "urgent"}}', "[1]", "{"):
        with pytest.raises(ValueError):
            conditions_from(bad)


def test_an_uncertain_call_inside_a_run_neither_breaks_it_nor_slows_its_rate():
    # six beats 0.5 s apart (120 bpm); the fourth is an uncertain ventricular call (p < v_min_p)
    run = [(6000, "V", 0.99), (6500, "V", 0.99), (7000, "V", 0.99), (7500, "V", 0.6), (8000, "V", 0.99),
           (8500, "V", 0.99)]
    ws = _sinus(0, 3) + [Evidence(9000, W, 120, 0.9, run)]
    _, ev = _run(ws + _sinus(9000, 2))
    vt = [e for e in ev if e.condition == "vtach"]
    assert [e.state for e in vt] == ["active"], ev
    assert "run of 5 ventricular beats at 120 bpm" in vt[0].why  # 5 beats over 2.5 s: 6 beats' rate
    # an uncertain non-ventricular call does not break the run either, but is no beat of its rate
    run[3] = (7500, "S", 0.7)
    _, ev = _run(_sinus(0, 3) + [Evidence(9000, W, 120, 0.9, run)] + _sinus(9000, 2))
    assert not [e for e in ev if e.condition == "vtach"]  # 5 V beats over 2.5 s: 96 bpm
    # a confident non-ventricular call does break it: two runs of 3, neither reaches VT
    run[3] = (7500, "N", 0.98)
    _, ev = _run(_sinus(0, 3) + [Evidence(9000, W, 120, 0.9, run)] + _sinus(9000, 2))
    assert not [e for e in ev if e.condition == "vtach"]
    assert [e.state for e in ev if e.condition == "nsvt"] == ["active"]


def test_uncertain_ventricular_calls_count_toward_a_run_only_from_v_run_count_p():
    # six beats 0.5 s apart; the fourth an uncertain ventricular call: 5 confident + 1 uncertain
    run = [(6000, "V", 0.99), (6500, "V", 0.99), (7000, "V", 0.99), (7500, "V", 0.6), (8000, "V", 0.99),
           (8500, "V", 0.99)]
    ws = _sinus(0, 3) + [Evidence(9000, W, 120, 0.9, run)] + _sinus(9000, 2)

    def vt(**limits):
        st, events = AlarmState(), []
        for ev in ws:
            events += step(1, st, ev, Thresholds(vtach_beats=6, **limits))
        return [e for e in events if e.condition == "vtach"], st

    assert Thresholds().v_run_count_p == 0.7
    assert vt()[0] == []  # 0.6 is below the default limit: the run is five beats long
    got, st = vt(v_run_count_p=0.5)
    assert [e.state for e in got] == ["active"] and "run of 6 ventricular beats at 120 bpm" in got[0].why
    assert st.v_run_counted == [] and AlarmState.from_dict(st.to_dict()) == st  # the run is over
    run[3] = (7500, "V", 0.8)
    assert [e.state for e in vt()[0]] == ["active"]  # 0.8: counted by default
    assert vt(v_run_count_p=0)[0] == []  # 0: never counted (the rule before 2026-12-05)
    # an uncertain call after the last confident one is no beat of the run
    run[3], run[5] = (7500, "V", 0.99), (8500, "V", 0.6)
    assert vt(v_run_count_p=0.5)[0] == []
    with pytest.raises(ValueError):
        check_limits({"v_run_count_p": 1.5})
    assert check_limits({"v_run_count_p": 0}) == {"v_run_count_p": 0.0}  # 0: off


def test_alarm_limits_per_ward_and_bed_override_the_defaults():
    from processors.alarms import limits_from
    from processors.wards import WardMap

    wards = WardMap.parse("icu:1-10,cardio:11-20")
    spec = json.dumps({"default": {"tachy_bpm": 130}, "wards": {"cardio": {"vtach_beats": 3, "tachy_bpm": 150}},
                       "beds": {"12": {"brady_bpm": 35}}})
    lim = limits_from(spec, wards.ward_of, {w for w, _, _ in wards.ranges})
    assert lim(3) == Thresholds(tachy_bpm=130.0)
    assert lim(11) == Thresholds(tachy_bpm=150.0, vtach_beats=3)
    assert lim(12) == Thresholds(tachy_bpm=150.0, vtach_beats=3, brady_bpm=35.0)
    assert limits_from("", wards.ward_of)(12) == Thresholds()
    # bed 12 alarms brady at 38 bpm only if its limit says so: the default bed 3 does, bed 12 does not
    for bed, expect in ((3, ["active"]), (12, [])):
        st, ev = AlarmState(), []
        for w in _sinus(0, 8, hr=38):
            ev += step(bed, st, w, lim(bed))
        assert [e.state for e in ev if e.condition == "brady"] == expect, bed


def test_the_af_rhythm_checks_can_be_switched_off_per_bed():
    """``afib_irr``, ``afib_entropy`` and ``afib_n_min_p`` take 0 for "not required" (docs/alarms.md's
    way to switch the irregularity condition off for a bed); other limits stay strictly positive."""
    assert check_limits({"afib_irr": 0, "afib_entropy": 0, "afib_n_min_p": 0}, "limits") == \
        {"afib_irr": 0.0, "afib_entropy": 0.0, "afib_n_min_p": 0.0}
    sinus = _afib_windows([(300 + 800 * i, "N") for i in range(100)])
    assert not _afib_events(sinus, Thresholds())  # regular: the default irregularity check holds it
    assert [e.state for e in _afib_events(sinus, Thresholds(**check_limits({"afib_irr": 0}, "x")))] == ["active"]


def test_the_api_schema_of_limits_admits_every_default():
    """The alarm API's OpenAPI ``Limits`` schema describes the effective limits it returns: every
    default fits its bounds (the AF rhythm checks' 0 included)."""
    from dataclasses import asdict

    from processors.openapi import document

    props = document()["components"]["schemas"]["Limits"]["properties"]
    for k, v in asdict(Thresholds()).items():
        p = props[k]
        assert v > p["exclusiveMinimum"] if "exclusiveMinimum" in p else v >= p["minimum"], k
        assert v <= p.get("maximum", float("inf")), k
    assert props["afib_irr"]["minimum"] == 0 and props["tachy_bpm"]["exclusiveMinimum"] == 0


@pytest.mark.parametrize("spec, says", [
    ("{", "not JSON"),
    ('{"bed": {}}', '"default", "wards" and/or "beds"'),
    ('{"default": {"tachy": 120}}', "unknown limits ['tachy']"),
    ('{"default": {"tachy_bpm": -5}}', "must be a positive number"),
    ('{"default": {"vtach_beats": 4.5}}', "must be a positive integer"),
    ('{"default": {"tachy_bpm": 0}}', "must be a positive number"),
    ('{"default": {"afib_irr": -0.1}}', "must be 0 (off) or a positive number"),
    ('{"default": {"nsvt_beats": 6}}', "nsvt_beats must not exceed vtach_beats"),
    ('{"default": {"nsvt_beats": 4}, "beds": {"3": {"vtach_beats": 3}}}', "bed 3: nsvt_beats must not exceed"),
    ('{"wards": {"icuu": {"tachy_bpm": 120}}}', "unknown wards ['icuu']"),
    ('{"beds": {"x7": {"tachy_bpm": 120}}}', "'x7' is not a bed number"),
])
def test_malformed_alarm_limits_are_refused_with_a_reason(spec, says):
    from processors.alarms import limits_from
    from processors.wards import WardMap

    wards = WardMap.parse("icu:1-10")
    with pytest.raises(ValueError, match=re.escape(says)):
        limits_from(spec, wards.ward_of, {"icu"})
