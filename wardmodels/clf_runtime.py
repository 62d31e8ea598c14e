"""The deployed classifiers: LAQ-compressed, packed, hash-named, listed in ``CLASSIFIERS.json``.

``wardstream export classifier RHYTHM.pt BEAT.pt`` folds each model's batch norms, runs LAQ
(`wardmodels.compress.laq`) against a metric on data the model was not scored on — rhythm: CinC F1
on the `calib` part of the training split; beat: macro F1 (N, S, V) on MIT-BIH DS1 beats — packs
the result (``<variant>-laq-<sha>.wpk``) next to the other weights and records it::

    {"rhythm": {"packed": "rhythm-laq-<sha>.wpk", "source": "clf-rhythm-<sha>.pt", "bits": {...},
                "fp32_bytes": ..., "model_bytes": ..., "compression_ratio": ..., "reproduce": [...]},
     "beat": {...}}

At run time `load_deployed_classifier(kind)` unpacks the file once (weights dequantised per layer
into the folded network, its convolutions computed channels-last, `fused.channels_last_convs`) —
what the worker and the evaluations run — in float32 or, where the CPU has native bfloat16
instructions, bfloat16 arithmetic (`compute_dtype`).
"""

from __future__ import annotations

import copy
import json
import logging
from functools import lru_cache
from pathlib import Path

import numpy as np

from wardmodels.classifier import Classifier
from wardmodels.compress import fold_batchnorm, laq, pack, size_report, unpack
from wardmodels.hashname import WeightsError, verify_hash, write_hashed
from wardmodels.runtime import WEIGHTS_DIR

log = logging.getLogger(__name__)
CLF_MANIFEST = WEIGHTS_DIR / "CLASSIFIERS.json"


def classifier_manifest() -> dict:
    if not CLF_MANIFEST.exists():
        return {}
    return json.loads(CLF_MANIFEST.read_text())


COMPUTE_CHOICES = ("auto", "fp32", "bf16")


def compute_dtype(choice: str | None = None) -> str:
    """The arithmetic the deployed classifiers run in: ``WARDSTREAM_CLF_COMPUTE`` = ``fp32``,
    ``bf16`` (bfloat16 weights and activations, float32 softmax), or ``auto`` (the default): bf16
    where the CPU has native bf16 instructions (AVX512-BF16 / AMX, through oneDNN) and fp32
    elsewhere (emulated bf16 would be slower than fp32)."""
    import os

    import torch

    choice = (choice or os.environ.get("WARDSTREAM_CLF_COMPUTE", "auto")).strip().lower()
    if choice not in COMPUTE_CHOICES:
        raise ValueError(f"WARDSTREAM_CLF_COMPUTE must be one of {COMPUTE_CHOICES}, not {choice!r}")
    if choice == "auto":
        native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        choice = "bf16" if native else "fp32"
    return choice


def load_packed(path: Path, compute: str | None = None) -> Classifier:
    import torch

    from wardmodels.fused import channels_last_convs
    from wardmodels.train_classifier import build

    cfg, state, bits = unpack(verify_hash(path))
    model = fold_batchnorm(build(cfg))
    model.load_state_dict(state)
    model.eval()
    channels_last_convs(model)
    dtype = compute_dtype(compute)
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    return Classifier(model, Path(path).name, {"bits": bits, "compute": dtype})


def load_deployed_classifier(kind: str, compute: str | None = None) -> Classifier:
    """The deployed classifier, in ``compute`` arithmetic (default: `compute_dtype`); loaded once.
    The beat classifier comes with its second stage (`beat_stack.StackedBeats`, same ``proba``)
    when the manifest names one, unless ``WARDSTREAM_BEAT_STACK=0`` (the CNN alone: a rollback and
    the comparison docs/classifiers.md reports)."""
    import os

    stack = os.environ.get("WARDSTREAM_BEAT_STACK", "1").strip() != "0"
    return _load_deployed(kind, compute_dtype(compute), stack)


@lru_cache(maxsize=None)
def _load_deployed(kind: str, compute: str, stack: bool = True) -> Classifier:
    entry = classifier_manifest().get(kind)
    if not entry:
        raise WeightsError(f"no deployed {kind} classifier in {CLF_MANIFEST}")
    clf = load_packed(WEIGHTS_DIR / entry["packed"], compute)
    if stack and entry.get("stack"):  # the beat CNN's second stage (`beat_stack`)
        from wardmodels.beat_stack import BeatStack, StackedBeats

        return StackedBeats(clf, BeatStack.load(verify_hash(WEIGHTS_DIR / entry["stack"])))
    return clf


