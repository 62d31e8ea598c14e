"""The stalled-partition tracker (`processors.group_watch.StallTracker`) on hand-made samples."""

from processors.group_watch import StallTracker


def test_a_partition_stalls_when_frames_wait_and_its_offset_does_not_move():
    t = StallTracker(stall_s=30.0)
    assert t.update({0: 10, 1: 5, 2: None}, {0: 10, 1: 9, 2: 0}, now=0.0) == set()
    assert t.lag == 4
    # 29 s on: partition 1 has waited, but not long enough; 0 has nothing waiting
    assert t.update({0: 10, 1: 5, 2: None}, {0: 10, 1: 12, 2: 0}, now=29.0) == set()
    assert t.update({0: 10, 1: 5, 2: None}, {0: 10, 1: 12, 2: 0}, now=30.0) == {1}
    assert t.lag == 7
    # a partition that never had a commit, with frames waiting, stalls too
    assert t.update({0: 10, 1: 5, 2: None}, {0: 10, 1: 12, 2: 3}, now=31.0) == {1}
    assert t.update({0: 10, 1: 5, 2: None}, {0: 10, 1: 12, 2: 3}, now=61.0) == {1, 2}


def test_a_moving_or_caught_up_partition_is_not_stalled():
    t = StallTracker(stall_s=10.0)
    t.update({0: 0}, {0: 100}, now=0.0)
    for k in range(1, 10):  # busy but moving: never stalled, however far behind
        assert t.update({0: 10 * k}, {0: 100 + 10 * k}, now=5.0 * k) == set()
    # idle: the offset stands still with nothing waiting
    t2 = StallTracker(stall_s=10.0)
    for k in range(5):
        assert t2.update({0: 50}, {0: 50}, now=20.0 * k) == set()
    # stalled, then moving again
    t3 = StallTracker(stall_s=10.0)
    t3.update({0: 5}, {0: 9}, now=0.0)
    assert t3.update({0: 5}, {0: 9}, now=10.0) == {0}
    assert t3.update({0: 9}, {0: 9}, now=11.0) == set() and t3.stalled == set()
    assert t3.stalls == 1  # counted when it stalled, not again while it stayed so


def test_an_idle_partition_stalls_only_once_its_first_frames_have_waited_stall_s():
    """Sampled idle (nothing waiting), then a frame arrives just before the next sample: its wait
    counts from that sample, not from the idle one (it was reported stalled at once before)."""
    t = StallTracker(stall_s=5.0)
    assert t.update({0: None, 1: 7}, {0: 0, 1: 7}, now=0.0) == set()
    assert t.update({0: None, 1: 7}, {0: 1, 1: 8}, now=5.0) == set()  # arrived at 4.9
    assert t.update({0: None, 1: 7}, {0: 3, 1: 9}, now=9.0) == set()
    assert t.update({0: None, 1: 7}, {0: 3, 1: 9}, now=10.0) == {0, 1}
    # idle again, then waiting at the same offset: a new wait
    assert t.update({0: 3, 1: 9}, {0: 3, 1: 9}, now=15.0) == set()
    assert t.update({0: 3, 1: 9}, {0: 4, 1: 9}, now=20.0) == set()
    assert t.update({0: 3, 1: 9}, {0: 4, 1: 9}, now=25.0) == {0}


def _ward_of(bed: int) -> str:
    return "icu" if bed <= 24 else "cardio"


