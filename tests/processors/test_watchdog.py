"""The worker's event-loop watchdog (`processors.watchdog`): a blocked loop is reported with its
stack, a busy or suspended one is not."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from processors.watchdog import LoopWatchdog


def _run(dog: LoopWatchdog, work) -> None:
    async def main():
        dog.start()
        beat = asyncio.ensure_future(dog.beat())
        try:
            await work()
        finally:
            dog.stop()
            beat.cancel()

    asyncio.run(main())


def test_a_blocked_loop_is_reported_with_where_it_is_stuck():
    got: list[str] = []
    dog = LoopWatchdog(limit_s=0.6, beat_s=0.1, on_blocked=got.append)

    def stuck_in_a_synchronous_call() -> None:
        time.sleep(1.5)

    async def work():
        await asyncio.sleep(0.3)
        stuck_in_a_synchronous_call()

    _run(dog, work)
    assert dog.fired and len(got) == 1
    assert "stuck_in_a_synchronous_call" in got[0] and "time.sleep" in got[0], got[0]


def test_a_busy_loop_that_keeps_yielding_is_not_blocked():
    got: list[str] = []
    # (a timer waits behind the chunks already queued: the beat comes every ~0.6 s here)
    dog = LoopWatchdog(limit_s=1.5, beat_s=0.1, on_blocked=got.append)

    async def work():
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:  # 0.2 s of computing at a time, then the loop runs
            t = time.monotonic()
            while time.monotonic() - t < 0.2:
                pass
            await asyncio.sleep(0)

    _run(dog, work)
    assert not dog.fired and got == []


def test_a_suspended_worker_is_not_killed_when_it_goes_on():
    """SIGSTOP for 4 s, then SIGCONT, with a 2-s limit: the watchdog sees that it did not run
    either, and the process carries on (exit 0 after its 8 s)."""
    code = textwrap.dedent("""
        import asyncio, logging, sys, time
        logging.basicConfig(stream=sys.stdout, level=logging.INFO)
        from processors.watchdog import LoopWatchdog
        dog = LoopWatchdog(limit_s=2.0, beat_s=0.2)
        async def main():
            dog.start()
            beat = asyncio.ensure_future(dog.beat())
            print("started", flush=True)
            await asyncio.sleep(8.0)
            dog.stop()
            beat.cancel()
        asyncio.run(main())
        print("done", flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert p.stdout.readline().strip() == b"started"
    time.sleep(1.0)
    p.send_signal(signal.SIGSTOP)
    time.sleep(4.0)
    p.send_signal(signal.SIGCONT)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0 and b"done" in out, out.decode(errors="replace")
    assert b"suspended" in out, out.decode(errors="replace")


def test_a_blocked_loop_ends_the_process_with_status_70():
    code = textwrap.dedent("""
        import asyncio, logging, sys, time
        logging.basicConfig(stream=sys.stdout, level=logging.INFO)
        from processors.watchdog import LoopWatchdog
        dog = LoopWatchdog(limit_s=1.0, beat_s=0.2)
        async def main():
            dog.start()
            asyncio.ensure_future(dog.beat())
            await asyncio.sleep(0.5)
            time.sleep(30)
        asyncio.run(main())
    """)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert r.returncode == 70, r
    assert time.monotonic() - t0 < 20
    assert b"event loop blocked" in r.stdout and b"line 10, in main" in r.stdout, r.stdout.decode(errors="replace")


@pytest.mark.servers
def test_a_worker_whose_loop_blocks_exits_for_its_supervisor(ward_settings, monkeypatch, tmp_path):
    """A real worker process (broker, InfluxDB, Faust) whose event loop blocks: its watchdog logs
    where the loop is stuck and ends it with status 70 within the limit, for the supervisor to
    restart it."""
    from wardstream.workers import WorkerPool

    flag = tmp_path / "block"
    monkeypatch.setenv("WARDSTREAM_TEST_BLOCK_FLAG", str(flag))
    s = ward_settings.replace(loop_watchdog_s=3.0)
    pool = WorkerPool(s, 1, module="tests.blocking_worker")
    pool.start_all()
    try:
        pool.wait_ready()
        w = pool.workers[0]
        assert w.stats() is not None
        time.sleep(4.0)  # running past the limit with its loop free: no exit
        assert w.alive()
        flag.touch()
        t0 = time.monotonic()
        rc = w.proc.wait(timeout=30)
        took = time.monotonic() - t0
        log = w.log_path.read_text(errors="replace")
        # the limit counts from the loop's last beat (up to 1 s before it blocked), the block comes
        # within 0.5 s of the flag: 2-4.5 s after the flag, give or take the watchdog's 1-s check
        assert rc == 70 and 1.5 <= took < 10.0, (rc, took, log[-3000:])
        assert "event loop blocked" in log and "stuck_in_a_synchronous_call" in log, log[-3000:]
    finally:
        pool.stop_all()


def test_the_heartbeat_file_is_touched_and_a_missing_folder_does_not_stop_the_loop(tmp_path):
    from processors.watchdog import heartbeat_file

    beat = tmp_path / "beat"
    lost = tmp_path / "gone" / "beat"

    async def main():
        tasks = [asyncio.ensure_future(heartbeat_file(str(beat), every_s=0.05)),
                 asyncio.ensure_future(heartbeat_file(str(lost), every_s=0.05))]
        await asyncio.sleep(0.2)
        first = beat.stat().st_mtime_ns
        await asyncio.sleep(0.3)
        assert beat.stat().st_mtime_ns > first  # touched again
        assert not any(t.done() for t in tasks)  # neither ended, the one without its folder included
        for t in tasks:
            t.cancel()

    asyncio.run(main())
    assert not lost.exists()
