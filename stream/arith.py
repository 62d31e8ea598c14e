"""A 32-bit integer arithmetic coder with static frequency tables, specified for a C encoder.

Witten, Neal & Cleary (1987) with carry-free pending bits. A symbol ``s`` of a table is coded
with its cumulative frequencies ``cum[s] .. cum[s + 1]`` out of the row's total ``T = cum[K]``
(every symbol at least 1, T <= 2^16; `stream.vqcode`'s tables are u8 frequencies, the codec
priors of `wardmodels.entropy` rows of exactly 2^14)::

    range = high - low + 1
    high  = low + range * cum[s + 1] / T - 1      (integer division, 64-bit product)
    low   = low + range * cum[s] / T
    repeat: high < 2^31         -> emit 0, then the pending bits as 1s
            low >= 2^31         -> emit 1, then the pending bits as 0s; low -= 2^31, high -= 2^31
            2^30 <= low, high < 3 * 2^30 -> one more pending bit; low -= 2^30, high -= 2^30
            otherwise stop;  low = 2 * low, high = 2 * high + 1

A stream ends with one more pending bit and then 0 + pending 1s (low < 2^30) or 1 + pending 0s,
so its exact length is known before it ends (`Encoder.cost`), and zero bits pad it to a byte.
The decoder reads bits past the end as 0. Both sides keep ``low``/``high``/``value`` in 32 bits
and products in 64.
"""

from __future__ import annotations

import numpy as np

FREQ_BITS = 14
TOTAL = 1 << FREQ_BITS  # the 14-bit tables' row total
MAX_TOTAL = 1 << 16
TOP = (1 << 32) - 1
HALF = 1 << 31
Q1 = 1 << 30
Q3 = 3 << 30


def cumulative(freqs: np.ndarray, total: int | None = None) -> np.ndarray:
    """Frequency rows (R, K) -> cumulative rows (R, K + 1), int64; every symbol >= 1, each row's
    total <= 2^16 (and equal to ``total`` if given)."""
    f = np.atleast_2d(np.asarray(freqs, np.int64))
    if (f < 1).any() or (f.sum(1) > MAX_TOTAL).any() or (total is not None and (f.sum(1) != total).any()):
        raise ValueError(f"every frequency row needs every symbol >= 1 and a total <= {MAX_TOTAL}"
                         + (f" equal to {total}" if total is not None else ""))
    c = np.zeros((f.shape[0], f.shape[1] + 1), np.int64)
    c[:, 1:] = np.cumsum(f, axis=1)
    return c


class Encoder:
    def __init__(self):
        self.low, self.high, self.pending = 0, TOP, 0
        self.bits: list[int] = []

    def put(self, cum: np.ndarray, s: int) -> None:
        """Code symbol ``s`` of the table whose cumulative row is ``cum`` (K + 1 entries)."""
        lo_c, hi_c, tot = int(cum[s]), int(cum[s + 1]), int(cum[-1])
        low, high, pending, bits = self.low, self.high, self.pending, self.bits
        rng = high - low + 1
        high = low + rng * hi_c // tot - 1
        low = low + rng * lo_c // tot
        while True:
            if high < HALF:
                bits.append(0)
                bits.extend([1] * pending)
                pending = 0
            elif low >= HALF:
                bits.append(1)
                bits.extend([0] * pending)
                pending = 0
                low -= HALF
                high -= HALF
            elif low >= Q1 and high < Q3:
                pending += 1
                low -= Q1
                high -= Q1
            else:
                break
            low <<= 1
            high = (high << 1) | 1
        self.low, self.high, self.pending = low, high, pending

    def cost(self) -> int:
        """Bits the stream would have if it ended now (its ending included)."""
        return len(self.bits) + self.pending + 2

    def finish(self) -> tuple[bytes, int]:
        """End the stream -> (bytes, exact bit count before the padding)."""
        pending = self.pending + 1
        if self.low < Q1:
            self.bits.append(0)
            self.bits.extend([1] * pending)
        else:
            self.bits.append(1)
            self.bits.extend([0] * pending)
        n = len(self.bits)
        return np.packbits(np.array(self.bits, np.uint8)).tobytes(), n


class Decoder:
    def __init__(self, buf: bytes):
        self._bits = np.unpackbits(np.frombuffer(bytes(buf), np.uint8)).tolist()
        self._pos = 0
        self.low, self.high, self.value = 0, TOP, 0
        for _ in range(32):
            self.value = (self.value << 1) | self._next()

    def _next(self) -> int:
        b = self._bits[self._pos] if self._pos < len(self._bits) else 0
        self._pos += 1
        return b

    def get(self, cum: np.ndarray) -> int:
        """The next symbol of the table whose cumulative row is ``cum``."""
        low, high, value = self.low, self.high, self.value
        tot = int(cum[-1])
        rng = high - low + 1
        target = ((value - low + 1) * tot - 1) // rng
        s = int(np.searchsorted(cum, target, side="right")) - 1
        if not 0 <= s < len(cum) - 1:  # cannot happen for any input bits while low <= value <= high
            raise ValueError("arithmetic decoder out of range")
        lo_c, hi_c = int(cum[s]), int(cum[s + 1])
        high = low + rng * hi_c // tot - 1
        low = low + rng * lo_c // tot
        while True:
            if high < HALF:
                pass
            elif low >= HALF:
                low -= HALF
                high -= HALF
                value -= HALF
            elif low >= Q1 and high < Q3:
                low -= Q1
                high -= Q1
                value -= Q1
            else:
                break
            low <<= 1
            high = (high << 1) | 1
            value = (value << 1) | self._next()
        self.low, self.high, self.value = low, high, value
        return s
