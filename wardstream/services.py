"""Local services on 127.0.0.1: the noida-db Kafka-protocol broker and Debian's influxd.

Each service runs as a detached process with its data, config, log and pid file under
``<state_dir>/<service>/``. ``up`` and ``down`` are idempotent; ``status`` health-checks.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from wardstream.settings import Settings


class ServiceError(RuntimeError):
    """A service could not be started; the message names the missing piece."""


@dataclass(frozen=True)
class Status:
    name: str
    running: bool
    healthy: bool
    pid: int | None
    address: str
    detail: str = ""


def _group_alive(pgid: int) -> bool:
    """Any live process left in the service's process group (it was started as a new session)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return any(_pid_alive(int(p)) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == pgid)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie child is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class _Service:
    name = ""

    def __init__(self, settings: Settings):
        self.s = settings
        self.dir = Path(settings.state_dir) / self.name
        self.pidfile = self.dir / "pid"
        self.logfile = self.dir / "log"

    # subclasses provide
    def command(self) -> list[str]: ...
    def healthy(self) -> bool: ...
    def address(self) -> str: ...
    def prepare(self) -> None: ...

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _group_alive(pid) else None

    def status(self) -> Status:
        pid = self.pid()
        ok = self.healthy()
        return Status(self.name, pid is not None, ok, pid, self.address(),
                      "" if ok else "not answering")

    def up(self, timeout: float = 30.0) -> Status:
        if self.pid() is not None and self.healthy():
            return self.status()
        if self.pid() is None and self.healthy():
            raise ServiceError(f"{self.name}: something else already answers on {self.address()}; "
                               "stop it or choose another port")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        cmd = self.command()
        log = open(self.logfile, "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.dir, start_new_session=True)
        self.pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.logfile.read_text(errors="replace")[-2000:]
                raise ServiceError(f"{self.name} exited with {proc.returncode} on start; log tail:\n{tail}")
            if self.healthy():
                return self.status()
            time.sleep(0.1)
        raise ServiceError(f"{self.name} did not become healthy on {self.address()} within {timeout:.0f}s "
                           f"(log: {self.logfile})")

    def before_stop(self, timeout: float) -> None:
        """What the service needs done before its signal (nothing by default)."""

    def down(self, timeout: float = 15.0, kill: bool = False) -> None:
        pid = self.pid()
        if pid is None:
            return
        if not kill:
            self.before_stop(timeout)
        try:
            os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if _group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)


# How long the demo's frames topic keeps a window on the local broker (`Settings.frames_retention_h`
# unset). noida-db keeps its log in one JSON file that a thread rewrites as records arrive, so its
# CPU grows with what it keeps: in a 15-min, 200-bed demo keeping 1 h of frames it rose from 0.24 to
# 0.38 of a core as the store grew to 161 MB; keeping 6 min it held at 0.27-0.31 (2026-12-07,
# docs/measurements.md). Frames add ~3 MB a minute there (48 h would be ~9 GB). A quarter of an hour still
# replays any worker outage the demo's supervisor lets happen (it restarts a worker within 2 min).
LOCAL_FRAMES_RETENTION_H = 0.25


