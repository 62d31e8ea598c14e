"""`wardstream report` on a real demo run: a self-contained page that headless Chromium (Debian's)
opens without a console message; the test saves its screenshot."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from wardstream.report import RunMissing, write_report

pytestmark = pytest.mark.servers


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("Debian's chromium is missing (./ward test installs it: apt-get install chromium)")
    return exe


def open_in_chromium(page: Path, shot: Path) -> list[str]:
    """Screenshot ``page``; returns the page's console messages (errors and uncaught exceptions)."""
    res = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                          "--log-level=0", "--window-size=1100,2600", f"--screenshot={shot}", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert shot.exists(), res.stderr[-2000:]
    return [ln for ln in res.stderr.splitlines() if re.search(r":CONSOLE[:(]", ln)]


def test_the_console_check_sees_page_errors(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>undefinedFunction();</script></body></html>")
    msgs = open_in_chromium(bad, tmp_path / "bad.png")
    assert any("undefinedFunction" in m for m in msgs)


def test_report_opens_in_headless_chromium_without_console_errors(demo_run, tmp_path):
    import matplotlib.image as mpimg

    _, run_dir, summary = demo_run
    page = write_report(run_dir, tmp_path / "report.html")
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing fetched
    assert text.count("data:image/png;base64,") >= 6  # latency, throughput, examples, levels, task error, alarms
    timeline = json.loads((run_dir / "timeline.json").read_text())
    audited = [r for r in timeline["task_error"] if r["observed"] is not None]
    assert len(audited) >= 6 and all(r["predicted"] is not None for r in audited)  # every bed audited
    assert "no audited window" not in text
    assert summary["task_error_audit"]["audited_windows"] == len(audited)  # the demo's own summary agrees
    assert f"{summary['windows_written']} / {summary['windows_accepted']}" in text
    assert summary["worker_restarts"] == [] and "workers restarted (exit status)" in text  # a healthy run
    shot = tmp_path / "report.png"
    assert open_in_chromium(page, shot) == []
    img = mpimg.imread(shot)
    assert img.shape[0] >= 2000 and float(np.std(img[..., :3])) > 0.05  # drawn, not a blank page
    print(f"screenshot: {shot}")


def test_report_needs_a_run_directory(tmp_path):
    with pytest.raises(RunMissing, match="summary.json"):
        write_report(tmp_path)
