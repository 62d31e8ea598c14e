"""ECG classifiers: a rhythm classifier (10 s, CinC 2017 classes) and a beat classifier (AAMI).

Both are ResNet1D models after "Resource-Efficient ECG Foundation Networks via Layer-wise Adaptive
Compression": ``H0 = BN(Conv(X))``; blocks ``Z = σ(BN(Conv(H)))``, ``Z' = σ(BN(Conv(Z)))``,
``H_k = Z' + S(H_{k-1})`` (S: identity, or a strided 1×1 conv + BN when the shape changes); global
average pooling; a linear head (softmax in the loss).

Inputs are what the pipeline has for a bed: the ECG after the shared causal 0.5–40 Hz front end
(`wardmodels.frontend` — the codec reconstructs exactly that signal, and the worker runs the same
filter over raw-level windows), in mV at 128 Hz.

* rhythm: the last 10 s (five 2-s windows), z-scored per crop (`rhythm_input`);
* beat: 112 samples around the R peak (-375 ms .. +500 ms) divided by the local signal scale, plus
  five RR-interval features (`beat_features`), all computable causally from the stream with the
  next beat's arrival (post-RR) as the only look-ahead.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from wardmodels.shapes import bucket

FS = 128
RHYTHM_SECONDS = 10
RHYTHM_SAMPLES = RHYTHM_SECONDS * FS
RHYTHM_CLASSES = ("N", "A", "O", "~")  # normal, atrial fibrillation, other rhythm, noisy
BEAT_CLASSES = ("N", "S", "V", "F")  # AAMI
BEAT_PRE, BEAT_POST = 48, 64  # samples before / after the R peak
BEAT_SAMPLES = BEAT_PRE + BEAT_POST
BEAT_SCALE_S = 8.0  # seconds of signal before the beat used for its amplitude scale
TEMPLATE_BEATS = 8  # previous beats whose median is the bed's own beat template
TEMPLATE_SPAN_S = 9.0  # ... at most this long before the beat (what a bed's buffer holds)
RR_LOCAL = 10  # beats in the local RR mean
RR_LONG_S = 60.0  # seconds of beats in the long RR mean (the bed state keeps 60 s)
N_RR_FEATURES = 5

# AAMI mapping of MIT-BIH beat symbols (Q-class and paced beats are not classified)
AAMI = {**dict.fromkeys("NLRej", "N"), **dict.fromkeys("aSAJ", "S"), **dict.fromkeys("VE", "V"), "F": "F"}


def aami_labels(symbols) -> np.ndarray:
    """MIT-BIH beat symbols -> index into ``BEAT_CLASSES``, -1 for beats not classified (Q, paced)."""
    return np.array([BEAT_CLASSES.index(AAMI[s]) if s in AAMI else -1 for s in symbols], dtype=np.int64)


@dataclass(frozen=True)
class ResNetConfig:
    name: str
    classes: tuple[str, ...]
    in_samples: int
    stem_channels: int = 32
    stem_kernel: int = 15
    stem_stride: int = 2
    stem_pool: int = 2
    channels: tuple[int, ...] = (32, 48, 64, 64, 96, 96, 128, 128)
    strides: tuple[int, ...] = (1, 2, 1, 2, 1, 2, 1, 2)
    kernel: int = 7
    dropout: float = 0.2
    extra_features: int = 0  # scalar features concatenated before the head
    in_channels: int = 1
    # causal (streaming) variant: every conv sees only the past, the input is longer than the
    # 10 s it decides on (the history a stream has), and only the last 10 s of the output are
    # pooled -- so a bed's decision can be computed window by window (`wardmodels.stream_rhythm`)
    causal: bool = False
    pooled_samples: int = 0  # causal: input samples whose output positions are pooled

    @property
    def total_stride(self) -> int:
        return int(self.stem_stride * self.stem_pool * np.prod(self.strides))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ResNetConfig":
        d = dict(d)
        for k in ("classes", "channels", "strides"):
            d[k] = tuple(d[k])
        return cls(**d)


VARIANTS = {
    "rhythm": ResNetConfig("rhythm", RHYTHM_CLASSES, RHYTHM_SAMPLES),
    "beat": ResNetConfig("beat", BEAT_CLASSES, BEAT_SAMPLES, stem_channels=32, stem_kernel=7,
                         stem_stride=1, stem_pool=1, channels=(32, 32, 64, 64, 96, 96),
                         strides=(1, 2, 1, 2, 1, 2), kernel=5, dropout=0.3,
                         extra_features=N_RR_FEATURES, in_channels=2),
    # the streaming rhythm model: causal convolutions of kernel 5 (receptive field 1,217 samples),
    # input = the 10 s decided on + 10 s of history (`stream_rhythm.STREAM_CROP`)
    "rhythm-stream": ResNetConfig("rhythm-stream", RHYTHM_CLASSES, 2 * RHYTHM_SAMPLES, kernel=5, causal=True,
                                  pooled_samples=RHYTHM_SAMPLES),
    # the device's small rhythm model, distilled from the deployed one (`wardmodels.edge_rhythm`):
    # ~53 k parameters, ~5.4 M multiply-adds per 10-s crop
    "rhythm-edge": ResNetConfig("rhythm-edge", RHYTHM_CLASSES, RHYTHM_SAMPLES, stem_channels=16,
                                channels=(16, 16, 24, 24, 32, 32), strides=(1, 2, 1, 2, 1, 2)),
}


def causal_conv(conv: nn.Conv1d, x: torch.Tensor, state: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A conv that sees only the past: output ``j`` covers the ``kernel`` input samples ending
    with the last sample of stride block ``j``, so a chunk whose length is a multiple of the
    stride gives exactly the outputs the whole stream would. ``state``: the ``kernel - stride``
    input samples before the chunk (zeros when None). -> (output, the state after the chunk)."""
    k, s = conv.kernel_size[0], conv.stride[0]
    pad = k - s
    if pad < 0:
        return conv(x[..., -pad:]), None
    if pad == 0:
        return conv(x), None
    if state is None:
        state = x.new_zeros(x.shape[0], x.shape[1], pad)
    inp = torch.cat([state, x], dim=-1)
    return conv(inp), inp[..., -pad:]


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, dropout: float, causal: bool = False):
        super().__init__()
        pad = 0 if causal else k // 2  # a causal block pads on the left itself (`causal_conv`)
        self.conv1 = nn.Conv1d(c_in, c_out, k, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, k, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.drop = nn.Dropout(dropout)
        self.short = None
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm1d(c_out))

    def forward(self, h):
        z = torch.relu(self.bn1(self.conv1(h)))
        z = torch.relu(self.bn2(self.conv2(self.drop(z))))
        return z + (h if self.short is None else self.short(h))

    def forward_causal(self, h, states: list | None, out: list):
        """The block with causal convs; ``states`` (consumed from the front) are the convs'
        contexts before this chunk, the contexts after it are appended to ``out``."""
        c1, s1 = causal_conv(self.conv1, h, states.pop(0) if states else None)
        z = torch.relu(self.bn1(c1))
        c2, s2 = causal_conv(self.conv2, self.drop(z), states.pop(0) if states else None)
        z = torch.relu(self.bn2(c2))
        out += [s1, s2]
        if self.short is None:
            return z + h
        sc, _ = causal_conv(self.short[0], h)
        return z + self.short[1](sc)


