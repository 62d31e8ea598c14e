"""End to end against the real broker and the real influxd: simulated beds -> Kafka -> Faust
worker -> InfluxDB, with the worker killed and restarted, the broker restarted and InfluxDB
stopped for a while in the middle of the run. Every accepted window must be in InfluxDB exactly
once, and malformed frames must reach the dead-letter topic with their reason."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from device_sim.ward import run_ward
from stream.topics import read_to_end
from tests.isolation import api
from wardmodels import DD_MODEL
from wardstream import services
from wardstream.influxq import exactly_once, frame_seqs, missing_windows, query, query_rows
from wardstream.workers import WorkerPool

pytestmark = pytest.mark.servers


async def _dead_letters(s, n_expected: int, timeout_s: float = 30.0) -> list:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(s.dlq_topic, bootstrap_servers=s.kafka_bootstrap, group_id=None,
                         auto_offset_reset="earliest")
    await c.start()
    out = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < n_expected and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500)
            for msgs in batch.values():
                out.extend(msgs)
    finally:
        await c.stop()
    return out


async def _explain(s, lost: list[tuple[int, int]]) -> list[str]:
    """Where each lost window sits in the frames topic, against the group's committed offset."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream.wire import decode_frame

    want = set(lost)
    c = AIOKafkaConsumer(s.frames_topic, bootstrap_servers=s.kafka_bootstrap, group_id=None,
                         auto_offset_reset="earliest")
    await c.start()
    found = []
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            batch = await c.getmany(timeout_ms=1000)
            if not batch:
                break
            for tp, msgs in batch.items():
                for m in msgs:
                    try:
                        fr = decode_frame(m.value)
                    except Exception:
                        continue
                    if (fr.bed_id, fr.seq) in want:
                        found.append((fr.bed_id, fr.seq, tp.partition, m.offset))
    finally:
        await c.stop()
    g = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=s.app_id, enable_auto_commit=False)
    await g.start()
    try:
        out = []
        for bed, seq, part, off in found:
            committed = await g.committed(TopicPartition(s.frames_topic, part))
            out.append(f"bed {bed} seq {seq}: partition {part} offset {off}, committed {committed}")
        return out + [f"not in topic: {sorted(want - {(b, q) for b, q, _, _ in found})}"]
    finally:
        await g.stop()


def _log_tail(path, n: int = 4000) -> str:
    """The end of a worker's log without aiokafka's per-retry connection errors."""
    noise = ("Unable connect to node", "Unable to update metadata", "NodeNotReadyError")
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if not any(x in ln for x in noise)]
    return "\n".join(lines)[-n:]


