"""Train the rhythm and beat classifiers (`wardstream train classifier`).

Recipe after the ResNet1D paper: Adam lr 1e-3, weight decay 1e-3, dropout, cross-entropy,
ReduceLROnPlateau (on the calibration loss). Seeded; the epoch count fixes the run, ``budget_min``
stops early with a checkpoint under ``runs/`` and the same command resumes it.

* rhythm: class-weighted cross-entropy (weights ∝ 1/sqrt(count)); the epoch with the best CinC F1
  on the `calib` part of the training split is kept (the validation split is never looked at);
* beat: batches drawn with class probabilities ∝ sqrt(count) (S and F beats are rare), plain
  cross-entropy; the last epoch is kept (no held-out DS1 patients to select on).

Weights land as ``<out>/clf-<variant>-<sha256[:12]>.pt`` (config, state dict, training record).
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wardmodels.hashname import write_hashed
from wardmodels.classifier import RHYTHM_CLASSES, VARIANTS, Classifier, ResNet1D, ResNetConfig

log = logging.getLogger(__name__)
RUNS = Path(__file__).resolve().parent.parent / "runs"


def save_classifier(model: ResNet1D, out_dir: Path, record: dict, prefix: str = "clf") -> Path:
    buf = io.BytesIO()
    torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict(), "train": record}, buf)
    return write_hashed(out_dir, f"{prefix}-{model.cfg.name}", buf.getvalue(), ".pt")


def build(config: dict) -> torch.nn.Module:
    """The network a saved config describes (ResNet1D, or the HuBERT-style model)."""
    if config.get("kind") == "hubert":
        from wardmodels.hubert import HubertConfig, HubertECG

        return HubertECG(HubertConfig.from_dict(config))
    return ResNet1D(ResNetConfig.from_dict(config))


def load_classifier(path: Path) -> Classifier:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = build(blob["config"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return Classifier(model, Path(path).name, blob.get("train", {}))


def f1_scores(y: np.ndarray, p: np.ndarray, n_classes: int) -> np.ndarray:
    f1 = np.zeros(n_classes)
    for c in range(n_classes):
        tp = np.sum((p == c) & (y == c))
        d = np.sum(p == c) + np.sum(y == c)
        f1[c] = 2 * tp / d if d else 0.0
    return f1


def cinc_f1(y: np.ndarray, p: np.ndarray) -> float:
    """The CinC 2017 score: mean F1 of normal, AF and other rhythm — of those that occur (true or
    called; a subset of the records may lack one: its F1 is undefined, not 0); nan with none."""
    occur = [c for c in range(3) if np.any(y == c) or np.any(p == c)]
    return float(f1_scores(y, p, len(RHYTHM_CLASSES))[occur].mean()) if occur else float("nan")


class _Checkpoint:
    def __init__(self, name: str, args: dict):
        self.path = RUNS / f"{name}-ckpt.pt"
        self.args = args

    def load(self):
        if not self.path.exists():
            return None
        blob = torch.load(self.path, map_location="cpu", weights_only=False)
        if blob.get("args") != self.args:
            log.warning("checkpoint %s is for other arguments; starting afresh", self.path)
            return None
        return blob

    def save(self, **state):
        RUNS.mkdir(exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({"args": self.args, **state}, tmp)
        tmp.replace(self.path)

    def clear(self):
        self.path.unlink(missing_ok=True)


def _record_predict(clf: Classifier, signals: list[np.ndarray]) -> np.ndarray:
    from wardmodels.clf_data import record_proba

    return record_proba(clf, signals)[0]


def rhythm_loss(counts: np.ndarray) -> nn.CrossEntropyLoss:
    """The rhythm recipe's loss: cross-entropy with class weights ∝ 1/sqrt(count), mean 1."""
    w = torch.tensor((counts.sum() / np.maximum(counts, 1)) ** 0.5, dtype=torch.float32)
    return nn.CrossEntropyLoss(weight=w / w.mean())


