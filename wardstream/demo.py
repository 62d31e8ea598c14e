"""`wardstream demo`: services, workers and a simulated ward, then an exactly-once audit.

Prints and optionally writes a JSON summary; exits non-zero when an accepted window is missing
from or duplicated in InfluxDB, or a malformed frame it sent is not on the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import numpy as np

from device_sim.ward import run_ward
from stream.topics import ensure_topics, frames_retention_ms
from wardstream import services
from wardstream.influxq import exactly_once, frame_seqs
from wardstream.settings import Settings
from wardstream.workers import WorkerPool

log = logging.getLogger("wardstream.demo")


async def consumer_lag(s: Settings) -> int:
    """Messages on the frames topic not yet committed by the worker group."""
    from wardstream.status import frames_offsets

    return sum(p["lag"] for p in (await frames_offsets(s)).values())


async def dead_letter_audit(s: Settings, since_ms: int, malformed: list[str] | None = None) -> dict:
    """The frames dead-lettered since ``since_ms``, read from the dead-letter topic itself (the
    workers' counters stop at their last sample when one is killed), from that time on (not the
    whole topic): distinct source frames by reason (``reasons``), how many records repeated a
    source already there (``repeated``: a frame dead-lettered again by the worker that took over
    before its offset was committed: none lost, one kept), and against the malformed frames the
    simulator sent (``malformed``: their "topic/partition/offset"), how many of those are not
    there (``lost``) and how many dead letters are of other frames (``other``: good frames the
    workers refused, e.g. stale ones)."""
    from stream.topics import read_to_end

    reasons: dict[str, int] = {}
    seen: set[str] = set()
    repeated = 0
    for m in await read_to_end(s.kafka_bootstrap, s.dlq_topic, since_ms=since_ms):
        h = {k: v.decode(errors="replace") for k, v in (m.headers or ())}
        src = h.get("source", "")
        if m.timestamp < since_ms or not src.startswith(s.frames_topic + "/"):
            continue
        if src in seen:
            repeated += 1
            continue
        seen.add(src)
        reasons[h.get("reason", "?")] = reasons.get(h.get("reason", "?"), 0) + 1
    bad = set(malformed or ())
    return {"reasons": dict(sorted(reasons.items())), "repeated": repeated, "lost": len(bad - seen),
            "other": len(seen - bad)}


def audit_summary(s: Settings, t0_ms: int, t1_ms: int, beds: int | None = None) -> dict:
    """The audited windows of a run (processors.audit) — of its beds 1..``beds`` only (None: every
    bed; another simulator may feed the same ward): how many, and the devices' predicted task error
    against the one the cloud observed."""
    from wardstream.influxq import query

    q = (f'SELECT "predicted", "observed" FROM "task_error" WHERE time >= {t0_ms}ms AND time <= {t1_ms}ms '
         'AND "observed" >= 0 GROUP BY "bed"')
    rows = [v for ser in query(s, q) if beds is None or 1 <= int(ser.get("tags", {}).get("bed", 0)) <= beds
            for v in ser["values"]]
    pairs = [(p, o) for _, p, o in rows if p is not None and o is not None]
    out: dict = {"audited_windows": len(rows)}
    if pairs:
        pred, obs = (list(x) for x in zip(*pairs))
        out.update({"predicted_mean": round(sum(pred) / len(pred), 4), "observed_mean": round(sum(obs) / len(obs), 4),
                    "observed_above_predicted": round(sum(o > p for p, o in pairs) / len(pairs), 3)})
    return out


def percentiles(hist: dict[int, int], ps=(50, 95, 99)) -> dict[str, float | None]:
    total = sum(hist.values())
    out: dict[str, float | None] = {}
    for p in ps:
        if not total:
            out[f"p{p}"] = None
            continue
        target = p / 100 * total
        acc = 0
        for k in sorted(hist):
            acc += hist[k]
            if acc >= target:
                out[f"p{p}"] = float(k)
                break
    out["max"] = float(max(hist)) if hist else None
    out["count"] = total
    return out


def merge_hists(stats: list[dict]) -> dict[int, int]:
    h: dict[int, int] = {}
    for st in stats:
        for k, v in st.get("latency_ms_hist", {}).items():
            h[int(k)] = h.get(int(k), 0) + v
    return h


async def drain(pool: WorkerPool, s: Settings, expect_windows: int, expect_dead: int,
                timeout_s: float = 120.0) -> tuple[list[dict], int]:
    """Wait until the workers have handled every frame and committed their offsets."""
    deadline = time.monotonic() + timeout_s
    lag = -1
    stats: list[dict] = []
    while time.monotonic() < deadline:
        stats = pool.stats() + pool.ended_stats()
        done = sum(st["windows_written"] + st["replays"] for st in stats)
        dead = sum(sum(st["dead_lettered"].values()) for st in stats)
        # a restarted worker's predecessor's counters end at its last sample: then every frame
        # committed is the test of done
        if pool.restarts or (done >= expect_windows and dead >= expect_dead):
            lag = await consumer_lag(s)
            if lag == 0:
                return stats, lag
        await asyncio.sleep(0.5)
    return stats, (await consumer_lag(s) if lag != 0 else lag)


CAPTURE_BEDS = (1, 2)
CAPTURE_WINDOWS = 5


def save_run(run_dir: Path, s: Settings, summary: dict, hist: dict[int, int], lag_samples: list,
             rep) -> None:
    """The run as files `wardstream report` turns into a page: the summary, time series read
    back from InfluxDB, and a few original windows beside the cloud's reconstruction of them."""
    import numpy as np

    from processors.decode import reconstruct
    from stream.wire import Modality, decode_frame
    from wardstream.influxq import query_rows

    run_dir.mkdir(parents=True, exist_ok=True)
    t0, t1 = rep.t_first_us // 1000, rep.t_last_end_us // 1000 + 30_000
    where = f"time >= {t0}ms AND time <= {t1}ms"

    def rows(q: str) -> list[dict]:
        return query_rows(s, q)

    timeline = {
        "t0_ms": t0, "t1_ms": t1,
        "lag": lag_samples,
        "windows_per_s": [[r["time"], r["count"]] for r in
                          rows(f'SELECT count("seq") FROM "frame" WHERE {where} GROUP BY time(1s) fill(0)')],
        "pipeline": rows(f'SELECT * FROM "pipeline" WHERE {where}'),
        "alarms": rows(f'SELECT * FROM "alarm" WHERE {where} GROUP BY "bed", "condition", "priority", "state"'),
        "rhythm": rows(f'SELECT "label", "p_af" FROM "rhythm" WHERE {where} GROUP BY "bed" LIMIT 200'),
        "task_error": rows(f'SELECT "predicted", "observed", "kl", "qrs" FROM "task_error" WHERE {where} '
                           'AND "observed" >= 0 GROUP BY "bed", "level"'),
    }
    (run_dir / "summary.json").write_text(json.dumps({**summary, "latency_ms_hist": {str(k): v for k, v in
                                                                                      sorted(hist.items())}}, indent=2))
    (run_dir / "timeline.json").write_text(json.dumps(timeline, default=str))
    arrays = {}
    for bed, items in rep.captured.items():
        for seq, ecg, eeg, raw in items:
            frame = decode_frame(raw, hmac_key_for=s.device_key)
            rec = reconstruct(frame)
            arrays[f"b{bed}_s{seq}_ecg"] = np.asarray(ecg, dtype=np.float32)
            arrays[f"b{bed}_s{seq}_ecg_rec"] = np.asarray(rec[Modality.ECG], dtype=np.float32)
            arrays[f"b{bed}_s{seq}_level"] = np.array([c.level for c in frame.channels if c.modality == Modality.ECG])
            if eeg is not None and Modality.EEG in rec:
                arrays[f"b{bed}_s{seq}_eeg"] = np.asarray(eeg, dtype=np.float32)
                arrays[f"b{bed}_s{seq}_eeg_rec"] = np.asarray(rec[Modality.EEG], dtype=np.float32)
    np.savez_compressed(run_dir / "examples.npz", **arrays)


