"""``wardstream status``: the running ward at a glance, from the outside, as JSON.

What an engineer on call asks first, answered from the broker and InfluxDB alone (no worker needs
to answer, so a stuck one shows as such):

* ``frames``: per frames partition its end offset, the worker group's committed offset and the lag
  (what a worker still has to process), and ``group``: the group's state and members, each with
  the partitions it holds (DescribeGroups, as any Kafka tool);
* ``workers``: each worker's last ``pipeline`` point in InfluxDB (written every 5 s by a live
  worker: its age is the first sign of a stuck one) with its lag, the stalled partitions its group
  watch sees, and its latency;
* ``alarms``: the open alarms as the alarms topic says (`processors.alarm_view`), by priority and
  condition, and the beds whose monitoring is stalled (``monitoring_stalled``);
* ``problems``: what of the above needs someone now, one sentence each (`problems`); empty when the
  ward is being monitored. ``wardstream status --check`` exits 1 when there is one (0 when none, 2
  when the broker cannot be reached), for a monitoring system's probe.
"""

from __future__ import annotations

import json
import time
from collections import Counter

from wardstream.settings import Settings

WORKER_SILENT_S = 15.0  # a live worker writes a pipeline point every 5 s


async def frames_offsets(s: Settings) -> dict[int, dict]:
    """Per frames partition: its end offset, the worker group's committed offset, the lag."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream import kafka_compat

    c = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=s.app_id, enable_auto_commit=False)
    try:  # a failed start closes it too
        await c.start()
        tps = [TopicPartition(s.frames_topic, p) for p in sorted(await kafka_compat.partitions_of(c, s.frames_topic))]
        ends = await c.end_offsets(tps) if tps else {}
        out = {}
        for tp in tps:
            committed = await c.committed(tp)
            out[tp.partition] = {"end": ends[tp], "committed": committed,
                                 "lag": max(0, ends[tp] - (committed or 0))}
        return out
    finally:
        await c.stop()


async def group_members(s: Settings) -> dict:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    a = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await a.start()
    try:
        resp = (await a.describe_consumer_groups([s.app_id]))[0]
    finally:
        await a.close()
    g = resp.groups[0]
    _err, _name, state, _ptype, protocol, members = g[:6]
    out = []
    for m in members:
        member_id, client_id, host, _meta, assignment = m[:5]
        parts: list[int] = []
        if assignment:
            try:
                for topic, ps in ConsumerProtocolMemberAssignment.decode(assignment).assignment:
                    if topic == s.frames_topic:
                        parts += list(ps)
            except Exception:  # an assignment in another protocol: its partitions unknown
                parts = []
        out.append({"member_id": member_id, "client_id": client_id, "host": host,
                    "frames_partitions": sorted(parts)})
    return {"group": s.app_id, "state": state, "protocol": protocol, "members": out}


def workers(s: Settings, now_ms: int, within_s: float = 3600.0) -> list[dict]:
    from wardstream.influxq import query_rows

    rows = query_rows(s, f'SELECT * FROM "pipeline" WHERE time > now() - {int(within_s)}s '
                         'GROUP BY "worker" ORDER BY time DESC LIMIT 1')
    out = []
    for r in sorted(rows, key=lambda r: r.get("worker", "")):
        age = (now_ms - r["time"]) / 1000.0
        out.append({"worker": r.get("worker"), "last_point_age_s": round(age, 1), "silent": age > WORKER_SILENT_S,
                    **{k: r.get(k) for k in ("frames", "windows_written", "consumer_lag", "group_lag",
                                             "stalled_partitions", "beds_stalled", "latency_p50_ms", "latency_p95_ms",
                                             "dead_lettered", "write_failures", "uptime_s")}})
    return out


async def open_alarms(s: Settings) -> dict:
    from processors.alarm_view import AlarmView
    from stream.topics import read_to_end

    view = AlarmView()
    for m in await read_to_end(s.kafka_bootstrap, s.alarms_topic):
        try:
            view.apply(json.loads(m.value))
        except (ValueError, KeyError, TypeError):
            continue  # not an alarm event
    alarms = list(view.alarms.values())
    return {"open": len(alarms),
            "by_priority": dict(Counter(a["priority"] for a in alarms)),
            "by_condition": dict(sorted(Counter(a["condition"] for a in alarms).items())),
            "acknowledged": sum(a["status"] == "acknowledged" for a in alarms),
            "monitoring_stalled_beds": sorted(a["bed"] for a in alarms if a["condition"] == "monitoring_stalled")}


def problems(d: dict) -> list[str]:
    """What in a `collect` answer needs someone now. A worker that stopped cleanly (its last point
    ages while another took its partitions) is not one; frames waiting with nobody processing them
    are."""
    out = []
    lag = d["frames"]["lag"]
    if d.get("influxdb_error"):
        out.append(f"InfluxDB cannot be read ({d['influxdb_error']}): windows may not be written")
    if lag and not d["group"]["members"]:
        out.append(f"no worker in group {d['group']['group']} while {lag} frames wait")
    elif d["frames"]["unassigned_partitions_with_lag"]:
        out.append(f"frames partitions {d['frames']['unassigned_partitions_with_lag']} have frames waiting "
                   "and no worker holding them")
    live = [w for w in d.get("workers") or [] if not w["silent"]]
    if lag and d.get("workers") is not None and d["group"]["members"] and not live:
        out.append(f"no worker has written a pipeline point for {WORKER_SILENT_S:.0f} s while {lag} frames wait "
                   "(stuck, or unable to write)")
    stalled = max((w.get("stalled_partitions") or 0 for w in live), default=0)
    if stalled:
        out.append(f"{stalled} frames partitions reported stalled by the workers' group watch")
    beds = d["alarms"]["monitoring_stalled_beds"]
    if beds:
        out.append(f"{len(beds)} beds not monitored (open monitoring_stalled alarms): {beds[:20]}"
                   + (" …" if len(beds) > 20 else ""))
    return out


async def collect(s: Settings) -> dict:
    now_ms = int(time.time() * 1000)
    frames = await frames_offsets(s)
    out = {"at_ms": now_ms, "kafka": s.kafka_bootstrap, "influxdb": s.influx_url,
           "frames": {"topic": s.frames_topic, "lag": sum(p["lag"] for p in frames.values()),
                      "partitions": {str(p): v for p, v in sorted(frames.items())}},
           "group": await group_members(s)}
    held = {p for m in out["group"]["members"] for p in m["frames_partitions"]}
    out["frames"]["unassigned_partitions_with_lag"] = sorted(p for p, v in frames.items()
                                                             if v["lag"] and p not in held)
    try:
        out["workers"] = workers(s, now_ms)
    except OSError as exc:  # InfluxDB down: say so, show the rest
        out["workers"] = None
        out["influxdb_error"] = f"{type(exc).__name__}: {exc}"
    out["alarms"] = await open_alarms(s)
    out["problems"] = problems(out)
    return out
