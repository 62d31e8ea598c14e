"""The edge side of the Dynamic-Deep levels: the integer level chain and the per-window analysis
the device runs before it picks a level.

Integer chain (continues the trunk spec of `wardmodels.int8`; ``z`` is the trunk's int16 output at
scale 2^-p). For chain layer i = 0, 1, 2 (levels 3, 4, 5)::

    x_0 = z,  x_i = lrelu(y_{i-1}) for i > 0
    acc = b_i + sum_{c,k} w_i[o,c,k] * x_i[c, 2t + k - 1]       (kernel 3, stride 2, zero padding)
    y_i = clamp((acc * m_i[o] + (1 << (s_i[o] - 1))) >> s_i[o], -32768, 32767)   scale 2^-p_i
    lrelu(v) = v if v >= 0 else (v * 6554 + 32768) >> 16
    index[t] = argmin_k sum_d (y_i[d,t] - (e_i[k,d] << (p_i - q_i)))^2      (ties: smallest k)

``w_i`` int8 per output channel, ``b_i`` int64, ``e_i`` the level's int8 codebook at scale 2^-q_i.

Analysis (`analyse`): one pass gives the indices of every level and the predictor's features —
per level the relative quantisation distortion of the window (mean and worst position, log10),
plus the window's scale code; the history features (the mean of the previous four windows'
features) are added by the caller that keeps the stream (`with_history`). Since 2026-12-02 the
device also runs the pipeline's streaming QRS detector on its own filtered ECG (`TaskStream`):
how close its decisions were, the beats, rhythm and noise of the window — what the task error
depends on and the latent distortion does not show (`edge_features` puts the two together).
Opt-in since 2026-12-03 (`DecodeCheck`, the "decode" predictor): the device also decodes every
level and runs the same detector on each, which tells it the QRS part of each level's task error.
Opt-in since 2026-12-05 (the "rhythm" predictor): on top, a small rhythm model on the last 10 s of
the original and of every level (`wardmodels.edge_rhythm`), which tells it the KL part.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import torch

from processors.qrs import QrsState, ecg_peaks_stream
from wardmodels.int8 import SLOPE_Q16, _conv, _multiplier, _requant, codebook_exponent

HEADROOM = 1.5
HISTORY = 4  # previous windows averaged into the history features


def lrelu_int(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.int64)
    return np.where(v >= 0, v, (v * SLOPE_Q16 + 32768) >> 16)


@dataclass
class IntChain:
    """One modality's integer level chain."""

    convs: list[dict]  # w int8 (O,I,3), b int64, m_pos int32, shift int8, p_out int
    codebooks: list[np.ndarray]  # int8 (K, w)
    cb_exp: list[int]
    p_in: int

    def run(self, z: np.ndarray) -> list[np.ndarray]:
        """z int64 (N, D, 32) at 2^-p_in -> [y3, y4, y5] int64 at 2^-p_i."""
        ys, x = [], np.asarray(z, np.int64)
        for i, c in enumerate(self.convs):
            inp = x if i == 0 else lrelu_int(x)
            acc = np.rint(_conv(inp.astype(np.float64), c["w"].astype(np.float64), 2)).astype(np.int64) \
                + c["b"].astype(np.int64)[None, :, None]
            m = c["m_pos"].astype(np.int64)
            y = _requant(acc, m, m, c["shift"].astype(np.int64), -32768, 32767)
            ys.append(y)
            x = y
        return ys

    def search(self, i: int, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """y int64 (N, w, T) -> (indices (N, T), squared error (N, T), squared norm (N, T)) in
        units of 2^-2p_i."""
        n, w, t = y.shape
        r = y.transpose(0, 2, 1).reshape(-1, w)
        e = self.codebooks[i].astype(np.int64) << np.int64(self.convs[i]["p_out"] - self.cb_exp[i])
        dots = np.rint(r.astype(np.float64) @ e.T.astype(np.float64)).astype(np.int64)
        idx = ((e * e).sum(1)[None, :] - 2 * dots).argmin(1)
        err = ((r - e[idx]) ** 2).sum(1)
        return idx.reshape(n, t), err.reshape(n, t), (r * r).sum(1).reshape(n, t)

    def nbytes(self) -> int:
        total = 0
        for c in self.convs:
            o = c["w"].shape[0]
            total += c["w"].size + 8 * o + 4 * o + o + 1
        return total + sum(cb.size + 1 for cb in self.codebooks)

    def arrays(self, prefix: str) -> dict:
        out = {f"{prefix}/p_in": np.array(self.p_in, np.int32)}
        for i, c in enumerate(self.convs):
            for k in ("w", "b", "m_pos", "shift"):
                out[f"{prefix}/conv{i}/{k}"] = c[k]
            out[f"{prefix}/conv{i}/p_out"] = np.array(c["p_out"], np.int32)
            out[f"{prefix}/cb{i}"] = self.codebooks[i]
            out[f"{prefix}/cb{i}/q"] = np.array(self.cb_exp[i], np.int32)
        return out

    @classmethod
    def from_arrays(cls, z, prefix: str) -> "IntChain":
        n = len([k for k in z.files if k.startswith(f"{prefix}/conv") and k.endswith("/w")])
        convs = [{k: z[f"{prefix}/conv{i}/{k}"] for k in ("w", "b", "m_pos", "shift")}
                 | {"p_out": int(z[f"{prefix}/conv{i}/p_out"])} for i in range(n)]
        return cls(convs, [z[f"{prefix}/cb{i}"] for i in range(n)],
                   [int(z[f"{prefix}/cb{i}/q"]) for i in range(n)], int(z[f"{prefix}/p_in"]))


def quantise_chain(dd, modality: str, z_float: np.ndarray, p_in: int) -> IntChain:
    """Calibrate the chain of a trained `DynamicCodec` on float trunk outputs ``z_float``."""
    chain, vqs = dd.chain[modality], dd.vq[modality]
    with torch.no_grad():
        ys = [y.numpy().astype(np.float64) for y in chain(torch.from_numpy(z_float.astype(np.float32)))]
    convs, cbs, exps = [], [], []
    s_in = 2.0 ** -p_in
    for i, conv in enumerate(chain.convs):
        ymax = HEADROOM * float(np.abs(ys[i]).max())
        p_out = int(np.floor(np.log2(32767.0 / max(ymax, 1e-8))))
        w = conv.weight.detach().double().numpy()
        b = conv.bias.detach().double().numpy()
        sw = np.maximum(np.abs(w).reshape(w.shape[0], -1).max(1), 1e-12) / 127.0
        wq = np.clip(np.round(w / sw[:, None, None]), -127, 127).astype(np.int8)
        bq = np.round(b / (s_in * sw)).astype(np.int64)
        m_pos, shift = _multiplier(s_in * sw / 2.0 ** -p_out)
        convs.append({"w": wq, "b": bq, "m_pos": m_pos.astype(np.int32), "shift": shift.astype(np.int8),
                      "p_out": p_out})
        e = vqs[i].embed.detach().double().numpy()
        q = min(codebook_exponent(e), p_out)
        cbs.append(np.clip(np.round(e * 2.0 ** q), -127, 127).astype(np.int8))
        exps.append(q)
        s_in = 2.0 ** -p_out
    return IntChain(convs, cbs, exps, p_in)


def snap_dd_codebooks(dd, chains: dict[str, IntChain]) -> None:
    """The cloud looks codewords up on the same int8 grid the edge searches."""
    with torch.no_grad():
        for m, ch in chains.items():
            for i, vq in enumerate(dd.vq[m]):
                vq.embed.copy_(torch.from_numpy(ch.codebooks[i].astype(np.float32) * 2.0 ** -ch.cb_exp[i]))


def save_chains(chains: dict[str, IntChain]) -> bytes:
    arrays = {}
    for m, ch in chains.items():
        arrays.update(ch.arrays(m))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def load_chains(path) -> dict[str, IntChain]:
    z = np.load(path)
    names = sorted({k.split("/")[0] for k in z.files})
    return {m: IntChain.from_arrays(z, m) for m in names}


# --------------------------------------------------------------------------- analysis
N_LEVELS = 5  # VQ levels 1..5 (level 0, raw, has no distortion)
FEATURES = 2 * N_LEVELS + 1


def _log_rel(err: np.ndarray, norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rel = (err + 1.0) / (norm + 1.0)
    return np.log10(rel.mean(1) + 1e-6), np.log10(rel.max(1) + 1e-6)


def analyse_int(base_mod, chain: IntChain, x: np.ndarray, codes: np.ndarray):
    """Normalised windows (N, 256) through the integer trunk, both base stages and the chain ->
    (indices per level {1..5: (N, n_L)}, features (N, FEATURES) float32)."""
    z = base_mod.run(x)  # int64 (N, D, 32)
    n, d, t = z.shape
    r = z.transpose(0, 2, 1).reshape(-1, d)
    norm0 = (r * r).sum(1)
    stage_idx, stage_err = [], []
    for e, e_t, e_norm in base_mod._codewords():
        dots = np.rint(r.astype(np.float64) @ e_t).astype(np.int64)
        k = (e_norm[None, :] - 2 * dots).argmin(1)
        r = r - e[k]
        stage_idx.append(k.reshape(n, t))
        stage_err.append((r * r).sum(1).reshape(n, t))
    chain_out = [chain.search(i, y) for i, y in enumerate(chain.run(z))]
    return _assemble(stage_idx, stage_err, norm0.reshape(n, t), chain_out, codes)


def _assemble(stage_idx, stage_err, norm0, chain_out, codes):
    """Indices per level and the feature row of each window from one pass's pieces: the base
    stages' indices and squared residuals (over the squared norm of z), and per chain level
    (indices, squared error, squared norm)."""
    idx = {1: np.concatenate(stage_idx, 1), 2: stage_idx[0]}
    mean, worst = [None] * N_LEVELS, [None] * N_LEVELS
    mean[0], worst[0] = _log_rel(stage_err[1], norm0)
    mean[1], worst[1] = _log_rel(stage_err[0], norm0)
    for i, (k, err, nrm) in enumerate(chain_out):
        idx[3 + i] = k
        mean[2 + i], worst[2 + i] = _log_rel(err, nrm)
    f = np.stack(mean + worst + [np.asarray(codes, np.float64) / 16.0], 1).astype(np.float32)
    return {L: v.astype(np.uint16) for L, v in idx.items()}, f


def analyse_float(dd, modality: str, p_in: int, chain: IntChain, x: np.ndarray, codes: np.ndarray):
    """The same analysis with the float network whose weights are the integer grid's (the
    simulator's fast path, ``Settings.sim_encoder="fp32"``): distortions expressed in the integer
    path's units (z at 2^-p, chain outputs at 2^-p_i), so the features match it up to rounding."""
    with torch.no_grad():
        z = dd.trunk(modality, torch.from_numpy(np.asarray(x, np.float32)))
        ys = dd.chain[modality](z)
    z = z.double().numpy() * 2.0 ** p_in
    n, d, t = z.shape
    r = z.transpose(0, 2, 1).reshape(-1, d)
    norm0 = (r * r).sum(1).reshape(n, t)
    stage_idx, stage_err = [], []
    for vq in dd.base.vq[modality].stages:
        e = vq.embed.detach().double().numpy() * 2.0 ** p_in
        k = ((e * e).sum(1)[None, :] - 2 * r @ e.T).argmin(1)
        r = r - e[k]
        stage_idx.append(k.reshape(n, t))
        stage_err.append((r * r).sum(1).reshape(n, t))
    chain_out = []
    for i, y in enumerate(ys):
        sc = 2.0 ** chain.convs[i]["p_out"]
        yy = y.double().numpy().transpose(0, 2, 1).reshape(-1, y.shape[1]) * sc
        e = dd.vq[modality][i].embed.detach().double().numpy() * sc
        k = ((e * e).sum(1)[None, :] - 2 * yy @ e.T).argmin(1)
        chain_out.append((k.reshape(n, -1), ((yy - e[k]) ** 2).sum(1).reshape(n, -1), (yy * yy).sum(1).reshape(n, -1)))
    return _assemble(stage_idx, stage_err, norm0, chain_out, codes)


def with_history(f: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
    """Per-window features (T, F) of one stream in order -> (T, 2F): own + mean of the previous
    ``HISTORY`` windows (own features where there is no history yet). ``prev``: features of the
    windows before this call, oldest first (a device's ring buffer)."""
    allf = f if prev is None or not len(prev) else np.concatenate([prev, f])
    off = len(allf) - len(f)
    c = np.concatenate([np.zeros((1, f.shape[1])), np.cumsum(allf, 0, dtype=np.float64)])
    out = np.empty_like(f)
    for j in range(len(f)):
        i = off + j
        lo = max(0, i - HISTORY)
        out[j] = (c[i] - c[lo]) / (i - lo) if i > lo else allf[i]
    return np.concatenate([f, out], 1).astype(np.float32)


# --------------------------------------------------------------------------- task features
TASK_FEATURES = 7
RR_SPAN_S = 10.0  # the rhythm classifier's crop


@dataclass
class TaskStream:
    """What the device can see of the downstream task in its own (filtered) ECG, one window at a
    time: it runs the pipeline's streaming QRS detector (`processors.qrs`; 0.7 ms per window on
    this project's CPU, in numpy) and keeps the beats of the last 10 s. Per window (`step`):

    0. log1p(beats decided by this window);
    1. the smallest |ln(peak level / threshold)| over the detector's candidate peaks decided by
       this window (3 when none): a beat or a noise peak near the threshold is one a
       reconstruction can flip;
    2. how many candidates were within a factor 2 of the threshold;
    3. the RR irregularity of the last 10 s (median |ΔRR| / median RR; 0 below 3 intervals): the
       rhythm classifier's hard cases;
    4. log10 of the detector's signal/noise peak levels;
    5. log10 of the window's high-frequency share (sum of squared first differences / sum of
       squares): noise and sharp QRS complexes that coarse levels smooth;
    6. heart rate of the last 10 s / 100 bpm (0 below 2 beats).
    """

    fs: int = 128
    qrs: QrsState | None = None  # the detector's carried state
    beats: list[int] = field(default_factory=list)  # sample indices of the last 10 s of beats
    last_beats: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # decided by the last step

    def step(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        trace: list = []
        self.qrs, b = ecg_peaks_stream(x, self.fs, self.qrs, trace=trace)
        self.last_beats = np.asarray(b.samples, np.int64)
        now = self.qrs.n_seen
        self.beats = [t for t in self.beats + [int(s) for s in b.samples] if t > now - RR_SPAN_S * self.fs]
        f = np.zeros(TASK_FEATURES, np.float32)
        f[0] = np.log1p(len(b.samples))
        if trace:
            m = np.abs(np.log(np.maximum([lv for lv, _ in trace], 1e-12) / np.maximum([t for _, t in trace], 1e-12)))
            f[1] = min(3.0, float(m.min()))
            f[2] = float((m < np.log(2.0)).sum())
        else:
            f[1] = 3.0
        rr = np.diff(self.beats) if len(self.beats) > 1 else np.zeros(0)
        if len(rr) >= 3:
            f[3] = float(np.median(np.abs(np.diff(rr))) / max(np.median(rr), 1.0))
        if len(rr) >= 1:
            f[6] = float(60.0 * self.fs / np.median(rr) / 100.0)
        f[4] = float(np.log10((self.qrs.spk + 1e-9) / (self.qrs.npk + 1e-9)))
        f[5] = float(np.log10((np.sum(np.diff(x) ** 2) + 1e-9) / (np.sum(x * x) + 1e-9)))
        return f


def task_features(x: np.ndarray, fs: int = 128) -> np.ndarray:
    """Filtered ECG of one stream (n * 256 samples) -> (n, TASK_FEATURES), window by window."""
    st = TaskStream(fs)
    n = len(x) // 256
    if n == 0:
        return np.zeros((0, TASK_FEATURES), np.float32)
    return np.stack([st.step(x[256 * t:256 * (t + 1)]) for t in range(n)])


# --------------------------------------------------------------------------- decode check
DECODE_FEATURES = 2 * N_LEVELS
DECODE_MARGIN_S = 0.5  # beats kept before the previous window's start (> the 0.15-s match tolerance)


def window_beat_error(ref_s: np.ndarray, det_s: np.ndarray, lo: float, hi: float) -> float:
    """The QRS part of the task error (`wardmodels.predictor.window_qrs_error`) of the window
    [lo, hi) s from the beats known so far (sorted times in s): (missed + extra) / beats + mean
    |Δt| of the matched ones in units of 50 ms."""
    from wardmodels.predictor import QRS_TIME_UNIT_S, QRS_TOL_S
    from wardstream.eval_qrs import match_indices

    m = match_indices(ref_s, det_s, QRS_TOL_S)
    ok = m >= 0
    inw = (ref_s >= lo) & (ref_s < hi)
    used = np.zeros(len(det_s), bool)
    used[m[ok]] = True
    extra = int(((det_s >= lo) & (det_s < hi) & ~used).sum())
    hit = inw & ok
    timing = float(np.abs(det_s[m[hit]] - ref_s[hit]).mean()) / QRS_TIME_UNIT_S if hit.any() else 0.0
    return (int((inw & ~ok).sum()) + extra) / max(int(inw.sum()), 1) + timing


@dataclass
class DecodeCheck:
    """The device decodes its own indices at every VQ level (the cloud's decoder, the ECG alone,
    as the task error is defined) and runs the pipeline's streaming QRS detector on each level's
    reconstructed stream, beside the one on its original (`TaskStream`). At the end of window t it
    scores, per level, the beats decided so far (`window_beat_error`): window t — partly, beats the
    detectors have not decided yet do not count — and window t-1 as known now. Features (`step`):
    log1p of those 2 × N_LEVELS errors, levels 1..5 for window t, then for window t-1 (0 at the
    first window). No feedback from the cloud: the device knows the QRS part of each level's task
    error nearly exactly, the rhythm part stays predicted."""

    fs: int = 128
    states: list = field(default_factory=lambda: [None] * N_LEVELS)
    ref: np.ndarray = field(default_factory=lambda: np.zeros(0))  # seconds since the stream began
    det: list = field(default_factory=lambda: [np.zeros(0) for _ in range(N_LEVELS)])
    windows: int = 0

    def step(self, ref_beats: np.ndarray, recon: np.ndarray) -> np.ndarray:
        """``ref_beats``: samples of the beats the original's detector decided in this window
        (`TaskStream.last_beats`); ``recon`` (N_LEVELS, n): this window decoded at levels 1..5."""
        t, f = self.windows, np.zeros(DECODE_FEATURES, np.float32)
        span = recon.shape[1] / self.fs
        keep = span * (t - 1) - DECODE_MARGIN_S
        self.ref = np.concatenate([self.ref, np.asarray(ref_beats, np.float64) / self.fs])
        self.ref = self.ref[self.ref >= keep]
        for j in range(N_LEVELS):
            self.states[j], b = ecg_peaks_stream(np.asarray(recon[j], np.float64), self.fs, self.states[j])
            d = np.concatenate([self.det[j], np.asarray(b.samples, np.float64) / self.fs])
            self.det[j] = d = d[d >= keep]
            f[j] = window_beat_error(self.ref, d, span * t, span * (t + 1))
            if t > 0:
                f[N_LEVELS + j] = window_beat_error(self.ref, d, span * (t - 1), span * t)
        self.windows += 1
        return np.log1p(f)


def decode_features(x: np.ndarray, recon: np.ndarray, fs: int = 128) -> np.ndarray:
    """Filtered ECG of one stream (n * 256) and its reconstructions at levels 1..5 (N_LEVELS,
    n * 256) -> (n, DECODE_FEATURES), window by window as the device computes them."""
    n = len(x) // 256
    task, chk = TaskStream(fs), DecodeCheck(fs)
    out = np.zeros((n, DECODE_FEATURES), np.float32)
    for t in range(n):
        task.step(x[256 * t:256 * (t + 1)])
        out[t] = chk.step(task.last_beats, recon[:, 256 * t:256 * (t + 1)])
    return out


RHYTHM_CHECK_FEATURES = N_LEVELS  # `wardmodels.edge_rhythm.RhythmCheck`: log1p KL per level


def predictor_inputs(task: bool, decode: bool = False, rhythm: bool = False) -> int:
    """How many inputs a predictor reads: the distortion features with their history, plus the
    task features if ``task``, plus the decode check's if ``decode`` (which needs ``task``), plus
    the device's small rhythm model's if ``rhythm`` (`wardmodels.edge_rhythm`; needs ``decode``)."""
    return 2 * FEATURES + (TASK_FEATURES if task else 0) + (DECODE_FEATURES if decode else 0) \
        + (RHYTHM_CHECK_FEATURES if rhythm else 0)


def reads_task(n_in: int) -> bool:
    """Whether a predictor with ``n_in`` inputs reads the task features (`TaskStream`)."""
    return n_in in (predictor_inputs(True), predictor_inputs(True, True), predictor_inputs(True, True, True))


def reads_decode(n_in: int) -> bool:
    """Whether a predictor with ``n_in`` inputs reads the decode check (`DecodeCheck`)."""
    return n_in in (predictor_inputs(True, True), predictor_inputs(True, True, True))


def reads_rhythm(n_in: int) -> bool:
    """Whether a predictor with ``n_in`` inputs reads the device's small rhythm model
    (`wardmodels.edge_rhythm.RhythmCheck`)."""
    return n_in == predictor_inputs(True, True, True)


def edge_features(with_hist: np.ndarray, task: np.ndarray | None, n_in: int,
                  decode: np.ndarray | None = None, rhythm: np.ndarray | None = None) -> np.ndarray:
    """The predictor's input: the distortion features with their history (`with_history`,
    2 * FEATURES columns), followed by the task features (`TaskStream`) when the predictor was
    trained with them (``n_in == predictor_inputs(True)``), the decode check's
    (`DecodeCheck`, ``n_in == predictor_inputs(True, True)``) and the small rhythm model's
    (`edge_rhythm.RhythmCheck`, ``n_in == predictor_inputs(True, True, True)``)."""
    if n_in == predictor_inputs(False):
        return with_hist
    if not reads_task(n_in):
        raise ValueError(f"a predictor with {n_in} inputs matches no edge feature layout")
    if task is None:
        raise ValueError("this predictor needs the task features (TaskStream) of every window")
    parts = [with_hist, task]
    if reads_decode(n_in):
        if decode is None:
            raise ValueError("this predictor needs the decode check (DecodeCheck) of every window")
        parts.append(decode)
    if reads_rhythm(n_in):
        if rhythm is None:
            raise ValueError("this predictor needs the small rhythm model's KL (edge_rhythm.RhythmCheck) of every window")
        parts.append(rhythm)
    return np.concatenate(parts, 1).astype(np.float32)