def _rhythm_metric(data_dir: Path, max_records: int | None = None, causal: bool = False):
    import torch

    from wardmodels.clf_data import cinc_split, crops_for_record
    from wardmodels.frontend import filter_record
    from wardmodels.train_classifier import cinc_f1
    from wardmodels.classifier import RHYTHM_CLASSES

    cal = cinc_split(data_dir, "calib")
    sig = [filter_record(s) for s in cal.signals][:max_records]
    y = np.array([RHYTHM_CLASSES.index(v) for v in cal.labels])[:max_records]
    if causal:  # the streaming model: every decision of a record from one causal pass
        from wardmodels.stream_rhythm import decided, record_logits

        yd = np.repeat(y, [len(decided(s)[1]) for s in sig])

        def metric(model) -> float:
            """CinC F1 over every decision of the calib records (`stream_rhythm.record_logits`)."""
            return cinc_f1(yd, np.concatenate(record_logits(model.eval(), sig)).argmax(1))

        return metric
    crops = [crops_for_record(s) for s in sig]
    x = torch.from_numpy(np.concatenate(crops))
    yd = np.repeat(y, [len(c) for c in crops])

    def metric(model) -> float:
        """CinC F1 over every 10-s decision of the calib records (6,400 crops: less noisy than
        546 record-level decisions, which let a first LAQ run over-fit; see docs/classifiers.md)."""
        with torch.no_grad():
            p = torch.cat([model.eval()(x[i:i + 1024]) for i in range(0, len(x), 1024)]).argmax(1).numpy()
        return cinc_f1(yd, p)

    return metric


def _beat_metric(data_dir: Path, per_class: int = 3000, seed: int = 3):
    import torch

    from wardmodels.clf_data import beat_table
    from wardmodels.frontend import filter_record
    from wardmodels.train_classifier import f1_scores
    from wardstream import datasets as ds
    from wardmodels.classifier import FS, N_RR_FEATURES

    ws, fs, ys = [], [], []
    for r in ds.DS1:
        rec = ds.load_mitdb(data_dir, r)
        x = filter_record(rec.ecg_mv)
        b = np.round(rec.beat_times_s * FS).astype(np.int64)
        w, f, y = beat_table(x, b, rec.beat_symbols)
        ws.append(w), fs.append(f), ys.append(y)
    w, f, y = np.concatenate(ws), np.concatenate(fs), np.concatenate(ys)
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(4)])
    xw, yy = torch.from_numpy(w[pick]), y[pick]
    xf = torch.from_numpy(np.ascontiguousarray(f[pick][:, :N_RR_FEATURES]))  # the CNN's part of the context

    def metric(model) -> float:
        with torch.no_grad():
            p = model.eval()(xw, xf).argmax(1).numpy()
        return float(f1_scores(yy, p, 4)[:3].mean())

    return metric


def _rhythm_qat_batches(data_dir: Path, seed: int, batch: int = 64, recipe: dict | None = None,
                        teacher=None, distill: float = 0.0, temperature: float = 2.0):
    """Training batches and loss for quantization-aware fine-tuning of the rhythm model: the
    training recipe's own data (`RhythmData`: CinC fit records, their codec reconstructions at
    the levels the source model was trained with, MIT-BIH DS1 crops, synthetic noise, the
    recipe's artefacts if any; ``recipe`` is the source checkpoint's training arguments) and
    class-weighted cross-entropy, mixed with distillation from ``teacher`` (the FP32 source) when
    ``distill`` > 0 (`compress.distill_loss`)."""
    import torch

    from wardmodels.clf_data import RhythmData
    from wardmodels.compress import distill_loss
    from wardmodels.train_classifier import rhythm_loss

    r = recipe or {}
    data = RhythmData(data_dir, codec_model=r.get("codec_model", 2), levels=tuple(r.get("levels", (1, 2))),
                      crops_per_record=r.get("crops_per_record", 1), mix_levels=r.get("mix_levels", False),
                      causal=r.get("variant") == "rhythm-stream", artefact_share=r.get("artefact_share", 0.0))
    ce = rhythm_loss(data.class_counts())

    def batches(ep: int):
        x, y = data.epoch(np.random.default_rng([seed, 1000 + ep]))
        for i in range(0, len(y), batch):
            yield torch.from_numpy(x[i:i + batch]), torch.from_numpy(y[i:i + batch])

    return batches, distill_loss(ce, teacher, distill, temperature)


def _init_from(weights: Path) -> str | None:
    """The saved model ``weights`` was fine-tuned from (file name), if its training record says."""
    import torch

    try:
        blob = torch.load(Path(weights), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError):
        return None
    args = blob.get("train", {}).get("args", {}) if isinstance(blob, dict) else {}
    return args.get("init_from") if isinstance(args, dict) else None


def bits_from_manifest(path: Path, kind: str, source: Path) -> dict[str, int]:
    """The per-layer bit-widths an earlier export of ``source`` recorded (a CLASSIFIERS.json), so
    that fine-tuning can start from the deployed LAQ allocation without re-running the search.
    Also accepted: a ``source`` fine-tuned from the recorded one (``init_from`` in its training
    record's args, `train_classifier.train_rhythm`) -- same layers, weights moved a little."""
    try:
        entry = json.loads(Path(path).read_text())[kind]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: no {kind} entry with bit-widths ({exc})") from exc
    if entry.get("source") not in (Path(source).name, _init_from(source)):
        raise ValueError(f"{path}: its {kind} bit-widths were chosen for {entry.get('source')}, not {Path(source).name}"
                         " (nor for the model it was fine-tuned from)")
    return {k: int(v) for k, v in entry["bits"].items()}


