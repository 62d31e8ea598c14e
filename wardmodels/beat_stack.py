"""A second stage over the beat CNN, fitted on other patients: it re-decides normal against
supraventricular, and may take a doubtful ventricular call away, from the CNN's class
probabilities and the beat's rhythm context.

Why: the CNN learns DS1's patients' beat shapes and its RR inputs are a small part of what it
sees, so on new patients (DS2) it finds a quarter of the supraventricular (S) beats -- whose shape
is the patient's normal one and whose sign is prematurity -- and calls normal beats in atrial
fibrillation (where every beat is "premature") supraventricular or ventricular. A multinomial
logistic regression on the CNN's log-probabilities, the five RR features, the rhythm's
irregularity before the beat (`classifier.rr_irregularity`), the beat's prematurity against the
long end of the last minute's intervals (`classifier.rr_prematurity`) and their quadratic terms
weighs the two kinds of evidence as unseen patients need; `combine` applies it: N and S re-divided by its
odds, a V below the alarms' probability (0.9) lowered where it disagrees, and F and confident V
left exactly as the CNN says, so every V beat the run alarms count is one the CNN called (the
alarms also read the other beats' confidence: a confident non-V beat ends a run).

It must be fitted on CNN outputs for patients the CNN was not trained on: the DS1 records are
dealt into the folds of `beat_cv.fold_records`, a CNN is trained on the other folds by the
deployed recipe, and the held-out patients' beats (annotated R peaks) are scored by it
(`oof_table`). The regression is fitted on those rows (classes weighted by 1/sqrt(count)); an
offset on the S logit is chosen to maximise the macro F1 of N, S and V over a patient-wise
cross-validation of the regression itself inside the same rows. DS2 is never read.

At run time (`StackedBeats`) the deployed (packed) CNN supplies the probabilities; the stage adds
43 multiply-adds per class and beat. Stored as ``beatstack-<sha256[:12]>.npz`` (float32 arrays and
a JSON record of how it was made); `wardstream train classifier --kind beat-stack` reproduces it.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wardmodels.classifier import (BEAT_CLASSES, BEAT_CONTEXT, BEAT_POST, BEAT_PRE, FS, N_RR_FEATURES, Classifier,
                                   aami_labels)
from wardmodels.hashname import write_hashed

log = logging.getLogger(__name__)
LEGACY_CONTEXT = N_RR_FEATURES + 1  # a stage fitted before the prematurity column (no `context_columns`)


def stack_features(p: np.ndarray, ctx: np.ndarray, columns: int = BEAT_CONTEXT) -> np.ndarray:
    """CNN probabilities (N, 4) and the first ``columns`` of the beat context -> the stage's
    inputs: log-probabilities, the five RR features, the prematurity (`rr_prematurity`, with 7
    columns), log irregularity, the quadratic terms of those, log-probabilities × log
    irregularity — (N, 43) with 7 columns, (N, 35) with the 6 of a legacy stage."""
    lp = np.log(np.clip(np.asarray(p, np.float64), 1e-4, 1.0))
    ctx = np.asarray(ctx, np.float64)
    if ctx.shape[1] < columns:
        raise ValueError(f"the stage takes {columns} context columns, got {ctx.shape[1]}")
    r = np.concatenate([ctx[:, :N_RR_FEATURES], ctx[:, N_RR_FEATURES + 1:columns],
                        np.log(ctx[:, N_RR_FEATURES:N_RR_FEATURES + 1] + 0.01)], axis=1)
    n = r.shape[1]
    quad = [r[:, i:i + 1] * r[:, j:j + 1] for i in range(n) for j in range(i, n)]
    return np.concatenate([lp, r, *quad, lp * r[:, -1:]], axis=1)


V_KEEP = 0.9  # the run alarms' class probability (`processors.alarms.Thresholds.v_min_p`)
# a fusion call needs the CNN this sure; below it the F mass goes to N. On the DS1 out-of-fold
# rows (4 patient-wise folds) 9 % of the beats called F were fusion beats and 568 normal beats were
# called F; gated at 0.9: 26 % and 36, N sensitivity 0.956 -> 0.969, V 0.811 / 0.711 -> 0.808 / 0.719
F_KEEP = 0.9


def combine(p: np.ndarray, logits: np.ndarray, v_keep: float = V_KEEP, f_keep: float = F_KEEP) -> np.ndarray:
    """The CNN's probabilities ``p`` corrected by the second stage's ``logits``:

    * the N + S mass is re-divided by the odds of the stage's N and S logits (every beat);
    * a beat the CNN gives a ventricular probability below ``v_keep`` gets the smaller of the
      CNN's and the stage's (its three-way N/S/V softmax times the CNN's N + S + V mass), the
      freed mass going to N and S by the same odds -- the stage can only take a doubtful V away;
    * V from ``v_keep`` up keeps the CNN's probability: a V beat the run alarms count (at
      ``v_min_p`` = 0.9) is exactly the CNN's;
    * F keeps the CNN's probability from ``f_keep`` up; below, its mass goes to N (a fusion call
      the CNN is unsure of was wrong 9 times in 10 across DS1 patients; 0 keeps every F)."""
    p = np.asarray(p, np.float64)
    z = np.asarray(logits, np.float64)[:, :3]
    z = np.exp(z - z.max(axis=1, keepdims=True))
    z /= z.sum(axis=1, keepdims=True)
    ns = z[:, :2] / z[:, :2].sum(axis=1, keepdims=True)
    out = p.copy()
    nsv = p[:, 0] + p[:, 1] + p[:, 2]
    v = np.where(p[:, 2] < v_keep, np.minimum(p[:, 2], nsv * z[:, 2]), p[:, 2])
    rest = nsv - v
    out[:, 0], out[:, 1], out[:, 2] = rest * ns[:, 0], rest * ns[:, 1], v
    unsure_f = p[:, 3] < f_keep
    out[unsure_f, 0] += out[unsure_f, 3]
    out[unsure_f, 3] = 0.0
    return out.astype(np.float32)


@dataclass
class BeatStack:
    mu: np.ndarray
    sd: np.ndarray
    w: np.ndarray  # (features, classes)
    c: np.ndarray  # (classes,)
    bias: np.ndarray  # logit offsets (only S's is not 0), chosen by cross-validated macro F1
    meta: dict = field(default_factory=dict)
    name: str = ""  # the file it was loaded from

    @property
    def context_columns(self) -> int:
        return int(self.meta.get("context_columns", LEGACY_CONTEXT))

    def logits(self, p: np.ndarray, ctx: np.ndarray) -> np.ndarray:
        x = (stack_features(p, ctx, self.context_columns) - self.mu) / self.sd
        return x @ self.w + self.c + self.bias

    def proba(self, p: np.ndarray, ctx: np.ndarray) -> np.ndarray:
        """`combine` the CNN's ``p`` with this stage's logits."""
        if len(p) == 0:
            return np.zeros((0, len(BEAT_CLASSES)), np.float32)
        return combine(p, self.logits(p, ctx), self.meta.get("v_keep", V_KEEP), self.meta.get("f_keep", F_KEEP))

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mu=self.mu.astype(np.float32), sd=self.sd.astype(np.float32), w=self.w.astype(np.float32),
                 c=self.c.astype(np.float32), bias=self.bias.astype(np.float32), meta=np.array(json.dumps(self.meta)))
        return buf.getvalue()

    def save(self, out_dir: Path) -> Path:
        return write_hashed(out_dir, "beatstack", self.to_bytes(), ".npz")

    @classmethod
    def load(cls, path: Path) -> "BeatStack":
        z = np.load(io.BytesIO(Path(path).read_bytes()))
        return cls(*(z[k].astype(np.float64) for k in ("mu", "sd", "w", "c", "bias")), json.loads(str(z["meta"])),
                   Path(path).name)


@dataclass
class StackedBeats:
    """The deployed beat classifier: the CNN, then `BeatStack`. ``proba(waves, ctx)`` with the
    (N, 7) context of `beat_context` (the CNN takes its first five columns)."""

    cnn: Classifier
    stack: BeatStack

    @property
    def classes(self) -> tuple[str, ...]:
        return self.cnn.classes

    @property
    def name(self) -> str:
        return f"{self.cnn.name}+{self.stack.name}"

    @property
    def meta(self) -> dict:
        return self.cnn.meta

    def proba(self, x: np.ndarray, ctx: np.ndarray, batch: int = 256) -> np.ndarray:
        return self.stack.proba(self.cnn.proba(x, ctx, batch), ctx)  # the CNN takes the RR part itself


# --------------------------------------------------------------------------- fitting
def _fit_lr(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    import torch

    xt = torch.tensor(x, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.int64)
    wt = torch.tensor(w, dtype=torch.float64)
    k = len(BEAT_CLASSES)
    W = torch.zeros(x.shape[1], k, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, c], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        ce = torch.nn.functional.cross_entropy(xt @ W + c, yt, reduction="none")
        loss = (wt * ce).sum() / wt.sum() + l2 * (W ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach().numpy(), c.detach().numpy()


def macro_f1(y: np.ndarray, pred: np.ndarray, classes=(0, 1, 2)) -> float:
    f = []
    for k in classes:
        tp = float(((y == k) & (pred == k)).sum())
        f.append(2 * tp / max(float((y == k).sum() + (pred == k).sum()), 1.0))
    return float(np.mean(f))


def tune_bias(p: np.ndarray, logits: np.ndarray, y: np.ndarray, grid=np.arange(-3.0, 3.01, 0.25)) -> np.ndarray:
    """The S logit offset (V's and F's stay 0) that maximises the `macro_f1` of `combine`; ties keep
    the offset nearest 0."""
    best, bias = -1.0, np.zeros(logits.shape[1])
    for g in sorted(grid, key=abs):
        b = np.zeros(logits.shape[1])
        b[1] = g
        m = macro_f1(y, combine(p, logits + b).argmax(1))
        if m > best + 1e-12:
            best, bias = m, b
    return bias


def fit_stack(p: np.ndarray, ctx: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 4) -> tuple[BeatStack, dict]:
    """Fit on out-of-fold CNN probabilities ``p`` with contexts ``ctx`` and labels ``y``;
    ``groups``: each row's patient (record), for the patient-wise choice of the offsets."""
    columns = int(np.asarray(ctx).shape[1])
    x = stack_features(p, ctx, columns)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    x = (x - mu) / sd
    counts = np.bincount(y, minlength=len(BEAT_CLASSES)).astype(np.float64)
    w = (counts.sum() / np.maximum(counts, 1)) ** 0.5
    w = w[y]
    recs = np.unique(groups)
    oof = np.zeros((len(y), len(BEAT_CLASSES)))
    for k in range(folds):
        held = np.isin(groups, recs[k::folds])
        W, c = _fit_lr(x[~held], y[~held], w[~held])
        oof[held] = x[held] @ W + c
    bias = tune_bias(p, oof, y)
    W, c = _fit_lr(x, y, w)
    from wardstream.eval_classifier import class_scores, confusion

    pred = combine(p, oof + bias).argmax(1)
    k = len(BEAT_CLASSES)
    report = {"rows": int(len(y)), "class_counts": counts.astype(int).tolist(), "bias": bias.tolist(),
              "cv_macro_f1": macro_f1(y, pred), "cnn_macro_f1": macro_f1(y, p.argmax(1)),
              "cv": class_scores(confusion(y, pred, k), BEAT_CLASSES),
              "cnn": class_scores(confusion(y, p.argmax(1), k), BEAT_CLASSES)}
    return BeatStack(mu, sd, W, c, bias, {"fit": report, "v_keep": V_KEEP, "f_keep": F_KEEP,
                                           "context_columns": columns}), report


