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
