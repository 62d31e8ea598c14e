"""Never commit past frames that were not processed (faust-streaming 0.15.3 workaround).

When flow control stops or the consumer generation changes in the middle of a fetch (a
rebalance: a worker joins, dies or the broker restarts), Faust's ``Consumer.getmany`` breaks out
of the records aiokafka already fetched and drops them. The next fetch continues after them, the
consumer sees an offset gap, and ``Consumer._add_gap`` marks the gap as done, which is right for
compacted topics and transaction markers and wrong here: the offsets are committed, the windows
are never processed. Measured in tests/test_integration.py: 5 to 29 of ~2,400 windows lost per
run with a worker restart (faust-streaming issues #216, #221 and #223 describe neighbours).

Faust does not always notice the gap either (its read offset is reset on rebalance: offsets
110-113 were delivered, then 115, and 114 was never flagged). So for the frames topic (never
compacted, never written transactionally, so every offset holds a record):

* `install` stops Faust from marking gaps done on its own;
* `OffsetTracker` finds every gap from the offsets the agent receives: per partition they must
  follow on from the committed offset (at the start of each consumer generation), then from the
  last one seen;
* the agent reads the missing offsets directly from Kafka (`RangeReader`), processes them with
  its batch, and only after their points are in InfluxDB calls `mark_done`, which hands the gap
  to Faust's bookkeeping so the commit can move past it;
* on a quiet partition no later record reveals a skip: `trailing` finds the records aiokafka
  handed to Faust that never reached the agent, which a sweep reads the same way and commits
  past (`commit_trailing`);
* and a worker whose table recovery or frames partition makes no progress at all after a
  rebalance (`StuckWatch`: Faust also drops the changelog records its recovery waits for) rejoins
  its group (`request_rejoin`), so that the next rebalance seeks everything again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

log = logging.getLogger("wardstream.gaps")


@dataclass(frozen=True)
class Gap:
    tp: object  # faust TP (topic, partition)
    start: int  # first missing offset
    end: int  # first offset after the gap (the message Faust delivered next)


CONTIGUOUS_TOPICS: set[str] = set()
_original_add_gap = None


def install(topics: set[str]) -> None:
    global _original_add_gap
    CONTIGUOUS_TOPICS.update(topics)
    if _original_add_gap is not None:
        return
    from faust.transport.consumer import Consumer

    _original_add_gap = Consumer._add_gap

    async def _add_gap(self, tp, offset_from: int, offset_to: int) -> None:
        if tp.topic not in CONTIGUOUS_TOPICS:
            return await _original_add_gap(self, tp, offset_from, offset_to)
        # not done: the agent's OffsetTracker sees the same jump and fetches the records

    Consumer._add_gap = _add_gap


class OffsetTracker:
    """Finds the offsets Faust skipped, from the offsets the agent is handed."""

    def __init__(self) -> None:
        self._next: dict = {}  # TP -> (consumer generation, next offset expected)

    def check(self, events, generation: int, committed: dict) -> list[Gap]:
        """``committed``: TP -> next offset to read, as last committed (Faust's own map)."""
        gaps = []
        for ev in events:
            tp, off = ev.message.tp, ev.message.offset
            gen, nxt = self._next.get(tp, (None, None))
            if gen != generation:
                nxt = committed.get(tp)
            if nxt is not None and off > nxt:
                log.warning("partition %s/%s: got offset %d, expected %d: fetching the skipped records",
                            tp.topic, tp.partition, off, nxt)
                gaps.append(Gap(tp, nxt, off))
            # a record delivered again (offset below what we expect) is no gap
            self._next[tp] = (generation, max(off + 1, nxt or 0))
        return gaps

    def expected(self, tp, generation: int, committed: dict) -> int | None:
        """The offset the agent is to be handed next on ``tp``: after the last one it was handed
        in this consumer generation, else the committed one (None: not known)."""
        gen, nxt = self._next.get(tp, (None, None))
        return nxt if gen == generation else committed.get(tp)

    def advance(self, tp, generation: int, end: int) -> None:
        """The records of ``tp`` before ``end`` were processed outside Faust's delivery (a
        `trailing` gap read directly): expect ``end`` next; one Faust delivers late is no gap."""
        nxt = self.expected(tp, generation, {})
        self._next[tp] = (generation, max(end, nxt or 0))


def fetched_to(consumer, tp) -> int | None:
    """The offset after the last record of ``tp`` that aiokafka has handed to Faust (its fetch
    position; None when not known). Records below it are in Faust's hands: delivered to the
    agents, in a stream's buffer, or dropped (the rebalance of the module docstring)."""
    from aiokafka import TopicPartition

    try:
        ak = consumer._thread._ensure_consumer()
        state = ak._subscription.subscription.assignment.state_value(TopicPartition(tp.topic, tp.partition))
        return state.position if state is not None and state.has_valid_position else None
    except Exception:  # not assigned (a rebalance in progress), or the consumer not started
        return None


def in_flight(consumer) -> set:
    """The TPs with records delivered to a stream and not yet acknowledged."""
    return {m.tp for m in list(consumer._unacked_messages) if not m.acked}


def trailing(tracker: OffsetTracker, consumer, generation: int, tps, behind: dict) -> list[Gap]:
    """The frames Faust dropped with no later record delivered to reveal them (a quiet partition:
    its beds stopped sending, so `OffsetTracker.check` never sees the jump; seen 2026-12-07, the
    last window of a bed fetched again after a rebalance and never delivered, its partition
    stalled and the bed's next silence never alarmed). Per partition of ``tps``: the records
    aiokafka handed to Faust (below `fetched_to`) past those the agent was handed, none of them
    in a stream's hands, at two calls in a row (`overdue`: one call's time for Faust to deliver)."""
    busy = in_flight(consumer)
    committed = consumer._committed_offset
    expected, ends = {}, {}
    for tp in tps:
        nxt, end = tracker.expected(tp, generation, committed), fetched_to(consumer, tp)
        if nxt is None or end is None or tp in busy:
            behind.pop(tp, None)
            continue
        expected[tp], ends[tp] = nxt, end
    return overdue(expected, ends, behind)


def skipped(tp, expected: int, offset: int) -> Gap | None:
    """For a topic whose agent notes the offset it expects next (the commands): the records Faust
    skipped before delivering ``offset``, or None when it follows on."""
    return Gap(tp, expected, offset) if offset > expected else None


def overdue(expected: dict, ends: dict, behind: dict) -> list[Gap]:
    """For a topic whose records arrive seldom (so no later record reveals a skipped one): per
    partition, the offset the agent expects next and the partition's end offset -> the ranges to
    read directly, those that were already missing at the previous call (``behind``: TP -> the
    expected offset then; updated here), so that Faust gets one call's time to deliver them."""
    out = []
    for tp, nxt in expected.items():
        end = ends[tp]
        if end <= nxt:
            behind.pop(tp, None)
        elif behind.get(tp) != nxt:
            behind[tp] = nxt
        else:
            out.append(Gap(tp, nxt, end))
            behind.pop(tp, None)
    return out


async def mark_done(consumer, gap: Gap) -> None:
    """Let Faust commit past a gap whose records have been processed."""
    await _original_add_gap(consumer, gap.tp, gap.start, gap.end - 1)


@dataclass
class StuckWatch:
    """Progress that is due and not made: per key, the value last seen and since when."""

    stuck_s: float
    seen: dict = field(default_factory=dict)  # key -> (value, since when)

    def stuck(self, now: float, key, value, waiting: bool) -> bool:
        """``value``: where ``key`` stands now; ``waiting``: whether work waits on it. True once
        it has waited at the same value for ``stuck_s``."""
        if not waiting:
            self.seen.pop(key, None)
            return False
        was, since = self.seen.get(key, (None, now))
        if was != value:
            self.seen[key] = (value, now)
            return False
        return now - since >= self.stuck_s


async def request_rejoin(consumer) -> None:
    """Have the Faust consumer's group coordinator rejoin the group (a rebalance: partitions
    revoked and assigned again, table recovery and the seek to the committed offsets done anew).
    aiokafka runs in Faust's consumer thread: the request is made there."""
    ak = consumer._thread._ensure_consumer()

    async def rejoin() -> None:
        ak._coordinator.request_rejoin()

    await consumer._thread.call_thread(rejoin)


async def commit_trailing(consumer, gap: Gap) -> bool:
    """Commit past a `trailing` gap whose records have been processed, when the group's offset
    stands at its start: Faust's own commits move only with records it delivered (a gap handed to
    it by `mark_done` joins the next delivered one), and on a quiet partition none comes, so the
    group's offset would stay behind (the stall watch calls that a stall; the next owner reads the
    records again) -> whether it committed."""
    if consumer._committed_offset.get(gap.tp) != gap.start:
        return False  # earlier records still uncommitted: Faust's commit of them takes the gap along
    return await consumer._commit_offsets({gap.tp: gap.end})


class RangeReader:
    """Reads given offset ranges of a partition with a consumer of its own (no group)."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self._c = None

    async def _consumer(self):
        from aiokafka import AIOKafkaConsumer

        if self._c is None:
            self._c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                       enable_auto_commit=False)
            await self._c.start()
        return self._c

    async def end_offsets(self, tps) -> dict:
        """Faust TPs -> each partition's end offset (the offset its next record will have)."""
        from aiokafka import TopicPartition

        if not tps:
            return {}
        ends = await (await self._consumer()).end_offsets([TopicPartition(tp.topic, tp.partition) for tp in tps])
        return {tp: ends[TopicPartition(tp.topic, tp.partition)] for tp in tps}

    async def fetch_range(self, gap: Gap, timeout_s: float = 10.0) -> list:
        from aiokafka import TopicPartition

        await self._consumer()
        tp = TopicPartition(gap.tp.topic, gap.tp.partition)
        self._c.assign([tp])
        self._c.seek(tp, gap.start)
        out = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            recs = (await self._c.getmany(tp, timeout_ms=500)).get(tp, [])
            out.extend(r for r in recs if gap.start <= r.offset < gap.end)
            if out and out[-1].offset >= gap.end - 1 or any(r.offset >= gap.end for r in recs):
                break
        if len(out) != gap.end - gap.start:
            log.error("gap %s/%s %d..%d: read %d of %d records", gap.tp.topic, gap.tp.partition,
                      gap.start, gap.end - 1, len(out), gap.end - gap.start)
        return out

    async def close(self) -> None:
        if self._c is not None:
            await self._c.stop()
            self._c = None