def test_beds_waiting_on_a_stalled_partition_get_a_monitoring_stalled_alarm_until_it_moves():
    from processors.alarm_view import AlarmView
    from processors.group_watch import CONDITION, Waiting, bed_of_key, stall_transitions

    assert bed_of_key(b"bed-000012") == 12
    assert bed_of_key(b"other") is None and bed_of_key(None) is None and bed_of_key(b"bed-x") is None
    view = AlarmView()

    def step(committed, ends, waiting, now_ms, by="w1"):
        open_ = {b: a for (b, c), a in view.alarms.items() if c == CONDITION}
        evs = stall_transitions(committed, ends, waiting, open_, now_ms, 30.0, _ward_of, "technical", by)
        for e in evs:
            view.apply(e)
        return evs

    w3 = Waiting(offset=100, first_ms=1_000_000, beds=frozenset({3, 30}), frames=7, read_to=107)
    evs = step({3: 100, 4: 50}, {3: 107, 4: 50}, {3: w3}, now_ms=1_040_000)
    assert [(e["bed"], e["state"], e["ward"], e["partition"], e["episode"]) for e in evs] == \
        [(3, "active", "icu", 3, 100), (30, "active", "cardio", 3, 100)]
    # the onset is the first waiting frame's time plus the stall limit: the same for every worker
    assert {e["t_ms"] for e in evs} == {1_030_000}
    assert evs[0]["id"] == "3:monitoring_stalled:100:active:1030000"
    assert "frames partition 3" in evs[0]["why"] and "7 frames waiting" in evs[0]["why"]
    # another worker sampling the same stall, with those alarms on the topic: nothing more to say
    assert step({3: 100, 4: 50}, {3: 112, 4: 50}, {3: w3}, now_ms=1_045_000, by="w2") == []
    # another bed's frames behind the same offset join it; the open ones are not raised again
    w3b = Waiting(offset=100, first_ms=1_000_000, beds=frozenset({3, 30, 31}), frames=12, read_to=112)
    assert [(e["bed"], e["state"]) for e in step({3: 100}, {3: 112}, {3: w3b}, now_ms=1_050_000)] == [(31, "active")]
    # the offset moves: every bed of that stall resolves, with a deterministic id
    evs = step({3: 105}, {3: 112}, {}, now_ms=1_060_000)
    assert [(e["bed"], e["state"]) for e in evs] == [(3, "resolved"), (30, "resolved"), (31, "resolved")]
    assert evs[0]["id"] == "3:monitoring_stalled:100:resolved:1030000" and evs[0]["t_ms"] == 1_060_000
    assert not view.alarms
    assert step({3: 105}, {3: 112}, {}, now_ms=1_065_000) == []


def test_a_partition_stalling_again_at_a_later_offset_is_a_new_episode():
    from processors.alarm_view import AlarmView
    from processors.group_watch import CONDITION, Waiting, stall_transitions

    view = AlarmView()
    w = Waiting(offset=10, first_ms=0, beds=frozenset({5}), frames=3, read_to=13)
    for e in stall_transitions({0: 10}, {0: 13}, {0: w}, {}, 40_000, 30.0, _ward_of, "high", "w"):
        view.apply(e)
    open_ = {b: a for (b, c), a in view.alarms.items() if c == CONDITION}
    assert open_[5]["priority"] == "high" and open_[5]["episode"] == 10
    # the next sample sees it moved and stalled again behind offset 12 (a sample missed between)
    w2 = Waiting(offset=12, first_ms=50_000, beds=frozenset({5}), frames=4, read_to=16)
    evs = stall_transitions({0: 12}, {0: 16}, {0: w2}, open_, 90_000, 30.0, _ward_of, "high", "w")
    assert [(e["state"], e["episode"]) for e in evs] == [("resolved", 10), ("active", 12)]
    for e in evs:
        view.apply(e)
    assert view.alarms[(5, CONDITION)]["episode"] == 12
    # nothing waiting any more at the same offset (the frames deleted by retention): resolved
    open_ = {b: a for (b, c), a in view.alarms.items() if c == CONDITION}
    evs = stall_transitions({0: 12}, {0: 12}, {}, open_, 95_000, 30.0, _ward_of, "high", "w")
    assert [(e["state"], e["episode"]) for e in evs] == [("resolved", 12)]


