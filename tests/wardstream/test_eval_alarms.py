"""`wardstream eval alarms` on one held-out record with ventricular runs: the keys it promises,
its episodes against the annotations."""

import json
import os

import pytest

from wardstream.settings import default_data_dir


def test_eval_alarms_on_record_200(tmp_path, monkeypatch):
    src = default_data_dir()
    if not (src / "mitdb" / "200.hea").exists():
        pytest.skip(f"recordings not found under {src}")
    d = tmp_path / "data" / "mitdb"
    d.mkdir(parents=True)
    for ext in ("hea", "dat", "atr"):
        os.symlink(src / "mitdb" / f"200.{ext}", d / f"200.{ext}")
    from wardstream.cli import main

    monkeypatch.setenv("WARDSTREAM_LEVEL_POLICY", "dynamic")  # the devices pick their level per window
    out = tmp_path / "alarms.json"
    assert main(["eval", "alarms", "--data-dir", str(tmp_path / "data"), "--split", "all", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("vt_runs", "vt_runs_8plus", "af_episodes", "af_episodes_60s_plus", "false_alarms_per_bed_day",
                "false_high_priority_per_bed_day", "median_detection_delay_s"):
        assert key in r, key
    assert r["split_records"] == ["200"] and r["hours"] == pytest.approx(902 * 2 / 3600, abs=1e-2)
    # record 200 (DS2): four fast ventricular runs, no AF
    assert r["vt_runs"]["total"] == 4 and r["vt_runs"]["detected"] >= 3
    assert r["af_episodes"] == {"total": 0, "detected": 0}
    assert r["device"]["level_policy"] == "dynamic" and len(r["device"]["ecg_levels_sent"]) >= 2
    assert 0 <= r["median_detection_delay_s"] < 10
