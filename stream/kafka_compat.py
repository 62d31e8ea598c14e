"""Client-side mends to aiokafka for the local broker.

1. Back-off after an empty Kafka fetch.

A Kafka broker holds a fetch that finds no data for up to ``fetch.max.wait.ms`` (long poll).
The local noida-db broker answers empty fetches at once, so an idle aiokafka consumer (and every
Faust worker) spins at ~90 % of a core (measured: 4.5 s CPU in 5 s idle). This wraps aiokafka's
fetch step so that a fetch that returned no records waits ``WARDSTREAM_EMPTY_FETCH_BACKOFF_MS``
(default 10 ms) before the next one: idle CPU drops to a few percent and a new message waits at
most that long. Against Apache Kafka the broker's own long poll dominates; set 0 to disable.
A consumer that can wait longer (the alarm service's topic views) sets its own with
`set_backoff`: every idle consumer's fetches cost the local broker CPU.

2. An empty SyncGroup assignment means "rejoin", not a crash.
When a member is left out of the leader's assignment for a generation (it joined while the
leader was assigning), the broker answers its SyncGroup with zero assignment bytes. Kafka's
protocol allows that (other clients handle it: kafkajs #567, brod #305), but aiokafka 0.14 decodes
the bytes unconditionally: ``struct.error: unpack requires a buffer of 2 bytes``
kills the consumer's coordination task and the group never settles (seen in CI on two Faust
workers' simultaneous first joins). `install` makes such an answer request a rejoin after the
usual retry back-off, as aiokafka already does for SyncGroup errors.

3. A member whose generation went stale rejoins under its own member id.
aiokafka answers IllegalGeneration (an offset commit or heartbeat from the previous generation,
e.g. during the rebalance a second worker's arrival starts) by dropping its member id and joining
as a new member. noida-db keeps the old id in the group and may elect it leader of the next
generation; nobody answers for it, so every SyncGroup waits out the rebalance and the group
re-joins the same generation every 10 s without settling (seen in CI: the two workers' webhook
consumer group stuck for 20 s). Kafka's own Java client keeps the member id on IllegalGeneration
and resets it only for UnknownMemberId; `install` does the same: a reset while the member holds a
generation keeps the id, and a reset without one (the broker did not know the kept id) clears it.
Several requests of the stale generation (offset commits in flight, a heartbeat) fail together and
each resets: every reset before the next JoinGroup keeps the id too (the second one used to clear
it, and the worker rejoined as a new member while its old id led the next generation as a ghost:
seen when a second worker joined a running ward, docs/wire.md).

4. A worker that starts while the broker is down waits for it (`wait_for_broker`).
aiokafka's client bootstrap tries each host once and raises ``KafkaConnectionError``; Faust's
producer start does not retry it, so a worker (re)started during a broker restart exited within
a second and processed nothing more (seen in CI: a worker restarted 8 s before a 2-s broker
restart, 2,358 windows never written). A client that has bootstrapped once already rides out an
outage (its metadata synchroniser reconnects); only the first contact needed the wait. Opt-in:
the worker turns it on; one-shot commands keep failing fast with a clear error.

5. A restarted worker rejoins as the member it was (`remember_member_ids`).
noida-db never expires a member that stops heartbeating (a killed worker): its partitions stay
with it, and when the worker restarts as a new member the dead one can lead the next generation,
which then never settles. A worker with a stable id records its member id after each join and
starts as that member again, as Kafka's static membership does; against Apache Kafka a stale id
is answered UnknownMemberId and the worker joins as a new member. Opt-in: the worker turns it on
when `WARDSTREAM_WORKER_ID` is set.
"""

from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger(__name__)

_PATCHED = False


def install(backoff_ms: float | None = None) -> None:
    global _PATCHED
    if _PATCHED:
        return
    _install_empty_assignment_rejoin()
    _install_keep_member_id()
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


def _install_empty_assignment_rejoin() -> None:
    from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance

    original = CoordinatorGroupRebalance._send_sync_group_request
    if getattr(original, "_ws_empty_assignment_rejoin", False):
        return

    async def _send_sync_group_request(self, request):
        assignment = await original(self, request)
        if assignment is not None and len(assignment) == 0:
            log.warning("group %s: empty assignment from SyncGroup (member %s left out of "
                        "generation %s); rejoining", self.group_id,
                        self._coordinator.member_id, self._coordinator.generation)
            self._coordinator.request_rejoin()
            return None  # aiokafka waits retry_backoff_ms and joins again
        return assignment

    _send_sync_group_request._ws_empty_assignment_rejoin = True
    CoordinatorGroupRebalance._send_sync_group_request = _send_sync_group_request


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


