"""The streaming rhythm classifier: a decision every 2 s over the last 10 s, computed window by window.

The deployed rhythm model (`classifier.VARIANTS["rhythm"]`) looks at each bed's last 10 s afresh
every 2 s: four fifths of every decision's arithmetic repeats the previous one's. The
``rhythm-stream`` variant is built so that it need not:

* **causal convolutions** (`classifier.causal_conv`): an output position depends only on input
  up to the end of its stride block, so a bed's new 2-s window (256 samples, a multiple of the
  total stride 64) yields exactly the 4 new output positions the whole stream would, given each
  conv's few samples of left context (its *state*);
* **per-window normalisation** a stream can compute: each window is centred and divided by the
  standard deviation of the 10 s ending with it, known when it arrives (the crop-wise model
  z-scores the whole crop, which changes every window);
* the decision pools the output positions of the last 10 s (20 positions) and applies the head.

Trained and evaluated on crops (`stream_crops`): the 10 s decided on plus 10 s of history,
normalised as the stream normalises them, zeros before a record's start. The receptive field
(1,217 samples) is shorter than the history, so the decision on a crop equals the decision of a
stream that started from the state a run of zeros leaves (`RhythmStream`) -- to float rounding,
tested in ``tests/wardmodels/test_stream_rhythm.py``. Each decision then costs one window's
share of the network instead of five windows'.
"""

from __future__ import annotations

import numpy as np
import torch

from wardmodels.classifier import FS, RHYTHM_SAMPLES, ResNet1D

WINDOW = 2 * FS
STREAM_CROP = 2 * RHYTHM_SAMPLES  # samples a crop holds: the 10 s decided on + 10 s of history
NORM_WINDOWS = RHYTHM_SAMPLES // WINDOW  # windows whose statistics normalise the newest one


def stream_normalise(x: np.ndarray) -> np.ndarray:
    """A filtered record (whole 2-s windows; a shorter tail is dropped) normalised window by
    window as `RhythmStream` does: each by the statistics of the 10 s ending with it."""
    n = len(x) // WINDOW
    w = np.asarray(x[: n * WINDOW], np.float64).reshape(n, WINDOW)
    if n == 0:
        return np.zeros(0, np.float32)
    cs = np.concatenate([[0.0], np.cumsum(w.sum(1))])
    cs2 = np.concatenate([[0.0], np.cumsum((w ** 2).sum(1))])
    hi = np.arange(1, n + 1)
    lo = np.maximum(hi - NORM_WINDOWS, 0)
    cnt = (hi - lo) * WINDOW
    mu = (cs[hi] - cs[lo]) / cnt
    sd = np.sqrt(np.maximum((cs2[hi] - cs2[lo]) / cnt - mu ** 2, 0.0))
    return np.clip((w - mu[:, None]) / np.maximum(sd, 1e-3)[:, None], -20, 20).astype(np.float32).ravel()


def stream_crops(xn: np.ndarray, ends: np.ndarray, crop: int = STREAM_CROP) -> np.ndarray:
    """Crops of a normalised record ending at ``ends`` (sample indices, window boundaries), each
    ``crop`` samples long, zeros before the record's start."""
    pad = np.concatenate([np.zeros(crop, np.float32), xn])
    ends = np.asarray(ends, np.int64) + crop
    return pad[ends[:, None] - crop + np.arange(crop)]


def decision_ends(n: int, step: int = WINDOW) -> np.ndarray:
    """Where the pipeline decides over a record of ``n`` samples: at every window end from 10 s
    on (a record shorter than 10 s: once, at its last whole window; none if it has none)."""
    m = n // WINDOW * WINDOW
    if m < RHYTHM_SAMPLES:
        return np.array([m] if m else [], np.int64)
    return np.arange(RHYTHM_SAMPLES, m + 1, step)