def oof_table(data_dir: Path, folds: int = 4, epochs: int = 10, seed: int = 0, threads: int = 2,
              codec_model: int | None = 2, out_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Out-of-fold CNN outputs over DS1: per fold of `beat_cv.fold_records`, a CNN trained on the
    other folds by the deployed recipe (`train_beat`; finished folds are reused from
    ``out_dir/folds.json``) scores the held-out records' annotated beats. -> arrays ``p`` (N, 4),
    ``ctx`` (N, 7), ``y`` (N,), ``record`` (N,)."""
    from wardmodels.beat_cv import fold_records
    from wardmodels.clf_data import beat_table
    from wardmodels.frontend import filter_record
    from wardmodels.train_classifier import RUNS, load_classifier, train_beat
    from wardstream import datasets as ds

    data_dir = Path(data_dir)
    out_dir = Path(out_dir or RUNS / "beat-stack")
    out_dir.mkdir(parents=True, exist_ok=True)
    done_path = out_dir / "folds.json"
    done = json.loads(done_path.read_text()) if done_path.exists() else {}
    rows: dict[str, list] = {"p": [], "ctx": [], "y": [], "record": []}
    for k, held in enumerate(fold_records(data_dir, folds)):
        key = json.dumps({"held": held, "epochs": epochs, "seed": seed, "codec_model": codec_model})
        if key not in done or not Path(done[key]).exists():
            log.info("beat stack: training the CNN without fold %d/%d %s", k + 1, folds, held)
            res = train_beat(data_dir, epochs, seed=seed, threads=threads, out_dir=out_dir, codec_model=codec_model,
                             records=[r for r in ds.DS1 if r not in held])
            done[key] = res["weights"]
            done_path.write_text(json.dumps(done, indent=1))
        clf = load_classifier(Path(done[key]))
        for name in held:
            rec = ds.load_mitdb(data_dir, name)
            x = filter_record(rec.ecg_mv)
            b = np.round(rec.beat_times_s * FS).astype(np.int64)
            y = aami_labels(rec.beat_symbols)
            ok = (y >= 0) & (b >= BEAT_PRE) & (b < len(x) - BEAT_POST)
            w, ctx, _ = beat_table(x, b, None)
            rows["p"].append(clf.proba(w[ok], ctx[ok]))
            rows["ctx"].append(ctx[ok])
            rows["y"].append(y[ok])
            rows["record"].append(np.full(int(ok.sum()), name))
    return {k: np.concatenate(v) for k, v in rows.items()}


def train_stack(data_dir: Path, folds: int = 4, epochs: int = 10, seed: int = 0, threads: int = 2,
                codec_model: int | None = 2, out_dir: Path | None = None, runs_dir: Path | None = None) -> dict:
    """`oof_table`, `fit_stack`, save. -> {"weights": path, **report}."""
    from wardmodels.train_classifier import RUNS

    t = oof_table(data_dir, folds, epochs, seed, threads, codec_model, runs_dir)
    stack, report = fit_stack(t["p"], t["ctx"], t["y"], t["record"], folds)
    stack.meta["recipe"] = {"folds": folds, "cnn_epochs": epochs, "seed": seed, "codec_model": codec_model}
    path = stack.save(Path(out_dir or RUNS))
    log.info("beat stack %s: %s", path.name, json.dumps(report))
    return {"weights": str(path), **report}
