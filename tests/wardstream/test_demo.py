"""The main job's summary, on the real servers: a small, short ward."""

import asyncio

import pytest

from wardstream.demo import percentiles, run_demo

pytestmark = pytest.mark.servers

KEYS = {"frames_sent", "frames_received", "frames_dead_lettered", "windows_written",
        "windows_missing", "windows_duplicated", "latency_ms", "wire_bytes", "raw_bytes"}


def test_demo_summary_has_the_acceptance_keys_and_balances(ward_settings):
    d = asyncio.run(run_demo(ward_settings, beds=6, duration_s=8.0, speed=1.0, workers=1,
                             source="synthetic", bad_every=5, seed=1, start_services=False))
    assert KEYS <= set(d)
    assert {"p50", "p95", "p99"} <= set(d["latency_ms"])
    assert d["windows_missing"] == 0 and d["windows_duplicated"] == 0
    assert d["windows_written"] == d["windows_accepted"] >= 18
    assert d["frames_received"] == d["frames_sent"] == d["windows_sent"] + d["bad_frames_sent"]
    assert d["frames_dead_lettered"] == d["bad_frames_sent"] >= 3
    # read from the dead-letter topic: every malformed frame is there once, with its reason
    assert d["malformed_frames_lost"] == 0 and d["dead_letters_repeated"] == 0 and d["dead_letters_other"] == 0
    assert sum(d["dead_letter_reasons"].values()) == d["bad_frames_sent"] and "?" not in d["dead_letter_reasons"]
    assert d["latency_ms"]["p99"] is not None and 0 <= d["latency_ms"]["p50"] <= d["latency_ms"]["p99"]
    # fresh topics: no backlog from earlier runs, so the latency counts every window written
    assert d["backlog_windows_written"] == 0 and d["latency_ms"]["count"] == d["windows_written"]
    assert d["partition_stalls_seen"] == 0  # one healthy worker
    assert d["consumer_lag"]["final"] == 0
    # the default codec level: 154-byte frames (wire v2) for 1,024 bytes of samples (header and CRC included)
    assert d["raw_bytes"] >= 5.5 * d["wire_bytes"] > 0
    assert d["codec_model"] == ward_settings.codec_model
    # the worker's bed-state changelog closes segments, so that the broker compacts it (stream.topics)
    from stream.topics import COMPACT_SEGMENT_MS
    from tests.isolation import topic_configs

    name = f"{ward_settings.app_id}-bed-state-changelog"
    cfg = topic_configs(ward_settings, [name])[name]
    assert cfg["cleanup.policy"] == "compact" and cfg["segment.ms"] == str(COMPACT_SEGMENT_MS), cfg


def test_the_dead_letter_audit_matches_the_malformed_frames_by_offset_from_the_run_s_start(ward_settings):
    """`demo.dead_letter_audit` on hand-made dead letters: an earlier run's are not read, a
    malformed frame sent and not there is lost, a good frame refused is counted apart, a frame
    dead-lettered twice (a worker's restart) once."""
    import time

    from aiokafka import AIOKafkaProducer

    from wardstream.demo import dead_letter_audit

    s = ward_settings
    src = [f"{s.frames_topic}/0/{o}" for o in range(5)]

    async def put(rows) -> None:
        p = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
        await p.start()
        try:
            for source, reason in rows:
                await (await p.send(s.dlq_topic, b"x", partition=0,
                                    headers=[("reason", reason.encode()), ("source", source.encode())]))
        finally:
            await p.stop()

    asyncio.run(put([(src[0], "bad_magic"), (src[1], "crc")]))  # an earlier run's
    time.sleep(0.05)
    since = int(time.time() * 1000)
    asyncio.run(put([(src[2], "crc"), (src[3], "truncated"), (src[2], "crc"), (src[4], "stale"),
                     ("other.topic/0/7", "crc")]))
    got = asyncio.run(dead_letter_audit(s, since, [src[2], src[3], f"{s.frames_topic}/1/9"]))
    assert got == {"reasons": {"crc": 1, "stale": 1, "truncated": 1}, "repeated": 1, "lost": 1, "other": 1}
    everything = asyncio.run(dead_letter_audit(s, 0, src[:4]))
    assert everything["lost"] == 0 and everything["other"] == 1 and sum(everything["reasons"].values()) == 5


def test_a_ward_on_codec_model_4_keeps_every_window_exactly_once(ward_settings):
    """`WARDSTREAM_CODEC_MODEL=4` (`ward-hf`, EEG fine-tuned for coherence): devices encode and
    the worker decodes it like the default."""
    s = ward_settings.replace(codec_model=4)
    d = asyncio.run(run_demo(s, beds=4, duration_s=6.0, speed=1.0, workers=1,
                             source="synthetic", bad_every=0, seed=2, start_services=False))
    assert d["codec_model"] == 4 and d["windows_accepted"] >= 8
    assert d["windows_written"] == d["windows_accepted"]
    assert d["windows_missing"] == 0 and d["windows_duplicated"] == 0 and d["frames_dead_lettered"] == 0


def test_a_second_run_gives_its_beds_new_patients_and_keeps_every_window_exactly_once(ward_settings):
    """The demo's beds are new (simulated) patients each run: before its beds start, a run ends the
    earlier stays (the discharge command, applied by the workers: their stay points are counted),
    and the windows that follow start new streams without losing or repeating one."""
    first = asyncio.run(run_demo(ward_settings, beds=3, duration_s=5.0, speed=1.0, workers=1, source="synthetic",
                                 bad_every=0, seed=3, start_services=False))
    assert first["discharged_before_run"] is None  # --no-services: not the demo's ward
    d = asyncio.run(run_demo(ward_settings, beds=3, duration_s=5.0, speed=1.0, workers=1, source="synthetic",
                             bad_every=0, seed=4, start_services=False, new_patients=True))
    assert d["discharged_before_run"]["beds"] == 3
    assert d["windows_written"] == d["windows_accepted"] >= 3
    assert d["windows_missing"] == 0 and d["windows_duplicated"] == 0


