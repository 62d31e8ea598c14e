"""`wardstream status` against a running worker on the real broker and InfluxDB."""

import asyncio
import json
import subprocess
import sys
import time

import pytest

from device_sim.ward import run_ward
from wardstream.settings import PROJECT_ROOT
from wardstream.status import collect, problems
from wardstream.workers import WorkerPool, settings_env



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


@pytest.mark.servers
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
        # the one problem: bed 4's open monitoring_stalled alarm (the worker is live, nothing waits)
        assert d["problems"] == ["1 beds not monitored (open monitoring_stalled alarms): [4]"], d["problems"]
    finally:
        pool.stop_all()
    # the worker stopped: its last point ages, and the group is empty
    time.sleep(2.0)
    d = asyncio.run(collect(s))
    assert d["group"]["members"] == [] and d["group"]["state"] in ("Empty", "Dead"), d["group"]
    # a probe: exit 1 with the problems on stderr
    r = subprocess.run([sys.executable, "-m", "wardstream.cli", "status", "--check"], env=settings_env(s),
                       cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "beds not monitored" in r.stderr, (r.returncode, r.stderr[-2000:])
    assert json.loads(r.stdout)["problems"] == d["problems"]


def _answer(lag=0, members=1, unassigned=(), workers=(("w0", False, 0),), influx_error=None, stalled_beds=()):
    d = {"frames": {"lag": lag, "unassigned_partitions_with_lag": list(unassigned)},
         "group": {"group": "ws", "members": [{"frames_partitions": [0]}] * members},
         "workers": None if influx_error else [{"worker": w, "silent": silent, "stalled_partitions": n}
                                               for w, silent, n in workers],
         "alarms": {"monitoring_stalled_beds": list(stalled_beds)}}
    if influx_error:
        d["influxdb_error"] = influx_error
    return d


@pytest.mark.parametrize("answer, expected", [
    (_answer(), []),
    # frames waiting, a live worker on them: it is working
    (_answer(lag=40), []),
    # a worker that stopped cleanly beside a live one: no problem
    (_answer(workers=(("w0", False, 0), ("old", True, 0))), []),
    (_answer(lag=40, members=0), ["no worker in group ws while 40 frames wait"]),
    (_answer(lag=40, unassigned=[3, 5]), ["frames partitions [3, 5] have frames waiting and no worker holding them"]),
    (_answer(lag=40, workers=(("w0", True, 0),)),
     ["no worker has written a pipeline point for 15 s while 40 frames wait (stuck, or unable to write)"]),
    (_answer(lag=40, workers=(("w0", False, 2),), stalled_beds=[7, 9]),
     ["2 frames partitions reported stalled by the workers' group watch",
      "2 beds not monitored (open monitoring_stalled alarms): [7, 9]"]),
    (_answer(influx_error="ConnectionRefusedError: …"),
     ["InfluxDB cannot be read (ConnectionRefusedError: …): windows may not be written"]),
])
def test_the_problems_are_what_needs_someone_now(answer, expected):
    assert problems(answer) == expected
