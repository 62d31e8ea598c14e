"""One short demo run on the real servers, shared by the dashboard-query and report tests."""

from __future__ import annotations

import asyncio

import pytest

from tests.isolation import isolated
from wardstream.demo import run_demo


@pytest.fixture(scope="module")
def demo_run(servers, tmp_path_factory):
    """6 beds for 16 s at real time, every 5th frame followed by a malformed one; the run saved.
    Every window is audited (the shortest period, 10 s), so each bed completes an audit burst."""
    s = isolated(servers, "d").replace(audit_every_s=10.0)
    run_dir = tmp_path_factory.mktemp("run")
    summary = asyncio.run(run_demo(s, beds=6, duration_s=16.0, speed=1.0, workers=1, source="synthetic",
                                   bad_every=5, seed=3, start_services=False, run_dir=run_dir))
    assert summary["windows_missing"] == 0 and summary["windows_duplicated"] == 0
    return s, run_dir, summary
