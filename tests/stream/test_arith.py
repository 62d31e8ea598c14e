"""The arithmetic coder (`stream.arith`) against a one-bit-per-step transcription of its
specification (the module docstring): the same bits, and every stream decodes to its symbols."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import arith

TOP, HALF, Q1, Q3 = arith.TOP, arith.HALF, arith.Q1, arith.Q3


def reference_encode(rows: list[np.ndarray], symbols: list[int]) -> tuple[bytes, int]:
    low, high, pending, bits = 0, TOP, 0, []
    for cum, s in zip(rows, symbols):
        tot = int(cum[-1])
        rng = high - low + 1
        high = low + rng * int(cum[s + 1]) // tot - 1
        low = low + rng * int(cum[s]) // tot
        while True:
            if high < HALF:
                bits += [0] + [1] * pending
                pending = 0
            elif low >= HALF:
                bits += [1] + [0] * pending
                pending = 0
                low, high = low - HALF, high - HALF
            elif low >= Q1 and high < Q3:
                pending += 1
                low, high = low - Q1, high - Q1
            else:
                break
            low, high = low << 1, (high << 1) | 1
    pending += 1
    bits += ([0] + [1] * pending) if low < Q1 else ([1] + [0] * pending)
    return np.packbits(np.array(bits, np.uint8)).tobytes(), len(bits)


def _tables(rng, k: int, n: int, skew: float) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        f = np.maximum(1, (255 * rng.random(k) ** skew)).astype(np.int64)
        out.append(arith.cumulative(f)[0])
    return out


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([2, 5, 32, 256]), st.integers(1, 90), st.sampled_from([0.5, 3.0, 12.0]))
def test_coder_matches_the_one_bit_per_step_specification(seed, k, n, skew):
    rng = np.random.default_rng(seed)
    tabs = _tables(rng, k, 3, skew)
    rows = [tabs[i % 3] for i in range(n)]
    # symbols drawn from their own table (long runs of likely symbols: many pending bits)
    syms = [int(np.searchsorted(r, rng.integers(0, r[-1]), side="right") - 1) for r in rows]
    enc = arith.Encoder()
    costs = []
    for r, s in zip(rows, syms):
        enc.put(r.tolist(), s)
        costs.append(enc.cost())
    buf, nbits = enc.finish()
    assert (buf, nbits) == reference_encode(rows, syms)
    assert costs[-1] == nbits
    dec = arith.Decoder(buf)
    assert [dec.get(r.tolist()) for r in rows] == syms
    assert dec.shifts + 2 == nbits  # the decoder knows how long the encoder's stream was


def test_fourteen_bit_tables_as_the_codec_priors_use():
    rng = np.random.default_rng(1)
    f = np.maximum(1, (rng.random(256) ** 8 * 200).astype(np.int64))
    f[0] += arith.TOTAL - f.sum()
    cum = arith.cumulative(f, arith.TOTAL)[0]
    syms = [int(s) for s in np.searchsorted(cum, rng.integers(0, arith.TOTAL, 500), side="right") - 1]
    buf, n = arith.Encoder(), None
    for s in syms:
        buf.put(cum, s)
    data, n = buf.finish()
    assert (data, n) == reference_encode([cum] * len(syms), syms)
    with pytest.raises(ValueError):
        arith.cumulative(np.array([[0, 5]]))


def test_a_stream_ends_where_its_symbols_end():
    rng = np.random.default_rng(7)
    cum = _tables(rng, 64, 1, 3.0)[0]
    syms = [int(s) for s in np.searchsorted(cum, rng.integers(0, cum[-1], 40), side="right") - 1]
    enc = arith.Encoder()
    for s in syms:
        enc.put(cum, s)
    buf, n = enc.finish()

    def check(b):
        d = arith.Decoder(b)
        got = [d.get(cum.tolist()) for _ in syms]
        d.check_end()
        return got

    assert check(buf) == syms
    for bad in (buf + b"\x00", buf[:-1], buf[:-1] + bytes([buf[-1] ^ 1 << (7 - (n - 1) % 8)])):
        with pytest.raises(ValueError):
            check(bad)
    if n % 8:  # a padding bit set
        with pytest.raises(ValueError):
            check(buf[:-1] + bytes([buf[-1] | 1]))
