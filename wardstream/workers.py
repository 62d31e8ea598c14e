"""Start, watch, kill and restart Faust worker processes; read their /stats/ pages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from wardstream.settings import Settings, to_env

log = logging.getLogger("wardstream.workers")


def broker_wait_s() -> float:
    """How long a starting worker waits for the broker before its loop runs (processors/worker.py)."""
    return float(os.environ.get("WARDSTREAM_BROKER_WAIT_S", "120"))


def settings_env(s: Settings) -> dict[str, str]:
    """Environment that makes a child process see the same settings (secrets pass through)."""
    return {**os.environ, **to_env(s)}


@dataclass
class WorkerProc:
    index: int
    port: int
    log_path: Path | None  # None: the worker writes to the supervisor's own output
    worker_id: str | None = None  # None: the worker's default (host name and pid)
    proc: subprocess.Popen | None = None
    starts: int = 0
    started: float = 0.0  # time.time() of the last start
    heartbeat: Path | None = None
    quick_exits: int = 0  # consecutive runs shorter than QUICK_EXIT_S (the restart back-off)
    restart_at: float | None = None  # the ended process is noted; start again from then (time.time())
    kill_reason: str | None = None  # why the supervisor killed it, if it did
    last_end: str | None = None  # how its previous process ended ("exit 70", "kill: …"), for the next start

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self, timeout: float = 2.0) -> dict | None:
        try:
            with urllib.request.urlopen(self.url + "/stats/", timeout=timeout) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def ready(self) -> bool:
        try:
            return self.log_path is not None and "Worker ready" in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def last_beat(self) -> float | None:
        """When the worker's loop last touched its heartbeat file (time.time()); None before its first."""
        try:
            mtime = self.heartbeat.stat().st_mtime if self.heartbeat else None
        except FileNotFoundError:
            return None
        return mtime if mtime is not None and mtime >= self.started - 1 else None


QUICK_EXIT_S = 60.0  # a worker that ends sooner than this after its start is restarted with a back-off
MAX_BACKOFF_S = 30.0


def restart_delay(quick_exits: int) -> float:
    """Seconds before starting again a worker that ended ``quick_exits`` times in a row within
    QUICK_EXIT_S of its start: none after a run that lasted, then 1, 2, 4 … MAX_BACKOFF_S (a worker
    that cannot start — a broken configuration, a model that does not load — does not spin)."""
    return 0.0 if quick_exits <= 0 else min(2.0 ** (quick_exits - 1), MAX_BACKOFF_S)


