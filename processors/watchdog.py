"""The worker's event-loop watchdog: a worker whose event loop is blocked exits, so its supervisor
restarts it.

Everything a worker does — its agents, timers, Kafka heartbeats, the HTTP API — runs on one asyncio
event loop. Code that blocks that loop (a synchronous call that never returns, a deadlock, a
runaway computation) leaves a process that is alive, holds its partitions and answers nothing: on
the local broker, which never expires a member, its beds stay unprocessed for good; the other
workers' group watch raises ``monitoring_stalled`` for them (`processors.group_watch`), but only a
restart ends it, and a lone worker has nobody to raise even that. So a thread beside the loop
checks a heartbeat the loop beats every second; when the loop has not beaten for
``WARDSTREAM_LOOP_WATCHDOG_S`` (default 60 s; 0: off), the thread logs the loop thread's stack (where
it is stuck) and ends the process with exit status 70, uncommitted work left for the restarted
worker (as a batch that fails does). A suspended process (SIGSTOP, a paused VM) is not taken for a
blocked loop: when the watchdog's own sleep overran, the loop gets a new grace period.

What this thread cannot see — the whole process stopped (SIGSTOP, a hang in C code that holds the
GIL, a read stuck in the kernel) — its supervisor sees from outside: when it sets
``WARDSTREAM_HEARTBEAT_FILE``, the loop touches that file every second (`heartbeat_file`), and the
supervisor kills a worker whose file has gone stale (`wardstream.workers.WorkerPool.supervise`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from typing import Callable

log = logging.getLogger("wardstream.watchdog")

EXIT_STATUS = 70


def _exit(stack: str) -> None:
    logging.shutdown()
    os._exit(EXIT_STATUS)


async def heartbeat_file(path: str, every_s: float = 1.0) -> None:
    """The loop's liveness for its supervisor: touch ``path`` every ``every_s`` while the loop runs
    (a stale modification time means the loop, or the whole process, stopped)."""
    while True:
        try:
            try:
                os.utime(path)
            except FileNotFoundError:
                open(path, "a").close()
        except OSError as e:  # a missing folder, a full disk: never stop the worker; the supervisor will see it
            log.warning("heartbeat file %s: %s", path, e)
        await asyncio.sleep(every_s)


class LoopWatchdog:
    def __init__(self, limit_s: float, beat_s: float = 1.0, on_blocked: Callable[[str], None] = _exit):
        self.limit_s = limit_s
        self.beat_s = beat_s
        self.on_blocked = on_blocked
        self.last_beat = time.monotonic()
        self.loop_thread: int | None = None
        self.fired = False
        self._stop = threading.Event()

    async def beat(self) -> None:
        """The loop's side: beat every ``beat_s`` for as long as the loop runs."""
        self.loop_thread = threading.get_ident()
        while not self._stop.is_set():
            self.last_beat = time.monotonic()
            await asyncio.sleep(self.beat_s)

    def start(self) -> None:
        threading.Thread(target=self._watch, name="loop-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        tick = time.monotonic()
        while not self._stop.wait(self.beat_s):
            now = time.monotonic()
            if now - tick > self.beat_s + self.limit_s / 2:
                # this thread itself did not run for a long while: the process was suspended, not
                # the loop blocked; give the loop a new grace period
                log.warning("watchdog: the process was suspended for %.0f s; the loop's grace restarts", now - tick)
                self.last_beat = now
            tick = now
            blocked = now - self.last_beat
            if blocked >= self.limit_s:
                self.fired = True
                frame = sys._current_frames().get(self.loop_thread) if self.loop_thread else None
                stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)"
                log.critical("event loop blocked for %.0f s (WARDSTREAM_LOOP_WATCHDOG_S=%g): exiting with status %d "
                             "so that the supervisor restarts this worker; nothing uncommitted is lost. "
                             "The loop is here:\n%s", blocked, self.limit_s, EXIT_STATUS, stack)
                self.on_blocked(stack)
                return
