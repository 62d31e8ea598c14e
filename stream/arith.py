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

from bisect import bisect_right

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
    """Renormalisation emits a run of bits at a time: the ``n`` leading bits ``low`` and ``high``
    share (the first followed by the pending bits, inverted), then the ``k`` underflow steps at
    once (``low`` = 01..., ``high`` = 10...: bit 30 dropped ``k`` times, ``k`` more pending bits) —
    the same bits as the one-bit-per-step loop of the module docstring (`reference_encode` in the
    tests checks it)."""

    def __init__(self):
        self.low, self.high, self.pending = 0, TOP, 0
        self.bits: list[int] = []

    def put(self, cum, s: int) -> None:
        """Code symbol ``s`` of the table whose cumulative row is ``cum`` (K + 1 entries; a list
        of ints is fastest)."""
        lo_c, hi_c, tot = int(cum[s]), int(cum[s + 1]), int(cum[-1])
        low, high = self.low, self.high
        rng = high - low + 1
        high = low + rng * hi_c // tot - 1
        low = low + rng * lo_c // tot
        n = 32 - (low ^ high).bit_length()  # leading bits low and high share
        if n:
            top = low >> (32 - n)
            first = top >> (n - 1)
            bits = self.bits
            bits.append(first)
            if self.pending:
                bits.extend([1 - first] * self.pending)
                self.pending = 0
            if n > 1:
                bits.extend((top >> i) & 1 for i in range(n - 2, -1, -1))
            low = (low << n) & TOP
            high = ((high << n) & TOP) | ((1 << n) - 1)
        if low >= Q1 and high < Q3:  # underflow: low = 01..., high = 10...; drop bit 30 k times
            k = min(_lead(low, 1), _lead(high, 0))
            self.pending += k
            low = (low << k) & (HALF - 1)
            high = ((high << k) & (HALF - 1)) | HALF | ((1 << k) - 1)
        self.low, self.high = low, high

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


def _lead(x: int, bit: int) -> int:
    """How many bits from bit 30 down equal ``bit`` (bit 31 is not looked at)."""
    y = (x if bit == 0 else ~x) & (HALF - 1)  # the run becomes leading zeros below bit 31
    return 31 - y.bit_length()


class Decoder:
    def __init__(self, buf: bytes):
        buf = bytes(buf)
        self._int = int.from_bytes(buf, "big")  # the stream as one integer, read MSB first
        self._len = 8 * len(buf)
        self._pos = 32
        self.low, self.high = 0, TOP
        self.value = self._take(0, 32)
        self.shifts = 0  # renormalisation steps so far: the encoder's bits before its ending
        self.pending = 0  # the encoder's pending bits at this point

    def _take(self, pos: int, n: int) -> int:
        """``n`` bits from bit ``pos`` on (0 past the end)."""
        end = pos + n
        if end <= self._len:
            return (self._int >> (self._len - end)) & ((1 << n) - 1)
        if pos >= self._len:
            return 0
        have = self._len - pos
        return (self._int & ((1 << have) - 1)) << (n - have)

    def get(self, cum) -> int:
        """The next symbol of the table whose cumulative row is ``cum``, a list of Python ints."""
        low, high, value = self.low, self.high, self.value
        tot = cum[-1]
        rng = high - low + 1
        s = bisect_right(cum, ((value - low + 1) * tot - 1) // rng) - 1
        if not 0 <= s < len(cum) - 1:  # cannot happen for any input bits while low <= value <= high
            raise ValueError("arithmetic decoder out of range")
        high = low + rng * cum[s + 1] // tot - 1
        low = low + rng * cum[s] // tot
        n = 32 - (low ^ high).bit_length()
        if n:
            low = (low << n) & TOP
            high = ((high << n) & TOP) | ((1 << n) - 1)
            value = ((value << n) & TOP) | self._take(self._pos, n)
            self._pos += n
            self.pending = 0
        if low >= Q1 and high < Q3:
            k = min(_lead(low, 1), _lead(high, 0))
            low = (low << k) & (HALF - 1)
            high = ((high << k) & (HALF - 1)) | HALF | ((1 << k) - 1)
            value = (value & HALF) | ((value << k) & (HALF - 1)) | self._take(self._pos, k)
            self._pos += k
            self.pending += k
            n += k
        self.shifts += n
        self.low, self.high, self.value = low, high, value
        return s

    def cost(self) -> int:
        """The bits the encoder's stream had after the symbols decoded so far, had it ended there
        (`Encoder.cost`)."""
        return self.shifts + 2

    def check_end(self) -> None:
        """The stream must end right after the symbols decoded: exactly as long as the encoder
        makes it, with its ending and zero padding as specified. (The bits before the ending are
        the ones the decoder followed, so this leaves one valid stream per symbol sequence.)
        Raises ValueError otherwise."""
        n = self.shifts + 2
        if (n + 7) // 8 * 8 != self._len:
            raise ValueError(f"the stream has {self._len // 8} bytes; its symbols code in {(n + 7) // 8}")
        first = 0 if self.low < Q1 else 1
        end = (first << (self.pending + 1)) | (((1 << (self.pending + 1)) - 1) if first == 0 else 0)
        start = self.shifts - self.pending
        if self._take(start, self.pending + 2) != end or self._take(n, self._len - n):
            raise ValueError("the stream does not end as the encoder ends it")