class WorkerPool:
    """Worker processes under one supervisor (the demo's, the tests', ``wardstream worker --supervise``).

    ``supervise`` starts again a worker that exits, and kills one that stops answering: each worker's
    event loop touches a heartbeat file every second (processors/watchdog.py); a live process whose
    file is older than ``Settings.worker_liveness_s`` — stopped, or hung where its own loop watchdog
    cannot run (in C code holding the GIL, in the kernel) — is killed (SIGKILL) and started again, as
    a liveness probe would. Before its first beat a worker gets the broker wait on top (it waits for
    the broker before its loop starts)."""

    def __init__(self, settings: Settings, n: int = 1, base_port: int | None = None,
                 log_dir: Path | None = None, module: str = "processors.worker",
                 worker_ids: list[str | None] | None = None, inherit_output: bool = False):
        self.s = settings
        self.module = module  # what ``python -m`` runs as a worker
        self.restarts: list[dict] = []  # workers that ended (exited, or killed unresponsive) and were started again
        self._last_stats: dict[tuple[int, int], dict] = {}  # (worker, start) -> its last stats seen
        self._stopping = False
        self.started_ms: int | None = None  # when the first worker was started (backlog cut-off)
        base = base_port or settings.worker_web_port
        self.log_dir = Path(log_dir or Path(settings.state_dir) / "workers")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # the heartbeat files: process-local, never shared with another supervisor (compose's replicas
        # share the state volume)
        self.beat_dir = Path(tempfile.mkdtemp(prefix="wardstream-heartbeat-"))
        ids = worker_ids if worker_ids is not None else [f"w{i}" for i in range(n)]
        if len(ids) != n:
            raise ValueError(f"{n} workers but {len(ids)} worker ids")
        self.workers = [WorkerProc(i, base + i, None if inherit_output else self.log_dir / f"worker-{i}.0.log", ids[i])
                        for i in range(n)]
        self.inherit_output = inherit_output

    def start(self, i: int) -> WorkerProc:
        w = self.workers[i]
        env = settings_env(self.s)
        env["WARDSTREAM_WORKER_WEB_PORT"] = str(w.port)
        if self.started_ms is None:
            self.started_ms = int(time.time() * 1000)
        # a worker started again counts the windows its restart delayed as latency, not backlog
        env["WARDSTREAM_SERVICE_STARTED_MS"] = str(self.started_ms)
        self.beat_dir.mkdir(parents=True, exist_ok=True)  # (stop_all removes it; a pool may start again)
        w.heartbeat = self.beat_dir / f"worker-{i}"
        w.heartbeat.unlink(missing_ok=True)
        env["WARDSTREAM_HEARTBEAT_FILE"] = str(w.heartbeat)
        # why this process starts, into its worker_start point (the pipeline-health dashboard lists them)
        env["WARDSTREAM_START_REASON"] = f"restart after {w.last_end}" if w.last_end else "start"
        if w.worker_id is not None:
            env["WARDSTREAM_WORKER_ID"] = w.worker_id
            datadir = Path(self.s.state_dir) / "faust" / w.worker_id
            datadir.mkdir(parents=True, exist_ok=True)
            env["WARDSTREAM_FAUST_DATADIR"] = str(datadir)
        w.starts += 1
        out = None
        if not self.inherit_output:
            w.log_path = self.log_dir / f"worker-{i}.{w.starts}.log"  # one log per start, kept
            out = open(w.log_path, "ab")
        w.started, w.restart_at, w.kill_reason = time.time(), None, None
        w.proc = subprocess.Popen([sys.executable, "-m", self.module],
                                  stdout=out, stderr=subprocess.STDOUT if out else None,
                                  stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        if out:
            out.close()  # the child holds its own descriptor
        return w

    def start_all(self) -> None:
        for i in range(len(self.workers)):
            self.start(i)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for w in self.workers:
                if w.proc is not None and w.proc.poll() is not None:
                    tail = w.log_path.read_text(errors="replace")[-3000:] if w.log_path else ""
                    raise RuntimeError(f"worker {w.index} exited with {w.proc.returncode}:\n{tail}")
            if all(w.ready() and w.stats() is not None for w in self.workers if w.proc):
                return
            time.sleep(0.2)
        raise TimeoutError(f"workers not ready within {timeout}s; logs in {self.log_dir}")

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        w = self.workers[i]
        if w.alive():
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.killpg(w.proc.pid, sig)
            w.proc.wait(timeout=30)

    def silent_s(self, w: WorkerProc, now: float, grace_from: float = 0.0) -> float:
        """How long the worker has not shown its loop running, as far as the liveness check counts
        it: since its last beat, or since its start less the broker wait before its first; never
        counting before ``grace_from``."""
        beat = w.last_beat()
        since = beat if beat is not None else w.started + broker_wait_s()
        return now - max(since, grace_from)

    async def supervise(self, every_s: float = 1.0, stats_every_s: float = 5.0) -> None:
        """Start again any worker that exits on its own — a crash, a batch that failed, the
        event-loop watchdog's exit 70 — as docker-compose's restart policy does, under the same
        worker id (it rejoins as the group member it was), after `restart_delay` when it keeps
        ending soon after its start; kill and start again one whose heartbeat has gone stale
        (`Settings.worker_liveness_s`; 0: not checked). Note each in ``restarts``. Keeps each
        process's last stats, so that `ended_stats` can count what the ended ones did (up to
        their last sample). Runs until cancelled."""
        last = 0.0
        liveness = self.s.worker_liveness_s
        grace_from = 0.0
        tick = time.monotonic()
        while not self._stopping:
            await asyncio.sleep(every_s)
            if time.monotonic() - tick > every_s + max(liveness / 2, 5.0):
                # this supervisor itself did not run for a long while (the host suspended): the
                # heartbeats are stale for that reason, not the workers'
                grace_from = time.time()
            tick = time.monotonic()
            if time.monotonic() - last >= stats_every_s:
                last = time.monotonic()
                for w in self.workers:
                    st = await asyncio.to_thread(w.stats) if w.alive() else None
                    if st is not None:
                        self._last_stats[(w.index, w.starts)] = st
            for w in self.workers:
                if self._stopping or w.proc is None:
                    continue
                now = time.time()
                if w.alive():
                    silent = self.silent_s(w, now, grace_from)
                    if not liveness or silent < liveness:
                        continue
                    w.kill_reason = f"no heartbeat for {silent:.0f} s"
                    log.error("worker %d (pid %d): %s (WARDSTREAM_WORKER_LIVENESS_S=%g): killing it to start it "
                              "again; nothing uncommitted is lost", w.index, w.proc.pid, w.kill_reason, liveness)
                    await asyncio.to_thread(self.kill, w.index)
                if w.restart_at is None:  # ended: note it once, then start it again after the back-off
                    w.quick_exits = w.quick_exits + 1 if now - w.started < QUICK_EXIT_S else 0
                    delay = restart_delay(w.quick_exits)
                    rc = w.proc.returncode
                    w.last_end = f"kill: {w.kill_reason}" if w.kill_reason else f"exit {rc}"
                    log.warning("worker %d %s (log %s); starting it again%s", w.index,
                                f"killed: {w.kill_reason}" if w.kill_reason else f"exited with status {rc}",
                                w.log_path or "on this output", f" in {delay:.0f} s" if delay else "")
                    self.restarts.append({"worker": w.index, "exit_status": rc, "reason": w.kill_reason or "exited",
                                          "delay_s": delay, "log": str(w.log_path) if w.log_path else None,
                                          "at": now})
                    w.restart_at = now + delay
                if now >= w.restart_at:
                    self.start(w.index)

    def ended_stats(self) -> list[dict]:
        """The last stats seen of every worker process that has ended (`supervise`)."""
        live = {(w.index, w.starts) for w in self.workers}
        return [st for k, st in sorted(self._last_stats.items()) if k not in live]

    def stop_all(self) -> None:
        self._stopping = True
        for w in self.workers:
            if w.alive():
                os.killpg(w.proc.pid, signal.SIGTERM)
        for w in self.workers:
            if w.proc is not None:
                try:
                    w.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(w.proc.pid, signal.SIGKILL)
                    w.proc.wait()
        shutil.rmtree(self.beat_dir, ignore_errors=True)

    def stats(self) -> list[dict]:
        return [st for w in self.workers if (st := w.stats()) is not None]


def run_supervised(s: Settings) -> int:
    """``wardstream worker --supervise``: one worker in a child process under `WorkerPool.supervise`,
    its output on this one's, until SIGTERM or SIGINT (then the worker is stopped as the demo stops
    its own). What docker-compose runs: compose's restart policy restarts a container whose process
    exits, not one whose process hangs (a health check only marks it unhealthy); this supervisor
    kills a worker whose heartbeat went stale and starts it again. The worker's id is
    ``WARDSTREAM_WORKER_ID``, else this host's name (a container's own): stable across the restarts,
    so a restarted worker rejoins the group as the member it was (`stream.kafka_compat`, mend 5) —
    a killed member is never expired by the local broker, and only after its session timeout by
    Apache Kafka."""
    import socket

    pool = WorkerPool(s, 1, worker_ids=[os.environ.get("WARDSTREAM_WORKER_ID") or socket.gethostname()],
                      inherit_output=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        pool.start_all()
        supervisor = asyncio.ensure_future(pool.supervise())
        await stop.wait()
        log.info("stopping the worker")
        supervisor.cancel()
        await asyncio.to_thread(pool.stop_all)

    asyncio.run(main())
    return 0