def _wait_for_all(s, rep, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while True:
        stored = frame_seqs(s, rep.t_first_us // 1000, rep.t_last_end_us // 1000)
        missing, dup = exactly_once(rep.accepted, stored)
        if missing == 0 or time.monotonic() > deadline:
            return stored, missing, dup
        time.sleep(1.0)


def _ward_beside(chaos, s, *args, **kwargs):
    """`run_ward` (its arguments after the settings) while the coroutine function ``chaos`` runs
    beside it -> the ward's report, once both are done."""
    async def main():
        task = asyncio.ensure_future(chaos())
        rep = await run_ward(s, *args, **kwargs)
        await task
        return rep

    return asyncio.run(main())


def _assert_exactly_once(s, rep, pool, events):
    """Every accepted window of ``rep`` in InfluxDB once; a failure says where the lost ones sit
    in the frames topic and how the workers' logs end."""
    stored, missing, dup = _wait_for_all(s, rep)
    if missing:
        detail = asyncio.run(_explain(s, missing_windows(rep.accepted, stored)[:20]))
        pytest.fail(f"{missing} accepted windows missing from InfluxDB; events {events}:\n" + "\n".join(detail)
                    + "\n" + "\n".join(f"worker {w.index} ({'alive' if w.alive() else 'dead'}) {w.log_path} "
                                        "ends:\n" + _log_tail(w.log_path, 2500) for w in pool.workers))
    assert dup == 0, f"{dup} windows stored twice"
    return stored


def test_exactly_once_through_worker_kill_broker_restart_and_influx_outage(servers, ward_settings):
    s = ward_settings.replace(codec_model=DD_MODEL, level_policy="dynamic")  # levels switch per window
    pool = WorkerPool(s, 1)
    pool.start_all()
    broker, influx = services.Broker(servers), services.Influx(servers)
    events: list[str] = []
    try:
        pool.wait_ready()

        # (seconds to wait first, what to do, what happened), run during the ward
        steps = [(6, lambda: pool.kill(0), "worker killed"),  # SIGKILL: no final commit
                 (2, lambda: pool.start(0), "worker restarted"),
                 (8, broker.down, "broker stopped"),
                 (2, broker.up, "broker restarted"),
                 (6, influx.down, "influxd stopped"),
                 (4, influx.up, "influxd restarted")]

        async def chaos() -> None:
            for wait_s, action, label in steps:
                await asyncio.sleep(wait_s)
                action()
                events.append(label)

        rep = _ward_beside(chaos, s, 20, 32.0, speed=8.0, seed=5, bad_every=150)
        assert len(events) == 6, events
        assert rep.frames_accepted >= 0.9 * rep.frames_sent, "most windows must get through"
        assert rep.frames_accepted > 2000
        stored = _assert_exactly_once(s, rep, pool, events)
        assert pool.workers[0].alive(), "the worker must survive a broker restart and an InfluxDB outage"
        # the malformed frames went to the dead-letter topic with a reason, and nothing stopped
        dead = asyncio.run(_dead_letters(s, rep.bad_frames_sent))
        assert rep.bad_frames_sent >= 10
        assert len(dead) >= rep.bad_frames_sent
        reasons = {dict(m.headers)["reason"].decode() for m in dead}
        assert reasons == {"bad_crc", "truncated", "bad_magic"}
        assert all(dict(m.headers)["source"].decode().startswith(s.frames_topic) for m in dead)
        # vitals were derived: heart rate for every bed
        hr = query(s, 'SELECT count("hr_bpm") FROM "vitals" GROUP BY "bed"')
        assert len(hr) == 20
        assert all(series["values"][0][1] > 50 for series in hr)
        # the classifiers ran: a rhythm decision per bed every 2 s once it has 10 s of signal
        # (fewer around the worker kill and gaps), and a class on most detected beats
        rh = query(s, 'SELECT count("code") FROM "rhythm" GROUP BY "bed"')
        assert len(rh) == 20 and all(series["values"][0][1] >= 5 for series in rh)
        p = query(s, 'SELECT "p_normal" + "p_af" + "p_other" + "p_noisy" AS total FROM "rhythm" LIMIT 50')
        assert all(abs(v[1] - 1.0) < 2e-3 for v in p[0]["values"])
        cls = query(s, 'SELECT count("cls") FROM "beat"')[0]["values"][0][1]
        amp = query(s, 'SELECT count("amp_mv") FROM "beat"')[0]["values"][0][1]
        assert cls >= 0.8 * amp, (cls, amp)
        # the alarm stage ran on every window: one alarm_level point per bed and window written
        lv = query(s, 'SELECT count("highest") FROM "alarm_level" GROUP BY "bed"')
        assert len(lv) == 20 and all(series["values"][0][1] >= 0.9 * len(stored[int(series["tags"]["bed"])])
                                     for series in lv)
        # the devices picked their ECG level per window, and the worker recorded each one
        levels = query(s, 'SELECT "level" FROM "bandwidth" WHERE "modality" = \'ecg\'')[0]["values"]
        assert {v[1] for v in levels} == {int(k) for k in rep.levels}, rep.levels
    finally:
        pool.stop_all()


def test_two_workers_outlive_a_broker_outage_longer_than_their_session(servers, ward_settings):
    """The broker away for 25 s, longer than the group session (10 s, `stream/app.py`): both
    workers' sessions expire and their commits of the old generation fail; they rejoin once it is
    back and go on, and every window the devices got acknowledged (they hold their frames through
    the outage) is written exactly once. (The chaos test's broker restart is 2 s, within the
    session.)"""
    s = ward_settings
    pool = WorkerPool(s, 2)
    pool.start_all()
    broker = services.Broker(servers)
    events: list[str] = []
    try:
        pool.wait_ready()

        async def chaos() -> None:
            await asyncio.sleep(8)
            broker.down()
            events.append("broker stopped")
            await asyncio.sleep(25)
            broker.up()
            events.append("broker back after 25 s")

        rep = _ward_beside(chaos, s, 8, 50.0, speed=1.0, seed=7, bad_every=0)
        assert events == ["broker stopped", "broker back after 25 s"], events
        assert rep.frames_accepted >= 0.95 * rep.frames_sent and rep.frames_accepted >= 150, \
            (rep.frames_sent, rep.frames_accepted)
        _assert_exactly_once(s, rep, pool, events)
        assert all(w.alive() for w in pool.workers), [_log_tail(w.log_path) for w in pool.workers]
        # the premise: the outage outlasted the session (the workers had to rejoin)
        logs = [w.log_path.read_text(errors="replace") for w in pool.workers]
        assert all("session expired" in lg or "will rejoin" in lg for lg in logs), \
            [_log_tail(w.log_path) for w in pool.workers]
    finally:
        pool.stop_all()


def test_frame_under_another_beds_key_is_dead_lettered(ward_settings):
    """A frame under another bed's key goes to the dead-letter topic; the bed's other windows are
    written. Windows that ended before the worker started (a backlog) are written too, and kept
    out of its latency histogram."""
    from aiokafka import AIOKafkaProducer

    from device_sim.sources import SyntheticBed
    from device_sim.ward import Device
    from stream.topics import bed_key

    s = ward_settings
    pool = WorkerPool(s, 1)
    pool.start_all()
    try:
        pool.wait_ready()
        dev = Device(31, SyntheticBed(31), int(time.time() * 1e6))
        old = Device(33, SyntheticBed(33), int((time.time() - 600) * 1e6))  # ten minutes ago

        async def send():
            p = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True)
            await p.start()
            try:
                f0, f1, f2 = (dev.next_frame() for _ in range(3))
                await (await p.send(s.frames_topic, f0[0], key=bed_key(31)))
                await (await p.send(s.frames_topic, f1[0], key=bed_key(32)))  # wrong bed
                await (await p.send(s.frames_topic, f2[0], key=bed_key(31)))
                o0, o1 = old.next_frame(), old.next_frame()
                for frame, _ in (o0, o1):
                    await (await p.send(s.frames_topic, frame, key=bed_key(33)))
                return f0[1], f2[1], o0[1], o1[1]
            finally:
                await p.stop()

        a, b, oa, ob = asyncio.run(send())
        dead = asyncio.run(_dead_letters(s, 1))
        assert [dict(m.headers)["reason"] for m in dead] == [b"key_mismatch"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stored = frame_seqs(s, a.t_start_us // 1000, b.window_end_us // 1000)
            stored_old = frame_seqs(s, oa.t_start_us // 1000, ob.window_end_us // 1000)
            if stored.get(31) == [0, 2] and stored_old.get(33) == [0, 1]:
                break
            time.sleep(0.5)
        assert stored == {31: [0, 2]}
        assert stored_old == {33: [0, 1]}
        assert pool.workers[0].alive()
        # the points can be queryable a moment before the worker has counted them
        deadline = time.monotonic() + 10
        while (st := pool.workers[0].stats())["windows_written"] < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert st["windows_written"] == 4
        assert st["backlog"]["windows"] == 2 and st["backlog"]["wait_max_ms"] >= 590_000
        hist = {int(k): v for k, v in st["latency_ms_hist"].items()}
        assert sum(hist.values()) == 2 and max(hist) < 60_000, hist
    finally:
        pool.stop_all()


def test_a_worker_started_while_the_broker_is_down_waits_for_it(servers, ward_settings):
    """A worker (re)started during a broker restart must not exit: it waits for the broker, joins,
    and processes what the devices sent meanwhile (CI once lost 2,358 windows to a worker that
    exited because its producer could not bootstrap)."""
    from aiokafka import AIOKafkaProducer

    from device_sim.sources import SyntheticBed
    from device_sim.ward import Device
    from stream.topics import bed_key

    s = ward_settings
    broker = services.Broker(servers)
    pool = WorkerPool(s, 1)
    broker.down()
    try:
        pool.start_all()
        # Wait until its imports are done and its clients are trying to reach the broker (a fixed
        # 8 s sleep was too short on a slow CI host: the log was still empty).
        w = pool.workers[0]
        deadline = time.monotonic() + 90
        while "unreachable; retrying" not in _log_tail(w.log_path) and time.monotonic() < deadline:
            assert w.alive(), _log_tail(w.log_path)
            time.sleep(0.5)
        time.sleep(2.0)  # a few retries more: it must still be alive and not ready
        assert w.alive(), _log_tail(w.log_path)
        assert "unreachable; retrying" in _log_tail(w.log_path) and not w.ready()
    finally:
        broker.up()
    try:
        pool.wait_ready(timeout=120)
        dev = Device(41, SyntheticBed(41), int(time.time() * 1e6))

        async def send():
            p = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True)
            await p.start()
            try:
                heads = []
                for _ in range(3):
                    frame, head = dev.next_frame()
                    await (await p.send(s.frames_topic, frame, key=bed_key(41)))
                    heads.append(head)
                return heads[0], heads[-1]
            finally:
                await p.stop()

        a, b = asyncio.run(send())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stored = frame_seqs(s, a.t_start_us // 1000, b.window_end_us // 1000)
            if stored.get(41) == [0, 1, 2]:
                break
            time.sleep(0.5)
        assert stored == {41: [0, 1, 2]}
        assert pool.workers[0].alive()
    finally:
        pool.stop_all()


def test_exactly_once_while_a_second_worker_joins_and_the_first_is_killed(servers, ward_settings):
    """Scaling out and failing over: a ward runs on one worker, a second joins mid-run (the
    partitions and their bed states move to it through the changelog), then the first is killed
    without a final commit (the second takes its partitions over). Every accepted window is in
    InfluxDB exactly once, both workers wrote windows, and a bed's QRS stream kept its history
    across the moves (its heart rate is written for every bed)."""
    s = ward_settings
    pool = WorkerPool(s, 2)
    pool.start(0)
    events: list[str] = []
    written: list[int] = []  # windows each worker had written when the first was killed
    try:
        pool.wait_ready()

        async def chaos() -> None:
            await asyncio.sleep(5)
            pool.start(1)
            events.append("second worker started")
            await asyncio.to_thread(pool.wait_ready, 90.0)
            events.append("second worker ready")
            await asyncio.sleep(6)
            written.extend(await asyncio.to_thread(lambda: [w.stats()["windows_written"] for w in pool.workers]))
            pool.kill(0)
            events.append("first worker killed")
            await asyncio.sleep(2)
            pool.start(0)  # as its supervisor would (docker-compose: restart unless-stopped)
            events.append("first worker restarted")

        rep = _ward_beside(chaos, s, 16, 40.0, speed=4.0, seed=9, bad_every=0)
        assert events == ["second worker started", "second worker ready", "first worker killed",
                          "first worker restarted"], events
        assert rep.frames_accepted == rep.frames_sent > 16 * 60
        _assert_exactly_once(s, rep, pool, events)
        assert pool.workers[0].alive() and pool.workers[1].alive()
        # both shared the ward: each had written windows of its own before the first was killed
        assert written[0] > 0 and written[1] > 0, written
        assert pool.workers[1].stats()["windows_written"] > written[1]  # and the second went on alone
        hr = query(s, 'SELECT count("hr_bpm") FROM "vitals" GROUP BY "bed"')
        assert len(hr) == 16
    finally:
        pool.stop_all()


def _stall_events(s) -> list[dict]:
    evs = [json.loads(m.value) for m in asyncio.run(read_to_end(s.kafka_bootstrap, s.alarms_topic))]
    return [e for e in evs if e["condition"] == "monitoring_stalled"]


def _stall_alarms(s) -> list[tuple[int, str, int]]:
    return [(e["bed"], e["state"], e["episode"]) for e in _stall_events(s)]


async def _group_committed(s) -> dict[int, int | None]:
    """The group's committed offset of every frames partition (None: nothing committed)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    g = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=s.app_id, enable_auto_commit=False)
    await g.start()
    try:
        return {p: await g.committed(TopicPartition(s.frames_topic, p)) for p in range(s.frames_partitions)}
    finally:
        await g.stop()


def test_a_stalled_partition_is_reported_while_its_worker_cannot_write(servers, ward_settings, monkeypatch):
    """While InfluxDB is down the worker holds its batch (it commits only what is written), so the
    frames partitions' group offsets stand still with frames waiting: its group watch reports them
    stalled (processors/group_watch.py) and raises a ``monitoring_stalled`` alarm for each bed
    whose frames wait, on the alarms topic while InfluxDB is still down; once InfluxDB is back and
    the backlog written, the partitions are no longer stalled, the alarms resolve (both transitions
    in InfluxDB's alarm history too), and every window is there exactly once."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    from device_sim.sources import SyntheticBed
    from device_sim.ward import Device
    from stream.topics import bed_key

    part = DefaultPartitioner()
    s = ward_settings.replace(stall_s=4.0, wards="icu:1-50,cardio:51-60")
    monkeypatch.setenv("WARDSTREAM_API_TOKENS", "cardio-token-0123456789=cardio;icu-token-0123456789=icu")
    influx = services.Influx(servers)
    pool = WorkerPool(s, 1)
    pool.start_all()
    try:
        pool.wait_ready()
        t0 = int(time.time() * 1e6)
        devs = [Device(b, SyntheticBed(b), t0 + 1000 * b) for b in (51, 52, 53)]

        async def send(n: int, devs=devs) -> list:
            p = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True)
            await p.start()
            heads = []
            try:
                for _ in range(n):
                    for d in devs:
                        frame, head = d.next_frame()
                        await (await p.send(s.frames_topic, frame, key=bed_key(d.bed_id)))
                        heads.append(head)
                    await asyncio.sleep(0.5)
            finally:
                await p.stop()
            return heads

        heads = asyncio.run(send(2))
        influx.down()
        try:
            heads += asyncio.run(send(4))
            stalled, deadline = [], time.monotonic() + 30
            while not stalled and time.monotonic() < deadline:
                time.sleep(1.0)
                stalled = ((pool.workers[0].stats() or {}).get("group") or {}).get("stalled_partitions") or []
            assert stalled, pool.workers[0].stats().get("group")
            assert pool.workers[0].stats()["group"]["lag"] > 0
            deadline, raised = time.monotonic() + 20, []
            while time.monotonic() < deadline and {b for b, st, _ in raised} != {51, 52, 53}:
                time.sleep(1.0)
                raised = _stall_alarms(s)
            # the clinicians are told while InfluxDB is still down: one alarm per bed, none resolved
            assert sorted(b for b, st, _ in raised) == [51, 52, 53] and {st for _, st, _ in raised} == {"active"}, raised
            port = pool.workers[0].port
            code, body = api(port, "GET", "/api/v1/alarms", "cardio-token-0123456789")
            assert code == 200 and sorted(a["bed"] for a in body["alarms"] if a["condition"] == "monitoring_stalled") \
                == [51, 52, 53], body
            assert api(port, "GET", "/api/v1/alarms", "icu-token-0123456789")[1]["alarms"] == []  # another ward's
            # it resolves itself: nothing to acknowledge on a bed whose commands wait behind the stall
            code, body = api(port, "POST", "/api/v1/alarms/52/monitoring_stalled/ack", "cardio-token-0123456789",
                             {"by": "nurse"})
            assert code == 409 and "resolves itself" in json.dumps(body), (code, body)
            # a bed whose frames first arrive behind the stall (a device switched on meanwhile) is
            # alarmed too, in the same episode as the bed beside it on that partition
            parts = list(range(s.frames_partitions))
            late = next(b for b in range(54, 61) if part(bed_key(b), parts, parts) == part(bed_key(52), parts, parts))
            heads += asyncio.run(send(2, [Device(late, SyntheticBed(late), t0 + 1000 * late)]))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and late not in {b for b, _, _ in raised}:
                time.sleep(1.0)
                raised = _stall_alarms(s)
            ep = {b: e for b, _, e in raised}
            assert late in ep and ep[late] == ep[52], raised
        finally:
            influx.up()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            g = (pool.workers[0].stats() or {}).get("group") or {}
            if g.get("lag") == 0 and not g.get("stalled_partitions"):
                break
            time.sleep(1.0)
        assert g["lag"] == 0 and g["stalled_partitions"] == [] and g["stalls"] >= 1, g
        deadline = time.monotonic() + 20
        beds = sorted((51, 52, 53, late))
        while time.monotonic() < deadline and len(_stall_alarms(s)) < 2 * len(beds):
            time.sleep(1.0)
        after = _stall_alarms(s)
        assert sorted((b, st) for b, st, _ in after) == [(b, st) for b in beds for st in ("active", "resolved")]
        episodes = {b: {ep for b2, _, ep in after if b2 == b} for b in beds}
        assert all(len(e) == 1 for e in episodes.values()), after  # each resolves the stall it raised
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the alarm history, written with the backlog
            hist = query_rows(s, "SELECT * FROM \"alarm\" WHERE \"condition\" = 'monitoring_stalled'")
            if len(hist) == 2 * len(beds):
                break
            time.sleep(1.0)
        assert sorted((int(r["bed"]), r["state"]) for r in hist) == sorted((b, st) for b, st, _ in after), hist
        # the ward tile's alarm level counts the stall while it is open (the beds' own worker, which
        # writes it with every window, was the stuck one)
        for r in hist:
            lv = query_rows(s, f'SELECT "highest", "open" FROM "alarm_level" WHERE "bed" = \'{r["bed"]}\' '
                               f'AND time = {r["time"]}ms')
            assert len(lv) == 1, (r, lv)
            if r["state"] == "active":
                assert lv[0]["highest"] >= 1 and lv[0]["open"] >= 1, (r, lv)
        t_first, t_last = min(h.t_start_us for h in heads), max(h.window_end_us for h in heads)
        stored = frame_seqs(s, t_first // 1000, t_last // 1000)
        assert stored == {51: list(range(6)), 52: list(range(6)), 53: list(range(6)), late: [0, 1]}, stored
        assert pool.workers[0].alive()
    finally:
        pool.stop_all()


def test_a_frozen_workers_beds_are_alarmed_by_the_other_worker(servers, ward_settings):
    """A worker frozen (SIGSTOP: a hung process, which the local broker never expires from the
    group) holds its partitions; the other worker's group watch reports every one of them that
    holds a bed stalled and raises ``monitoring_stalled`` for exactly their beds, and resolves them
    once the frozen worker goes on (SIGCONT); every window written exactly once.

    The worker is frozen once the ward is steady: both workers have committed on every bed's
    partition and no stall is reported or open, so that what the watch reports is this freeze.
    (Until 2026-12-07 the watch reported a partition stalled at the first sample after its first
    frame when the sample before had seen it idle, and this test, freezing 6 s into the ward,
    took that start-up report for the freeze: `test_group_watch.py`.) Should a real start-up
    stall happen on a loaded host (a commit more than 5 s late), its alarms are told apart by
    their (bed, episode) and left out, and printed."""
    import os
    import signal

    from aiokafka.partitioner import DefaultPartitioner

    from stream.topics import bed_key
    from wardstream.status import group_members

    s = ward_settings.replace(stall_s=5.0)
    part = DefaultPartitioner()
    parts = list(range(s.frames_partitions))
    beds = range(1, 13)
    bed_part = {b: part(bed_key(b), parts, parts) for b in beds}

    def beds_on(ps) -> set[int]:
        return {b for b in beds if bed_part[b] in set(ps)}

    pool = WorkerPool(s, 2)
    pool.start_all()
    events: list[str] = []
    seen: dict = {}
    try:
        pool.wait_ready()

        async def chaos() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                committed = await _group_committed(s)
                g = ((await asyncio.to_thread(pool.workers[1].stats)) or {}).get("group")
                evs = await asyncio.to_thread(_stall_events, s)
                last = {e["bed"]: e["state"] for e in evs}
                seen["steady"] = {"committed": committed, "group": g, "open": sorted(b for b, st in last.items() if st == "active")}
                if all(committed[p] is not None for p in bed_part.values()) and g is not None \
                        and not g["stalled_partitions"] and "active" not in last.values():
                    break
            else:
                events.append("never steady")
                return
            seen["before"] = {(e["bed"], e["episode"]) for e in evs}  # a start-up stall's, if any
            members = (await group_members(s))["members"]
            os.killpg(pool.workers[0].proc.pid, signal.SIGSTOP)
            events.append("first worker frozen")
            seen["frozen_at"] = time.time()
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                g = ((await asyncio.to_thread(pool.workers[1].stats)) or {}).get("group") or {}
                raised = [e for e in await asyncio.to_thread(_stall_events, s)
                          if (e["bed"], e["episode"]) not in seen["before"]]
                stalled = set(g.get("stalled_partitions") or [])
                held = [set(m["frames_partitions"]) for m in members if stalled & set(m["frames_partitions"])]
                seen["last"] = {"stalled": sorted(stalled), "held": held, "raised": raised}
                # the frozen worker: the member holding the stalled partitions; all of its bed
                # partitions stall (frames arrive on each every 2 s) and all their beds are raised
                if len(held) == 1 and stalled == held[0] & set(bed_part.values()) and \
                        {e["bed"] for e in raised if e["state"] == "active"} == beds_on(stalled):
                    seen.update(stalled=sorted(stalled), raised=raised)
                    break
            os.killpg(pool.workers[0].proc.pid, signal.SIGCONT)
            events.append("first worker goes on")

        rep = _ward_beside(chaos, s, 12, 45.0, speed=1.0, seed=4, bad_every=0)
        assert events == ["first worker frozen", "first worker goes on"], (events, seen.get("steady"))
        assert seen.get("raised"), f"not every bed of the frozen worker's partitions alarmed: {seen.get('last')}"
        on_stalled = beds_on(seen["stalled"])
        assert on_stalled and len({e["id"] for e in seen["raised"]}) == len(on_stalled), seen["raised"]
        _assert_exactly_once(s, rep, pool, events)

        def stall_alarms() -> list[tuple[int, str, int]]:  # this stall's, without a start-up stall's
            evs = [e for e in _stall_events(s) if (e["bed"], e["episode"]) not in seen["before"]]
            # both workers may send a transition; raising is deterministic: one id per bed
            assert len({e["id"] for e in evs if e["state"] == "active"}) == len({e["bed"] for e in evs}), evs
            return [(e["bed"], e["state"], e["episode"]) for e in evs]

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after = stall_alarms()
            if {b for b, st, _ in after if st == "resolved"} >= on_stalled:
                break
            time.sleep(1.0)
        resolved = {b for b, st, _ in after if st == "resolved"}
        assert resolved == {b for b, st, _ in after if st == "active"} == on_stalled, after
        time.sleep(6.0)  # a sample of both workers after the last resolve: neither says it again
        after = stall_alarms()
        # one resolve per bed: the partition's owner (the worker that goes on) sends it, the other
        # worker only after the hand-over time, had the owner not
        assert sorted(b for b, st, _ in after if st == "resolved") == sorted(on_stalled), after
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the alarm history: one point per transition
            hist = [r for r in query_rows(s, "SELECT * FROM \"alarm\" WHERE \"condition\" = 'monitoring_stalled'")
                    if (int(r["bed"]), int(r["episode"])) not in seen["before"]]
            if len(hist) >= 2 * len(on_stalled):
                break
            time.sleep(1.0)
        assert sorted((int(r["bed"]), r["state"]) for r in hist) == \
            sorted((b, st) for b in on_stalled for st in ("active", "resolved")), hist
        # the other worker's pipeline points counted them (the ward overview's "Beds not monitored")
        most = query_rows(s, 'SELECT max("beds_stalled") AS "m" FROM "pipeline" WHERE "worker" = \'w1\' '
                             f'AND time >= {int(seen["frozen_at"] * 1e9)}')
        assert most and most[0]["m"] == len(on_stalled), most
        print("monitoring_stalled records:", len(after), "for", len(on_stalled), "beds; partitions", seen["stalled"],
              "; start-up stall alarms left out:", sorted(seen["before"]))
    finally:
        for w in pool.workers:
            if w.alive():
                os.killpg(w.proc.pid, signal.SIGCONT)
        pool.stop_all()


def test_a_worker_that_gets_partitions_back_alarms_their_beds_next_silence(servers, ward_settings):
    """``device_silent`` across a partition's round trip between workers: worker 0 alone raises it
    for every bed whose devices stop; worker 1 joins, the devices resume, and each bed's alarm is
    resolved by whichever worker now owns it; the devices stop again and worker 1 leaves, so worker
    0 gets back the partitions it lost. Every bed's second silence is alarmed — before the revoked
    partitions' bookkeeping was forgotten (`StreamClock.forget`), worker 0 still counted the beds
    that worker 1 had resolved as alarmed, and their second silence went unannounced."""
    import signal
    import threading

    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    from device_sim.sources import SyntheticBed
    from device_sim.ward import WINDOW_US, Device
    from stream.topics import bed_key
    from wardstream.status import group_members

    s = ward_settings.replace(device_silent_s=10.0)
    beds = list(range(1, 13))
    parts = list(range(s.frames_partitions))
    part_of = {b: DefaultPartitioner()(bed_key(b), parts, parts) for b in beds}
    pool = WorkerPool(s, 2)
    sending = {"on": True}

    def silent_events() -> list[tuple[int, str]]:
        evs = [json.loads(m.value) for m in asyncio.run(read_to_end(s.kafka_bootstrap, s.alarms_topic))]
        return [(e["bed"], e["state"]) for e in evs if e["condition"] == "device_silent"]

    def wait_until(pred, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = pred()
            if got:
                return got
            time.sleep(0.5)
        # what the workers said that was more than routine (rebalances, stalls, recoveries)
        said = "\n".join(f"worker {w.index} ({w.log_path}):\n" + "\n".join(
            ln for ln in _log_tail(w.log_path, 200_000).splitlines()
            if any(x in ln for x in ("WARNING", "ERROR", "CRITICAL", "forgot", "Worker ready")))[-6000:]
            for w in pool.workers if w.log_path)
        raise AssertionError(f"{what} not within {timeout_s} s; device_silent events {silent_events()}\n{said}")

    def every_bed(states: list[str]):
        """The device_silent events if every bed's are ``states``, in order (else None)."""
        evs = silent_events()
        return evs if all([st for b2, st in evs if b2 == b] == states for b in beds) else None

    def members(n: int):
        """The members' frames partitions if the group has ``n`` members, each with some (else None)."""
        m = [m["frames_partitions"] for m in asyncio.run(group_members(s))["members"]]
        return m if len(m) == n and all(m) else None

    async def devices() -> None:
        """Every bed's next window every 2 s while ``sending``; the device clocks keep running
        while they do not send (a window after a pause starts where the wall clock is)."""
        t0 = int(time.time() * 1e6)
        devs = [Device(b, SyntheticBed(b), t0 - 3 * WINDOW_US + 1000 * b) for b in beds]
        p = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True)
        await p.start()
        try:
            while sending["on"] is not None:
                if sending["on"]:
                    for d in devs:
                        d.seq = max(d.seq, (int(time.time() * 1e6) - d.clock0_us) // WINDOW_US - 1)
                        frame, _ = d.next_frame()
                        await p.send_and_wait(s.frames_topic, frame, key=bed_key(d.bed_id))
                await asyncio.sleep(2.0)
        finally:
            await p.stop()

    sender = threading.Thread(target=lambda: asyncio.run(devices()), daemon=True)
    pool.start(0)
    try:
        pool.wait_ready()
        sender.start()
        time.sleep(6.0)
        sending["on"] = False  # every device stops: worker 0 alarms each bed
        wait_until(lambda: every_bed(["active"]), 40, "the first silence alarmed on every bed")
        pool.start(1)
        pool.wait_ready()
        got = wait_until(lambda: members(2), 60, "two members with partitions")
        # each worker now owns some of the beds (which half is worker 1's does not matter: both
        # halves hold beds, so beds moved to worker 1 whichever it is)
        assert all(any(part_of[b] in m for b in beds) for m in got), (got, part_of)
        sending["on"] = True  # the devices resume: each bed's alarm resolved by its owner now
        wait_until(lambda: every_bed(["active", "resolved"]), 40, "every bed's silence resolved")
        # the devices stop again, and worker 1 leaves (its timer stops well before their silence
        # reaches the limit): worker 0 gets every partition back
        sending["on"] = False
        pool.kill(1, signal.SIGTERM)
        wait_until(lambda: (lambda m: m if m and sorted(m[0]) == parts else None)(members(1)), 60,
                   "worker 0 owning every partition")
        wait_until(lambda: every_bed(["active", "resolved", "active"]), 40, "the second silence alarmed on every bed")
    finally:
        sending["on"] = None
        sender.join(timeout=10)
        pool.stop_all()