def decided(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A filtered record and its decision times; a record shorter than one window is zero-padded
    at the start to one window and decided on once, on what there is."""
    ends = decision_ends(len(x))
    if not len(ends):
        return np.concatenate([np.zeros(WINDOW - len(x), np.float32), x]), np.array([WINDOW], np.int64)
    return x, ends


def crops_for_record(x: np.ndarray) -> np.ndarray:
    """The streaming model's inputs at the pipeline's decision times over a filtered record."""
    x, ends = decided(x)
    return stream_crops(stream_normalise(x), ends)


@torch.no_grad()
def record_logits(model: ResNet1D, signals: list[np.ndarray], batch: int = 32) -> list[np.ndarray]:
    """Per filtered record, the logits of every decision `crops_for_record` would cut, computed in
    one causal pass over the whole record (behind 20 s of zeros) instead of crop by crop: the
    same numbers (the receptive field is shorter than the history) at a fraction of the work."""
    cfg = model.cfg
    per, pooled = cfg.total_stride, cfg.pooled_samples // cfg.total_stride
    dtype = next(model.parameters()).dtype
    prepared = []
    for x in signals:
        x, ends = decided(x)
        prepared.append((np.concatenate([np.zeros(STREAM_CROP, np.float32), stream_normalise(x)]), ends))
    out: list[np.ndarray | None] = [None] * len(signals)
    order = np.argsort([len(p[0]) for p in prepared], kind="stable")
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        n = max(len(prepared[k][0]) for k in idx)
        xb = np.zeros((len(idx), 1, n), np.float32)  # zeros after a record's end: causal, unseen
        for j, k in enumerate(idx):
            xb[j, 0, :len(prepared[k][0])] = prepared[k][0]
        h, _ = model.trunk_causal(torch.from_numpy(xb).to(dtype))
        cs = torch.cumsum(torch.nn.functional.pad(h.float(), (1, 0)), dim=-1)  # (B, C, 1 + positions)
        for j, k in enumerate(idx):
            stop = torch.from_numpy((STREAM_CROP + prepared[k][1]) // per)
            feat = ((cs[j][:, stop] - cs[j][:, stop - pooled]) / pooled).T  # (decisions, C)
            out[k] = model.head(feat.to(dtype)).float().numpy()
    return out


class RhythmStream:
    """Rhythm decisions for many beds, one 2-s window per bed and step, from per-bed state.

    A bed's state: each causal conv's left context, the last four windows' output positions (the
    decision pools five windows'), and its last four raw windows (the normalisation's 10 s),
    held in one slot of preallocated tensors so a step gathers and scatters whole batches. A bed
    seen for the first time starts from the state a run of zeros leaves; `forget` drops a bed
    (after a gap in its windows, so it restarts cleanly)."""

    def __init__(self, model: ResNet1D, capacity: int = 256):
        cfg = model.cfg
        if not cfg.causal:
            raise ValueError(f"{cfg.name} is not a causal model; streaming needs one")
        self.model = model.eval()
        self.dtype = next(model.parameters()).dtype
        self.per_window = WINDOW // cfg.total_stride
        self.pooled = cfg.pooled_samples // cfg.total_stride
        with torch.no_grad():
            h, st = model.trunk_causal(torch.zeros(1, cfg.in_channels, STREAM_CROP, dtype=self.dtype))
        self._zero = [s[0] for s in st] + [h[0, :, -(self.pooled - self.per_window):]]
        self._slots: list[torch.Tensor] = [z.new_zeros((0, *z.shape)) for z in self._zero]
        self._raw = np.zeros((0, (NORM_WINDOWS - 1) * WINDOW), np.float64)
        self._raw_n = np.zeros(0, np.int64)  # raw samples a slot holds (< 8 s for a new bed)
        self.slot: dict[str, int] = {}
        self._free: list[int] = []
        self._grow(capacity)

    def _grow(self, n: int) -> None:
        old = len(self._raw)
        self._slots = [torch.cat([s, s.new_zeros((n, *s.shape[1:]))]) for s in self._slots]
        self._raw = np.concatenate([self._raw, np.zeros((n, self._raw.shape[1]))])
        self._raw_n = np.concatenate([self._raw_n, np.zeros(n, np.int64)])
        self._free += list(range(old + n - 1, old - 1, -1))

    def _new_slot(self, bed: str) -> int:
        if not self._free:
            self._grow(max(64, len(self._raw)))
        k = self._free.pop()
        for s, z in zip(self._slots, self._zero):
            s[k] = z
        self._raw_n[k] = 0
        self.slot[bed] = k
        return k

    def forget(self, bed: str) -> None:
        k = self.slot.pop(bed, None)
        if k is not None:
            self._free.append(k)

    @torch.no_grad()
    def step(self, beds: list[str], windows: np.ndarray) -> np.ndarray:
        """``windows`` (B, 256): each bed's next filtered window, in mV -> (B, 4) probabilities
        of the decision over the 10 s ending with it."""
        if len(set(beds)) != len(beds):
            raise ValueError("one window per bed and step")
        w = np.asarray(windows, np.float64).reshape(len(beds), WINDOW)
        idx = np.array([self.slot.get(b, -1) for b in beds], np.int64)
        for i in np.flatnonzero(idx < 0):
            idx[i] = self._new_slot(beds[i])
        # normalisation: statistics of the (up to) 10 s ending with each window
        hist = np.concatenate([self._raw[idx], w], axis=1)
        n = np.minimum(self._raw_n[idx], self._raw.shape[1]) + WINDOW
        valid = np.arange(hist.shape[1])[None, :] >= hist.shape[1] - n[:, None]
        mu = (hist * valid).sum(1) / n
        sd = np.sqrt(np.maximum((hist ** 2 * valid).sum(1) / n - mu ** 2, 0.0))
        xn = np.clip((w - mu[:, None]) / np.maximum(sd, 1e-3)[:, None], -20, 20).astype(np.float32)
        self._raw[idx] = hist[:, WINDOW:]
        self._raw_n[idx] = n
        it = torch.from_numpy(idx)
        got = [s.index_select(0, it) for s in self._slots]
        h, new = self.model.trunk_causal(torch.from_numpy(xn)[:, None].to(self.dtype), got[:-1])
        tails = torch.cat([got[-1], h], dim=-1)
        logits = self.model.head(tails.mean(dim=-1))
        for s, v in zip(self._slots, new + [tails[..., -(self.pooled - self.per_window):]]):
            s.index_copy_(0, it, v)
        return torch.softmax(logits.float(), dim=1).numpy()
