"""`wardstream eval qrs`: streaming QRS detection on MIT-BIH, 2-s windows fed in order.

Beats are matched to the reference annotations one-to-one within a tolerance (150 ms);
sensitivity = TP / (TP + FN), positive predictivity = TP / (TP + FP), gross over all records.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from processors.qrs import detect_stream  # noqa: F401 - re-exported: the evals and tests import it from here
from wardstream import datasets as ds
from wardstream.datasets import FS, load_mitdb

WINDOW = 256


def match_indices(ref: np.ndarray, det: np.ndarray, tol) -> np.ndarray:
    """Greedy one-to-one matching of sorted times (any unit, ``tol`` in the same): for each
    reference beat the index of its matched detection, or -1."""
    out = np.full(len(ref), -1)
    i = j = 0
    while i < len(ref) and j < len(det):
        d = det[j] - ref[i]
        if abs(d) <= tol:
            out[i] = j
            i += 1
            j += 1
        elif d < 0:
            j += 1
        else:
            i += 1
    return out


def match_beats(ref_s: np.ndarray, det_s: np.ndarray, tol_s: float) -> tuple[int, int, int]:
    """Greedy one-to-one matching of sorted times; returns (tp, fn, fp)."""
    tp = int((match_indices(ref_s, det_s, tol_s) >= 0).sum())
    return tp, int(ref_s.size - tp), int(det_s.size - tp)


def _one(args: tuple[str, str, float]) -> dict:
    data_dir, rec, tol = args
    r = load_mitdb(Path(data_dir), rec)
    n_full = r.ecg_mv.size - r.ecg_mv.size % WINDOW
    det = detect_stream(r.ecg_mv)
    end_s = n_full / FS - 0.3  # beats in the final lookahead are never decided
    ref = r.beat_times_s[r.beat_times_s < end_s]
    det = det[det < end_s]
    m = match_indices(ref, det, tol)
    ok = m >= 0
    tp = int(ok.sum())
    fn, fp = int(ref.size - tp), int(det.size - tp)
    dt_ms = np.abs(det[m[ok]] - ref[ok]) * 1000.0
    return {"record": rec, "beats": int(ref.size), "tp": tp, "fn": fn, "fp": fp,
            "sensitivity": tp / max(1, tp + fn), "ppv": tp / max(1, tp + fp),
            "timing_abs_ms_p95": float(np.percentile(dt_ms, 95)) if dt_ms.size else None,
            "timing_abs_ms": dt_ms}


def evaluate(data_dir: Path, split: str = "test", tol_s: float = 0.15, jobs: int = 2,
             records: list[str] | None = None) -> dict:
    if records is None:  # the split's records present: a directory may hold a subset of them
        records = ds.mitdb_records(data_dir, split)
        if not records:
            raise ds.DataMissing(f"no MIT-BIH records of split {split!r} under {Path(data_dir) / 'mitdb'}")
    recs = records
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        rows = list(ex.map(_one, [(str(data_dir), r, tol_s) for r in recs]))
    tp = sum(r["tp"] for r in rows)
    fn = sum(r["fn"] for r in rows)
    fp = sum(r["fp"] for r in rows)
    dt = np.concatenate([r.pop("timing_abs_ms") for r in rows]) if rows else np.zeros(0)
    timing = {"mean": float(dt.mean()), "p50": float(np.percentile(dt, 50)),
              "p95": float(np.percentile(dt, 95)), "p99": float(np.percentile(dt, 99))} if dt.size else {}
    return {"dataset": "mitdb", "split": split, "records": len(rows), "fs": FS,
            "window_samples": WINDOW, "tolerance_s": tol_s, "beats": tp + fn,
            "tp": tp, "fn": fn, "fp": fp,
            "sensitivity": tp / max(1, tp + fn), "ppv": tp / max(1, tp + fp),
            # |detected - annotated| of the matched beats: how well the fiducial point holds
            "timing_abs_ms": timing,
            "per_record": rows}
