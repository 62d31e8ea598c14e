"""Settings of a test's own: app id, topics, InfluxDB database and state directory on the shared
servers, so tests cannot see each other's data (used by the ``ward_settings`` fixtures)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from wardstream.settings import Settings


def free_port(n: int = 1) -> int:
    """The first of ``n`` consecutive free ports, below the kernel's ephemeral range (32768+): a
    port the kernel hands out (``bind(0)``) can be taken again by any outgoing connection before
    the server binds it, and a worker pool listens on ``base + i`` for each of its workers."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - n)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + n):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {n} consecutive free ports found in 20000-32000")


def isolated(servers: Settings, prefix: str = "t") -> Settings:
    from stream.topics import ensure_topics

    tag = f"{prefix}{uuid.uuid4().hex[:8]}"
    s = servers.replace(app_id=f"ws-{tag}", frames_topic=f"{tag}.frames", dlq_topic=f"{tag}.dlq",
                        control_topic=f"{tag}.control", influx_db=f"db_{tag}",
                        alarms_topic=f"{tag}.alarms", deliveries_topic=f"{tag}.deliveries",
                        subscriptions_topic=f"{tag}.subs", commands_topic=f"{tag}.commands",
                        limits_topic=f"{tag}.limits",
                        state_dir=Path(servers.state_dir) / tag, frames_partitions=8,
                        worker_web_port=free_port(4))  # room for a pool of workers
    Path(s.state_dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(s))
    return s


def shared_dir():
    """The shared folder with the schemas the tests validate against: ``WARDSTREAM_SHARED_DIR``,
    else ``../shared`` beside the project (where CI has it)."""
    import os
    from pathlib import Path

    from wardstream.settings import PROJECT_ROOT

    return Path(os.environ.get("WARDSTREAM_SHARED_DIR") or PROJECT_ROOT.parent / "shared")


def api(port: int, method: str, path: str, token: str | None, body=None) -> tuple[int, dict]:
    """One request to a worker's HTTP API -> (status, JSON body); an error status is returned too."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def topic_configs(s, names: list[str]) -> dict[str, dict[str, str]]:
    """The configs the broker reports for ``names`` (DescribeConfigs)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async def run():
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        await admin.start()
        try:
            return await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        finally:
            await admin.close()

    return {res[3]: {c[0]: c[1] for c in res[4]} for r in asyncio.run(run()) for res in r.resources}