def test_a_stall_is_resolved_by_its_partition_s_owner_and_by_another_worker_only_after_the_hand_over():
    """Resolving is the one transition whose time is the sample's, so two workers resolving the
    same stall would write two ``resolved`` points: the owner of the partition resolves it at once,
    any other worker only once it has been resolvable for ``handover_ms`` (the owner gone again)."""
    from processors.group_watch import Waiting, stall_transitions

    w = Waiting(offset=100, first_ms=1_000_000, beds=frozenset({3, 30}), frames=7, read_to=107)
    raised = stall_transitions({3: 100}, {3: 107}, {3: w}, {}, 1_040_000, 30.0, _ward_of, "technical", "w2",
                               owned={1, 2}, pending={})
    # raising is the same for an owner and a non-owner (deterministic: the onset is its time)
    assert [(e["bed"], e["state"]) for e in raised] == [(3, "active"), (30, "active")]
    open_ = {e["bed"]: e for e in raised}

    def resolve(now_ms, owned, pending):
        return [(e["bed"], e["state"], e["t_ms"]) for e in stall_transitions(
            {3: 105}, {3: 112}, {}, open_, now_ms, 30.0, _ward_of, "technical", "w", owned=owned, pending=pending,
            handover_ms=15_000)]

    assert resolve(1_060_000, owned={3}, pending={}) == [(3, "resolved", 1_060_000), (30, "resolved", 1_060_000)]
    assert resolve(1_060_000, owned=None, pending=None) == [(3, "resolved", 1_060_000), (30, "resolved", 1_060_000)]
    other: dict = {}
    assert resolve(1_060_000, owned={1, 2}, pending=other) == []  # the owner's to say
    assert resolve(1_070_000, owned={1, 2}, pending=other) == []
    assert other == {(3, 100): 1_060_000, (30, 100): 1_060_000}
    # still open 15 s after this worker first saw it resolvable: its owner did not say it
    assert resolve(1_075_000, owned={1, 2}, pending=other) == [(3, "resolved", 1_075_000), (30, "resolved", 1_075_000)]
    # once the alarms are closed (the topic says so) nothing is pending any more
    assert stall_transitions({3: 105}, {3: 112}, {}, {}, 1_080_000, 30.0, _ward_of, "technical", "w",
                             owned={1, 2}, pending=other) == [] and other == {}
    # a partition stalled again at a later offset: the old episode resolves with the new raise, owner or not
    w2 = Waiting(offset=110, first_ms=1_070_000, beds=frozenset({3}), frames=2, read_to=112)
    evs = stall_transitions({3: 110}, {3: 112}, {3: w2}, {3: open_[3]}, 1_100_000, 30.0, _ward_of, "technical",
                            "w", owned=set(), pending={})
    assert [(e["state"], e["episode"]) for e in evs] == [("resolved", 100), ("active", 110)]


def test_a_stalled_bed_s_alarm_level_counts_the_stall_while_it_is_open():
    """The ward tile "Highest active alarm" reads ``alarm_level``, which the bed's own (stuck) worker
    writes with its windows: the stall's transitions write it too, with the bed's other open
    alarms as the alarms topic says."""
    from processors.group_watch import stall_alarm_levels

    alarms = {(3, "tachy"): {"priority": "medium"}, (3, "monitoring_stalled"): {"priority": "technical"},
              (4, "afib"): {"priority": "high"}}
    evs = [{"bed": 3, "state": "active", "priority": "technical", "t_ms": 1_030_000},
           {"bed": 30, "state": "active", "priority": "technical", "t_ms": 1_030_000},
           {"bed": 3, "state": "resolved", "priority": "technical", "t_ms": 1_060_000},
           {"bed": 30, "state": "resolved", "priority": "technical", "t_ms": 1_060_000}]
    assert stall_alarm_levels(evs, alarms) == [
        "alarm_level,bed=3 highest=3i,open=2i 1030000",  # its tachycardia (medium) and the stall
        "alarm_level,bed=30 highest=1i,open=1i 1030000",  # the stall alone: technical, not "none"
        "alarm_level,bed=3 highest=3i,open=1i 1060000",
        "alarm_level,bed=30 highest=0i,open=0i 1060000",
    ]
    # a louder stall priority (WARDSTREAM_STALL_PRIORITY=high) shows as high
    assert stall_alarm_levels([{"bed": 30, "state": "active", "priority": "high", "t_ms": 5}], {}) == \
        ["alarm_level,bed=30 highest=4i,open=1i 5"]
