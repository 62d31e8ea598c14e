"""The worker supervisor (`wardstream.workers`): a worker that exits is started again, with a
back-off when it keeps exiting; one whose heartbeat goes stale is killed and started again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from device_sim.ward import run_ward
from wardstream.influxq import query_rows
from wardstream.settings import PROJECT_ROOT, from_env
from wardstream.workers import MAX_BACKOFF_S, WorkerPool, WorkerProc, restart_delay, settings_env


def test_the_restart_back_off_doubles_up_to_its_limit():
    assert [restart_delay(n) for n in range(8)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert restart_delay(50) == MAX_BACKOFF_S


def test_a_worker_is_silent_since_its_last_beat_or_its_start_plus_the_broker_wait(tmp_path, monkeypatch):
    monkeypatch.setenv("WARDSTREAM_BROKER_WAIT_S", "120")
    pool = WorkerPool(from_env({}, state_dir=tmp_path), 1)
    w = pool.workers[0]
    w.heartbeat = tmp_path / "beat"
    w.started = 1_000_000.0
    # no beat yet: the broker wait is its grace
    assert pool.silent_s(w, now=w.started + 150) == pytest.approx(30.0)
    w.heartbeat.touch()
    os.utime(w.heartbeat, (w.started + 10, w.started + 10))
    assert pool.silent_s(w, now=w.started + 150) == pytest.approx(140.0)
    # a beat older than this start is its predecessor's, not this process's
    os.utime(w.heartbeat, (w.started - 50, w.started - 50))
    assert pool.silent_s(w, now=w.started + 150) == pytest.approx(30.0)
    # the supervisor itself suspended until grace_from: nothing before it counts
    os.utime(w.heartbeat, (w.started + 10, w.started + 10))
    assert pool.silent_s(w, now=w.started + 150, grace_from=w.started + 140) == pytest.approx(10.0)
    assert isinstance(w, WorkerProc)
    pool.stop_all()  # (nothing started: removes its heartbeat folder)
    assert not pool.beat_dir.exists()


def test_a_worker_that_keeps_exiting_is_started_again_with_a_back_off(tmp_path):
    pool = WorkerPool(from_env({}, state_dir=tmp_path), 1, module="tests.exiting_worker")

    async def run():
        pool.start_all()
        task = asyncio.ensure_future(pool.supervise(every_s=0.05))
        await asyncio.sleep(5.0)
        pool._stopping = True
        task.cancel()

    asyncio.run(run())
    pool.stop_all()
    r = pool.restarts
    # exits at once every time: started again after 1 s, then 2 s (then 4 s: past the 5 s here)
    assert [(x["exit_status"], x["reason"], x["delay_s"]) for x in r[:3]] == \
        [(3, "exited", 1.0), (3, "exited", 2.0), (3, "exited", 4.0)], r
    assert pool.workers[0].starts == 3, pool.workers[0].starts
    gaps = [b["at"] - a["at"] for a, b in zip(r, r[1:])]
    assert 1.0 <= gaps[0] < 2.0 and 2.0 <= gaps[1] < 3.0, gaps


def _stats(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/", timeout=1.0) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def _worker_pid(port: int) -> int | None:
    """The worker's pid from its /stats/ page, None if it does not answer."""
    st = _stats(port)
    return int(st["pid"]) if st else None


def _wait_pid(port: int, timeout: float, other_than: int | None = None) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _worker_pid(port)
        if pid is not None and pid != other_than:
            return pid
        time.sleep(0.5)
    raise TimeoutError(f"no worker other than {other_than} answered on port {port} within {timeout} s")


@pytest.mark.servers
def test_a_stopped_worker_is_killed_and_started_again_by_its_supervisor(ward_settings, tmp_path):
    """``wardstream worker --supervise`` (what docker-compose runs): a worker process that stops —
    here SIGSTOP, as a hang where its own watchdog cannot run would — has its heartbeat go stale; the
    supervisor kills it and starts another, which rejoins the group as the member the killed one
    was (its id is stable: the host's name) and processes the ward's frames; SIGTERM stops both."""
    s = ward_settings.replace(worker_liveness_s=4.0)
    env = settings_env(s)
    env.pop("WARDSTREAM_WORKER_ID", None)
    log = tmp_path / "supervisor.log"
    with open(log, "wb") as out:
        sup = subprocess.Popen([sys.executable, "-m", "wardstream.cli", "worker", "--supervise"], env=env,
                               cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
    first = second = None
    try:
        first = _wait_pid(s.worker_web_port, 90.0)
        time.sleep(6.0)  # past the liveness limit while it runs: not killed
        assert _worker_pid(s.worker_web_port) == first
        os.kill(first, signal.SIGSTOP)
        t0 = time.monotonic()
        second = _wait_pid(s.worker_web_port, 90.0, other_than=first)
        assert time.monotonic() - t0 < 60
        with pytest.raises(ProcessLookupError):  # the stopped one was killed, not left behind
            os.kill(first, 0)
        # each start is in InfluxDB with why it started (the pipeline-health dashboard lists them)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            starts = sorted(query_rows(s, 'SELECT "pid", "reason" FROM "worker_start"'), key=lambda r: r["time"])
            if len(starts) >= 2:
                break
            time.sleep(0.5)
        assert [r["pid"] for r in starts] == [first, second], (starts, log.read_text(errors="replace")[-3000:])
        assert starts[0]["reason"] == "start" and starts[1]["reason"].startswith("restart after kill: no heartbeat for"), starts
        # the new process holds the partitions (on the local broker a new member would wait for the
        # killed one for good): a ward's windows are written
        rep = asyncio.run(run_ward(s, 3, 6.0, speed=1.0, seed=4))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = _stats(s.worker_web_port)
            if st and st["windows_written"] >= rep.frames_accepted:
                break
            time.sleep(0.5)
        assert st and st["pid"] == second and st["windows_written"] >= rep.frames_accepted >= 6, (st, rep.frames_accepted)
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=60) == 0
        with pytest.raises(ProcessLookupError):  # and the supervisor stopped its worker
            os.kill(second, 0)
    finally:
        if sup.poll() is None:  # a failure above: stop it as it stops (its worker with it), then for good
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(timeout=60)
            except subprocess.TimeoutExpired:
                sup.kill()
                sup.wait()
        for pid in (first, second):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    out = log.read_text(errors="replace")
    assert "no heartbeat for" in out and "killing it to start it again" in out, out[-3000:]
