"""Never commit past frames that were not processed (faust-streaming 0.15.3 workaround).

When flow control stops or the consumer generation changes in the middle of a fetch (a
rebalance: a worker joins, dies or the broker restarts), Faust's ``Consumer.getmany`` breaks out
of the records aiokafka already fetched and drops them. The next fetch continues after them, the
consumer sees an offset gap, and ``Consumer._add_gap`` marks the gap as done, which is right for
compacted topics and transaction markers and wrong here: the offsets are committed, the windows
are never processed. Measured in tests/test_integration.py: 5 to 29 of ~2,400 windows lost per
run with a worker restart (faust-streaming issues #216, #221 and #223 describe neighbours).

For the frames topic (never compacted, never written transactionally, so every offset holds a
record) this replaces that step: the gap is queued in `PENDING` instead. The agent reads the
missing offsets directly from Kafka (`fetch_range`), processes them with its batch, and only
after their points are in InfluxDB calls `mark_done`, which hands the gap to Faust's own
bookkeeping so the commit can move past it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

log = logging.getLogger("wardstream.gaps")


@dataclass(frozen=True)
class Gap:
    tp: object  # faust TP (topic, partition)
    start: int  # first missing offset
    end: int  # first offset after the gap (the message Faust delivered next)


PENDING: list[Gap] = []
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
        committed = self._committed_offset[tp]
        if committed is not None:
            offset_from = max(offset_from, committed)
        if offset_from < offset_to:  # offset_to itself is being delivered now
            log.warning("offset gap on %s/%s: %d..%d were not delivered; they will be fetched",
                        tp.topic, tp.partition, offset_from, offset_to - 1)
            PENDING.append(Gap(tp, offset_from, offset_to))

    Consumer._add_gap = _add_gap


def take_pending() -> list[Gap]:
    out = PENDING[:]
    del PENDING[: len(out)]
    return out


async def mark_done(consumer, gap: Gap) -> None:
    """Let Faust commit past a gap whose records have been processed."""
    await _original_add_gap(consumer, gap.tp, gap.start, gap.end - 1)


class RangeReader:
    """Reads given offset ranges of a partition with a consumer of its own (no group)."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self._c = None

    async def fetch_range(self, gap: Gap, timeout_s: float = 10.0) -> list:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        if self._c is None:
            self._c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                       enable_auto_commit=False)
            await self._c.start()
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
