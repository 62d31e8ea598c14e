"""The paper's five ablations, retrained on our data at one (short) step budget each, beside
the unablated variant at the same budget, and evaluated the same way: a like-for-like table,
not a copy of the paper's numbers. Results are appended to ``runs/ablations.json`` as each
run finishes, so an interrupted table resumes where it stopped."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from wardmodels.codec import ABLATIONS

log = logging.getLogger(__name__)


def run(data_dir: Path, variant: str = "ward", steps: int = 1000, run_dir: Path = Path("runs"),
        max_records: int | None = 6, seed: int = 0) -> list[dict]:
    from wardmodels.train_codec import train
    from wardstream.eval_codec import evaluate

    out_path = Path(run_dir) / f"ablations-{variant}-{steps}.json"
    rows = json.loads(out_path.read_text()) if out_path.exists() else []
    done = {r["ablation"] for r in rows}
    for abl in [None, *ABLATIONS]:
        name = abl or "none"
        if name in done:
            continue
        res = train(data_dir, variant, abl, steps, None, Path(run_dir) / "ablations", None, seed, threads=2)
        ev = evaluate(data_dir, "test", 1, "fp32", res["weights"], max_records=max_records)
        row = {"ablation": name, "steps": steps, "weights": res["weights"],
               "train_s": res["elapsed_s"], "records": ev["ecg_records"], "recordings": ev["eeg_recordings"]}
        for lv, d in ev["levels"].items():
            row[f"level{lv}"] = {"ecg_prd_mean": d.get("ecg_prd", {}).get("mean"),
                                 "eeg_prd_mean": d.get("eeg_prd", {}).get("mean"),
                                 "eeg_coherence": d.get("eeg_coherence"),
                                 "qrs_sensitivity": d.get("qrs_sensitivity"), "qrs_ppv": d.get("qrs_ppv")}
        row["codebook_usage"] = ev["codebook_usage"]
        rows.append(row)
        out_path.write_text(json.dumps(rows, indent=2))
        log.info("ablation %s: %s", name, row["level1"])
    return rows
