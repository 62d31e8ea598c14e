"""`wardstream bench pipeline`: windows per second one worker process sustains.

The frames topic is preloaded with ``beds`` x ``windows_per_bed`` synthetic windows at the
configured codec model and level (``WARDSTREAM_CODEC_MODEL`` / ``_LEVEL``; level 0 is raw
int16), keyed by bed as the simulator sends them; then one worker starts on
that backlog and its progress and CPU time are sampled from its /stats/ page once a second. The
rate is measured between the first and the last sample with progress, over at most ``duration``
seconds. The broker and InfluxDB run on the same 2-core machine and compete for CPU.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import platform
import time

from device_sim.sources import SyntheticBed
from device_sim.ward import WINDOW_US, Device, encoder_factory, next_clock_start, next_frames, save_clock_end
from stream.topics import bed_key, ensure_topics
from wardstream import services
from wardstream.influxq import exactly_once, frame_seqs
from wardstream.settings import Settings
from wardstream.workers import WorkerPool

BENCH_BED_BASE = 1_000_000  # bench beds never collide with demo beds


async def preload(s: Settings, beds: int, windows_per_bed: int) -> tuple[dict[int, list[int]], int, int, float]:
    from aiokafka import AIOKafkaProducer

    clock0 = next_clock_start(s.state_dir)
    make_encoder = encoder_factory(s.codec_model, s.codec_level, s.sim_encoder, s.level_policy, s.dd_bound,
                                   s.eeg_level, s.dd_predictor)
    devices = [Device(BENCH_BED_BASE + b, SyntheticBed(BENCH_BED_BASE + b, seed=1), clock0 + b * 997,
                      make_encoder(), s.device_key(BENCH_BED_BASE + b)) for b in range(beds)]
    prod = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True,
                            linger_ms=20, max_batch_size=512 * 1024)
    await prod.start()
    t0 = time.time()
    accepted: dict[int, list[int]] = {}
    try:
        for _ in range(windows_per_bed):
            futs = []
            for i in range(0, len(devices), 256):
                for d, (raw, fr) in zip(devices[i:i + 256], next_frames(devices[i:i + 256])):
                    futs.append((await prod.send(s.frames_topic, raw, key=bed_key(d.bed_id)), d.bed_id, fr.seq))
            for f, bed, seq in futs:
                await f
                accepted.setdefault(bed, []).append(seq)
    finally:
        await prod.stop()
    last_end = clock0 + beds * 997 + windows_per_bed * WINDOW_US
    save_clock_end(s.state_dir, last_end)
    return accepted, clock0, last_end, time.time() - t0


async def delete_topic(s: Settings, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        if name in set(await admin.list_topics()):
            await admin.delete_topics([name])
    finally:
        await admin.close()


async def bench_pipeline(s: Settings, beds: int = 2000, duration_s: float = 60.0,
                         windows_per_bed: int | None = None) -> dict:
    services.up(s)
    # topics and a Faust app id of its own: no backlog or table changelog of an earlier run
    # counts towards this one, and the ward's own changelog does not grow with benchmarks
    tag = int(time.time())
    s = dataclasses.replace(s, frames_topic=f"bench.frames.{tag}", app_id=f"wardstream-bench-{tag}")
    await ensure_topics(s)
    # about ``duration_s`` of work at the 1,000 windows/s goal; the run lasts until the backlog
    # is drained (at most 3 x duration), so every bench also audits exactly-once delivery
    wpb = windows_per_bed or max(5, int(duration_s * 1000 / beds))
    accepted, t_first, t_last, preload_s = await preload(s, beds, wpb)
    total = sum(len(v) for v in accepted.values())
    pool = WorkerPool(s, 1)
    pool.start_all()
    samples: list[tuple[float, int, float]] = []
    try:
        pool.wait_ready()
        w = pool.workers[0]

        def stats() -> dict:
            # a worker deep in a large batch can miss the 2-s deadline of its /stats/ page
            for _ in range(30):
                if (st := w.stats(timeout=5.0)) is not None:
                    return st
                time.sleep(1.0)
            raise RuntimeError("the worker's /stats/ page stopped answering")

        base = stats()
        base_done = base["windows_written"]
        t_end = time.time() + 3 * duration_s
        while time.time() < t_end:
            st = stats()
            done = st["windows_written"] - base_done
            samples.append((time.time(), done, st["cpu_s"]))
            if done >= total:
                break
            await asyncio.sleep(1.0)
        final = stats()
    finally:
        pool.stop_all()
        for name in (s.frames_topic, f"{s.app_id}-bed-state-changelog",
                     f"{s.app_id}-__assignor-__leader"):
            await delete_topic(s, name)
    prog = [x for x in samples if x[1] > 0]
    first = next((x for x in samples if x[1] > 0), samples[0])
    start = samples[max(0, samples.index(first) - 1)]
    last = prog[-1] if prog else samples[-1]
    elapsed = last[0] - start[0]
    windows = last[1] - start[1]
    stored = frame_seqs(s, t_first // 1000, t_last // 1000)
    missing, dup = exactly_once(accepted, stored)
    return {
        "beds": beds, "windows_preloaded": total, "windows_per_bed": wpb,
        "codec_model": s.codec_model if s.codec_level else 0, "level": s.codec_level,
        "worker_torch_threads": int(os.environ.get("WARDSTREAM_TORCH_THREADS", "1")),
        "preload_s": round(preload_s, 1),
        "windows_processed": windows, "measured_s": round(elapsed, 2),
        "windows_per_s": round(windows / elapsed, 1) if elapsed > 0 else None,
        "worker_cpu_s": round(last[2] - start[2], 2),
        "worker_cpu_share": round((last[2] - start[2]) / elapsed, 3) if elapsed > 0 else None,
        "windows_per_cpu_s": round(windows / (last[2] - start[2]), 1) if last[2] > start[2] else None,
        "backlog_drained": final["windows_written"] - base_done >= total,
        "windows_missing": missing if final["windows_written"] - base_done >= total else None,
        "windows_duplicated": dup,
        "replays": final["replays"],
        "influx_points_written": final["influx"]["points_written"],
        "influx_write_failures": final["influx"]["write_failures"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "goal_windows_per_s": 1000,
    }