def _ends_json(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"}"
    except OSError:  # emptied (or gone) since its size was read
        return False


class Broker(_Service):
    name = "broker"

    def binary(self) -> str:
        """The server binary shipped in the noida-db wheel (not its Python wrapper script)."""
        try:
            import noida_db
            exe = str(Path(noida_db.__file__).parent / "noida-db")
        except ImportError:
            exe = ""
        if not exe or not Path(exe).exists():
            raise ServiceError("broker: the `noida-db` executable is missing; install the project "
                               "(`pip install -e .` installs noida-db from PyPI)")
        return exe

    @property
    def data_dir(self) -> Path:
        """noida-db's store (its one-file Kafka log)."""
        return self.dir / "data"

    def store_bytes(self, settle_s: float = 10.0) -> int | None:
        """Bytes in the store, or None where there is none (a broker run elsewhere: Apache
        Kafka, `--no-services`). noida-db rewrites its JSON store in place, for tens of seconds
        at a 100-MB store, and again as soon as anything changed: a plain size is often a
        part-written file's (a 200-bed run's store read 43-99 MB in turn). So the size counts
        once the store ends its JSON and holds still for a moment, within ``settle_s``; else the
        largest size seen then."""
        store = self.data_dir / "kafka.json"
        if not self.data_dir.is_dir():
            return None
        others = sum(f.stat().st_size for f in self.data_dir.rglob("*") if f.is_file() and f != store)
        if not store.is_file():
            return others
        deadline, last, largest = time.monotonic() + settle_s, -1, 0
        while True:
            size = store.stat().st_size
            largest = max(largest, size)
            if size == last and size and _ends_json(store):
                return others + size
            if time.monotonic() > deadline:
                return others + largest
            last = size
            time.sleep(0.2)

    def command(self) -> list[str]:
        host, port = self.s.kafka_bootstrap.rsplit(":", 1)
        return [self.binary(), "start", "--only", "kafka", "--data-dir", str(self.data_dir),
                "--host", host, "--kafka-port", port]

    def prepare(self) -> None:
        self.data_dir.mkdir(exist_ok=True)

    def before_stop(self, timeout: float) -> None:
        """Have noida-db save its store first (`noida-db stop kafka`): it saves in the background
        as records arrive and its signal handlers do not save what came since, so a plain SIGTERM
        (or `noida-db down`) lost records it had acknowledged: 266-441 of ~7,500 produced in 3 s
        with an empty store, ~2,000 with 20 MB in it (`runs/s22/durab2.py`); none after this
        command. A real Kafka broker keeps acknowledged records through a restart, and the
        ward's exactly-once and dead-letter guarantees assume it. A SIGKILL still loses them."""
        try:  # what it says goes to the broker's log (a failure there: records may be lost)
            with open(self.logfile, "ab") as log:
                subprocess.run([self.binary(), "stop", "kafka", "--data-dir", str(self.data_dir)],
                               stdout=log, stderr=subprocess.STDOUT, timeout=timeout, stdin=subprocess.DEVNULL)
        except (subprocess.TimeoutExpired, OSError, ServiceError):
            pass  # a hung or vanished broker: the signal below still stops it

    def address(self) -> str:
        return self.s.kafka_bootstrap

    def healthy(self) -> bool:
        host, port = self.s.kafka_bootstrap.rsplit(":", 1)
        return _tcp_open(host, int(port))


class Influx(_Service):
    name = "influxdb"

    def binary(self) -> str:
        exe = shutil.which("influxd")
        if not exe:
            raise ServiceError("influxdb: the `influxd` executable is missing; install Debian's "
                               "package: `apt-get install -y influxdb` (./ward does this for you)")
        return exe

    def prepare(self) -> None:
        exe = self.binary()
        host_port = self.s.influx_url.split("://", 1)[1].rstrip("/")
        base = subprocess.run([exe, "config"], capture_output=True, text=True, check=True).stdout
        data = self.dir / "data"
        lines = []
        section = ""
        for line in base.splitlines():
            stripped = line.strip()
            if stripped.startswith("["):
                section = stripped
            key = stripped.split("=", 1)[0].strip()
            if section == "[meta]" and key == "dir":
                line = f'  dir = "{data / "meta"}"'
            elif section == "[data]" and key == "dir":
                line = f'  dir = "{data / "data"}"'
            elif section == "[data]" and key == "wal-dir":
                line = f'  wal-dir = "{data / "wal"}"'
            elif section == "[data]" and key == "query-log-enabled":
                line = "  query-log-enabled = false"
            elif section == "[http]" and key == "bind-address":
                line = f'  bind-address = "{host_port}"'
            elif section == "[http]" and key == "log-enabled":
                line = "  log-enabled = false"
            elif section == "" and key == "reporting-disabled":
                line = "reporting-disabled = true"
            elif section == "" and key == "bind-address":
                line = 'bind-address = "127.0.0.1:%d"' % (self.s.influx_port + 2)
            lines.append(line)
        (self.dir / "influxdb.conf").write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [self.binary(), "-config", str(self.dir / "influxdb.conf")]

    def address(self) -> str:
        return self.s.influx_url

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.s.influx_url.rstrip("/") + "/ping", timeout=0.5) as r:
                return r.status == 204
        except (urllib.error.URLError, OSError):
            return False


def services(settings: Settings) -> list[_Service]:
    return [Broker(settings), Influx(settings)]


def up(settings: Settings) -> list[Status]:
    return [svc.up() for svc in services(settings)]


def down(settings: Settings) -> None:
    for svc in services(settings):
        svc.down()


def status(settings: Settings) -> list[Status]:
    return [svc.status() for svc in services(settings)]
