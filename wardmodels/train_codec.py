"""Train a codec variant: resumable, step-scheduled, with a wall-clock budget.

The cosine schedule runs over ``steps`` (so a run is reproducible whatever the machine);
``budget_min`` stops early with a checkpoint, and running the same command again resumes.
At the end the weights are written as ``<out>/codec-<variant>-<sha256[:12]>.pt`` (state dict +
config + training record), the file the pipeline loads.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from wardmodels.hashname import write_hashed
from wardmodels.codec import MODALITIES, CodecConfig, DualCodec, fold_and_snap_encoder, recon_loss, variant

log = logging.getLogger(__name__)


def save_weights(model: DualCodec, out_dir: Path, record: dict) -> Path:
    buf = io.BytesIO()
    state = {k: v for k, v in model.state_dict().items()}
    torch.save({"config": model.cfg.to_dict(), "state_dict": state, "train": record}, buf)
    return write_hashed(out_dir, f"codec-{model.cfg.name}", buf.getvalue(), ".pt")


def load_weights(path: Path) -> DualCodec:
    # TorchVersion: the first committed weights recorded torch.__version__ unconverted
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        blob = torch.load(path, map_location="cpu", weights_only=True)
    model = DualCodec(CodecConfig.from_dict(blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    model.train_record = blob.get("train", {})
    return model


def lr_at(cfg: CodecConfig, step: int, steps: int) -> float:
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(step, steps) / steps))


def train(data_dir: Path, variant_name: str = "ward", ablation: str | None = None, steps: int = 12000,
          budget_min: float | None = None, run_dir: Path = Path("runs"), out_dir: Path | None = None,
          seed: int = 0, threads: int | None = None, log_every: int = 200,
          init_from: Path | None = None, finetune: str | None = None, lr: float | None = None) -> dict:
    """``init_from``: weights of a trained codec whose encoders and codebooks are kept frozen
    while the attention and decoders (of this variant's shape) train from scratch — a cheaper
    cloud side for the same edge and wire format.

    ``finetune`` (a modality, with ``init_from`` of the same shape): every weight starts from
    ``init_from``, and only that modality's encoder, codebooks, attention direction and decoder
    train, on that modality's loss; the other modality's weights stay bit for bit (its decoder
    alone gives the same output). A folded encoder is snapped back onto its int8 grid at the end.
    ``lr``: the peak learning rate instead of the variant's."""
    from wardmodels.codec_data import CodecData

    if threads:
        torch.set_num_threads(threads)
    cfg = variant(variant_name, ablation)
    if lr is not None:
        cfg = dataclasses.replace(cfg, lr=lr)
    if finetune is not None and (finetune not in MODALITIES or init_from is None):
        raise ValueError(f"--finetune takes one of {MODALITIES} and needs --init-from")
    run = Path(run_dir) / f"codec-{cfg.name}-s{seed}"
    run.mkdir(parents=True, exist_ok=True)
    ckpt_path = run / "checkpoint.pt"
    torch.manual_seed(seed)
    model = DualCodec(cfg)
    frozen = None
    if init_from is not None:
        base = load_weights(Path(init_from))
        if cfg.folded_encoder and not base.cfg.folded_encoder:
            base = fold_and_snap_encoder(base)
        if finetune is not None:
            model.load_state_dict(base.state_dict())
            trained = [model.enc[finetune], model.vq[finetune], model.dec[finetune]]
            if model.attn is not None:
                trained.append(model.attn.mha[finetune])
            keep = {id(p_) for part in trained for p_ in part.parameters()}
            for p_ in model.parameters():
                p_.requires_grad_(id(p_) in keep)
            other = next(m for m in MODALITIES if m != finetune)
            frozen = (model.enc[other], model.vq[other], model.dec[other])
        else:
            for part in ("enc", "vq"):
                getattr(model, part).load_state_dict(getattr(base, part).state_dict())
                for p_ in getattr(model, part).parameters():
                    p_.requires_grad_(False)
            frozen = (model.enc, model.vq)
    opt = torch.optim.Adam([p_ for p_ in model.parameters() if p_.requires_grad], lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(seed)
    step, history, elapsed_before = 0, [], 0.0
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck["steps"] != steps or CodecConfig.from_dict(ck["config"]) != cfg:
            raise SystemExit(f"{ckpt_path} belongs to another run (steps/config differ); "
                             "remove it or use another --run-dir")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        step, history, elapsed_before = ck["step"], ck["history"], ck["elapsed_s"]
        log.info("resumed %s at step %d", ckpt_path, step)

    t_load = time.monotonic()
    data = CodecData(data_dir)
    log.info("data ready in %.1f s: %s", time.monotonic() - t_load, data.summary())

    def checkpoint():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "step": step, "steps": steps,
                    "history": history, "config": cfg.to_dict(),
                    "elapsed_s": elapsed_before + time.monotonic() - t0}, ckpt_path.with_suffix(".tmp"))
        ckpt_path.with_suffix(".tmp").replace(ckpt_path)

    t0 = time.monotonic()
    last_ckpt = t0
    model.train()
    if frozen:
        for part in frozen:
            part.eval()  # no BN statistics or codebook EMA updates
    acc: dict[str, float] = {}
    weights = {"ecg": cfg.loss_ecg, "eeg": cfg.loss_eeg}
    whitened = {"ecg": cfg.whitened[0], "eeg": cfg.whitened[1]}
    scored = (finetune,) if finetune else MODALITIES
    while step < steps:
        if budget_min is not None and (time.monotonic() - t0) / 60 >= budget_min:
            checkpoint()
            log.info("budget reached at step %d/%d; checkpoint saved, rerun to resume", step, steps)
            return {"done": False, "step": step, "checkpoint": str(ckpt_path)}
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step, steps)
        xb, paired = data.batch(rng, cfg.batch)
        x = {m: torch.from_numpy(xb[m]) for m in MODALITIES}
        pair = torch.from_numpy(paired)
        keep = {m: pair & (torch.rand(cfg.batch) >= cfg.partner_dropout) for m in MODALITIES}
        n_stages = 1 if (cfg.stages > 1 and rng.random() < cfg.stage_dropout) else cfg.stages
        rec, idx, vq_loss = model(x, keep, n_stages)
        loss = vq_loss + sum(recon_loss(x[m], rec[m], weights[m], cfg.spectral, whitened[m]) for m in scored)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p_ for p_ in model.parameters() if p_.requires_grad], cfg.grad_clip)
        opt.step()
        step += 1
        with torch.no_grad():
            for m in MODALITIES:
                prd = torch.sqrt(((x[m] - rec[m]) ** 2).sum(-1) / ((x[m] ** 2).sum(-1) + 1e-8)).mean()
                acc[f"prd_{m}_s{n_stages}"] = acc.get(f"prd_{m}_s{n_stages}", 0.0) + float(prd)
                acc[f"n_s{n_stages}_{m}"] = acc.get(f"n_s{n_stages}_{m}", 0.0) + 1
            acc["loss"] = acc.get("loss", 0.0) + float(loss)
        if step % log_every == 0 or step == steps:
            row = {"step": step, "lr": lr_at(cfg, step, steps), "loss": acc.pop("loss") / log_every,
                   "elapsed_s": round(elapsed_before + time.monotonic() - t0, 1)}
            for k in [k for k in acc if k.startswith("prd_")]:
                m, s = k.split("_")[1], k.split("_")[2]
                row[k] = round(100 * acc[k] / max(acc[f"n_{s}_{m}"], 1), 2)
            acc.clear()
            history.append(row)
            log.info("%s", json.dumps(row))
        if time.monotonic() - last_ckpt > 300:
            checkpoint()
            last_ckpt = time.monotonic()
    model.eval()
    if finetune is not None and cfg.folded_encoder:  # back onto the int8 grid the device holds
        snapped = fold_and_snap_encoder(model)
        model.enc[finetune].load_state_dict(snapped.enc[finetune].state_dict())
    record = {"variant": variant_name, "ablation": ablation, "steps": steps, "seed": seed,
              "init_from": Path(init_from).name if init_from else None,
              "finetune": finetune, "lr": cfg.lr,
              "elapsed_s": round(elapsed_before + time.monotonic() - t0, 1),
              "final": history[-1] if history else {}, "torch": str(torch.__version__)}
    path = save_weights(model, Path(out_dir) if out_dir else run, record)
    checkpoint()
    log.info("weights written to %s", path)
    return {"done": True, "step": step, "weights": str(path), **record}
