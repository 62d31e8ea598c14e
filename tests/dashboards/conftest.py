"""One short demo run on the real servers, shared by the dashboard-query and report tests."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import pytest

from wardstream.demo import run_demo


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


@pytest.fixture(scope="module")
def demo_run(servers, tmp_path_factory):
    """6 beds for 16 s at real time, every 5th frame followed by a malformed one; the run saved."""
    from stream.topics import ensure_topics

    tag = f"d{uuid.uuid4().hex[:8]}"
    s = servers.replace(app_id=f"ws-{tag}", frames_topic=f"{tag}.frames", dlq_topic=f"{tag}.dlq",
                        control_topic=f"{tag}.control", influx_db=f"db_{tag}",
                        alarms_topic=f"{tag}.alarms", deliveries_topic=f"{tag}.deliveries",
                        subscriptions_topic=f"{tag}.subs", commands_topic=f"{tag}.commands",
                        state_dir=Path(servers.state_dir) / tag, frames_partitions=8,
                        worker_web_port=_free_port())
    Path(s.state_dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(s))
    run_dir = tmp_path_factory.mktemp("run")
    summary = asyncio.run(run_demo(s, beds=6, duration_s=16.0, speed=1.0, workers=1, source="synthetic",
                                   bad_every=5, seed=3, start_services=False, run_dir=run_dir))
    assert summary["windows_missing"] == 0 and summary["windows_duplicated"] == 0
    return s, run_dir, summary
