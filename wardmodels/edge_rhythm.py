"""The device's own small rhythm model: the "rhythm" kind of Dynamic-Deep error predictor.

The task error the device must predict is half a rhythm-classifier KL (`wardmodels.predictor`):
how far the cloud's rhythm model moves on the last 10 s when they arrive at level L instead of
as they were. Latent distortion and the device's QRS detectors tell the predictor little about
it (calib correlation 0.04-0.59 per level for a KL-regression CNN, 2026-12-05); the model itself
tells it a lot. The device cannot run the cloud's model (306 M multiply-adds per window over six
crops), so it runs a small one distilled from it:

* `ResNet1D` variant ``rhythm-edge`` (`wardmodels.classifier.VARIANTS`): stem 16 channels, six
  blocks of (16, 16, 24, 24, 32, 32) channels, ~53 k parameters, ~5.4 M multiply-adds per 10-s
  crop; stored as float16 (`save_edge_rhythm`), computed in float32.
* Trained in two steps (`train_edge_rhythm`, ``wardstream train dynamic-deep --phase
  edge-rhythm``): the rhythm recipe from scratch (`train_classifier.train_rhythm`), then distilled
  (KL to the deployed rhythm model's probabilities) on the 10-s crops of the predictor's train
  part and the rest of the CinC ``fit`` split — originals and every level's reconstruction by the
  deployed Dynamic-Deep codec — so it learns how the cloud's model reacts to each level's
  artefacts. Calibration and test patients are never seen.

On the device (`RhythmCheck`, beside `dd_edge.DecodeCheck`, which already decodes every level):
per window, the last 10 s of the original and of every level's reconstruction (ring buffers of
the previous four windows), the small model on the six crops, and ``log1p KL(p_orig || p_L)`` per
level as five more predictor inputs. `rhythm_features` computes the same for a whole record
offline, window by window as the device does.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wardmodels.classifier import RHYTHM_SAMPLES, ResNet1D, ResNetConfig, rhythm_input
from wardmodels.dd_edge import N_LEVELS, RHYTHM_CHECK_FEATURES
from wardmodels.hashname import verify_hash, write_hashed

log = logging.getLogger(__name__)

RHYTHM_FEATURES = RHYTHM_CHECK_FEATURES  # log1p KL per VQ level: the predictor's layout (`dd_edge.edge_features`)
EDGE_VARIANT = "rhythm-edge"
WINDOW = 256


@dataclass
class EdgeRhythm:
    """The small rhythm model as the device holds it (float16 weights, float32 arithmetic)."""

    model: ResNet1D
    name: str = ""
    meta: dict = field(default_factory=dict)

    @torch.no_grad()
    def proba(self, crops: np.ndarray, batch: int = 1024) -> np.ndarray:
        """Rhythm-input crops (N, 1280) (`classifier.rhythm_input`) -> softmax (N, 4)."""
        x = np.asarray(crops, np.float32).reshape(-1, RHYTHM_SAMPLES)
        out = [torch.softmax(self.model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))), 1).numpy()
               for i in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros((0, len(self.model.cfg.classes)), np.float32)

    def features(self, crops: np.ndarray) -> np.ndarray:
        """(N, 1 + N_LEVELS, 1280) crops: the original, then levels 1..5 -> (N, N_LEVELS) float32,
        log1p KL(p_orig || p_L) per level."""
        from wardmodels.predictor import kl_rows

        crops = np.asarray(crops)
        n = len(crops)
        if n == 0:
            return np.zeros((0, RHYTHM_FEATURES), np.float32)
        p = self.proba(crops.reshape(-1, RHYTHM_SAMPLES)).reshape(n, 1 + N_LEVELS, -1)
        return np.log1p(np.stack([kl_rows(p[:, 0], p[:, 1 + j]) for j in range(N_LEVELS)], 1)).astype(np.float32)

    def nbytes(self) -> int:
        """On the device: every conv with its BatchNorm folded in (weights + one bias per output
        channel) and the head, as float16."""
        n = 0
        for m in self.model.modules():
            if isinstance(m, torch.nn.Conv1d):
                n += m.weight.numel() + m.out_channels
            elif isinstance(m, torch.nn.Linear):
                n += m.weight.numel() + m.out_features
        return 2 * n

    def macs(self) -> int:
        """Multiply-adds per 10-s crop."""
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            self.model(torch.zeros(1, RHYTHM_SAMPLES))
        return int(fc.get_total_flops() // 2)


def save_edge_rhythm(model: ResNet1D, out_dir: Path, record: dict) -> Path:
    """Hash-named file of the model with its floating-point tensors as float16 (what the device
    stores)."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"config": model.cfg.to_dict(), "state_dict": state, "train": record}, buf)
    return write_hashed(out_dir, "edgerhythm", buf.getvalue(), ".pt")