def train_rhythm(data_dir: Path, epochs: int = 40, batch: int = 64, seed: int = 0, threads: int = 2,
                 budget_min: float | None = None, out_dir: Path | None = None, codec_model: int | None = 2,
                 levels: tuple[int, ...] = (1, 2), crops_per_record: int = 1, mix_levels: bool = False,
                 variant: str = "rhythm", init_from: Path | None = None, lr: float = 1e-3,
                 schedule: str = "plateau", min_lr: float = 1e-5, artefact_share: float = 0.0) -> dict:
    """``levels`` of codec ``codec_model`` join the mix (half the crops); ``mix_levels``: half of
    those take each 2-s window at its own level, as under the Dynamic-Deep policy; ``variant``:
    ``rhythm`` or the streaming ``rhythm-stream`` (`wardmodels.stream_rhythm`).

    Fine-tuning: ``init_from`` starts from a saved classifier of the same variant instead of a
    random initialisation; ``schedule`` ``cosine`` anneals ``lr`` to ``min_lr`` per batch over
    all ``epochs`` (``plateau``: the recipe's ReduceLROnPlateau on the calib loss). The best calib
    epoch is kept either way; an epoch that does not beat the starting model's calib F1 is not kept
    over it — unless ``artefact_share`` > 0: then muscle and motion artefacts go onto that share of
    the crops (`clf_data.add_artefacts`, labels kept) and the starting model, which never saw them,
    is no candidate (the calib records are clean: they cannot score what the artefacts teach)."""
    from wardmodels.clf_data import RhythmData, cinc_split
    from wardmodels.frontend import filter_record

    torch.set_num_threads(threads)
    args = {"kind": "rhythm", "epochs": epochs, "batch": batch, "seed": seed, "codec_model": codec_model}
    if tuple(levels) != (1, 2) or crops_per_record != 1 or mix_levels:
        args.update(levels=list(levels), crops_per_record=crops_per_record, mix_levels=mix_levels)
    cfg = VARIANTS[variant]
    if variant != "rhythm":
        args["variant"] = variant
    if schedule not in ("plateau", "cosine"):
        raise ValueError(f"unknown schedule {schedule!r}: plateau or cosine")
    if artefact_share:
        args["artefact_share"] = artefact_share
    if init_from is not None or lr != 1e-3 or schedule != "plateau":
        args.update(init_from=Path(init_from).name if init_from else None, lr=lr, schedule=schedule,
                    **({"min_lr": min_lr} if schedule == "cosine" else {}))
    t0 = time.time()
    data = RhythmData(data_dir, codec_model=codec_model, levels=tuple(levels), crops_per_record=crops_per_record,
                      mix_levels=mix_levels, causal=cfg.causal, artefact_share=artefact_share)
    calib = cinc_split(data_dir, "calib")
    calib_sig = [filter_record(s) for s in calib.signals]
    calib_y = np.array([RHYTHM_CLASSES.index(v) for v in calib.labels])
    log.info("rhythm data %s, calib %d records (%.0f s)", data.summary(), len(calib_y), time.time() - t0)

    torch.manual_seed(seed)
    model = ResNet1D(cfg)
    history, best, start = [], None, 0
    if init_from is not None:
        src = load_classifier(Path(init_from)).model
        if src.cfg.to_dict() != cfg.to_dict():
            raise ValueError(f"{init_from} is not a {variant!r} model: its config differs")
        model.load_state_dict(src.state_dict())
        p0 = _record_predict(Classifier(model), calib_sig)
        init_f1 = cinc_f1(calib_y, p0.argmax(1))
        if not artefact_share:
            best = {"epoch": 0, "calib_f1": init_f1, "state": {k: v.clone() for k, v in model.state_dict().items()}}
        log.info("fine-tuning %s: calib F1 %.4f before", Path(init_from).name, init_f1)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-3)
    per_epoch = data.epoch_size()
    cosine = schedule == "cosine"
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * -(-per_epoch // batch), eta_min=min_lr)
             if cosine else torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2))
    loss_fn = rhythm_loss(data.class_counts())
    ck = _Checkpoint(f"clf-{variant}", args)
    if (blob := ck.load()) is not None:
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["opt"])
        sched.load_state_dict(blob["sched"])
        history, best, start = blob["history"], blob["best"], blob["epoch"]
        log.info("resuming rhythm training at epoch %d", start)
    t_start = time.time()
    for ep in range(start, epochs):
        rng = np.random.default_rng([seed, ep])
        x, y = data.epoch(rng)
        model.train()
        tot = 0.0
        for i in range(0, len(y), batch):
            xb, yb = torch.from_numpy(x[i:i + batch]), torch.from_numpy(y[i:i + batch])
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if cosine:
                sched.step()
            tot += float(loss) * len(yb)
        clf = Classifier(model)
        p = _record_predict(clf, calib_sig)
        c_loss = float(nn.functional.nll_loss(torch.log(torch.from_numpy(p) + 1e-7), torch.from_numpy(calib_y)))
        f1 = cinc_f1(calib_y, p.argmax(1))
        if not cosine:
            sched.step(c_loss)
        history.append({"epoch": ep + 1, "train_loss": tot / len(y), "calib_loss": c_loss, "calib_f1": f1,
                        "lr": opt.param_groups[0]["lr"], "elapsed_s": time.time() - t_start})
        log.info("rhythm epoch %d: %s", ep + 1, json.dumps(history[-1]))
        if best is None or f1 > best["calib_f1"]:
            best = {"epoch": ep + 1, "calib_f1": f1, "state": {k: v.clone() for k, v in model.state_dict().items()}}
        ck.save(model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(), history=history,
                best=best, epoch=ep + 1)
        if budget_min is not None and time.time() - t_start > budget_min * 60 and ep + 1 < epochs:
            log.warning("budget reached after epoch %d of %d; run the same command to resume", ep + 1, epochs)
            return {"finished": False, "epoch": ep + 1}
    model.load_state_dict(best["state"])
    record = {"args": args, "data": data.summary(), "history": history, "kept_epoch": best["epoch"],
              **({"init_calib_f1": init_f1} if init_from is not None else {}),  # init_from: in args
              "torch": str(torch.__version__)}
    path = save_classifier(model, out_dir or RUNS, record)
    ck.clear()
    return {"finished": True, "weights": str(path), "kept_epoch": best["epoch"], "calib_f1": best["calib_f1"]}


