"""The fidelity hold (`processors.hold`): a bed with an open ventricular or asystole alarm gets its
ECG at full fidelity — the worker's decision, its state, its control messages and the device's
obedience, offline through the real devices, wire format, worker batch and control-message parser."""

from __future__ import annotations

import numpy as np
import pytest

from processors.bed import BedState
from processors.hold import HoldPolicy, parse_conditions, step


def test_a_ventricular_alarm_starts_the_hold_and_it_ends_its_seconds_after_the_last():
    pol = HoldPolicy(seconds=10.0, max_level=1)
    st = BedState()
    assert step(st, {"afib": "active", "tachy": "active"}, 2_000, pol) is None  # not a trigger
    assert step(st, {"nsvt": "active", "afib": "active"}, 4_000, pol) == (1, "nsvt")
    assert (st.hold_level, st.hold_until_ms) == (1, 14_000)
    assert step(st, {"nsvt": "acknowledged", "ectopy": "active"}, 6_000, pol) is None  # already on: nothing to send
    assert st.hold_until_ms == 16_000
    assert step(st, {}, 14_000, pol) is None  # within 10 s of the last open one
    assert step(st, {}, 16_000, pol) == (None, "")
    assert (st.hold_level, st.hold_until_ms) == (-1, 0)
    assert step(st, {}, 18_000, pol) is None


def test_the_hold_survives_a_worker_restart_and_ends_with_the_stay():
    pol = HoldPolicy(seconds=60.0, max_level=0)
    st = BedState()
    assert step(st, {"asystole": "active"}, 2_000, pol) == (0, "asystole")
    back = BedState.from_bytes(st.to_bytes())
    assert (back.hold_level, back.hold_until_ms) == (0, 62_000)
    assert step(back, {}, 4_000, pol) is None  # a restarted worker does not send it again
    back.end_stay(5_000)
    assert (back.hold_level, back.hold_until_ms) == (-1, 0)
    assert BedState.from_bytes(BedState().to_bytes()).hold_level == -1


def test_a_hold_in_force_ends_when_holds_are_turned_off():
    st = BedState()
    assert step(st, {"vtach": "active"}, 2_000, HoldPolicy(seconds=600.0)) == (1, "vtach")
    assert step(st, {"vtach": "active"}, 4_000, None) == (None, "")  # a worker restarted without holds
    assert (st.hold_level, st.hold_until_ms) == (-1, 0) and step(st, {"vtach": "active"}, 6_000, None) is None
    # a new level in the policy is published while the hold lasts
    assert step(st, {"vtach": "active"}, 8_000, HoldPolicy(max_level=1)) == (1, "vtach")
    assert step(st, {"vtach": "active"}, 10_000, HoldPolicy(max_level=0)) == (0, "vtach")


def test_a_clinicians_request_and_an_alarms_hold_combine_to_the_lower_level():
    from processors.hold import MANUAL_MAX_MINUTES, request

    pol, st = HoldPolicy(seconds=10.0, max_level=1), BedState()
    request(st, 3, 1.0, "dr-b", 0)  # level <= 3 for a minute
    assert step(st, {}, 2_000, pol) == (3, "requested by dr-b")
    assert step(st, {"nsvt": "active"}, 4_000, pol) == (1, "nsvt,requested by dr-b")  # the alarm asks for less
    assert step(st, {}, 16_000, pol) == (3, "requested by dr-b")  # 10 s after the alarm: the request alone
    assert BedState.from_bytes(st.to_bytes()).manual_until_ms == 60_000
    assert step(st, {}, 60_000, pol) == (None, "")  # its minute is over
    assert (st.manual_level, st.manual_until_ms, st.manual_by) == (-1, 0, "")
    request(st, 0, 5.0, "dr-c", 60_000)
    assert step(st, {}, 62_000, None) == (0, "requested by dr-c")  # with automatic holds off too
    request(st, None, 0, "dr-c", 64_000)  # withdrawn
    assert step(st, {}, 64_000, None) == (None, "")
    request(st, 0, 5.0, "dr-c", 66_000)
    st.end_stay(67_000)  # a discharge ends it with the stay
    assert (st.manual_level, st.manual_until_ms, st.hold_level) == (-1, 0, -1)
    for level, minutes in ((8, 5.0), (None, 5.0), (1, -1.0), (1, MANUAL_MAX_MINUTES + 1)):
        with pytest.raises(ValueError):
            request(st, level, minutes, "x", 0)


def test_the_policy_is_checked():
    from wardstream.settings import from_env

    assert HoldPolicy.from_settings(from_env({})) == HoldPolicy(frozenset({"vtach", "nsvt", "ectopy", "asystole"}), 120.0, 1)
    assert HoldPolicy.from_settings(from_env({"WARDSTREAM_ALARM_HOLD_S": "0"})) is None
    assert parse_conditions(" vtach , asystole") == {"vtach", "asystole"}
    for env in ({"WARDSTREAM_ALARM_HOLD_CONDITIONS": "vtach,nosuch"}, {"WARDSTREAM_ALARM_HOLD_CONDITIONS": " , "},
                {"WARDSTREAM_ALARM_HOLD_LEVEL": "8"}, {"WARDSTREAM_ALARM_HOLD_LEVEL": "-1"}):
        with pytest.raises(ValueError, match="WARDSTREAM_ALARM_HOLD"):
            from_env(env)