def load_edge_rhythm(path: Path) -> EdgeRhythm:
    blob = torch.load(verify_hash(path), map_location="cpu", weights_only=True)
    model = ResNet1D(ResNetConfig.from_dict(blob["config"]))
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in blob["state_dict"].items()})
    model.eval()
    return EdgeRhythm(model, Path(path).name, blob.get("train", {}))


# --------------------------------------------------------------------------- device and offline
@dataclass
class RhythmCheck:
    """One device's ring buffers: the previous four windows of its filtered ECG and of every
    level's reconstruction (`dd_edge.DecodeCheck` decodes them), so that each window it can hand
    the small model the last 10 s of each (a stream's first windows zero-padded at the start, as
    the pipeline's rhythm input is)."""

    buf: np.ndarray = field(default_factory=lambda: np.zeros((1 + N_LEVELS, 0), np.float32))

    def crops(self, x: np.ndarray, recon: np.ndarray) -> np.ndarray:
        """``x`` (n,) this window as the encoder saw it; ``recon`` (N_LEVELS, n) decoded at levels
        1..5 -> (1 + N_LEVELS, 1280) rhythm-input crops of the 10 s ending with it."""
        w = np.concatenate([np.asarray(x, np.float32)[None], np.asarray(recon, np.float32)], 0)
        allw = np.concatenate([self.buf, w], 1)
        self.buf = allw[:, -(RHYTHM_SAMPLES - w.shape[1]):]
        return rhythm_input(allw[:, -RHYTHM_SAMPLES:])


