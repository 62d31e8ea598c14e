from types import SimpleNamespace

from faust.types import TP

from stream.faust_gaps import Gap, OffsetTracker, overdue, skipped


def ev(p, off):
    return SimpleNamespace(message=SimpleNamespace(tp=TP("frames", p), offset=off))


def test_tracker_finds_skips_from_committed_and_within_a_generation():
    t = OffsetTracker()
    committed = {TP("frames", 0): 10, TP("frames", 1): 5}
    # partition 0 resumes at 12 although 10 is committed; partition 1 skips 7
    gaps = t.check([ev(0, 12), ev(0, 13), ev(1, 5), ev(1, 6), ev(1, 8)], 1, committed)
    assert gaps == [Gap(TP("frames", 0), 10, 12), Gap(TP("frames", 1), 7, 8)]
    # redelivered records (below what is expected) are not gaps; a later jump is
    assert t.check([ev(0, 11), ev(0, 14), ev(0, 20)], 1, committed) == [Gap(TP("frames", 0), 15, 20)]


def test_new_generation_starts_again_from_the_committed_offset():
    t = OffsetTracker()
    t.check([ev(0, 10), ev(0, 11)], 1, {TP("frames", 0): 10})
    # after a rebalance the group committed 30 and delivery restarts there: no gap
    assert t.check([ev(0, 30)], 2, {TP("frames", 0): 30}) == []
    # unknown committed offset: nothing to compare against
    assert t.check([ev(3, 99)], 2, {}) == []


def test_commands_faust_skipped_before_the_one_it_delivered_are_read_first():
    """The commands agent (`processors.alarm_service.apply_commands`): a command delivered past the
    offset it expects (Faust dropped the first records fetched after a worker joined: seen
    2026-12-06, 29 of 200 discharges) names the range to read from Kafka and apply before it."""
    a = TP("cmd", 0)
    assert skipped(a, 13, 15) == Gap(a, 13, 15)
    assert skipped(a, 13, 13) is None and skipped(a, 16, 15) is None  # follows on; delivered again


def test_commands_faust_has_not_delivered_by_the_next_sweep_are_read_directly():
    """The commands topic's sweep (`processors.alarm_service.sweep_commands`): a partition whose
    end lies beyond what the agent applied is given one sweep for Faust to deliver; still behind at
    the next, the missing range is read; a partition that caught up, or moved on, starts over."""
    a, b, c = TP("cmd", 0), TP("cmd", 1), TP("cmd", 2)
    behind: dict = {}
    assert overdue({a: 3, b: 0, c: 5}, {a: 3, b: 2, c: 6}, behind) == []  # b, c just fell behind
    assert behind == {b: 0, c: 5}
    # b still at 0: read 0..1; c delivered meanwhile (now 6 = end); a got a new record just now
    assert overdue({a: 3, b: 0, c: 6}, {a: 4, b: 2, c: 6}, behind) == [Gap(b, 0, 2)]
    assert behind == {a: 3}
    # a's record delivered by Faust before the next sweep: nothing to read
    assert overdue({a: 4, b: 2, c: 6}, {a: 4, b: 2, c: 6}, behind) == [] and behind == {}
    # behind, then behind at a later offset (Faust delivered some): one more sweep of grace
    overdue({a: 4}, {a: 7}, behind)
    assert overdue({a: 5}, {a: 7}, behind) == [] and overdue({a: 5}, {a: 7}, behind) == [Gap(a, 5, 7)]
