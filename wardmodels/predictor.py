"""Edge error predictors for the Dynamic-Deep levels, calibrated so the bound means what it says.

Task error of a window at level L (what the cloud would see), two parts kept apart so their
weights stay configurable (`TaskWeights`):

* ``kl``: KL(p_orig || p_L) of the deployed rhythm classifier on the 10 s ending with the window,
  original vs every window of those 10 s at level L (zero-padded at a record's start, as the
  pipeline does);
* ``qrs``: the pipeline's streaming QRS detector on the original vs the reconstructed stream:
  per window (missed + extra beats) / max(1, beats in the original) plus the mean |Δt| of the
  matched beats in units of 50 ms (beats matched one-to-one within 150 ms).

``error = w_kl * kl + w_qrs * qrs``; level 0 (raw) has error 0. Optionally (``w_beat`` > 0, off by
default) a third part, ``beat`` (`beat_term`): the largest change, over the window's beats, of the
deployed beat classifier's class probabilities — what the other two do not see when a ventricular
beat loses its shape at a coarse level (docs/dynamic-deep.md, the ventricular-run alarm).

The predictor is one small MLP on the edge features (`wardmodels.dd_edge`: per-level latent
distortion, scale code, and their mean over the previous four windows; optionally the task
features of `dd_edge.TaskStream`, the device's own QRS detector on its ECG) with one output per
VQ level, trained by MSE on ``log1p(error)`` (or a quantile of it). Calibration (conformal risk
control over held-out patients): the device picks the highest level L with ``pred_L + lam <= log1p(bound)``; for each
bound on a grid, ``lam`` is the smallest slack whose calibration violation rate ``v`` satisfies
``(n * v + 1) / (n + 1) <= alpha`` (the violation indicator is taken as non-increasing in the
slack; the test split measures it); optionally (``delta``) the upper ``1 - delta`` bound of a
bootstrap over whole calibration patients must be under ``alpha`` too, since windows of one
patient are not exchangeable with each other. The table (bound -> lam) ships with the weights; at
run time a bound between grid points uses the grid bound just below it (conservative). The MLP
can also fit a quantile of each level's error (pinball loss) instead of the mean.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from wardmodels.dd_edge import N_LEVELS, decode_features, edge_features, task_features, with_history
from wardmodels.hashname import DIGITS, write_hashed

QRS_TOL_S = 0.15
QRS_TIME_UNIT_S = 0.05
LEVELS = tuple(range(1, N_LEVELS + 1))


@dataclass(frozen=True)
class TaskWeights:
    kl: float = 1.0
    qrs: float = 1.0
    # the beat term (`beat_term`), 0: left out, as in the task error
    beat: float = 0.0

    def as_meta(self) -> dict:
        """As a predictor file stores them: ``beat`` only when it is used, so that files fitted
        without it keep their bytes (and their hash names)."""
        return {k: v for k, v in asdict(self).items() if k != "beat" or v}


def window_qrs_error(ref_s: np.ndarray, det_s: np.ndarray, n_windows: int, win_s: float = 2.0) -> np.ndarray:
    from wardstream.eval_qrs import match_indices

    m = match_indices(ref_s, det_s, QRS_TOL_S)
    ok = m >= 0
    wr = np.minimum((ref_s / win_s).astype(int), n_windows - 1)
    n_ref = np.bincount(wr, minlength=n_windows)[:n_windows]
    missed = np.bincount(wr[~ok], minlength=n_windows)[:n_windows]
    used = np.zeros(len(det_s), bool)
    used[m[ok]] = True
    wd = np.minimum((det_s / win_s).astype(int), n_windows - 1)
    extra = np.bincount(wd[~used], minlength=n_windows)[:n_windows]
    dt = np.abs(det_s[m[ok]] - ref_s[ok])
    dsum = np.bincount(wr[ok], weights=dt, minlength=n_windows)[:n_windows]
    nm = np.bincount(wr[ok], minlength=n_windows)[:n_windows]
    timing = np.where(nm > 0, dsum / np.maximum(nm, 1), 0.0) / QRS_TIME_UNIT_S
    return (missed + extra) / np.maximum(n_ref, 1) + timing


def window_crops(x: np.ndarray, n_windows: int) -> np.ndarray:
    """The rhythm classifier's input for the 10 s ending with each window."""
    from wardmodels.classifier import RHYTHM_SAMPLES, rhythm_input

    out = np.empty((n_windows, RHYTHM_SAMPLES), np.float32)
    for t in range(n_windows):
        end = 256 * (t + 1)
        out[t] = rhythm_input(x[None, max(0, end - RHYTHM_SAMPLES):end])[0]
    return out


def kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-8, 1)
    q = np.clip(q, 1e-8, 1)
    return (p * (np.log(p) - np.log(q))).sum(1)


@dataclass
class RecordAnalysis:
    """One record through every level: features, levels' task errors, classifier outputs."""

    feats: np.ndarray  # (T, 2F) with history
    kl: np.ndarray  # (T, 5) levels 1..5
    qrs: np.ndarray  # (T, 5)
    p_orig: np.ndarray  # (T, 4) per-window crop softmax on the original
    p_level: np.ndarray  # (5, T, 4)
    task: np.ndarray | None = None  # (T, TASK_FEATURES): `dd_edge.TaskStream` on the original
    decode: np.ndarray | None = None  # (T, DECODE_FEATURES): `dd_edge.DecodeCheck`
    rhythm: np.ndarray | None = None  # (T, RHYTHM_FEATURES): `edge_rhythm.RhythmCheck` (not cached with the rest)
    beat: np.ndarray | None = None  # (T, 5): `beat_term` (not cached with the rest)

    def error(self, w: TaskWeights) -> np.ndarray:
        e = w.kl * self.kl + w.qrs * self.qrs
        if w.beat:
            if self.beat is None:
                raise ValueError("task weights with a beat term need the analysis's beat term (load_part(beat=True))")
            e = e + w.beat * self.beat
        return e

    def features(self, n_in: int) -> np.ndarray:
        """The predictor's input rows for a predictor with ``n_in`` inputs."""
        return edge_features(self.feats, self.task, n_in, self.decode, self.rhythm)


def level_reconstructions(codec, idx: dict, codes: np.ndarray) -> np.ndarray:
    """One stream's ECG decoded at every VQ level, alone (as the task error is defined):
    indices per level and scale codes of its n windows -> (N_LEVELS, n * 256)."""
    return np.stack([codec.decode({"ecg": idx[L], "eeg": None}, {"ecg": codes, "eeg": None})["ecg"].ravel()
                     for L in LEVELS])


def analyse_record(codec, clf, x: np.ndarray) -> RecordAnalysis | None:
    """Filtered ECG of one record (mV) -> its analysis at every level (int8 edge, as deployed)."""
    from wardmodels.frontend import normalise
    from processors.qrs import detect_stream

    n = len(x) // 256
    if n < 1:
        return None
    x = x[: n * 256]
    xn, codes = normalise(x.reshape(n, 256), "ecg")
    idx, f = codec.analyse("ecg", xn, codes)
    feats = with_history(f)
    ref = detect_stream(x, roundtrip=False)
    p_orig = clf.proba(window_crops(x, n))
    kl = np.zeros((n, N_LEVELS))
    qrs = np.zeros((n, N_LEVELS))
    p_level = np.zeros((N_LEVELS, n, p_orig.shape[1]), np.float32)
    recs = level_reconstructions(codec, idx, codes)
    for j, rec in enumerate(recs):
        det = detect_stream(rec, roundtrip=False)
        qrs[:, j] = window_qrs_error(ref, det, n)
        p_level[j] = clf.proba(window_crops(rec, n))
        kl[:, j] = kl_rows(p_orig, p_level[j])
    return RecordAnalysis(feats, kl, qrs, p_orig, p_level, task_features(x), decode_features(x, recs))