def test_hold_messages_parse_and_cap_the_bed_they_name():
    from device_sim.control import Bounds, ControlError, hold_key, hold_message, parse

    assert parse(hold_key(12), hold_message(1, "nsvt")) == ("max_level", 12, 1)
    assert parse(hold_key(12), hold_message(None)) == ("max_level", 12, None)
    b = Bounds(default=0.5, beds={12: 0.2})
    assert b.apply(hold_key(12), hold_message(0, "asystole")) and b.max_level_for(12) == 0
    assert b.max_level_for(13) is None and b.for_bed(12) == 0.2  # a hold leaves the bound alone
    for bad in (b'{"max_level": 8}', b'{"max_level": 1.0}', b'{"max_level": true}', b'{"max_level": -1}',
                b'{"bound": 1}'):
        with pytest.raises(ControlError):
            parse(hold_key(12), bad)
        assert not b.apply(hold_key(12), bad)
    assert b.max_level_for(12) == 0 and sum(b.rejected.values()) == 5
    assert b.apply(hold_key(12), hold_message(None)) and b.max_level_for(12) is None


torch = pytest.importorskip("torch")


def test_a_latched_vtach_alarm_holds_the_devices_level_through_the_worker_batch():
    """Real devices and worker batch: a bed whose latched ``vtach`` alarm is open gets a hold at the
    next window (an ``fidelity_hold`` point and a control message); its device, given the message,
    sends no ECG level above 1 while the other bed keeps choosing; once the alarm is acknowledged
    (its condition gone) the hold ends ``seconds`` later and the device chooses again."""
    from device_sim.control import Bounds, hold_key, hold_message
    from device_sim.ward import Device, SyntheticBed, next_frames
    from processors.alarms import AlarmState, Condition, acknowledge
    from processors.classify import Classifiers
    from processors.stages import run_batch
    from stream.topics import bed_key
    from stream.wire import Modality, decode_frame
    from wardmodels import DD_MODEL
    from wardmodels.wire_codec import DynamicEncoder, decode_frames, register_deployed

    register_deployed()
    clock0 = 1_800_000_000_000_000
    devs = {b: Device(b, SyntheticBed(b, seed=b), clock0, DynamicEncoder(DD_MODEL, 3.0, 2, "fp32"), None)
            for b in (3, 4)}
    st3 = BedState()  # bed 3 had a ventricular run: its latched alarm is still open
    st3.alarms = AlarmState({"vtach": Condition(state="active", onset_ms=clock0 // 1000 - 5_000, episode=1,
                                                present_since=clock0 // 1000 - 5_000)}).to_dict()
    states = {bed_key(3): st3}
    pol, bounds, clf = HoldPolicy(seconds=6.0, max_level=1), Bounds(default=3.0), Classifiers()
    levels, updates, points = {3: [], 4: []}, [], []
    for k in range(12):
        out = next_frames(list(devs.values()))
        frames = [decode_frame(raw) for raw, _ in out]
        for f in frames:
            levels[f.bed_id].append(f.channel(Modality.ECG).level)
        res = run_batch([(bed_key(f.bed_id), f, s, len(raw)) for f, s, (raw, _) in zip(frames, decode_frames(frames), out)],
                        lambda key: states.get(key) or BedState(), clf, hold=pol)
        states.update(res.states)
        points += [p for p in res.points if p.startswith("fidelity_hold,")]
        for bed, (lv, why, by) in res.hold_updates.items():  # the control topic, as devices read it
            updates.append((k, bed, lv, why))
            assert by == "alarm"  # an alarm's hold, begun and run out
            assert bounds.apply(hold_key(bed), hold_message(lv, why, by))
        for b, d in devs.items():
            d.encoder.max_level = bounds.max_level_for(b)
        if k == 3:  # a clinician acknowledges: the latched alarm, its condition gone, resolves
            ast = AlarmState.from_dict(states[bed_key(3)].alarms)
            assert acknowledge(3, ast, "vtach", "nurse", (clock0 + 8_000_000) // 1000)
            states[bed_key(3)].alarms = ast.to_dict()
    # on at the first window; off 6 s (3 windows) after the last window with the alarm open (k = 3)
    assert updates == [(0, 3, 1, "vtach"), (6, 3, None, "")]
    assert len(points) == 2 and "on=1i" in points[0] and "on=0i" in points[1]
    assert max(levels[3][1:7]) <= 1, levels[3]  # held from the next window on
    assert max(levels[3][8:]) >= 3 and max(levels[4][1:7]) >= 3, levels  # the bound's levels otherwise
    assert np.all(np.array(levels[4]) >= 0)


def test_a_hold_is_published_for_the_alarm_or_for_the_clinician_who_asked():
    from processors.bed import BedState
    from processors.hold import HoldPolicy, published_by, request, step

    pol = HoldPolicy(seconds=60.0)
    st = BedState()
    request(st, 0, 10.0, "dr-b", 0)
    assert step(st, set(), 2_000, pol) == (0, "requested by dr-b") and published_by(st) == "dr-b"
    step(st, {"vtach"}, 4_000, pol)  # an alarm's hold as well: the alarm's
    assert published_by(st) == "alarm"
    request(st, None, 0.0, "dr-b", 6_000)  # withdrawn; the alarm's hold runs out at 64 s
    assert step(st, set(), 6_000, pol) == (1, "alarm") and published_by(st) == "alarm"
    assert step(st, set(), 65_000, pol) == (None, "") and published_by(st) == "alarm"
    st2 = BedState()
    request(st2, 1, 5.0, "dr-c", 0)
    step(st2, set(), 2_000, None)
    request(st2, None, 0.0, "dr-c", 4_000)  # the clinician withdraws it: the ending is theirs
    assert step(st2, set(), 4_000, None) == (None, "") and published_by(st2, "dr-c") == "dr-c"
