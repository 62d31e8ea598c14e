"""`wardstream status` against a running worker on the real broker and InfluxDB."""

import asyncio
import json
import time

import pytest

from device_sim.ward import run_ward
from wardstream.status import collect
from wardstream.workers import WorkerPool

pytestmark = pytest.mark.servers


async def _publish(s, events: list[dict]) -> None:
    from aiokafka import AIOKafkaProducer

    from processors.delivery import event_key

    p = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    await p.start()
    try:
        for ev in events:
            await p.send_and_wait(s.alarms_topic, json.dumps(ev).encode(), key=event_key(ev))
    finally:
        await p.stop()


def _ev(bed: int, condition: str, priority: str, state: str, t_ms: int) -> dict:
    return {"id": f"{bed}:{condition}:1:{state}:{t_ms}", "bed": bed, "ward": "default", "condition": condition,
            "priority": priority, "state": state, "t_ms": t_ms, "by": "test", "why": "test", "episode": 1}


def test_status_shows_the_group_the_workers_the_lag_and_the_open_alarms(ward_settings):
    s = ward_settings
    pool = WorkerPool(s, 1)
    pool.start_all()
    try:
        pool.wait_ready()
        rep = asyncio.run(run_ward(s, 4, 6.0, speed=1.0, seed=3))
        assert rep.frames_accepted >= 8
        now = int(time.time() * 1000)
        asyncio.run(_publish(s, [_ev(3, "vtach", "high", "active", now),
                                 _ev(4, "monitoring_stalled", "technical", "active", now),
                                 _ev(5, "monitoring_stalled", "technical", "active", now),
                                 _ev(5, "monitoring_stalled", "technical", "resolved", now + 1)]))
        deadline = time.monotonic() + 30
        while True:
            d = asyncio.run(collect(s))
            w = {x["worker"]: x for x in d["workers"] or []}
            if (d["frames"]["lag"] == 0 and "w0" in w and w["w0"]["windows_written"] >= rep.frames_accepted) \
                    or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert d["frames"]["lag"] == 0 and len(d["frames"]["partitions"]) == s.frames_partitions
        assert sum(p["end"] for p in d["frames"]["partitions"].values()) >= rep.frames_accepted
        # one member, holding every frames partition
        assert d["group"]["state"] == "Stable" and len(d["group"]["members"]) == 1, d["group"]
        assert d["group"]["members"][0]["frames_partitions"] == list(range(s.frames_partitions))
        assert d["frames"]["unassigned_partitions_with_lag"] == []
        assert not w["w0"]["silent"] and w["w0"]["last_point_age_s"] < 15, w
        a = d["alarms"]
        assert a["by_condition"].get("vtach") == 1 and a["by_priority"].get("high", 0) >= 1, a
        assert a["monitoring_stalled_beds"] == [4], a
    finally:
        pool.stop_all()
    # the worker stopped: its last point ages, and the group is empty
    time.sleep(2.0)
    d = asyncio.run(collect(s))
    assert d["group"]["members"] == [] and d["group"]["state"] in ("Empty", "Dead"), d["group"]