async def discharge_beds(s: Settings, beds: list[int], by: str = "wardstream demo", timeout_s: float = 60.0) -> dict:
    """End every stay in ``beds`` before a run's simulated patients arrive (`POST
    /api/v1/beds/{bed}/discharge`, as commands on the topic the API writes to), so no bed starts
    with an earlier run's open alarms, limits, bound or slack correction; waits until the workers
    have applied them all (their `stay` points)."""
    from aiokafka import AIOKafkaProducer

    from stream.topics import bed_key
    from wardstream.influxq import query_rows

    t0_ms = int(time.time() * 1000)
    p = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    await p.start()
    try:
        futs = [await p.send(s.commands_topic, json.dumps({"cmd": "discharge", "bed": b, "by": by, "at_ms": t0_ms}).encode(),
                             key=bed_key(b)) for b in beds]
        for f in futs:
            await f
    finally:
        await p.stop()
    q = f"SELECT \"by\", \"alarms_resolved\" FROM \"stay\" WHERE time >= {t0_ms}ms AND \"by\" = '{by}'"
    deadline = time.time() + timeout_s
    rows: list[dict] = []
    while time.time() < deadline:
        rows = query_rows(s, q)
        if len(rows) >= len(beds):
            break
        await asyncio.sleep(0.5)
    else:
        log.warning("only %d of %d discharges applied within %.0f s", len(rows), len(beds), timeout_s)
    return {"beds": len(rows), "alarms_resolved": int(sum(r["alarms_resolved"] for r in rows))}


