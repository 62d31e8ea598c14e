"""`wardstream bench classifier`: rhythm decisions/s and beat classifications/s of the deployed
(LAQ-packed, dequantised-per-layer, bf16 or fp32 arithmetic) classifiers, batched as the worker batches them (one decision
per bed per 2-s window), plus the latency of one decision at batch 1.

``--rhythm-weights PATH`` measures another packed rhythm model instead. A streaming (causal) model
is measured as it runs: `stream_rhythm.RhythmStream`, one new 2-s window per bed and step, the
beds' state carried between steps (``mode: stream``); its crop-wise rate (20-s crops decided
afresh, as the evaluations compute it) is reported beside it."""

from __future__ import annotations

import time

import numpy as np
import torch

from wardmodels.classifier import BEAT_CONTEXT, BEAT_SAMPLES


def _rate(fn, n: int, seconds: float) -> tuple[float, float]:
    fn()  # warm up
    t0, reps, lat = time.perf_counter(), 0, []
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
        reps += 1
    return n * reps / (time.perf_counter() - t0), float(np.median(lat))


def bench(threads: int = 2, seconds: float = 4.0, batches=(1, 64, 200, 512), rhythm_weights=None) -> dict:
    from wardmodels.clf_runtime import classifier_manifest, load_deployed_classifier, load_packed
    from wardmodels.compress import size_report

    torch.set_num_threads(threads)
    man = classifier_manifest()
    rng = np.random.default_rng(0)
    out = {"threads": threads, "rhythm": {}, "beat": {}}
    rh = load_packed(rhythm_weights) if rhythm_weights else load_deployed_classifier("rhythm")
    causal = bool(getattr(rh.model.cfg, "causal", False))
    n_in = rh.model.cfg.in_samples
    for b in batches:
        x = rng.standard_normal((b, n_in)).astype(np.float32)
        rate, lat = _rate(lambda: rh.proba(x, batch=512), b, seconds)
        out["rhythm"][f"batch{b}"] = {"decisions_per_s": round(rate, 1), "ms_per_batch": round(1000 * lat, 3)}
    if causal:
        from wardmodels.stream_rhythm import WINDOW, RhythmStream

        out["rhythm_crops"] = out["rhythm"]
        out["rhythm"] = {}
        rs = RhythmStream(rh.model, capacity=max(batches))
        for b in batches:
            beds = [f"bed-{i}" for i in range(b)]
            w = (0.5 * rng.standard_normal((b, WINDOW))).astype(np.float32)
            rate, lat = _rate(lambda: rs.step(beds, w), b, seconds)
            out["rhythm"][f"batch{b}"] = {"decisions_per_s": round(rate, 1), "ms_per_batch": round(1000 * lat, 3)}
        out["rhythm_mode"] = "stream"
    out["decisions_per_s"] = max(v["decisions_per_s"] for v in out["rhythm"].values())
    out["decision_latency_ms_batch1"] = out["rhythm"]["batch1"]["ms_per_batch"]
    bt = load_deployed_classifier("beat")
    for b in batches:
        w = rng.standard_normal((b, 2, BEAT_SAMPLES)).astype(np.float32)
        f = np.abs(rng.standard_normal((b, BEAT_CONTEXT))).astype(np.float32)  # RR features, irregularity, prematurity
        rate, lat = _rate(lambda: bt.proba(w, f, batch=512), b, seconds)
        out["beat"][f"batch{b}"] = {"beats_per_s": round(rate, 1), "ms_per_batch": round(1000 * lat, 3)}
    out["beats_per_s"] = max(v["beats_per_s"] for v in out["beat"].values())
    out["models"] = {k: {kk: man[k][kk] for kk in ("packed", "model_bytes", "fp32_bytes", "compression_ratio")}
                     for k in ("rhythm", "beat") if k in man}
    if rhythm_weights:
        from wardmodels.train_classifier import build

        out["models"]["rhythm"] = {"packed": str(rhythm_weights), **size_report(build(rh.model.cfg.to_dict()), rhythm_weights)}
    out["compute"] = rh.meta.get("compute", "fp32")
    out["note"] = ("weights stored packed at their LAQ bit-widths, dequantised once at load; arithmetic: "
                   f"{out['compute']} (WARDSTREAM_CLF_COMPUTE; auto = bf16 where the CPU has native bf16)")
    return out