def beat_term(beat_clf, x: np.ndarray, recs: np.ndarray) -> np.ndarray:
    """Filtered ECG of one record (n * 256) and its reconstructions at levels 1..5 -> (n, 5): per
    window and level, the largest total-variation distance ``0.5 * sum |p_L - p_orig|``, over the
    beats the pipeline's detector finds on the original in that window, between ``beat_clf``'s
    class probabilities (N / S / V / F) on the original and on the level's reconstruction. Both
    use the original's beats and RR context (`clf_data.beat_table`), so only the waveform differs;
    a window without a classifiable beat has 0."""
    from processors.qrs import detect_stream
    from wardmodels.classifier import BEAT_POST, BEAT_PRE
    from wardmodels.clf_data import beat_table

    n = len(x) // 256
    term = np.zeros((n, N_LEVELS), np.float32)
    b = np.round(detect_stream(x[: n * 256], roundtrip=False) * 128).astype(np.int64)
    if len(b) < 2:
        return term
    keep = (b >= BEAT_PRE) & (b < n * 256 - BEAT_POST)
    w0, f0, _ = beat_table(x[: n * 256], b, None)
    if not keep.any():
        return term
    p0 = beat_clf.proba(w0[keep], f0[keep])
    win = np.minimum(b[keep] // 256, n - 1)
    for j, rec in enumerate(recs):
        wl, _, _ = beat_table(np.asarray(rec[: n * 256], np.float64), b, None)
        tv = 0.5 * np.abs(beat_clf.proba(wl[keep], f0[keep]) - p0).sum(1)
        np.maximum.at(term[:, j], win, tv.astype(np.float32))
    return term


# --------------------------------------------------------------------------- the predictor
@dataclass
class Predictor:
    mu: np.ndarray
    sd: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    weights: TaskWeights
    alpha: float
    bounds: np.ndarray  # calibrated grid
    lams: np.ndarray
    meta: dict
    # per-level offsets added to the predictions when the level is chosen (not to the prediction
    # the device sends): where the violation budget is spent (`select_offsets`); zeros: none
    offsets: np.ndarray | None = None

    def __post_init__(self):
        if self.offsets is None:
            self.offsets = np.zeros(len(LEVELS), np.float32)

    @property
    def n_in(self) -> int:
        """Inputs: 2F (distortion features with history) or 2F + TASK_FEATURES (`dd_edge.edge_features`)."""
        return int(self.mu.size)

    def predict(self, feats: np.ndarray) -> np.ndarray:
        """(N, n_in) -> predicted log1p(error) for levels 1..5, (N, 5), float32. Each dot product is
        summed in float64 (the products of float32 values are exact there) and rounded to float32
        before the bias is added: float32 matrix products round as the BLAS library orders them,
        this does not (up to float64 rounding), so the firmware (`firmware/encoder/ws_dd.c`) gets
        the same predictions."""
        h = (np.asarray(feats, np.float32) - self.mu) / self.sd
        h = np.maximum((h.astype(np.float64) @ self.w1.T.astype(np.float64)).astype(np.float32) + self.b1, 0)
        return (h.astype(np.float64) @ self.w2.T.astype(np.float64)).astype(np.float32) + self.b2

    def slack(self, bound: float) -> float:
        """Calibrated slack for ``bound``: that of the largest grid bound <= it (conservative);
        below the grid, no VQ level is allowed (inf)."""
        k = np.searchsorted(self.bounds, bound * (1 + 1e-9), side="right") - 1
        return float(self.lams[k]) if k >= 0 else float("inf")

    def choose(self, pred: np.ndarray, bound: float | np.ndarray, lam: float | np.ndarray | None = None,
               allowed: tuple[int, ...] = LEVELS, max_level=None) -> np.ndarray:
        """Highest allowed level whose prediction + slack is under the bound; 0 (raw) if none;
        ``max_level``: per window (or for all) the highest level allowed (a fidelity hold)."""
        pred = np.atleast_2d(pred)
        bound = np.broadcast_to(np.asarray(bound, np.float64), (len(pred),))
        if lam is None:
            lam = np.array([self.slack(b) for b in bound])
        return choose_levels(pred + self.offsets[None, :], bound, lam, allowed, max_level)

    def nbytes(self) -> int:
        """Stored on the device as float16 (weights, normalisation) + the slack table (f32) + the
        level offsets (f32, when any is set) + its id (`digest`, 6 bytes, sent with the audit
        references)."""
        return 2 * (self.mu.size + self.sd.size + self.w1.size + self.b1.size + self.w2.size + self.b2.size) \
            + 8 * len(self.bounds) + (4 * self.offsets.size if self.offsets.any() else 0) + DIGITS // 2

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mu=self.mu.astype(np.float16), sd=self.sd.astype(np.float16),
                 w1=self.w1.astype(np.float16), b1=self.b1.astype(np.float16),
                 w2=self.w2.astype(np.float16), b2=self.b2.astype(np.float16),
                 bounds=self.bounds.astype(np.float64), lams=self.lams.astype(np.float64),
                 **({"offsets": self.offsets.astype(np.float32)} if self.offsets.any() else {}),
                 meta=np.array(json.dumps({"weights": self.weights.as_meta(), "alpha": self.alpha, **self.meta})))
        return buf.getvalue()

    def save(self, out_dir: Path) -> Path:
        return write_hashed(out_dir, "predictor", self.to_bytes(), ".npz")

    @property
    def digest(self) -> str:
        """Its id: the 12 hex digits of its file's name (the sha256 of `to_bytes`, which rewrites a
        loaded file byte for byte), sent by devices with their audit references (wire flag bit 7).
        Computed on each call: hold it where it is needed per frame."""
        return hashlib.sha256(self.to_bytes()).hexdigest()[:DIGITS]

    @classmethod
    def load(cls, path: Path) -> "Predictor":
        return cls.from_bytes(Path(path).read_bytes())

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Predictor":
        z = np.load(io.BytesIO(blob))
        meta = json.loads(str(z["meta"]))
        w = TaskWeights(**meta.pop("weights"))
        alpha = meta.pop("alpha")
        f32 = {k: z[k].astype(np.float32) for k in ("mu", "sd", "w1", "b1", "w2", "b2")}
        return cls(**f32, weights=w, alpha=alpha, bounds=z["bounds"].astype(np.float64),
                   lams=z["lams"].astype(np.float64), meta=meta,
                   offsets=z["offsets"].astype(np.float32) if "offsets" in z.files else None)


