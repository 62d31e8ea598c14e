"""Shared fixtures. ``servers`` starts the real broker (noida-db) and influxd for the session on
ports of their own, with a throw-away state directory; ``ward_settings`` gives each test its own
app id, topics and InfluxDB database so tests cannot see each other's data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.isolation import free_port as _free_port
from tests.isolation import isolated
from wardstream import services
from wardstream.settings import Settings, default_data_dir, from_env


@pytest.fixture(scope="session")
def data_dir():
    """The recordings (``../shared/data`` beside the project); tests that need them skip without."""
    d = default_data_dir()
    if not (d / "mitdb" / "100.hea").exists() or not (d / "eegmat" / "eegmat_128hz.npz").exists():
        pytest.skip(f"recordings not found under {d}")
    return d


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
    return isolated(servers)