def train_beat(data_dir: Path, epochs: int = 30, steps_per_epoch: int = 400, batch: int = 128, seed: int = 0,
               threads: int = 2, budget_min: float | None = None, out_dir: Path | None = None,
               codec_model: int | None = 2, records: list[str] | None = None, morph_aug: float = 0.0) -> dict:
    """``records``: the MIT-BIH records to train on (default DS1; a subset for patient-wise
    cross-validation inside DS1, `beat_cv`); ``morph_aug``: share of beats reshaped as another
    patient's (`clf_data.morph_augment`)."""
    from wardmodels.clf_data import BeatData
    from wardstream import datasets as ds

    torch.set_num_threads(threads)
    args = {"kind": "beat", "epochs": epochs, "steps": steps_per_epoch, "batch": batch, "seed": seed,
            "codec_model": codec_model}
    if records is not None and list(records) != list(ds.DS1):
        args["records"] = list(records)
    if morph_aug:
        args["morph_aug"] = morph_aug
    data = BeatData(data_dir, records=list(records or ds.DS1), codec_model=codec_model)
    log.info("beat data %s", data.summary())
    counts = data.class_counts()
    p_class = counts ** 0.5 / (counts ** 0.5).sum()
    p_beat = (p_class / np.maximum(counts, 1))[data.labels]
    p_beat /= p_beat.sum()
    torch.manual_seed(seed)
    model = ResNet1D(VARIANTS["beat"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    loss_fn = nn.CrossEntropyLoss()
    ck = _Checkpoint("clf-beat", args)
    history, start = [], 0
    if (blob := ck.load()) is not None:
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["opt"])
        sched.load_state_dict(blob["sched"])
        history, start = blob["history"], blob["epoch"]
    t_start = time.time()
    for ep in range(start, epochs):
        rng = np.random.default_rng([seed, ep])
        model.train()
        tot = 0.0
        for _ in range(steps_per_epoch):
            idx = rng.choice(len(p_beat), batch, p=p_beat)
            w, f, y = data.batch(rng, idx, morph_aug)
            loss = loss_fn(model(torch.from_numpy(w), torch.from_numpy(f)), torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss)
        sched.step(tot / steps_per_epoch)
        history.append({"epoch": ep + 1, "train_loss": tot / steps_per_epoch, "lr": opt.param_groups[0]["lr"],
                        "elapsed_s": time.time() - t_start})
        log.info("beat epoch %d: %s", ep + 1, json.dumps(history[-1]))
        ck.save(model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(), history=history, epoch=ep + 1)
        if budget_min is not None and time.time() - t_start > budget_min * 60 and ep + 1 < epochs:
            log.warning("budget reached after epoch %d of %d; run the same command to resume", ep + 1, epochs)
            return {"finished": False, "epoch": ep + 1}
    record = {"args": args, "data": data.summary(), "history": history, "torch": str(torch.__version__)}
    path = save_classifier(model, out_dir or RUNS, record)
    ck.clear()
    return {"finished": True, "weights": str(path)}


# --------------------------------------------------------------------------- HuBERT-style backend
def _unlabelled_ecg(data_dir: Path) -> list[np.ndarray]:
    """Filtered ECG nobody evaluates on: CinC fit part, MIT-BIH DS1, eegmat subjects 00-23."""
    from wardmodels.clf_data import cinc_split
    from wardmodels.codec_data import FLAT_ECG_MV
    from wardmodels.frontend import filter_record
    from wardstream import datasets as ds

    sig = [filter_record(s) for s in cinc_split(data_dir, "fit").signals]
    sig += [filter_record(ds.load_mitdb(data_dir, r).ecg_mv) for r in ds.DS1]
    for rec in ds.load_eegmat(data_dir, subjects=range(0, 24)):
        x = filter_record(rec.ecg_mv)
        if x[256:].std() >= FLAT_ECG_MV:
            sig.append(x)
    return [s for s in sig if len(s) >= 1280]


def _crops(rng: np.random.Generator, sig: list[np.ndarray], n: int, lens: np.ndarray) -> np.ndarray:
    from wardmodels.classifier import rhythm_input

    p = lens / lens.sum()
    out = []
    for i in rng.choice(len(sig), n, p=p):
        s = rng.integers(0, len(sig[i]) - 1280 + 1)
        out.append(sig[i][s:s + 1280])
    x = rhythm_input(np.stack(out))
    return x * np.where(rng.random(n) < 0.5, -1.0, 1.0)[:, None].astype(np.float32)


def pretrain_hubert(data_dir: Path, steps: int = 1500, batch: int = 64, seed: int = 0, threads: int = 2,
                    budget_min: float | None = None) -> dict:
    """Masked prediction of k-means pseudo-labels; returns the pre-trained state (in memory and
    checkpointed under runs/)."""
    from sklearn.cluster import MiniBatchKMeans

    from wardmodels.hubert import HubertConfig, HubertECG, frame_descriptors, span_mask

    torch.set_num_threads(threads)
    cfg = HubertConfig()
    args = {"kind": "hubert-pretrain", "steps": steps, "batch": batch, "seed": seed}
    sig = _unlabelled_ecg(data_dir)
    lens = np.array([len(s) for s in sig], np.float64)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = HubertECG(cfg)
    t_frames = model.n_frames(cfg.in_samples)
    fr = cfg.frame_samples
    km = MiniBatchKMeans(cfg.clusters, random_state=seed, batch_size=4096, n_init=3)
    km.fit(frame_descriptors(_crops(rng, sig, 3000, lens), fr, t_frames).reshape(-1, 3 * fr))
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=1e-2)
    ck = _Checkpoint("clf-hubert-pretrain", args)
    start, history = 0, []
    if (blob := ck.load()) is not None:
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["opt"])
        start, history, km = blob["step"], blob["history"], blob["kmeans"]
    t0 = time.time()
    model.train()
    for step in range(start, steps):
        lr = 5e-4 * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        r = np.random.default_rng([seed, step])
        x = _crops(r, sig, batch, lens)
        target = km.predict(frame_descriptors(x, fr, t_frames).reshape(-1, 3 * fr).astype(np.float32))
        target = torch.from_numpy(target.reshape(batch, t_frames).astype(np.int64))
        mask = torch.from_numpy(span_mask(r, batch, t_frames, cfg.mask_prob, cfg.mask_len))
        logits = model.cluster_head(model.frames(torch.from_numpy(x), mask))
        loss = nn.functional.cross_entropy(logits[mask], target[mask])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 50 == 0:
            acc = float((logits[mask].argmax(1) == target[mask]).float().mean())
            history.append({"step": step + 1, "loss": float(loss.detach()), "masked_acc": acc, "lr": float(lr),
                            "elapsed_s": time.time() - t0})
            log.info("hubert pretrain %s", json.dumps(history[-1]))
            ck.save(model=model.state_dict(), opt=opt.state_dict(), step=step + 1, history=history, kmeans=km)
            if budget_min is not None and time.time() - t0 > budget_min * 60 and step + 1 < steps:
                return {"finished": False, "step": step + 1}
    return {"finished": True, "state": model.state_dict(), "history": history, "ckpt": ck}


