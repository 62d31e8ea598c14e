"""Where a worker is in each frames partition, and how long a bed has been silent from there
(`processors.silence.StreamClock`), on hand-made records."""

from processors.silence import StreamClock

A, B = b"bed-000001", b"bed-000002"


def test_a_worker_that_has_read_everything_counts_silence_on_the_wall_clock():
    c = StreamClock()
    c.note(3, 10, 1_000, A)
    c.note(3, 11, 1_500, B)
    # highwater 12 = read up to: caught up; A last processed (wall) at 5,000
    assert c.behind(3, 12, None) is False
    assert c.silent_ms(A, 3, now_ms=20_000, seen_ms=5_000, highwater=12, committed=None) == 15_000


def test_a_worker_behind_on_a_partition_counts_silence_in_the_partitions_record_time():
    c = StreamClock()
    # restarted after 60 s away: nothing read yet on partition 3, 40 records wait
    assert c.behind(3, 140, 100) is True
    assert c.silent_ms(A, 3, now_ms=100_000, seen_ms=40_000, highwater=140, committed=100) == 0
    # the backlog read up to the records of 42 s: A's windows are there, B's device stopped at 30 s
    c.note(3, 100, 40_500, A)
    c.note(3, 101, 41_000, A)
    c.note(3, 102, 42_000, A)
    assert c.behind(3, 140, 100) is True
    assert c.silent_ms(A, 3, now_ms=100_000, seen_ms=40_000, highwater=140, committed=100) == 0
    assert c.silent_ms(B, 3, now_ms=100_000, seen_ms=30_000, highwater=140, committed=100) == 12_000
    # caught up: the wall clock again (A's window processed at 99 s wall)
    for off in range(103, 140):
        c.note(3, off, 42_000 + (off - 102) * 1_000, A)
    assert c.behind(3, 140, 100) is False
    assert c.silent_ms(A, 3, now_ms=100_000, seen_ms=99_000, highwater=140, committed=100) == 1_000


def test_a_record_that_was_no_window_moves_the_partition_but_not_the_bed():
    c = StreamClock()
    c.note(0, 5, 10_000, A)
    c.note(0, 6, 25_000, None)  # dead-lettered: A's device is not heard from by it
    assert c.read_to[0] == 7 and c.bed_ms == {A: 10_000}
    assert c.silent_ms(A, 0, now_ms=30_000, seen_ms=11_000, highwater=9, committed=None) == 15_000


def test_without_a_fetch_answered_the_worker_cannot_tell():
    c = StreamClock()
    assert c.behind(1, None, 50) is None and c.behind(1, 60, None) is None
    assert c.silent_ms(A, 1, now_ms=90_000, seen_ms=1_000, highwater=None, committed=50) == 0


def test_a_partition_got_back_after_a_rebalance_is_read_from_the_groups_offset():
    c = StreamClock()
    c.note(2, 40, 10_000, A)  # read up to 41, then the partition went to another worker
    # back with the group's offset at 90 (the other worker read on) and nothing new: caught up
    assert c.behind(2, 90, 90) is False
    assert c.silent_ms(A, 2, now_ms=200_000, seen_ms=150_000, highwater=90, committed=90) == 50_000


def test_a_revoked_partition_and_its_beds_are_forgotten_until_the_worker_reads_there_again():
    c = StreamClock()
    c.note(2, 40, 10_000, A)
    c.note(5, 7, 10_500, B)
    c.seen_ms.update({A: 11_000, B: 11_500})
    c.raised.add(A)  # A's device_silent raised by this worker
    # partition 2 (bed A's) went to another worker, which heard A again and resolved its alarm
    assert c.forget({2}, {A: 2, B: 5}.__getitem__) == [A]
    assert c.read_to == {5: 8} and c.bed_ms == {B: 10_500} and 2 not in c.read_ms
    assert c.seen_ms == {B: 11_500} and not c.raised  # A's next silence is alarmed again
    # got back later, behind: no silence counted from what it read before (0 until it reads)
    assert c.silent_ms(A, 2, now_ms=200_000, seen_ms=150_000, highwater=95, committed=90) == 0
    c.note(2, 90, 190_000, b"bed-000003")  # another bed's window on the partition, none of A's
    # from A's stored time (the other owner's last processing of A's window)
    assert c.silent_ms(A, 2, now_ms=200_000, seen_ms=185_000, highwater=95, committed=90) == 5_000
