"""Shared fixtures. ``servers`` starts the real broker (noida-db) and influxd for the session on
ports of their own, with a throw-away state directory; ``ward_settings`` gives each test its own
app id, topics and InfluxDB database so tests cannot see each other's data."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path

import pytest

from wardstream import services
from wardstream.settings import Settings, from_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def servers(tmp_path_factory) -> Settings:
    state = Path(tmp_path_factory.mktemp("wardstream-state"))
    kafka_port = int(os.environ.get("WARDSTREAM_TEST_KAFKA_PORT", _free_port()))
    influx_port = int(os.environ.get("WARDSTREAM_TEST_INFLUX_PORT", _free_port()))
    s = from_env({}, kafka_bootstrap=f"127.0.0.1:{kafka_port}",
                 influx_url=f"http://127.0.0.1:{influx_port}", state_dir=state)
    try:
        services.up(s)
    except services.ServiceError as exc:
        pytest.fail(f"cannot start the real servers the tests need: {exc}")
    yield s
    services.down(s)


@pytest.fixture
def ward_settings(servers: Settings, request) -> Settings:
    tag = f"t{uuid.uuid4().hex[:8]}"
    s = servers.replace(app_id=f"ws-{tag}", frames_topic=f"{tag}.frames", dlq_topic=f"{tag}.dlq",
                        control_topic=f"{tag}.control", influx_db=f"db_{tag}",
                        alarms_topic=f"{tag}.alarms", deliveries_topic=f"{tag}.deliveries",
                        subscriptions_topic=f"{tag}.subs", commands_topic=f"{tag}.commands",
                        state_dir=Path(servers.state_dir) / tag, frames_partitions=8,
                        worker_web_port=_free_port())
    Path(s.state_dir).mkdir(parents=True, exist_ok=True)
    from stream.topics import ensure_topics

    asyncio.run(ensure_topics(s))
    return s
