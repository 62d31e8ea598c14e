"""`wardstream train dynamic-deep`: the paper's three phases on top of the deployed codec.

1. ``recon``: level chains, codebooks and adapters of levels 3–5 (both modalities) for
   reconstruction through the frozen codec trunk, attention and decoders (codec loss weights);
2. ``task``: the ECG levels fine-tuned with the frozen deployed rhythm classifier's loss added,
   ``L = L_R + w_task * KL(p(original 10 s) || p(reconstructed 10 s)) + w_qrs * E_qrs`` summed over
   levels, ``E_qrs`` the relative L1 between the QRS-detector envelopes of original and
   reconstruction (`wardmodels.dynamic.qrs_envelope_loss`; ``qrs_weight`` 0 leaves it out);
3. the edge error predictors (`wardmodels.predictor`, run by ``wardstream train dynamic-deep
   --phase predictor``) on task errors observed on reconstructions.

Phases 1–2 are step-scheduled (cosine), checkpointed, resumable, with a wall-clock budget; the
result is ``dd-<name>-<sha12>.pt`` (chains, codebooks, adapters, config, the base codec's file
name and the training record).
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from wardmodels.codec import MODALITIES
from wardmodels.hashname import write_hashed
from wardmodels.dynamic import DDConfig, DynamicCodec, kl_to, level_loss, prd, qrs_envelope_loss

log = logging.getLogger(__name__)


def save_dd(model: DynamicCodec, base_name: str, out_dir: Path, record: dict) -> Path:
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("base.")}
    buf = io.BytesIO()
    torch.save({"config": model.cfg.to_dict(), "base": base_name, "state_dict": state, "train": record}, buf)
    return write_hashed(out_dir, f"dd-{model.cfg.name}", buf.getvalue(), ".pt")


def load_dd(path: Path, base) -> DynamicCodec:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = DynamicCodec(base, DDConfig.from_dict(blob["config"]))
    missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    if unexpected or any(not k.startswith("base.") for k in missing):
        raise ValueError(f"{path}: state does not match the dynamic-deep model")
    model.eval()
    model.train_record = blob.get("train", {})
    model.base_name = blob["base"]
    return model


def _lr(cfg: DDConfig, step: int, steps: int) -> float:
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(step, steps) / steps))


class CropData:
    """Consecutive 10-s ECG crops (five 2-s windows) from the CinC fit split and MIT-BIH DS1 (or
    ``mit_records``), band-passed as on the device."""

    def __init__(self, data_dir: Path, mit_records: list[str] | None = None):
        from wardmodels.clf_data import cinc_split
        from wardmodels.codec_data import Pool, mit_signals
        from wardmodels.frontend import filter_record

        fit = cinc_split(data_dir, "fit")
        self.cinc = Pool([filter_record(s) for s in fit.signals])
        self.mit = Pool(mit_signals(data_dir, mit_records))

    def batch(self, rng: np.random.Generator, n: int, length: int = 1280) -> np.ndarray:
        out = []
        for pool, k in ((self.cinc, n // 2), (self.mit, n - n // 2)):
            st = pool.valid[rng.integers(0, len(pool.valid), 4 * k)]
            # a crop stays inside one record: every window start from st to st + length - 256 is valid
            a = np.searchsorted(pool.valid, st)
            b = np.minimum(np.searchsorted(pool.valid, st + length - 256), len(pool.valid) - 1)
            ok = (pool.valid[b] == st + length - 256) & (b - a == length - 256)
            st = st[ok][:k]
            out.append(pool.data[st[:, None] + np.arange(length)])
        return np.concatenate(out).astype(np.float32)


def training_records(exclude_calib: bool) -> tuple[list[str] | None, str]:
    """(MIT-BIH records, CinC part) the chains train on: by default all of DS1 and the whole CinC
    training split; with ``exclude_calib`` neither the predictor's calibration patients (the
    `calib` split of `wardstream.eval_dynamic`: DS1 records from ``N_DS1_TRAIN`` on, CinC `calib`)
    — so that the errors the slack is calibrated on are a new patient's, not the training data's
    (measured 2026-12-04: chains trained without those six MIT-BIH patients show 2.5-3x the
    level-3 violations on them; "Dynamic-Deep levels" in docs/dynamic-deep.md)."""
    from wardstream import datasets as ds
    from wardstream.eval_dynamic import N_DS1_TRAIN

    return (list(ds.DS1[:N_DS1_TRAIN]), "fit") if exclude_calib else (None, "train")


def _rhythm_input_t(crops: torch.Tensor) -> torch.Tensor:
    x = crops - crops.mean(1, keepdim=True)
    return torch.clamp(x / x.std(1, keepdim=True).clamp_min(1e-3), -20, 20)


def train(data_dir: Path, model_id: int = 2, recon_steps: int = 2500, task_steps: int = 800,
          task_weight: float = 1.0, crops_per_batch: int = 8, budget_min: float | None = None,
          run_dir: Path = Path("runs"), out_dir: Path | None = None, seed: int = 0,
          threads: int | None = None, log_every: int = 100, cfg: DDConfig | None = None,
          exclude_calib: bool = False, qrs_weight: float = 0.0) -> dict:
    from wardmodels.clf_runtime import load_deployed_classifier
    from wardmodels.codec_data import CodecData
    from wardmodels.frontend import normalise, scale_value
    from wardmodels.runtime import WEIGHTS_DIR, load_model, manifest

    if threads:
        torch.set_num_threads(threads)
    cfg = cfg or DDConfig()
    entry = next((e for e in manifest() if e["model_id"] == model_id), None)
    if entry is None:
        raise SystemExit(f"no deployed codec model {model_id}")
    base = load_model(WEIGHTS_DIR / entry["codec"])
    torch.manual_seed(seed)
    model = DynamicCodec(base, cfg)
    params = [p for n, p in model.named_parameters() if not n.startswith("base.")]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    rng = np.random.default_rng(seed)
    run = Path(run_dir) / (f"dd-{cfg.name}-m{model_id}-s{seed}{'-nocalib' if exclude_calib else ''}"
                           f"{f'-qrs{qrs_weight:g}' if qrs_weight else ''}")
    run.mkdir(parents=True, exist_ok=True)
    ckpt = run / "checkpoint.pt"
    total = recon_steps + task_steps
    step, history, elapsed_before = 0, [], 0.0
    if ckpt.exists():
        ck = torch.load(ckpt, map_location="cpu", weights_only=False)
        if ck["total"] != total or ck["config"] != cfg.to_dict():
            raise SystemExit(f"{ckpt} belongs to another run; remove it or use another --run-dir")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        step, history, elapsed_before = ck["step"], ck["history"], ck["elapsed_s"]
        log.info("resumed %s at step %d", ckpt, step)
    mit_records, cinc_part = training_records(exclude_calib)
    data = CodecData(data_dir, mit_records=mit_records, cinc_part=cinc_part)
    crops = CropData(data_dir, mit_records) if task_steps else None
    clf = load_deployed_classifier("rhythm", "fp32").model if task_steps else None  # gradients need fp32
    if clf is not None:
        clf.eval()
        for p in clf.parameters():
            p.requires_grad_(False)
    t0 = time.monotonic()

    def checkpoint():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "step": step, "total": total, "history": history,
                    "config": cfg.to_dict(), "elapsed_s": elapsed_before + time.monotonic() - t0},
                   ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)

    model.train()
    last_ckpt, acc = t0, {}
    while step < total:
        if budget_min is not None and (time.monotonic() - t0) / 60 >= budget_min:
            checkpoint()
            log.info("budget reached at step %d/%d; rerun to resume", step, total)
            return {"done": False, "step": step, "checkpoint": str(ckpt)}
        phase = "recon" if step < recon_steps else "task"
        k = step if phase == "recon" else step - recon_steps
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, k, recon_steps if phase == "recon" else task_steps) * (1.0 if phase == "recon" else 0.3)
        loss = torch.zeros(())
        if phase == "recon":
            xb, paired = data.batch(rng, cfg.batch)
            x = {m: torch.from_numpy(xb[m]) for m in MODALITIES}
            with torch.no_grad():
                z = {m: model.trunk(m, x[m]) for m in MODALITIES}
                full = {m: model.base_latent(m, z[m], base.cfg.stages) for m in MODALITIES}
            present = torch.from_numpy(paired) & (torch.rand(cfg.batch) >= 0.1)
            for m in MODALITIES:
                partner = full["eeg" if m == "ecg" else "ecg"]
                for L, (lat, _, vql) in zip(cfg.levels, model.level_latents(m, z[m])):
                    rec = model.decode_one(m, lat, partner, present)
                    loss = loss + level_loss(x[m], rec, m, base.cfg) + vql
                    with torch.no_grad():
                        key = f"prd_{m}_L{L}"
                        acc[key] = acc.get(key, 0.0) + float(prd(x[m], rec).mean())
        else:
            raw = crops.batch(rng, crops_per_batch)
            n = len(raw)
            wins = raw.reshape(n * 5, 256)
            xn, codes = normalise(wins, "ecg")
            xn = np.clip(xn, -20, 20)
            scale = torch.from_numpy(scale_value(codes, "ecg")).view(n * 5, 1)
            x = torch.from_numpy(xn.astype(np.float32))
            with torch.no_grad():
                p_ref = torch.softmax(clf(_rhythm_input_t(torch.from_numpy(raw))), 1)
                z = model.trunk("ecg", x)
                ref = (x * scale).view(n, 1280)
            for L, (lat, _, vql) in zip(cfg.levels, model.level_latents("ecg", z)):
                rec = model.decode_one("ecg", lat, None, None)
                crop = (rec * scale).view(n, 1280)
                kl = kl_to(p_ref, clf(_rhythm_input_t(crop))).mean()
                loss = loss + level_loss(x, rec, "ecg", base.cfg) + vql + task_weight * kl
                if qrs_weight:
                    eq = qrs_envelope_loss(ref, crop).mean()
                    loss = loss + qrs_weight * eq
                    acc[f"qrs_L{L}"] = acc.get(f"qrs_L{L}", 0.0) + float(eq.detach())
                with torch.no_grad():
                    acc[f"kl_L{L}"] = acc.get(f"kl_L{L}", 0.0) + float(kl)
                    acc[f"prd_ecg_L{L}"] = acc.get(f"prd_ecg_L{L}", 0.0) + float(prd(x, rec).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        step += 1
        acc["loss"] = acc.get("loss", 0.0) + float(loss.detach())
        acc["n"] = acc.get("n", 0) + 1
        if step % log_every == 0 or step == total or step == recon_steps:
            nrm = acc.pop("n")
            row = {"step": step, "phase": phase, "elapsed_s": round(elapsed_before + time.monotonic() - t0, 1)}
            row.update({k: round(v / nrm * (100 if k.startswith("prd") else 1), 4) for k, v in acc.items()})
            acc.clear()
            history.append(row)
            log.info("%s", json.dumps(row))
        if time.monotonic() - last_ckpt > 240:
            checkpoint()
            last_ckpt = time.monotonic()
    model.eval()
    record = {"model_id": model_id, "recon_steps": recon_steps, "task_steps": task_steps,
              "task_weight": task_weight, "qrs_weight": qrs_weight, "seed": seed, "exclude_calib": exclude_calib,
              "elapsed_s": round(elapsed_before + time.monotonic() - t0, 1),
              "final": history[-2:], "torch": str(torch.__version__)}
    path = save_dd(model, entry["codec"], Path(out_dir) if out_dir else run, record)
    checkpoint()
    log.info("weights written to %s", path)
    return {"done": True, "weights": str(path), **record}


# --------------------------------------------------------------------------- export (edge)
def export(dd_path: Path, data_dir: Path, model_id: int, calib: int = 2048, check: int = 2048,
           seed: int = 7, reproduce: list[str] | None = None) -> dict:
    """Calibrate the integer level chains, snap the level codebooks to their int8 grid, measure
    int8-vs-FP32 index agreement per level on other windows, and deploy the result as wire model
    ``model_id`` (base codec + chains; the predictor is added by `train_predictor`)."""
    from wardmodels import runtime
    from wardmodels.codec_data import CodecData
    from wardmodels.dd_edge import analyse_int, quantise_chain, save_chains, snap_dd_codebooks

    dd_path = Path(dd_path)
    blob = torch.load(dd_path, map_location="cpu", weights_only=True)
    base_entry = next(e for e in runtime.manifest() if e["codec"] == blob["base"])
    base = runtime.load_deployed(base_entry["model_id"])
    dd = load_dd(dd_path, runtime.load_model(runtime.WEIGHTS_DIR / blob["base"]))
    data = CodecData(data_dir)
    rng = np.random.default_rng(seed)
    xb, _ = data.batch(rng, calib)
    chains = {}
    with torch.no_grad():
        for m in MODALITIES:
            z = dd.trunk(m, torch.from_numpy(xb[m])).numpy()
            chains[m] = quantise_chain(dd, m, z, base.edge.modalities[m].p)
    snap_dd_codebooks(dd, chains)
    xc, _ = data.batch(rng, check)
    agreement = {}
    with torch.no_grad():
        for m in MODALITIES:
            idx_int, _ = analyse_int(base.edge.modalities[m], chains[m], xc[m], np.zeros(len(xc[m])))
            ys = dd.chain[m](dd.trunk(m, torch.from_numpy(xc[m])))
            for i, L in enumerate(dd.cfg.levels):
                b, w, t = ys[i].shape
                ref = dd.vq[m][i].nearest(ys[i].permute(0, 2, 1).reshape(-1, w)).view(b, t).numpy()
                agreement[f"{m}_L{L}"] = round(float((ref == idx_int[L]).mean()), 4)
    chain_blob = save_chains(chains)
    out_dir = runtime.WEIGHTS_DIR
    edge_path = write_hashed(out_dir, f"ddedge-{dd.cfg.name}", chain_blob, ".npz")
    if dd_path.parent.resolve() != out_dir.resolve():
        raise SystemExit(f"{dd_path} must be under {out_dir} to be deployed")
    trunk_bytes = base.edge.nbytes() - base.edge.prior_nbytes()
    chain_bytes = sum(c.nbytes() for c in chains.values())
    entry = {k: v for k, v in base_entry.items() if k not in ("reproduce", "encoder_bytes")}
    entry.update({"model_id": model_id, "variant": dd.cfg.name, "dd": dd_path.name, "dd_edge": edge_path.name,
                  "dd_levels": {str(L): {"indices": dd_positions(L), "codebook_size": dd.cfg.codebook_size(L)}
                                for L in dd.cfg.levels},
                  "int8_agreement": agreement,
                  "encoder_bytes": trunk_bytes + chain_bytes,
                  "encoder_bytes_note": "int8 trunk + level chains; the entropy-coder tables are not on the "
                                        "wire and not on this device; the predictor adds predictor_bytes",
                  "reproduce": reproduce or []})
    codecs = [e for e in runtime.manifest() if e["model_id"] != model_id] + [entry]
    runtime.MANIFEST.write_text(json.dumps({"codecs": sorted(codecs, key=lambda e: e["model_id"])}, indent=2) + "\n")
    runtime.load_deployed.cache_clear()
    return entry


def dd_positions(level: int) -> int:
    from wardmodels.dynamic import DD_POSITIONS

    return DD_POSITIONS[level]