def choose_levels(pred: np.ndarray, bound, lam, allowed: tuple[int, ...] = LEVELS, max_level=None) -> np.ndarray:
    """Per window, the highest allowed level with ``pred + lam <= log1p(bound)``; 0 (raw) if none;
    ``max_level`` (per window or one for all; None: no cap): no level above it."""
    pred = np.atleast_2d(pred)
    bound = np.broadcast_to(np.asarray(bound, np.float64), (len(pred),))
    lam = np.broadcast_to(np.asarray(lam, np.float64), (len(pred),))
    ok = pred + lam[:, None] <= np.log1p(bound)[:, None]
    ok &= np.array([L in allowed for L in LEVELS])[None, :]
    if max_level is not None:
        cap = np.broadcast_to(np.asarray(max_level, np.int64), (len(pred),))
        ok &= np.asarray(LEVELS)[None, :] <= cap[:, None]
    lv = np.zeros(len(pred), np.int64)
    for j, L in enumerate(LEVELS):  # higher levels send less: the last ok wins
        lv[ok[:, j]] = L
    return lv


def fit_mlp(x: np.ndarray, y: np.ndarray, hidden: int = 16, epochs: int = 60, seed: int = 0,
            quantile: float | None = None):
    """MSE on log1p(error) (``quantile``: the pinball loss at that quantile instead, so each
    output predicts a quantile of the level's error, as conformalized quantile regression does),
    Adam; returns float32 arrays (mu, sd, w1, b1, w2, b2)."""
    import torch

    def loss_of(out, target):
        if quantile is None:
            return torch.nn.functional.mse_loss(out, target)
        d = target - out
        return torch.maximum(quantile * d, (quantile - 1) * d).mean()

    torch.manual_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-3
    xt = torch.from_numpy(((x - mu) / sd).astype(np.float32))
    yt = torch.from_numpy(np.log1p(y).astype(np.float32))
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, y.shape[1]))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    for ep in range(epochs):
        for g in opt.param_groups:
            g["lr"] = 3e-3 * (0.5 * (1 + np.cos(np.pi * ep / epochs))) + 1e-4
        order = rng.permutation(len(xt))
        for i in range(0, len(order), 512):
            b = torch.from_numpy(order[i:i + 512])
            loss = loss_of(net(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    p = [t.detach().numpy().astype(np.float32) for t in net.parameters()]
    return mu.astype(np.float32), sd.astype(np.float32), p[0], p[1], p[2], p[3]


def violation_rate(levels: np.ndarray, err: np.ndarray, bound: float) -> float:
    """Share of windows whose real error at the chosen level exceeds the bound (level 0: none)."""
    real = chosen_error(levels, err)
    return float((real > bound).mean()) if len(real) else 0.0


def chosen_error(levels: np.ndarray, err: np.ndarray) -> np.ndarray:
    full = np.concatenate([np.zeros((len(err), 1)), err], 1)
    return full[np.arange(len(err)), levels]


def calibrate(pred: np.ndarray, err: np.ndarray, bounds: np.ndarray, alpha: float,
              allowed: tuple[int, ...] = LEVELS, groups: np.ndarray | None = None,
              delta: float | None = None, resamples: int = 400, seed: int = 0,
              strata: np.ndarray | None = None) -> np.ndarray:
    """Conformal risk control: per bound, the smallest slack on a grid whose calibration
    violation rate v satisfies (n v + 1) / (n + 1) <= alpha.

    ``strata`` (a population label per window, e.g. the database a record comes from): the
    condition must hold in every stratum on its own (the slack is the largest of the strata's;
    the violation indicator is taken as non-increasing in the slack), so a population that is a
    minority of the calibration windows cannot hide its violations behind the majority's.

    Windows of one patient are not exchangeable with each other, patients are: with ``groups``
    (a patient / record id per window) and ``delta``, the slack must also keep the upper
    (1 - delta) bootstrap bound of the violation rate, resampling whole patients, under alpha —
    so the bound holds on new patients with probability ~1 - delta rather than on average."""
    if strata is not None:
        if len(strata) != len(pred):
            raise ValueError("calibrate: strata needs a label per window")
        per = [calibrate(pred[m], err[m], bounds, alpha, allowed, None if groups is None else groups[m], delta,
                         resamples, seed) for m in (strata == s for s in np.unique(strata))]
        return np.max(per, axis=0)
    n = len(pred)
    grid = np.concatenate([np.linspace(-1.0, 0, 21)[:-1], np.linspace(0, 3, 301)])
    boot = None
    if delta is not None:
        if groups is None or len(groups) != n:
            raise ValueError("calibrate: delta needs a group (patient) id per window")
        _, g_of = np.unique(groups, return_inverse=True)
        n_g = int(g_of.max()) + 1
        rng = np.random.default_rng(seed)
        # resample weights: how often each patient is drawn, per bootstrap sample
        boot = rng.multinomial(n_g, np.full(n_g, 1.0 / n_g), size=resamples).astype(np.float64)
        sizes = boot @ np.bincount(g_of, minlength=n_g)
    lams = []
    for b in bounds:
        lam = float("inf")
        for g in grid:
            lv = choose_levels(pred, b, g, allowed)
            over = chosen_error(lv, err) > b
            v = float(over.mean()) if n else 0.0
            if (n * v + 1) / (n + 1) > alpha:
                continue
            if boot is not None:
                per_group = np.bincount(g_of, weights=over, minlength=n_g)
                if np.quantile(boot @ per_group / sizes, 1 - delta) > alpha:
                    continue
            lam = float(g)
            break
        lams.append(lam)
    return np.array(lams)