def export_classifier(kind: str, weights: Path, data_dir: Path, out_dir: Path | None = None,
                      gamma: float = 0.04, tolerance: float = 0.005, reproduce: list[str] | None = None,
                      choices=(2, 3, 4, 5, 6, 8), fixed_bits: int | None = None, qat_epochs: int = 0,
                      qat_lr: float = 1e-4, seed: int = 0, bits: dict[str, int] | None = None,
                      qat_distill: float = 0.0, qat_temperature: float = 2.0) -> dict:
    """LAQ-compress (or, with ``fixed_bits``, pack at one width; with ``bits``, at those per-layer
    widths — e.g. an earlier LAQ run's, see `bits_from_manifest`), optionally fine-tune
    quantization-aware (``qat_epochs``; ``qat_distill``: weight of distillation from the FP32
    source, see `_rhythm_qat_batches`), pack, and record in the manifest when writing there."""
    from wardmodels.train_classifier import load_classifier

    out_dir = Path(out_dir) if out_dir else WEIGHTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)  # before the LAQ search, not after it
    clf = load_classifier(weights)
    folded = fold_batchnorm(clf.model)
    causal = bool(getattr(clf.model.cfg, "causal", False))
    metric = _rhythm_metric(data_dir, causal=causal) if kind == "rhythm" else _beat_metric(data_dir)
    if fixed_bits or bits:
        from wardmodels.compress import LaqResult, apply, importance, quantizable

        names = [n for n, _ in quantizable(folded)]
        if bits:
            if set(bits) != set(names):
                raise ValueError(f"the given bit-widths name layers {sorted(set(bits) ^ set(names))} "
                                 "that this model lacks or leave some of its layers out")
        else:
            bits = dict.fromkeys(names, fixed_bits)
        res = LaqResult(dict(bits), importance(folded), metric(folded), metric(apply(folded, bits)), 0.0, 2, [])
    else:
        res = laq(folded, metric, choices=choices, gamma=gamma, tolerance=tolerance)
    log.info("%s LAQ: baseline %.4f -> %.4f, bits %s", kind, res.baseline, res.metric, res.bits)
    qat = None
    if qat_epochs:
        if kind != "rhythm":
            raise ValueError("quantization-aware fine-tuning is implemented for the rhythm model only")
        import torch

        from wardmodels.compress import apply, qat_finetune

        torch.manual_seed(seed)
        teacher = copy.deepcopy(folded) if qat_distill else None
        batches, loss_fn = _rhythm_qat_batches(data_dir, seed, recipe=clf.meta.get("args"), teacher=teacher,
                                               distill=qat_distill, temperature=qat_temperature)
        folded, hist = qat_finetune(folded, res.bits, batches, loss_fn, metric, qat_epochs, lr=qat_lr)
        kept = max(hist, key=lambda h: h["metric"])
        qat = {"epochs": qat_epochs, "lr": qat_lr, "seed": seed, "history": hist, "kept_epoch": kept["epoch"],
               **({"distill": qat_distill, "temperature": qat_temperature} if qat_distill else {})}
        res.metric = metric(apply(folded, res.bits))
        log.info("%s QAT: kept epoch %d, metric %.4f", kind, kept["epoch"], res.metric)
    tag = f"w{fixed_bits}" if fixed_bits and not bits else "laq"
    tmp = out_dir / f"{kind}-{tag}.tmp"
    pack(folded, res.bits, clf.model.cfg.to_dict(), tmp)
    path = write_hashed(out_dir, f"{kind}-{tag}", tmp.read_bytes(), ".wpk")
    tmp.unlink()
    entry = {"packed": path.name, "source": Path(weights).name, "bits": res.bits,
             "importance": res.importance, "laq_metric": "cinc_f1 of every 10-s decision on calib" if kind == "rhythm" else "macro F1 N/S/V on DS1",
             "bit_choices": sorted(set(res.bits.values())) if bits else [fixed_bits] if fixed_bits else list(choices),
             **({"bits_given": True} if bits else {}),
             "laq_baseline": res.baseline, "laq_final": res.metric, "gamma": res.gamma,
             "laq_evaluations": res.evaluations, **({"qat": qat} if qat else {}),
             **size_report(clf.model, path), "reproduce": reproduce or []}
    if out_dir.resolve() == WEIGHTS_DIR.resolve():
        man = classifier_manifest()
        man[kind] = entry
        CLF_MANIFEST.write_text(json.dumps(man, indent=2) + "\n")
    return entry
