from types import SimpleNamespace

from faust.types import TP

from stream.faust_gaps import Gap, OffsetTracker


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