async def started(make, what: str, setup=None, pause_s: float = 1.0):
    """A client from ``make()``, started, and ``await setup(client)`` (its result returned with it
    when given) -- tried again every ``pause_s`` while the broker is unreachable (a KafkaError:
    a broker restarting while a worker starts). In a worker the bootstrap itself already waits
    for the broker (`wait_for_broker`), but what follows it does not: fresh metadata
    (`partitions_of`), offsets. A Faust task that let the error through crashed the whole worker
    (2026-12-07: a worker restarted 8 s before a broker restart, its views' setup hit by it)."""
    from aiokafka.errors import KafkaError

    while True:
        c, ok = make(), False
        try:
            await c.start()
            out = (c, await setup(c)) if setup is not None else c
            ok = True
            return out
        except KafkaError as exc:
            log.warning("%s: broker unreachable (%r); retrying in %.0f s", what, exc, pause_s)
        finally:
            if not ok:  # a half-started client is let go, whatever stopped it
                try:
                    await c.stop()
                except Exception:
                    pass
        await asyncio.sleep(pause_s)


def _install_keep_member_id() -> None:
    from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance, GroupCoordinator
    from aiokafka.protocol.commit import OffsetCommitRequest
    from aiokafka.protocol.group import JoinGroupRequest

    original = GroupCoordinator.reset_generation
    if getattr(original, "_ws_keep_member_id", False):
        return

    def reset_generation(self):
        had_generation = self.generation != OffsetCommitRequest.DEFAULT_GENERATION_ID
        # several requests of the stale generation (offset commits in flight, a heartbeat) fail
        # together and each resets: the later ones, before any rejoin, keep the id as well
        kept = getattr(self, "_ws_kept_member", False)
        member = self.member_id
        original(self)
        if (had_generation or kept) and member != JoinGroupRequest.UNKNOWN_MEMBER_ID:
            # stale generation: rejoin as the same member (see the module doc, mend 3)
            self.member_id = member
            if not kept:
                log.info("group %s: generation reset, rejoining as member %s", self.group_id, member)
            self._ws_kept_member = True
        else:
            self._ws_kept_member = False

    reset_generation._ws_keep_member_id = True
    GroupCoordinator.reset_generation = reset_generation

    original_join = CoordinatorGroupRebalance.perform_group_join

    async def perform_group_join(self):
        # from this join on, a reset without a generation means the broker did not know the id
        self._coordinator._ws_kept_member = False
        return await original_join(self)

    CoordinatorGroupRebalance.perform_group_join = perform_group_join


def remember_member_ids(directory, identity: str) -> None:
    """Mend 5 (see the module doc): every consumer group member of this process starts as the
    member it last was, read from ``directory`` (one file per group and ``identity``: the worker's
    stable id), and records its id after each join."""
    import re
    from pathlib import Path

    from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance
    from aiokafka.protocol.group import JoinGroupRequest

    root = Path(directory)
    safe = re.compile(r"[^A-Za-z0-9._-]")
    original = CoordinatorGroupRebalance.perform_group_join
    if getattr(original, "_ws_remember", False):
        return

    async def perform_group_join(self):
        co = self._coordinator
        path = root / f"member-{safe.sub('_', self.group_id)}@{safe.sub('_', identity)}.id"
        if not getattr(co, "_ws_member_loaded", False):
            co._ws_member_loaded = True
            try:
                last = path.read_text().strip()
            except OSError:
                last = ""
            if last and co.member_id == JoinGroupRequest.UNKNOWN_MEMBER_ID:
                co.member_id = last
                log.info("group %s: rejoining as member %s, this worker's last", self.group_id, last)
        result = await original(self)
        if result is not None and co.member_id != JoinGroupRequest.UNKNOWN_MEMBER_ID:
            try:
                root.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(co.member_id)
                tmp.replace(path)
            except OSError as exc:
                log.warning("group %s: cannot record the member id in %s: %s", self.group_id, path, exc)
        return result

    perform_group_join._ws_remember = True
    CoordinatorGroupRebalance.perform_group_join = perform_group_join


def wait_for_broker(timeout_s: float) -> None:
    """Make every aiokafka client's first bootstrap retry for up to ``timeout_s`` seconds while the
    broker cannot be reached (see the module doc, mend 4), instead of raising at once."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaConnectionError

    original = getattr(AIOKafkaClient.bootstrap, "_ws_original", AIOKafkaClient.bootstrap)

    async def bootstrap(self):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pause, attempts = 0.25, 0
        while True:
            try:
                return await original(self)
            except KafkaConnectionError as exc:
                attempts += 1
                left = deadline - loop.time()
                if left <= 0:
                    raise KafkaConnectionError(f"{exc} (waited {timeout_s:.0f} s for the broker, "
                                               f"{attempts} attempts)") from exc
                if attempts == 1 or attempts % 10 == 0:
                    log.warning("broker %s unreachable; retrying for up to %.0f s more",
                                self.hosts, left)
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, 2.0)

    bootstrap._ws_original = original
    AIOKafkaClient.bootstrap = bootstrap