def train_hubert(data_dir: Path, pretrain_steps: int = 1500, epochs: int = 15, batch: int = 64, seed: int = 0,
                 threads: int = 2, budget_min: float | None = None, out_dir: Path | None = None,
                 codec_model: int | None = 2) -> dict:
    """Pre-train, then fine-tune on the rhythm data exactly as the ResNet1D (lr 1e-4)."""
    import dataclasses

    from wardmodels.clf_data import RhythmData, cinc_split
    from wardmodels.frontend import filter_record
    from wardmodels.hubert import HubertConfig, HubertECG

    pre = pretrain_hubert(data_dir, pretrain_steps, batch, seed, threads, budget_min)
    if not pre["finished"]:
        return pre
    cfg = dataclasses.replace(HubertConfig(), clusters=0)
    model = HubertECG(cfg)
    model.load_state_dict({k: v for k, v in pre["state"].items() if not k.startswith("cluster_head")})
    data = RhythmData(data_dir, codec_model=codec_model)
    calib = cinc_split(data_dir, "calib")
    calib_sig = [filter_record(s) for s in calib.signals]
    calib_y = np.array([RHYTHM_CLASSES.index(v) for v in calib.labels])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-3)
    loss_fn = rhythm_loss(data.class_counts())
    history, best = [], None
    t0 = time.time()
    for ep in range(epochs):
        lr = 1e-4 * 0.5 * (1 + np.cos(np.pi * ep / epochs))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = data.epoch(np.random.default_rng([seed, ep]))
        model.train()
        tot = 0.0
        for i in range(0, len(y), batch):
            loss = loss_fn(model(torch.from_numpy(x[i:i + batch])), torch.from_numpy(y[i:i + batch]))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tot += float(loss.detach()) * len(y[i:i + batch])
        p = _record_predict(Classifier(model), calib_sig)
        f1 = cinc_f1(calib_y, p.argmax(1))
        history.append({"epoch": ep + 1, "train_loss": tot / len(y), "calib_f1": f1, "lr": float(lr),
                        "elapsed_s": time.time() - t0})
        log.info("hubert finetune %s", json.dumps(history[-1]))
        if best is None or f1 > best["calib_f1"]:
            best = {"epoch": ep + 1, "calib_f1": f1, "state": {k: v.clone() for k, v in model.state_dict().items()}}
    model.load_state_dict(best["state"])
    record = {"args": {"kind": "hubert", "pretrain_steps": pretrain_steps, "epochs": epochs, "seed": seed,
                       "codec_model": codec_model},
              "pretrain_history": pre["history"], "history": history, "kept_epoch": best["epoch"],
              "torch": str(torch.__version__)}
    path = save_classifier(model, out_dir or RUNS, record)
    pre["ckpt"].clear()
    return {"finished": True, "weights": str(path), "kept_epoch": best["epoch"], "calib_f1": best["calib_f1"]}
