"""The aiokafka mend for an empty SyncGroup assignment (see stream.kafka_compat).

The broker sends zero assignment bytes to a member the leader left out of a generation; this
cannot be provoked on demand with a real broker (it needs a join racing the leader's assignment),
so the coordinator side is a stand-in here and only aiokafka's own rebalance code runs.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance
from aiokafka.coordinator.protocol import ConsumerProtocol, ConsumerProtocolMemberAssignment

from stream import kafka_compat


class _Coordinator:
    def __init__(self, member_assignment: bytes):
        self.generation, self.member_id = 7, "m-1"
        self.rejoins = 0
        self._member_assignment = member_assignment

    async def _send_req(self, request):
        return SimpleNamespace(error_code=0, member_assignment=self._member_assignment)

    def request_rejoin(self):
        self.rejoins += 1


def _sync(member_assignment: bytes):
    kafka_compat.install()
    rebalance = object.__new__(CoordinatorGroupRebalance)
    rebalance._coordinator = _Coordinator(member_assignment)
    rebalance.group_id = "g"
    result = asyncio.run(rebalance._send_sync_group_request(request=None))
    return result, rebalance._coordinator


def test_empty_assignment_requests_a_rejoin_instead_of_failing_to_decode():
    result, coordinator = _sync(b"")
    assert result is None  # aiokafka then backs off and joins again
    assert coordinator.rejoins == 1


def test_a_real_assignment_passes_through_unchanged():
    encoded = ConsumerProtocolMemberAssignment(0, [("frames", [0, 3])], b"").encode()
    result, coordinator = _sync(encoded)
    assert result == encoded
    assert coordinator.rejoins == 0
    assert sorted(ConsumerProtocol.ASSIGNMENT.decode(result).partitions()) == [("frames", 0), ("frames", 3)]


def _coordinator(generation: int, member_id: str):
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    kafka_compat.install()
    c = object.__new__(GroupCoordinator)
    c.generation, c.member_id, c.group_id = generation, member_id, "g"
    c._rejoin_needed_fut = asyncio.get_event_loop_policy().new_event_loop().create_future()
    return c


def test_a_stale_generation_rejoins_under_the_same_member_id():
    c = _coordinator(4, "m-1")
    c.reset_generation()  # what aiokafka does on IllegalGeneration from a commit or heartbeat
    assert (c.generation, c.member_id) == (-1, "m-1")
    assert c._rejoin_needed_fut.done()


def test_a_reset_without_a_generation_clears_the_member_id():
    c = _coordinator(-1, "m-1")
    c.reset_generation()  # the broker did not know the kept id (UnknownMemberId on JoinGroup)
    assert (c.generation, c.member_id) == (-1, "")


def test_several_resets_of_one_stale_generation_keep_the_member_id_until_the_next_join():
    """Offset commits in flight and a heartbeat of the stale generation fail together, and aiokafka
    resets once per failure: every reset before the rejoin keeps the id (the second one used to
    clear it, and the member rejoined as a new one while its old id stayed in the group)."""
    c = _coordinator(4, "m-1")
    for _ in range(3):
        c.reset_generation()
        assert (c.generation, c.member_id) == (-1, "m-1")
    # the rejoin goes out under it; a broker that does not know the id answers UnknownMemberId,
    # and then it is cleared (aiokafka's own join code, the broker a stand-in)
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    sent = []

    async def send_req(request):
        sent.append(request)
        return SimpleNamespace(error_code=25)  # UNKNOWN_MEMBER_ID

    c._send_req, c._group_instance_id = send_req, None
    rebalance = object.__new__(CoordinatorGroupRebalance)
    rebalance._coordinator, rebalance.group_id, rebalance.coordinator_id = c, "g", 1
    rebalance._subscription = SimpleNamespace(topics={"frames"}, active=True)
    rebalance._assignors = [RoundRobinPartitionAssignor]
    rebalance._session_timeout_ms, rebalance._rebalance_timeout_ms = 10000, 60000
    assert asyncio.run(rebalance.perform_group_join()) is None
    assert [r._member_id for r in sent] == ["m-1"]
    assert (c.generation, c.member_id) == (-1, "")


def test_a_client_started_while_the_broker_is_away_is_started_once_it_is_back(tmp_path, caplog):
    """`kafka_compat.started` against a real broker that comes up 2 s after the first try: the
    consumer and its setup are tried again until they succeed (a Faust task that let the error
    through crashed the whole worker)."""
    import threading

    from aiokafka import AIOKafkaConsumer

    from tests.isolation import free_port
    from wardstream import services
    from wardstream.settings import from_env

    s = from_env({}, state_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    broker = services.Broker(s)
    tries = []

    async def setup(c):
        tries.append(len(tries))
        return sorted(await c.topics())

    later = threading.Timer(2.0, broker.up)

    async def main():
        later.start()
        c, topics = await asyncio.wait_for(kafka_compat.started(
            lambda: AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, request_timeout_ms=2000),
            "test consumer", setup, pause_s=0.5), timeout=60)
        try:
            assert isinstance(topics, list)
        finally:
            await c.stop()

    caplog.set_level("WARNING", logger="stream.kafka_compat")
    try:
        asyncio.run(main())
    finally:
        later.join()  # its `up` done (it returns once the broker answers) before the broker stops
        broker.down()
    retried = [r for r in caplog.records if "test consumer: broker unreachable" in r.getMessage()]
    assert len(retried) >= 2  # refused for about 2 s, tried every 0.5 s
    assert tries == [0]  # set up once: after the start that succeeded