def level_crops(x: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Filtered ECG of one stream (n * 256) and its reconstructions (N_LEVELS, n * 256) -> the
    crops the device hands its model per window, (n, 1 + N_LEVELS, 1280) float16 (as stored for
    training; `RhythmCheck` step by step gives the same up to that rounding)."""
    from wardmodels.predictor import window_crops

    n = len(x) // WINDOW
    out = np.empty((n, 1 + N_LEVELS, RHYTHM_SAMPLES), np.float16)
    for j, s in enumerate([x] + list(recon)):
        out[:, j] = window_crops(np.asarray(s, np.float64)[: n * WINDOW], n)
    return out


def rhythm_features(edge: EdgeRhythm, x: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Filtered ECG of one stream and its reconstructions at levels 1..5 -> (n, RHYTHM_FEATURES),
    window by window as the device computes them (`RhythmCheck`)."""
    chk = RhythmCheck()
    n = len(x) // WINDOW
    crops = np.stack([chk.crops(x[WINDOW * t:WINDOW * (t + 1)], recon[:, WINDOW * t:WINDOW * (t + 1)])
                      for t in range(n)]) if n else np.zeros((0, 1 + N_LEVELS, RHYTHM_SAMPLES), np.float32)
    return edge.features(crops)


# --------------------------------------------------------------------------- training
def distill_signals(data_dir: Path, all_fit: bool = True) -> list[np.ndarray]:
    """Filtered ECG of the records the small model is distilled on: the Dynamic-Deep predictor's
    train part (MIT-BIH DS1 1-16, the first CinC ``fit`` records) and, with ``all_fit``, the rest
    of CinC ``fit`` — never the calib or test patients."""
    from wardmodels.clf_data import cinc_split
    from wardmodels.frontend import filter_record
    from wardstream.eval_dynamic import TRAIN_CINC, _signals

    sigs = [x for _, _, _, x in _signals(Path(data_dir), "train")]
    if all_fit:
        sigs += [filter_record(x) for x in cinc_split(Path(data_dir), "fit").signals[TRAIN_CINC:]]
    return sigs


def train_edge_rhythm(data_dir: Path, model_id: int, epochs: int = 25, distill_epochs: int = 3, seed: int = 0,
                      threads: int = 2, run_dir: Path = Path("runs/edge-rhythm"), out_dir: Path | None = None,
                      all_fit: bool = True) -> dict:
    """Step 1: the rhythm recipe from scratch on the ``rhythm-edge`` variant (best calib epoch);
    step 2: distillation to the deployed rhythm model on the 10-s crops of `distill_signals`
    (original + levels 1..5 of codec ``model_id``), batch 256, one-cycle Adam at 1e-3, random
    polarity. Writes the hash-named weights and records them in the manifest entry of
    ``model_id`` (``edge_rhythm``)."""
    import json

    from wardmodels import runtime
    from wardmodels.clf_runtime import load_deployed_classifier
    from wardmodels.train_classifier import load_classifier, train_rhythm
    from wardstream.eval_dynamic import _recons

    torch.set_num_threads(threads)
    t0 = time.time()
    first = train_rhythm(Path(data_dir), epochs=epochs, seed=seed, threads=threads, out_dir=Path(run_dir),
                         variant=EDGE_VARIANT)
    student = load_classifier(Path(first["weights"])).model
    log.info("edge rhythm step 1: %s (calib F1 %.4f, %.0f s)", first["weights"], first["calib_f1"], time.time() - t0)
    codec = runtime.load_deployed(model_id)
    crops = []
    for x in distill_signals(data_dir, all_fit):
        n = len(x) // WINDOW
        if n < 1:
            continue
        x = x[: n * WINDOW]
        crops.append(level_crops(x, _recons(codec, x)))
    X = np.concatenate(crops).reshape(-1, RHYTHM_SAMPLES)
    teacher = load_deployed_classifier("rhythm")
    P = np.concatenate([teacher.proba(X[i:i + 4096].astype(np.float32)) for i in range(0, len(X), 4096)])
    P = torch.from_numpy(P.astype(np.float32))
    log.info("edge rhythm step 2: %d crops with the teacher's probabilities (%.0f s)", len(X), time.time() - t0)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(student.parameters(), 1e-3)
    steps = distill_epochs * len(X) // 256
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=steps)
    student.train()
    running = []
    for s in range(steps):
        idx = rng.integers(0, len(X), 256)
        xb = torch.from_numpy(X[idx].astype(np.float32))
        xb = xb * torch.where(torch.rand(len(xb), 1) < 0.5, -1.0, 1.0)
        logq = torch.log_softmax(student(xb), 1)
        p = P[idx]
        loss = (p * (torch.log(p.clamp_min(1e-8)) - logq)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running.append(float(loss))
        if (s + 1) % 500 == 0 or s + 1 == steps:
            log.info("distill step %d/%d: KL %.4f (%.0f s)", s + 1, steps, np.mean(running), time.time() - t0)
            running = []
    student.eval()
    record = {"step1": {k: first.get(k) for k in ("weights", "kept_epoch", "calib_f1")}, "epochs": epochs,
              "distill_epochs": distill_epochs, "distill_crops": int(len(X)), "all_fit": all_fit, "teacher": teacher.name,
              "codec": codec.entry.get("dd"), "seed": seed, "elapsed_s": round(time.time() - t0, 1),
              "torch": str(torch.__version__)}
    path = save_edge_rhythm(student, Path(out_dir) if out_dir else runtime.WEIGHTS_DIR, record)
    edge = load_edge_rhythm(path)
    if out_dir is None or Path(out_dir).resolve() == runtime.WEIGHTS_DIR.resolve():
        entries = runtime.manifest()
        for e in entries:
            if e["model_id"] == model_id:
                e["edge_rhythm"] = path.name
                e["edge_rhythm_bytes"] = edge.nbytes()
                e["edge_rhythm_macs_per_crop"] = edge.macs()
        runtime.MANIFEST.write_text(json.dumps({"codecs": entries}, indent=2) + "\n")
        runtime.load_deployed.cache_clear()
    return {"weights": str(path), "bytes": edge.nbytes(), "macs_per_crop": edge.macs(), **record}
