"""Lossless coding of a raw int16 window: a fixed polynomial predictor and Rice codes.

What a device sends at the raw level when its frame sets the wire flag ``FLAG_LOSSLESS``
(`stream.wire`): the same int16 samples, about half the bytes (2-s windows at 128 Hz, 1 µV ECG /
0.1 µV EEG per LSB: 512 → ~260 bytes). Specified for a C encoder to reproduce bit for bit:

    payload  mode u8: 0xFF = verbatim (n x i16 big-endian follow, nothing else), otherwise
                      bits 7..5 the predictor order o (0..3), bits 4..0 the Rice parameter k (0..20)
             warm-up: the first o samples, i16 big-endian each
             residuals e_j = (o-th order difference of the samples)_j, j = 0 .. n-o-1
                      (o = 0: x_j; 1: x_{j+1} - x_j; 2: x_{j+2} - 2x_{j+1} + x_j;
                       3: x_{j+3} - 3x_{j+2} + 3x_{j+1} - x_j), in 32-bit integers
             each mapped to u = 2e (e >= 0) or -2e - 1 (e < 0) and written MSB first as
             u >> k one-bits, a zero-bit, then the low k bits of u; zero bits pad to a byte

The encoder takes for each order the k with the fewest bits (the lowest on ties), then the order
with the fewest bytes (the lowest on ties), or verbatim when that is not shorter than 2n bytes. The decoder rejects anything else that
does not parse to exactly n samples in the int16 range (`stream.wire.BadLength`).
"""

from __future__ import annotations

import numpy as np

VERBATIM = 0xFF
MAX_ORDER = 3
MAX_K = 20


def _residuals(x: np.ndarray, order: int) -> np.ndarray:
    e = np.diff(x, n=order) if order else x
    return np.where(e >= 0, 2 * e, -2 * e - 1)


def rice_parameter(u: np.ndarray) -> tuple[int, int]:
    """(k, bits): the Rice parameter in 0..MAX_K with the fewest bits for the codes ``u`` (the
    lowest such k). The bit count ``sum(u >> k) + len(u) * (k + 1)`` is convex in k (its decrease
    from k to k + 1, ``sum(ceil((u >> k) / 2)) - len(u)``, does not grow with k), so a walk from
    the mean's magnitude finds the first minimum."""
    n = len(u)
    if n == 0:
        return 0, 0

    def cost(k: int) -> int:
        return int((u >> k).sum()) + n * (k + 1)

    k = min(MAX_K, max(0, int(u.sum() // n).bit_length() - 1))
    c = cost(k)
    while k > 0 and (c_lo := cost(k - 1)) <= c:
        k, c = k - 1, c_lo
    while k < MAX_K and (c_hi := cost(k + 1)) < c:
        k, c = k + 1, c_hi
    return k, c


def encode(samples: np.ndarray) -> bytes:
    """The payload for int16 ``samples`` (see the module docstring)."""
    x = np.asarray(samples).astype(np.int64)
    n = len(x)
    best = None  # (bytes, order, k, u)
    for order in range(min(MAX_ORDER, n) + 1):
        u = _residuals(x, order)
        k, bits = rice_parameter(u)
        nbytes = 1 + 2 * order + (bits + 7) // 8
        if best is None or nbytes < best[0]:
            best = (nbytes, order, k, u)
    if best is None or best[0] >= 1 + 2 * n:
        return bytes([VERBATIM]) + x.astype(">i2").tobytes()
    _, order, k, u = best
    q = u >> k
    starts = np.concatenate([[0], np.cumsum(q + 1 + k)[:-1]])
    bits = np.zeros(int((q + 1 + k).sum()), np.uint8)
    bits[np.repeat(starts, q) + np.arange(int(q.sum())) - np.repeat(np.cumsum(q) - q, q)] = 1
    if k:
        pos = (starts + q + 1)[:, None] + np.arange(k)
        bits[pos.ravel()] = ((u[:, None] >> np.arange(k - 1, -1, -1)) & 1).ravel()
    return bytes([order << 5 | k]) + x[:order].astype(">i2").tobytes() + np.packbits(bits).tobytes()


def decode(payload: bytes, n: int, error=ValueError) -> np.ndarray:
    """int16[n] from a payload; ``error(message)`` is raised for anything malformed."""
    if not payload:
        raise error("empty lossless payload")
    mode = payload[0]
    if mode == VERBATIM:
        if len(payload) != 1 + 2 * n:
            raise error(f"verbatim lossless payload of {len(payload)} bytes for {n} samples")
        return np.frombuffer(payload, ">i2", offset=1).astype(np.int16)
    order, k = mode >> 5, mode & 31
    if order > MAX_ORDER or k > MAX_K or n < order or len(payload) < 1 + 2 * order:
        raise error(f"lossless mode {mode:#04x} is not valid for {n} samples")
    warm = np.frombuffer(payload, ">i2", count=order, offset=1).astype(np.int64)
    bits = np.unpackbits(np.frombuffer(payload, np.uint8, offset=1 + 2 * order))
    size = len(bits)
    zeros = np.flatnonzero(bits == 0)
    # the first zero-bit at or after every position (size: none)
    next_zero = np.append(zeros, size)[np.searchsorted(zeros, np.arange(size + 1))].tolist()
    if k:
        padded = np.concatenate([bits, np.zeros(k, np.uint8)]).astype(np.int64)
        low = (np.lib.stride_tricks.sliding_window_view(padded, k) @ (1 << np.arange(k - 1, -1, -1))).tolist()
    m = n - order
    u = [0] * m
    pos = 0
    for j in range(m):
        z = next_zero[pos]
        if z + 1 + k > size:
            raise error(f"lossless payload ends inside residual {j} of {m}")
        u[j] = ((z - pos) << k) | (low[z + 1] if k else 0)
        pos = z + 1 + k
    if size - pos >= 8 or bits[pos:].any():
        raise error("lossless payload has bytes or non-zero bits after its last residual")
    ua = np.asarray(u, np.int64)
    d = (ua >> 1) ^ -(ua & 1)  # the residuals
    for level in range(order - 1, -1, -1):  # undo one difference at a time
        first = np.diff(warm, n=level)[0] if level else warm[0]
        d = np.concatenate([[first], first + np.cumsum(d)])
    if d.size and (d.min() < -32768 or d.max() > 32767):
        raise error("lossless payload decodes outside the int16 range")
    return d.astype(np.int16)