class ResNet1D(nn.Module):
    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.stem_channels
        pad = 0 if cfg.causal else cfg.stem_kernel // 2
        self.stem = nn.Sequential(nn.Conv1d(cfg.in_channels, c, cfg.stem_kernel, cfg.stem_stride, pad, bias=False),
                                  nn.BatchNorm1d(c), nn.ReLU())
        self.pool = nn.MaxPool1d(cfg.stem_pool) if cfg.stem_pool > 1 else nn.Identity()
        blocks = []
        for ch, s in zip(cfg.channels, cfg.strides):
            blocks.append(ResBlock(c, ch, cfg.kernel, s, cfg.dropout, causal=cfg.causal))
            c = ch
        self.blocks = nn.Sequential(*blocks)
        self.drop = nn.Dropout(cfg.dropout)
        self.feat = None
        if cfg.extra_features:
            self.feat = nn.Sequential(nn.Linear(cfg.extra_features, 32), nn.ReLU())
        self.head = nn.Linear(c + (32 if cfg.extra_features else 0), len(cfg.classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.causal:
            h, _ = self.trunk_causal(x[:, None] if x.dim() == 2 else x)
            return h[..., -(self.cfg.pooled_samples // self.cfg.total_stride):].mean(dim=-1)
        h = self.blocks(self.pool(self.stem(x[:, None] if x.dim() == 2 else x)))
        return h.mean(dim=-1)

    def trunk_causal(self, x: torch.Tensor, states: list | None = None) -> tuple[torch.Tensor, list]:
        """Causal variant: the last block's output for a chunk (B, C_in, T), T a multiple of the
        total stride, continuing from ``states`` (None: zero contexts); -> (output, states)."""
        states = list(states) if states else None
        out: list = []
        h, s0 = causal_conv(self.stem[0], x, states.pop(0) if states else None)
        out.append(s0)
        h = self.pool(self.stem[1:](h))  # max-pool with kernel = stride: no context needed
        for b in self.blocks:
            h = b.forward_causal(h, states, out)
        return h, out

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embed(x)
        if self.feat is not None:
            e = torch.cat([e, self.feat(extra)], dim=1)
        return self.head(self.drop(e))


# --------------------------------------------------------------------------- inputs
def rhythm_input(crops: np.ndarray) -> np.ndarray:
    """Filtered ECG crops (N, <=1280) in mV -> model input (N, 1280): z-scored per crop, clipped
    to ±20, a short crop zero-padded at the start (a bed's first seconds)."""
    crops = np.atleast_2d(np.asarray(crops, np.float32))
    x = crops - crops.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)
    x = np.clip(x / np.maximum(sd, 1e-3), -20, 20)  # a flat (lead-off) crop stays ~0, not noise×1000
    if x.shape[1] < RHYTHM_SAMPLES:
        x = np.concatenate([np.zeros((len(x), RHYTHM_SAMPLES - x.shape[1]), np.float32), x], axis=1)
    return x[:, -RHYTHM_SAMPLES:].astype(np.float32)


def rr_features(pre: np.ndarray, post: np.ndarray, local: np.ndarray, long: np.ndarray) -> np.ndarray:
    """RR intervals in seconds (per beat) -> (N, 5): log ratios to the long mean, the local/long
    ratio, the pre/post ratio, and the pre interval itself (s)."""
    pre, post, local, long = (np.asarray(v, np.float64) for v in (pre, post, local, long))
    eps = 1e-3
    f = np.stack([np.log((pre + eps) / (long + eps)), np.log((post + eps) / (long + eps)),
                  np.log((local + eps) / (long + eps)), np.log((pre + eps) / (post + eps)),
                  np.clip(pre, 0, 3.0)], axis=1)
    return np.clip(f, -3, 3).astype(np.float32)


def rr_context(beats: np.ndarray, fs: int = FS, at: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every beat of a sorted sample-index array (or only the positions ``at``): (pre, post,
    local, long) RR in seconds, using only beats up to the next one (what the stream knows when
    that beat arrives). Missing neighbours (the first / last beat) fall back to the local mean."""
    t = np.asarray(beats, np.float64) / fs
    n = len(t)
    idx = np.arange(n) if at is None else np.asarray(at, np.int64)
    rr = np.diff(t)
    pre = np.where(idx >= 1, t[idx] - t[np.maximum(idx - 1, 0)], np.nan)
    post = np.where(idx < n - 1, t[np.minimum(idx + 1, n - 1)] - t[idx], np.nan)
    csum = np.concatenate([[0.0], np.cumsum(rr)])
    lo = np.maximum(0, idx - RR_LOCAL)
    j = np.minimum(np.searchsorted(t, t[idx] - RR_LONG_S), np.maximum(idx - 1, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        local = np.where(idx >= 1, (csum[idx] - csum[lo]) / (idx - lo), np.nan)
        long = np.where(idx >= 1, (csum[idx] - csum[j]) / (idx - j), np.nan)
    fill = np.median(rr) if rr.size else 0.8
    local = np.where(np.isnan(local), fill, local)
    long = np.where(np.isnan(long), local, long)
    pre = np.where(np.isnan(pre), local, pre)
    post = np.where(np.isnan(post), pre, post)
    return pre, post, local, long


IRREGULARITY_INTERVALS = 9  # RR intervals before a beat's own pre-RR that measure the rhythm's irregularity


def rr_irregularity(beats: np.ndarray, fs: int = FS, at: np.ndarray | None = None) -> np.ndarray:
    """For every beat of a sorted sample-index array (or only the positions ``at``): how irregular
    the rhythm was just before it -- the median absolute successive difference of the up to
    ``IRREGULARITY_INTERVALS`` RR intervals before the beat's own pre-RR, over their median
    (0 with fewer than 3). The beat's own prematurity is left out on purpose: in atrial
    fibrillation every beat is "premature", and this is what tells the two apart. (The AF alarm's
    `processors.alarms.rr_irregularity` is the same measure over normal-class beats only.)"""
    rr = np.diff(np.asarray(beats, np.float64)) / fs
    idx = np.arange(len(beats)) if at is None else np.asarray(at, np.int64)
    out = np.zeros(len(idx), np.float64)
    # beat i's intervals are rr[i-1-n : i-1], n = min(IRREGULARITY_INTERVALS, i-1); the beats of
    # one n are done together (np.median along rows is np.median of each row, bit for bit)
    n_int = np.clip(idx - 1, 0, IRREGULARITY_INTERVALS)
    for n in np.unique(n_int[n_int >= 3]):
        rows = np.flatnonzero(n_int == n)
        seg = rr[(idx[rows] - 1 - n)[:, None] + np.arange(n)]
        out[rows] = np.median(np.abs(np.diff(seg, axis=1)), axis=1) / np.maximum(np.median(seg, axis=1), 1e-3)
    return out


RR_PREMATURITY_MIN = 4  # intervals the prematurity needs (fewer: 0)


def _prematurity_one(t: list[float], i: int) -> float:
    """`rr_prematurity` of beat ``i`` of the beat times ``t`` (s), in scalar arithmetic."""
    if i < 1:
        return 0.0
    j = bisect.bisect_left(t, t[i] - RR_LONG_S)
    rr = sorted(t[k + 1] - t[k] for k in range(j, i - 1))
    m = len(rr)
    if m < RR_PREMATURITY_MIN:
        return 0.0
    ref = rr[(9 * (m - 1)) // 10]
    return min(max(math.log((t[i] - t[i - 1] + 1e-3) / (ref + 1e-3)), -3.0), 3.0)


def rr_prematurity(beats: np.ndarray, fs: int = FS, at: np.ndarray | None = None) -> np.ndarray:
    """For every beat of a sorted sample-index array (or only the positions ``at``): its pre-RR
    interval against the rhythm's long intervals, log(pre / the 90th percentile of the RR
    intervals between the beats of the ``RR_LONG_S`` before it), clipped to ±3; 0 with fewer than
    ``RR_PREMATURITY_MIN`` such intervals. The percentile is an order statistic (the sorted
    intervals' element ``(9·(m−1)) // 10``), so every path computes it exactly.

    Why beside the mean-based `rr_features`: where premature beats are frequent (atrial
    bigeminy, runs of atrial premature beats) they drag the local and long means down to their
    own coupling interval and stop looking premature against them; the long end of the interval
    distribution stays with the sinus rhythm (and the pauses). The beat second stage
    (`beat_stack`) takes it; the CNN does not."""
    t = (np.asarray(beats, np.float64) / fs).tolist()
    idx = range(len(t)) if at is None else np.asarray(at, np.int64).tolist()
    return np.asarray([_prematurity_one(t, i) for i in idx], np.float64)


def beat_context(beats: np.ndarray, fs: int = FS, at: np.ndarray | None = None) -> np.ndarray:
    """(N, ``BEAT_CONTEXT``) per beat (or per position ``at``): the five `rr_features` the CNN
    takes, then the `rr_irregularity` and the `rr_prematurity` the second stage (`beat_stack`)
    adds."""
    if at is not None and 0 < len(at) <= _FEW:
        few = _context_few(beats, fs, at)
        if few is not None:
            return few
    f = rr_features(*rr_context(beats, fs, at))
    return np.concatenate([f, rr_irregularity(beats, fs, at)[:, None].astype(np.float32),
                           rr_prematurity(beats, fs, at)[:, None].astype(np.float32)], axis=1)


BEAT_CONTEXT = N_RR_FEATURES + 2  # columns of `beat_context`


_FEW = 8  # up to this many positions, `beat_context` computes them one by one (the stream's case)


def _median(v: list[float]) -> float:
    """np.median of a short list, bit for bit (the middle value, or the mean of the two)."""
    s = sorted(v)
    m = len(s)
    return s[m // 2] if m % 2 else (s[m // 2 - 1] + s[m // 2]) / 2


def _context_few(beats, fs: int, at) -> np.ndarray | None:
    """`beat_context` at a few positions of a long beat history, in scalar arithmetic: the same
    float64 operations in the same order as `rr_context` and `rr_irregularity` (the numpy forms
    cost ~0.35 ms per call in numpy overhead, once per window and bed in the worker). None where
    the numpy form's fallbacks apply (a position without a predecessor)."""
    b = [int(v) for v in np.asarray(beats).tolist()]
    n = len(b)
    idx = [int(i) for i in np.asarray(at).tolist()]
    if n < 2 or min(idx) < 1 or max(idx) > n - 1:
        return None
    t = [v / fs for v in b]
    csum = [0.0]
    acc = 0.0
    for i in range(1, max(idx) + 1):
        acc += t[i] - t[i - 1]  # np.cumsum of np.diff(t): sequential
        csum.append(acc)
    rr_s = [(b[i + 1] - b[i]) / fs for i in range(max(idx))]  # rr_irregularity's intervals
    pre, post, local, long, irr = [], [], [], [], []
    for i in idx:
        p = t[i] - t[i - 1]
        lo = max(0, i - RR_LOCAL)
        j = min(bisect.bisect_left(t, t[i] - RR_LONG_S), i - 1)
        pre.append(p)
        post.append(t[i + 1] - t[i] if i < n - 1 else p)
        local.append((csum[i] - csum[lo]) / (i - lo))
        long.append((csum[i] - csum[j]) / (i - j))
        k = min(i - 1, IRREGULARITY_INTERVALS)
        if k < 3:
            irr.append(0.0)
            continue
        seg = rr_s[i - 1 - k:i - 1]
        irr.append(_median([abs(seg[m + 1] - seg[m]) for m in range(k - 1)]) / max(_median(seg), 1e-3))
    f = rr_features(*(np.asarray(v, np.float64) for v in (pre, post, local, long)))
    prem = [_prematurity_one(t, i) for i in idx]
    return np.concatenate([f, np.asarray(irr, np.float64)[:, None].astype(np.float32),
                           np.asarray(prem, np.float64)[:, None].astype(np.float32)], axis=1)


def beat_scales(signal: np.ndarray, beats: np.ndarray, fs: int = FS) -> np.ndarray:
    """Each beat's amplitude scale: the signal's standard deviation over the ``BEAT_SCALE_S``
    seconds ending ``BEAT_POST`` samples after it (what a bed's buffer holds when it is cut)."""
    x = np.asarray(signal, np.float64)
    beats = np.asarray(beats, np.int64)
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    hi = np.clip(beats + BEAT_POST, 1, len(x))
    lo = np.clip(hi - int(BEAT_SCALE_S * fs), 0, None)
    n = np.maximum(hi - lo, 1)
    mean = (c1[hi] - c1[lo]) / n
    return np.sqrt(np.maximum((c2[hi] - c2[lo]) / n - mean ** 2, 0))


def beat_waves(signal: np.ndarray, beats: np.ndarray, fs: int = FS, scales: np.ndarray | None = None) -> np.ndarray:
    """(N, 112) beat waveforms from a filtered signal, median-removed and divided by the beat's
    `beat_scales` (given, or computed here); edges zero-padded."""
    x = np.asarray(signal, np.float32)
    beats = np.asarray(beats, np.int64)
    idx = beats[:, None] + np.arange(-BEAT_PRE, BEAT_POST)
    waves = np.take(x, idx, mode="clip")  # no copy of the (possibly long) signal
    waves[(idx < 0) | (idx >= len(x))] = 0.0
    sd = beat_scales(x, beats, fs) if scales is None else np.asarray(scales)
    waves = (waves - np.median(waves, axis=1, keepdims=True)) / np.maximum(sd, 5e-3)[:, None].astype(np.float32)
    return np.clip(waves, -30, 30).astype(np.float32)


def beat_inputs(waves: np.ndarray, beats: np.ndarray, fs: int = FS, first: int = 0) -> np.ndarray:
    """(N, 2, 112) model input for beats ``first..`` of a sorted run of beats with their `beat_waves`:
    the wave, and the wave minus the median of up to ``TEMPLATE_BEATS`` previous waves within
    ``TEMPLATE_SPAN_S`` (the patient's own usual beat, so a wide-QRS patient's normal beats do
    not read as ventricular). A beat with no predecessor is its own template."""
    waves = np.asarray(waves, np.float32)
    beats = np.asarray(beats, np.int64)
    out = np.zeros((len(waves) - first, 2, waves.shape[1]), np.float32)
    span = int(TEMPLATE_SPAN_S * fs)
    # each beat's template count k (its predecessors within the span, at most TEMPLATE_BEATS);
    # the medians are taken for all beats of one k at once (sorted middle = np.median, bit for bit)
    by_k: dict[int, list[int]] = {}
    for i in range(first, len(waves)):
        lo = max(0, i - TEMPLATE_BEATS)
        while lo < i and beats[i] - beats[lo] > span:
            lo += 1
        by_k.setdefault(i - lo, []).append(i)
    out[:, 0] = waves[first:]
    for k, members in by_k.items():
        m = np.asarray(members)
        if k == 0:
            tmpl = waves[m]
        else:
            s = np.sort(waves[m[:, None] - k + np.arange(k)], axis=1)
            tmpl = s[:, k // 2] if k % 2 else (s[:, k // 2 - 1] + s[:, k // 2]) / np.float32(2)
        out[m - first, 1] = waves[m] - tmpl
    return out


# --------------------------------------------------------------------------- inference
def _padded(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` as contiguous float32 with zero rows appended up to ``rows``."""
    a = np.ascontiguousarray(a, np.float32)
    if len(a) >= rows:
        return a
    out = np.zeros((rows, *a.shape[1:]), np.float32)
    out[:len(a)] = a
    return out


@dataclass
class Classifier:
    """A trained classifier ready for inference (weights possibly restored from packed form)."""

    model: ResNet1D
    name: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.cfg.classes

    @property
    def compute_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def proba(self, x: np.ndarray, extra: np.ndarray | None = None, batch: int = 256) -> np.ndarray:
        if self.model.training:  # (eval() walks every module: not on each of the worker's calls)
            self.model.eval()
        dt = self.compute_dtype
        if extra is not None:  # a beat's context (`beat_context`) carries more than the CNN takes
            extra = np.asarray(extra)[:, :self.model.cfg.extra_features]
        out = []
        for i in range(0, len(x), batch):
            xb, eb = x[i:i + batch], None if extra is None else extra[i:i + batch]
            n = len(xb)
            xb = torch.from_numpy(_padded(xb, bucket(n))).to(dt)  # a few batch shapes (`wardmodels.shapes`)
            eb = None if eb is None else torch.from_numpy(_padded(eb, bucket(n))).to(dt)
            out.append(torch.softmax(self.model(xb, eb).float(), dim=1)[:n].numpy())
        if not out:
            return np.zeros((0, len(self.classes)), np.float32)
        return np.concatenate(out)