async def run_demo(s: Settings, beds: int, duration_s: float, speed: float, workers: int,
                   source: str, bad_every: int, seed: int, start_services: bool = True,
                   run_dir: Path | None = None, new_patients: bool | None = None) -> dict:
    """Run the ward and audit it. ``start_services=False`` uses the configured broker and
    InfluxDB as they are (Apache Kafka, InfluxDB 2.x, or servers started elsewhere).
    ``run_dir``: also save the run for `wardstream report`. ``new_patients`` (default: when the
    demo starts its own services): discharge the beds first (`discharge_beds`)."""
    t0 = time.time()
    if start_services:
        services.up(s)
        if not s.frames_retention_h:  # the local broker: keep a quarter of an hour of frames, not 48 h
            s = s.replace(frames_retention_h=services.LOCAL_FRAMES_RETENTION_H)
    await ensure_topics(s)
    pool = WorkerPool(s, workers)
    pool.start_all()
    supervisor = None
    try:
        pool.wait_ready()
        supervisor = asyncio.ensure_future(pool.supervise())  # a worker that exits is started again
        # a local ward's beds get new (simulated) patients each run; a ward it does not own is
        # left as it is (--no-services)
        discharged = (await discharge_beds(s, list(range(1, beds + 1)))
                      if (start_services if new_patients is None else new_patients) else None)
        log.info("workers ready after %.1fs; starting %d beds for %.0fs at %gx", time.time() - t0,
                 beds, duration_s, speed)
        lag_samples: list[int] = []
        lag_times: list[tuple[float, int]] = []

        async def sample_lag() -> None:
            while True:
                await asyncio.sleep(2.0)
                try:
                    lag_samples.append(await consumer_lag(s))
                    lag_times.append((round(time.time() - t0, 2), lag_samples[-1]))
                except Exception as exc:  # a lag probe must not stop the run
                    log.warning("lag probe failed: %s", exc)

        prober = asyncio.ensure_future(sample_lag())
        run_start_ms = int(time.time() * 1000)
        rep = await run_ward(s, beds, duration_s, speed, source=source, seed=seed, bad_every=bad_every,
                             capture_beds=CAPTURE_BEDS if run_dir else (),
                             capture_windows=CAPTURE_WINDOWS)
        stats, final_lag = await drain(pool, s, rep.frames_accepted, rep.bad_frames_sent)
        prober.cancel()
        stored = frame_seqs(s, rep.t_first_us // 1000, rep.t_last_end_us // 1000)
        missing, dup = exactly_once(rep.accepted, stored)
        hist = merge_hists(stats)
        dla = await dead_letter_audit(s, run_start_ms, rep.bad_sources)
        dead = dla["reasons"]
        per_bed = {b: len(set(v)) for b, v in stored.items() if b in rep.accepted}
        cpu = sum(st["cpu_s"] for st in stats)
        summary = {
            "beds": beds, "duration_s": duration_s, "speed": speed, "workers": workers,
            "source": source,
            # the earlier stays this run ended before its beds started (None: --no-services)
            "discharged_before_run": discharged,
            "frames_sent": rep.frames_sent + rep.bad_frames_sent,
            "windows_sent": rep.frames_sent,
            "windows_accepted": rep.frames_accepted,
            "bad_frames_sent": rep.bad_frames_sent,
            "frames_received": sum(st["frames"] for st in stats),
            "frames_dead_lettered": sum(dead.values()),
            "dead_letter_reasons": dead,
            # malformed frames sent (and acknowledged by the broker) that are not on the dead-letter
            # topic, matched by their offsets (lost); dead letters of other frames (good ones
            # refused, e.g. stale); records that repeat a frame already there (dead-lettered again
            # after a worker's restart)
            "malformed_frames_lost": dla["lost"],
            "dead_letters_other": dla["other"],
            "dead_letters_repeated": dla["repeated"],
            "windows_written": sum(per_bed.values()),
            "windows_written_per_bed": {"min": min(per_bed.values(), default=0),
                                        "max": max(per_bed.values(), default=0),
                                        "beds": len(per_bed)},
            "windows_missing": missing,
            "windows_duplicated": dup,
            "latency_ms": percentiles(hist),
            # windows that ended before a worker started (left on the broker by an earlier run or
            # an outage): written, kept out of the latency above (`processors.agents.Stats`)
            "backlog_windows_written": sum(st.get("backlog", {}).get("windows", 0) for st in stats),
            # frames partitions a worker saw stalled during the run (`processors.group_watch`)
            "partition_stalls_seen": max(((st.get("group") or {}).get("stalls", 0) for st in stats), default=0),
            "latency_note": ("device window end -> InfluxDB write acknowledged; device clocks are "
                             "the host clock" if speed == 1 else
                             "accelerated run: device time runs ahead of the wall clock, so "
                             "latency is not meaningful"),
            "consumer_lag": {"final": final_lag, "max_sampled": max(lag_samples, default=0)},
            "sim_send_delay_ms": ({q: round(float(np.percentile(rep.send_delay_ms, v)), 1)
                                   for q, v in (("p50", 50), ("p95", 95), ("max", 100))}
                                  if rep.send_delay_ms else None),
            "wire_bytes": rep.wire_bytes,
            "raw_bytes": rep.raw_bytes,
            "wire_vs_raw": rep.wire_bytes / rep.raw_bytes if rep.raw_bytes else None,
            "codec_model": s.codec_model,  # the wire model id the devices encoded with (0: raw)
            "level_policy": s.level_policy,
            "sim_encoder": s.sim_encoder,  # how the devices ran their encoder ("firmware": the C device)
            "ecg_levels_sent": {str(k): v for k, v in sorted(rep.levels.items())},
            "bound": getattr(rep.bounds, "default", None),
            "edge_predictor": s.dd_predictor,  # the error predictor the devices ran (Settings.dd_predictor)
            # the worker's per-bed slack corrections from its audits, as the run's devices last read
            # them (the control topic also holds those of beds beyond this run's, from earlier runs)
            "slack_corrections": ({str(b): v for b, v in sorted(rep.bounds.slacks.items()) if 1 <= b <= beds}
                                  if rep.bounds is not None and rep.bounds.default is not None else None),
            "slack_updates_sent": sum(st.get("slack_updates", 0) for st in stats),
            # fidelity holds begun or ended by the workers (`processors.hold`), and those the run's
            # devices were last under
            "fidelity_hold_updates_sent": sum(st.get("hold_updates", 0) for st in stats),
            "fidelity_holds": ({str(b): v for b, v in sorted(rep.bounds.holds.items()) if 1 <= b <= beds}
                               if rep.bounds is not None else None),
            "task_error_audit": audit_summary(s, rep.t_first_us // 1000, rep.t_last_end_us // 1000, beds),
            "worker_cpu_s": cpu,
            # workers that exited during the run, or that the supervisor killed when their heartbeat
            # went stale, and were started again (their counters above end at their last stats
            # sample; the InfluxDB and dead-letter audits are complete)
            "worker_restarts": [{k: v for k, v in r.items() if k != "at"} | {"at_s": round(r["at"] - t0, 1)}
                                for r in pool.restarts],
            "influx_write_failures": sum(st["influx"]["write_failures"] for st in stats),
            "replays": sum(st["replays"] for st in stats),
            "wall_s": time.time() - t0,
            "broker_store_mb": None if (b := services.Broker(s).store_bytes()) is None else round(b / 1e6, 1),
            "frames_retention_h": frames_retention_ms(s) / 3.6e6,
        }
        if speed != 1:
            summary["latency_ms"] = {**summary["latency_ms"], "p50": None, "p95": None, "p99": None}
        if run_dir is not None:
            summary["run_dir"] = str(run_dir)
            save_run(Path(run_dir), s, summary, hist, lag_times, rep)
        return summary
    finally:
        if supervisor is not None:
            supervisor.cancel()
        pool.stop_all()


def print_summary(d: dict) -> None:
    lat = d["latency_ms"]
    fmt = lambda v: "n/a" if v is None else f"{v:.0f}"  # noqa: E731
    print(f"""
wardstream demo: {d['beds']} beds, {d['duration_s']:.0f}s at {d['speed']}x, {d['workers']} worker(s), source {d['source']}
  earlier stays ended  {_discharge_line(d.get('discharged_before_run'))}
  frames sent          {d['frames_sent']}  ({d['windows_sent']} windows + {d['bad_frames_sent']} malformed on purpose)
  frames received      {d['frames_received']}{_received_note(d)}
  dead-lettered        {d['frames_dead_lettered']}  {d['dead_letter_reasons']}{_dead_letter_note(d)}
  windows accepted     {d['windows_accepted']}
  windows in InfluxDB  {d['windows_written']}  (per bed {d['windows_written_per_bed']['min']}..{d['windows_written_per_bed']['max']})
  missing / duplicated {d['windows_missing']} / {d['windows_duplicated']}
  latency ms           p50 {fmt(lat['p50'])}  p95 {fmt(lat['p95'])}  p99 {fmt(lat['p99'])}  max {fmt(lat['max'])}{_backlog_note(d)}
  consumer lag         final {d['consumer_lag']['final']}, max sampled {d['consumer_lag']['max_sampled']}; partitions seen stalled {d.get('partition_stalls_seen', 0)}
  device send delay ms {_send_delay_line(d.get('sim_send_delay_ms'))}  (window end -> frame handed to the producer)
  bytes on the wire    {d['wire_bytes']} vs raw 16-bit {d['raw_bytes']} ({d['wire_vs_raw']:.3f}x)
  ECG levels sent      {d['ecg_levels_sent']}  (codec model {d.get('codec_model')}, policy {d['level_policy']}{', bound ' + str(d['bound']) + ', predictor ' + str(d.get('edge_predictor')) if d['level_policy'] == 'dynamic' else ''}, devices {d.get('sim_encoder', 'fp32')})
  slack corrections    {_slack_line(d)}
  fidelity holds       {_hold_line(d)}
  task error audit     {_audit_line(d.get('task_error_audit') or {})}
  worker CPU           {d['worker_cpu_s']:.1f}s; InfluxDB write failures {d['influx_write_failures']}{_restart_note(d)}{_store_line(d)}
""")


# The local broker rewrites its one-file store and its CPU grows with it: 0.33-0.39 of a core
# during a 200-bed run keeping 15 min of frames (80 MB at rest after it), 0.6-0.8 on a 755 MB
# store, where the 200-bed latency went from p50 0.7 s to 4.1-4.4 s (docs/measurements.md, 2026-12-07). Said
# from a third of that size on (other topics, or a longer `WARDSTREAM_FRAMES_RETENTION_H`).
STORE_LARGE_MB = 250.0


def _store_line(d: dict) -> str:
    mb = d.get("broker_store_mb")
    if mb is None:
        return ""
    out = f"\n  broker store         {mb:.1f} MB (local noida-db; frames kept {d['frames_retention_h']:g} h)"
    if mb >= STORE_LARGE_MB:
        out += ("; large: its CPU grows with its store and slows the ward (docs/measurements.md) — "
                "`./ward services down; rm -rf .wardstream` starts it empty")
    return out


def _received_note(d: dict) -> str:
    if d.get("worker_restarts"):
        return "  (the workers' counters: a killed worker's stop at its last 5-s sample)"
    return ""


def _dead_letter_note(d: dict) -> str:
    """The dead-letter topic's audit: malformed frames that never reached it, frames there twice."""
    out = f"; {d['malformed_frames_lost']} malformed frames NOT on the topic" if d.get("malformed_frames_lost") else ""
    if d.get("dead_letters_other"):
        out += f"; {d['dead_letters_other']} of them good frames refused"
    if d.get("dead_letters_repeated"):
        out += f"; {d['dead_letters_repeated']} dead-lettered again after a restart (counted once)"
    return out or "  (read from the dead-letter topic)"


def _restart_note(d: dict) -> str:
    r = d.get("worker_restarts") or []
    def why(x: dict) -> str:
        if x.get("reason", "exited") != "exited":  # the supervisor killed it (its heartbeat went stale)
            return f"killed, {x['reason']}"
        return f"exit {x['exit_status']}"

    return ("; restarted: " + ", ".join(f"worker {x['worker']} ({why(x)}, {x['at_s']} s into the demo)"
                                         for x in r) if r else "")


def _backlog_note(d: dict) -> str:
    n = d.get("backlog_windows_written") or 0
    return f"  (not counting {n} backlog windows from before the workers started)" if n else ""


def _slack_line(d: dict) -> str:
    sc = d.get("slack_corrections")
    if sc is None:
        return f"{d.get('slack_updates_sent', 0)} sent by the workers; these devices do not predict their error"
    nz = {b: v for b, v in sc.items() if v > 0}
    top = max(nz.values(), default=0.0)
    return (f"{d.get('slack_updates_sent', 0)} sent by the workers; {len(nz)} beds corrected"
            + (f" (largest +{top:.2f})" if nz else ""))


def _hold_line(d: dict) -> str:
    held = d.get("fidelity_holds")
    sent = f"{d.get('fidelity_hold_updates_sent', 0)} begun or ended by the workers"
    if held is None:
        return sent + "; these devices send raw samples only (nothing to hold)"
    return sent + f"; {len(held)} beds held at the end (ECG level <= {min(held.values(), default=1)})" if held \
        else sent + "; no bed held at the end"


def _discharge_line(d: dict | None) -> str:
    if d is None:
        return "none (--no-services: the ward is not the demo's)"
    return f"{d['beds']} beds discharged before the run, {d['alarms_resolved']} open alarms resolved"


def _send_delay_line(d: dict | None) -> str:
    return "n/a" if not d else f"p50 {d['p50']:.0f}  p95 {d['p95']:.0f}  max {d['max']:.0f}"


def _audit_line(a: dict) -> str:
    if not a.get("audited_windows"):
        return "no audited window (WARDSTREAM_AUDIT_EVERY_S)"
    if "observed_mean" not in a:
        return f"{a['audited_windows']} audited windows, no device prediction"
    return (f"{a['audited_windows']} audited windows: observed mean {a['observed_mean']}, predicted mean "
            f"{a['predicted_mean']}, observed above predicted in {100 * a['observed_above_predicted']:.0f} %")


def main(s: Settings, beds: int, duration_s: float, speed: float, workers: int, source: str,
         bad_every: int, seed: int, json_path: Path | None, start_services: bool = True,
         run_dir: Path | None = None) -> int:
    d = asyncio.run(run_demo(s, beds, duration_s, speed, workers, source, bad_every, seed,
                             start_services, run_dir))
    print_summary(d)
    if run_dir is not None:
        print(f"  run saved in {run_dir}: `wardstream report {run_dir}` makes its HTML page")
    if json_path:  # the run is done and its summary printed: a missing folder must not lose the JSON
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(d, indent=2))
    ok = d["windows_missing"] == 0 and d["windows_duplicated"] == 0 and d["malformed_frames_lost"] == 0
    if not ok:
        print("FAIL: accepted windows missing or duplicated in InfluxDB, or malformed frames not on the "
              "dead-letter topic")
    return 0 if ok else 1