def test_percentiles_from_a_histogram():
    h = {10: 50, 20: 45, 900: 4, 2000: 1}
    p = percentiles(h)
    assert (p["p50"], p["p95"], p["p99"], p["max"], p["count"]) == (10.0, 20.0, 900.0, 2000.0, 100)
    assert percentiles({})["p50"] is None


def test_the_summary_line_of_the_fidelity_holds():
    from wardstream.demo import _hold_line

    assert _hold_line({"fidelity_hold_updates_sent": 13, "fidelity_holds": {"7": 1, "24": 0}}) == \
        "13 begun or ended by the workers; 2 beds held at the end (ECG level <= 0)"
    assert _hold_line({"fidelity_hold_updates_sent": 2, "fidelity_holds": {}}) == \
        "2 begun or ended by the workers; no bed held at the end"
    assert _hold_line({"fidelity_hold_updates_sent": 7, "fidelity_holds": None}).endswith(
        "these devices send raw samples only (nothing to hold)")


def test_a_worker_that_exits_during_the_run_is_started_again_and_nothing_is_lost(ward_settings, monkeypatch,
                                                                                 tmp_path):
    """The demo supervises its workers as docker-compose's restart policy would: a worker whose
    event loop blocks mid-run (the watchdog ends it with status 70) is started again, and every
    accepted window is in InfluxDB exactly once; the summary says so."""
    import functools

    from wardstream import demo
    from wardstream.influxq import query_rows
    from wardstream.workers import WorkerPool

    flag = tmp_path / "block"
    flag.touch()
    monkeypatch.setenv("WARDSTREAM_TEST_BLOCK_FLAG", str(flag))
    monkeypatch.setenv("WARDSTREAM_TEST_BLOCK_AFTER_FRAMES", "16")  # 4 beds: after ~8 s of the run
    monkeypatch.setattr(demo, "WorkerPool", functools.partial(WorkerPool, module="tests.blocking_worker"))
    s = ward_settings.replace(loop_watchdog_s=3.0)
    d = asyncio.run(run_demo(s, beds=4, duration_s=20.0, speed=1.0, workers=1, source="synthetic",
                             bad_every=0, seed=5, start_services=False))
    assert not flag.exists(), "the worker never blocked (the flag is still there)"
    assert [(r["worker"], r["exit_status"]) for r in d["worker_restarts"]] == [(0, 70)], d["worker_restarts"]
    starts = sorted(query_rows(s, 'SELECT "reason" FROM "worker_start"'), key=lambda r: r["time"])
    assert [r["reason"] for r in starts] == ["start", "restart after exit 70"], starts
    assert d["windows_written"] == d["windows_accepted"] >= 36
    assert d["windows_missing"] == 0 and d["windows_duplicated"] == 0
    assert d["consumer_lag"]["final"] == 0
    # the windows the restart delayed are this run's latency, not backlog from before it
    assert d["backlog_windows_written"] == 0 and d["latency_ms"]["max"] > 3000, d["latency_ms"]


def test_the_summary_says_which_worker_was_restarted():
    from wardstream.demo import _restart_note

    assert _restart_note({"worker_restarts": []}) == ""
    assert _restart_note({"worker_restarts": [{"worker": 1, "exit_status": 70, "at_s": 41.5}]}) == \
        "; restarted: worker 1 (exit 70, 41.5 s into the demo)"
    assert _restart_note({"worker_restarts": [
        {"worker": 0, "exit_status": -9, "reason": "no heartbeat for 121 s", "at_s": 80.0},
        {"worker": 1, "exit_status": 1, "reason": "exited", "at_s": 90.2}]}) == \
        "; restarted: worker 0 (killed, no heartbeat for 121 s, 80.0 s into the demo), worker 1 (exit 1, 90.2 s into the demo)"


def test_the_summary_gives_the_local_brokers_store_and_says_when_it_is_large(tmp_path, ward_settings):
    import threading
    import time

    from wardstream.demo import STORE_LARGE_MB, _store_line
    from wardstream.services import Broker

    s = ward_settings.replace(state_dir=tmp_path)
    assert Broker(s).store_bytes() is None  # no local broker here (Apache Kafka, --no-services)
    (tmp_path / "broker" / "data").mkdir(parents=True)
    store = tmp_path / "broker" / "data" / "kafka.json"
    store.write_bytes(b"{" + b"x" * 2998 + b"}")
    assert Broker(s).store_bytes() == 3000

    def rewrite():  # as noida-db does: in place, a piece at a time
        with open(store, "wb") as f:
            for _ in range(8):
                f.write(b"[" + b"1," * 500)
                f.flush()
                time.sleep(0.1)
            f.write(b"}")

    writer = threading.Thread(target=rewrite)
    writer.start()
    time.sleep(0.15)
    assert store.stat().st_size < 8 * 1001 and Broker(s).store_bytes() == 8 * 1001 + 1
    writer.join()
    store.write_bytes(b"{" + b"x" * 1999)  # cut short and left so: the largest size seen
    assert Broker(s).store_bytes(settle_s=0.5) == 2000
    assert _store_line({"broker_store_mb": None}) == ""
    small = _store_line({"broker_store_mb": 23.5, "frames_retention_h": 1.0})
    assert "23.5 MB" in small and "frames kept 1 h" in small and "rm -rf" not in small
    large = _store_line({"broker_store_mb": STORE_LARGE_MB + 505, "frames_retention_h": 48.0})
    assert "755.0 MB" in large and "rm -rf .wardstream" in large
