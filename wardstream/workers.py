"""Start, watch, kill and restart Faust worker processes; read their /stats/ pages."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from wardstream.settings import Settings, to_env

log = logging.getLogger("wardstream.workers")


def settings_env(s: Settings) -> dict[str, str]:
    """Environment that makes a child process see the same settings (secrets pass through)."""
    return {**os.environ, **to_env(s)}


@dataclass
class WorkerProc:
    index: int
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    starts: int = 0

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
            return "Worker ready" in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class WorkerPool:
    def __init__(self, settings: Settings, n: int = 1, base_port: int | None = None,
                 log_dir: Path | None = None, module: str = "processors.worker"):
        self.s = settings
        self.module = module  # what ``python -m`` runs as a worker
        self.restarts: list[dict] = []  # workers that exited on their own and were started again
        self._last_stats: dict[tuple[int, int], dict] = {}  # (worker, start) -> its last stats seen
        self._stopping = False
        self.started_ms: int | None = None  # when the first worker was started (backlog cut-off)
        base = base_port or settings.worker_web_port
        self.log_dir = Path(log_dir or Path(settings.state_dir) / "workers")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.workers = [WorkerProc(i, base + i, self.log_dir / f"worker-{i}.0.log") for i in range(n)]

    def start(self, i: int) -> WorkerProc:
        w = self.workers[i]
        env = settings_env(self.s)
        env["WARDSTREAM_WORKER_WEB_PORT"] = str(w.port)
        env["WARDSTREAM_WORKER_ID"] = f"w{i}"
        if self.started_ms is None:
            self.started_ms = int(time.time() * 1000)
        # a worker started again counts the windows its restart delayed as latency, not backlog
        env["WARDSTREAM_SERVICE_STARTED_MS"] = str(self.started_ms)
        w.starts += 1
        w.log_path = self.log_dir / f"worker-{i}.{w.starts}.log"  # one log per start, kept
        datadir = Path(self.s.state_dir) / "faust" / f"w{i}"
        datadir.mkdir(parents=True, exist_ok=True)
        env["WARDSTREAM_FAUST_DATADIR"] = str(datadir)
        w.proc = subprocess.Popen([sys.executable, "-m", self.module],
                                  stdout=open(w.log_path, "ab"), stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        return w

    def start_all(self) -> None:
        for i in range(len(self.workers)):
            self.start(i)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for w in self.workers:
                if w.proc is not None and w.proc.poll() is not None:
                    tail = w.log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"worker {w.index} exited with {w.proc.returncode}:\n{tail}")
            if all(w.ready() and w.stats() is not None for w in self.workers if w.proc):
                return
            time.sleep(0.2)
        raise TimeoutError(f"workers not ready within {timeout}s; logs in {self.log_dir}")

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        w = self.workers[i]
        if w.alive():
            os.killpg(w.proc.pid, sig)
            w.proc.wait(timeout=30)

    async def supervise(self, every_s: float = 1.0, stats_every_s: float = 5.0) -> None:
        """Start again any worker that exits on its own — a crash, a batch that failed, the
        event-loop watchdog's exit 70 — as docker-compose's restart policy does, under the same
        worker id (it rejoins as the group member it was); note each in ``restarts``. Keeps each
        process's last stats, so that `ended_stats` can count what the ended ones did (up to
        their last sample). Runs until cancelled."""
        last = 0.0
        while not self._stopping:
            await asyncio.sleep(every_s)
            if time.monotonic() - last >= stats_every_s:
                last = time.monotonic()
                for w in self.workers:
                    st = await asyncio.to_thread(w.stats) if w.alive() else None
                    if st is not None:
                        self._last_stats[(w.index, w.starts)] = st
            for w in self.workers:
                if self._stopping or w.proc is None or w.proc.poll() is None:
                    continue
                rc = w.proc.returncode
                log.warning("worker %d exited with status %s (log %s); starting it again", w.index, rc, w.log_path)
                self.restarts.append({"worker": w.index, "exit_status": rc, "log": str(w.log_path),
                                      "at": time.time()})
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

    def stats(self) -> list[dict]:
        return [st for w in self.workers if (st := w.stats()) is not None]
