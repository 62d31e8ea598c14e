"""Lossless entropy coding of codebook indices: a static context model + binary-output
arithmetic coder, small enough for the device (tables counted in the edge budget).

Model, per modality and residual stage: each index is coded with the frequency table of its
context, the class (``ctx_map``) of the previous index of the same stage in the window (the
first position uses class 0 of a separate start table). Tables are fixed, estimated once on
training-split indices (`fit_prior`), with 14-bit frequencies, every symbol at least 1.

Coder: `stream.arith` (32-bit integer arithmetic coding, Witten, Neal & Cleary 1987, with
carry-free pending bits); a stream ends with two bits plus pending bits, so the count below is
exact and the decoder reproduces the indices bit for bit (`decode` is the round-trip check).
On the wire (`stream.vqcode`) a frame's VQ sections share one such stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream import arith
from stream.arith import TOTAL


@dataclass
class StagePrior:
    ctx_map: np.ndarray  # uint8 (K,): previous index -> context class
    freqs: np.ndarray  # uint16 (C + 1, K): row 0 = window start, row 1 + c = class c

    @property
    def cum(self) -> np.ndarray:
        c = getattr(self, "_cum", None)
        if c is None:
            c = np.zeros((self.freqs.shape[0], self.freqs.shape[1] + 1), np.int64)
            c[:, 1:] = np.cumsum(self.freqs, axis=1)
            self._cum = c
        return c

    @property
    def rows(self) -> list[list[int]]:
        """The cumulative rows as Python ints, as `stream.arith` takes them."""
        r = getattr(self, "_rows", None)
        if r is None:
            r = self._rows = [row.tolist() for row in self.cum]
        return r

    def nbytes(self) -> int:
        return self.ctx_map.size + 2 * self.freqs.size


def freqs_from_counts(counts: np.ndarray) -> np.ndarray:
    """Symbol counts (rows, K) -> uint16 frequency rows summing to `TOTAL`, each >= 1
    (counts + 0.5, scaled and floored; the remainder to each row's most frequent symbol)."""
    counts = np.atleast_2d(np.asarray(counts, np.float64))
    k = counts.shape[1]
    p = (counts + 0.5) / (counts + 0.5).sum(1, keepdims=True)
    f = np.maximum(1, np.floor(p * (TOTAL - k)).astype(np.int64) + 1)
    f[np.arange(len(f)), f.argmax(1)] += TOTAL - f.sum(1)
    assert (f >= 1).all() and (f.sum(1) == TOTAL).all()
    return f.astype(np.uint16)


def fit_stage(idx: np.ndarray, k: int, classes: int, seed: int = 0, iters: int = 25) -> StagePrior:
    """idx (N, T) indices of one stage -> prior with ``classes`` context classes (k-means of
    the previous-index rows of the bigram table, Hellinger geometry)."""
    prev, nxt = idx[:, :-1].ravel(), idx[:, 1:].ravel()
    big = np.zeros((k, k))
    np.add.at(big, (prev, nxt), 1)
    start = np.bincount(idx[:, 0], minlength=k)[None].astype(float)
    if classes <= 1:
        ctx_map = np.zeros(k, np.uint8)
    else:
        rows = np.sqrt((big + 0.1) / (big + 0.1).sum(1, keepdims=True))
        weight = big.sum(1) + 1
        rng = np.random.default_rng(seed)
        cent = rows[rng.choice(k, classes, replace=False, p=weight / weight.sum())]
        for _ in range(iters):
            lab = ((rows[:, None, :] - cent[None]) ** 2).sum(-1).argmin(1)
            for c in range(classes):
                sel = lab == c
                if sel.any():
                    cent[c] = np.average(rows[sel], axis=0, weights=weight[sel])
        ctx_map = lab.astype(np.uint8)
    counts = np.zeros((classes if classes > 1 else 1, k))
    for c in range(counts.shape[0]):
        counts[c] = big[ctx_map == c].sum(0)
    return StagePrior(ctx_map, freqs_from_counts(np.vstack([start, counts])))


# --------------------------------------------------------------------------- coder
def encode(symbols: np.ndarray, prior: StagePrior) -> tuple[bytes, int]:
    """Code one window's indices of one stage as its own stream -> (bytes, exact bit count)."""
    cum = prior.rows
    enc = arith.Encoder()
    row = 0
    for s in np.asarray(symbols, dtype=np.int64):
        enc.put(cum[row], int(s))
        row = 1 + int(prior.ctx_map[s])
    return enc.finish()


def decode(buf: bytes, count: int, prior: StagePrior) -> np.ndarray:
    cum = prior.rows
    dec = arith.Decoder(buf)
    out = np.zeros(count, np.int64)
    row = 0
    for i in range(count):
        out[i] = s = dec.get(cum[row])
        row = 1 + int(prior.ctx_map[s])
    return out


# --------------------------------------------------------------------------- measurement
def measure(codec, modality: str, idx: np.ndarray, check: int = 200) -> dict:
    """Exact coded size of each window's indices (each stage present in ``idx`` is its own
    stream, terminated, so the count includes every stream's ending) with the codec's committed
    prior; ``check`` windows are decoded again and must round-trip."""
    priors = getattr(codec, "priors", None)
    pos = codec.positions
    stages = idx.shape[1] // pos
    if not priors or modality not in priors:
        return {"bits_per_window_mean": float(stages * pos * np.ceil(np.log2(codec.codebook_size))),
                "coder": "none (no prior committed)"}
    total = np.zeros(len(idx))
    for s in range(stages):
        pr = priors[modality][s]
        for w in range(len(idx)):
            _, nbits = encode(idx[w, s * pos:(s + 1) * pos], pr)
            total[w] += nbits
        for w in range(min(check, len(idx))):
            buf, _ = encode(idx[w, s * pos:(s + 1) * pos], pr)
            if not np.array_equal(decode(buf, pos, pr), idx[w, s * pos:(s + 1) * pos]):
                raise AssertionError(f"entropy coder round trip failed ({modality} stage {s + 1} window {w})")
    return {"bits_per_window_mean": float(total.mean()), "bits_per_window_p90": float(np.percentile(total, 90)),
            "bits_per_index": float(total.mean() / (stages * pos)), "coder": "arithmetic, static context prior",
            "round_trip_checked_windows": min(check, len(idx)) * stages}
