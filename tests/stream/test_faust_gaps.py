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


def test_the_expected_offset_follows_the_generation_and_a_direct_read_moves_it():
    t = OffsetTracker()
    a = TP("frames", 0)
    assert t.expected(a, 1, {a: 4}) == 4 and t.expected(a, 1, {}) is None  # nothing handed yet
    t.check([ev(0, 4), ev(0, 5)], 1, {a: 4})
    assert t.expected(a, 1, {a: 4}) == 6
    assert t.expected(a, 2, {a: 6}) == 6  # a new generation starts from the committed offset
    t.advance(a, 1, 9)  # 6..8 read directly
    assert t.expected(a, 1, {}) == 9
    assert t.check([ev(0, 7)], 1, {}) == [] and t.expected(a, 1, {}) == 9  # Faust delivering 7 late: no gap
    t.advance(a, 1, 3)  # never backwards
    assert t.expected(a, 1, {}) == 9


class _State:
    def __init__(self, position):
        self._position = position

    @property
    def has_valid_position(self):
        return self._position is not None

    @property
    def position(self):
        return self._position


def _consumer(positions: dict, committed: dict, unacked=()):
    """A Faust consumer as far as `trailing` reads it: aiokafka's fetch positions, Faust's
    committed offsets and its messages delivered but not acknowledged."""
    from aiokafka import TopicPartition

    states = {TopicPartition(tp.topic, tp.partition): _State(p) for tp, p in positions.items()}
    assignment = SimpleNamespace(state_value=states.get)
    ak = SimpleNamespace(_subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment)))
    return SimpleNamespace(_thread=SimpleNamespace(_ensure_consumer=lambda: ak), _committed_offset=committed,
                           _unacked_messages=[SimpleNamespace(tp=tp, acked=False) for tp in unacked])


def test_frames_fetched_but_never_delivered_on_a_quiet_partition_are_found_at_the_second_sweep():
    """`faust_gaps.trailing` (`processors.agents.sweep_frames`): seen 2026-12-07 under CPU load, a
    bed's last window before its device went quiet was fetched again after a rebalance and never
    delivered; no later record came to reveal the skip, so the partition stalled and the bed's next
    silence was never alarmed."""
    from stream.faust_gaps import trailing

    a, b, c, d = TP("frames", 0), TP("frames", 1), TP("frames", 2), TP("frames", 3)
    t = OffsetTracker()
    t.check([ev(0, 4)], 1, {a: 4})  # a: handed 4, expects 5
    behind: dict = {}
    # a: aiokafka handed Faust up to 6 (5 not delivered yet); b: caught up; c: position unknown;
    # d: a record in a stream's hands (its batch is running)
    cons = _consumer({a: 6, b: 3, c: None, d: 9}, {b: 3, c: 0, d: 7}, unacked=[d])
    assert trailing(t, cons, 1, [a, b, c, d], behind) == []  # one sweep's grace
    assert behind == {a: 5}
    assert trailing(t, cons, 1, [a, b, c, d], behind) == [Gap(a, 5, 6)]
    # delivered before the next sweep: nothing to read
    behind.clear()
    trailing(t, cons, 1, [a], behind)
    t.check([ev(0, 5)], 1, {})
    assert trailing(t, cons, 1, [a], behind) == [] and behind == {}
    # in a new generation the committed offset is the reference again; a partition whose records
    # sit in a stream's hands is never read around them
    cons = _consumer({a: 8, d: 9}, {a: 6, d: 7}, unacked=[d])
    trailing(t, cons, 2, [a, d], behind)
    assert trailing(t, cons, 2, [a, d], behind) == [Gap(a, 6, 8)]


def test_a_processed_trailing_gap_is_committed_only_from_where_the_group_stands():
    import asyncio

    from stream.faust_gaps import commit_trailing

    a = TP("frames", 0)
    committed_calls = []

    async def commit(offsets):
        committed_calls.append(dict(offsets))
        return True

    cons = SimpleNamespace(_committed_offset={a: 5}, _commit_offsets=commit)
    assert asyncio.run(commit_trailing(cons, Gap(a, 5, 7))) is True
    assert committed_calls == [{a: 7}]
    # earlier records delivered and not yet committed: Faust's own commit carries the gap
    assert asyncio.run(commit_trailing(cons, Gap(a, 6, 7))) is False and len(committed_calls) == 1


def test_a_worker_stuck_on_its_partitions_is_told_only_after_no_progress_for_the_limit():
    """`processors.agents.watch_own_progress`: a frames partition (or the table recovery) with work
    waiting whose position has not moved for ``stuck_s`` is stuck; progress, or nothing waiting,
    starts the count again."""
    from stream.faust_gaps import StuckWatch

    w = StuckWatch(15.0)
    assert not w.stuck(0.0, "p4", (3, 1), waiting=True)
    assert not w.stuck(14.0, "p4", (3, 1), waiting=True)
    assert w.stuck(15.0, "p4", (3, 1), waiting=True)
    assert not w.stuck(16.0, "p4", (3, 2), waiting=True)  # it moved: counting again from 16 s
    assert not w.stuck(30.0, "p4", (3, 2), waiting=True) and w.stuck(31.0, "p4", (3, 2), waiting=True)
    assert not w.stuck(32.0, "p4", (3, 2), waiting=False) and "p4" not in w.seen  # nothing waits
    assert not w.stuck(50.0, "p4", (3, 2), waiting=True)  # waiting again: a new count
    assert not w.stuck(40.0, "recovery", (3, 7), waiting=True) and not w.stuck(60.0, "p5", (3, 0), waiting=True)
