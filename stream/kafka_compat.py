"""Client-side back-off after an empty Kafka fetch.

A Kafka broker holds a fetch that finds no data for up to ``fetch.max.wait.ms`` (long poll).
The local noida-db broker answers empty fetches at once, so an idle aiokafka consumer (and every
Faust worker) spins at ~90 % of a core (measured: 4.5 s CPU in 5 s idle). This wraps aiokafka's
fetch step so that a fetch that returned no records waits ``WARDSTREAM_EMPTY_FETCH_BACKOFF_MS``
(default 10 ms) before the next one: idle CPU drops to a few percent and a new message waits at
most that long. Against Apache Kafka the broker's own long poll dominates; set 0 to disable.
A consumer that can wait longer (the alarm service's topic views) sets its own with
`set_backoff`: every idle consumer's fetches cost the local broker CPU.
"""

from __future__ import annotations

import asyncio
import os

_PATCHED = False


def install(backoff_ms: float | None = None) -> None:
    global _PATCHED
    if _PATCHED:
        return
    if backoff_ms is None:
        backoff_ms = float(os.environ.get("WARDSTREAM_EMPTY_FETCH_BACKOFF_MS", "10"))
    if backoff_ms <= 0:
        return
    from aiokafka.consumer.fetcher import Fetcher

    original = Fetcher._proc_fetch_request
    delay = backoff_ms / 1000.0

    async def _proc_fetch_request(self, assignment, node_id, request):
        got_records = await original(self, assignment, node_id, request)
        if not got_records:
            try:
                await asyncio.sleep(getattr(self, "_ws_backoff_s", delay))
            except asyncio.CancelledError:  # close() or unassignment: aiokafka expects False
                return False
        return got_records

    Fetcher._proc_fetch_request = _proc_fetch_request
    _PATCHED = True


def set_backoff(consumer, backoff_ms: float) -> None:
    """This started consumer's back-off after an empty fetch (see `install`)."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None:
        fetcher._ws_backoff_s = backoff_ms / 1000.0


async def partitions_of(consumer, topic: str, wait_s: float = 0.0) -> set[int]:
    """Partitions of ``topic`` from fresh cluster metadata, waiting up to ``wait_s`` for the topic
    to appear (empty set if it does not).

    ``AIOKafkaConsumer.partitions_for_topic`` reads the consumer's cached metadata, and
    ``consumer.topics()`` fetches a new snapshot without updating that cache: a topic created after
    the consumer started stays invisible to it until the periodic refresh (5 minutes by default).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        cluster = await consumer._client.fetch_all_metadata()
        parts = cluster.partitions_for_topic(topic) or set()
        if parts or loop.time() >= deadline:
            return set(parts)
        await asyncio.sleep(0.2)
