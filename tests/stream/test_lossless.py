"""The raw level's lossless coder (`stream.lossless`) against its own specification."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import lossless


def _by_the_spec(x: np.ndarray) -> bytes:
    """The module docstring's encoder, written out bit by bit with Python integers."""
    x = [int(v) for v in x]
    n = len(x)

    def residuals(o):
        d = list(x)
        for _ in range(o):
            d = [d[i + 1] - d[i] for i in range(len(d) - 1)]
        return [2 * e if e >= 0 else -2 * e - 1 for e in d]

    best = None
    for o in range(min(3, n) + 1):
        u = residuals(o)
        bits_k = [sum(v >> k for v in u) + len(u) * (k + 1) for k in range(21)]
        k = bits_k.index(min(bits_k))
        size = 1 + 2 * o + (bits_k[k] + 7) // 8
        if best is None or size < best[0]:
            best = (size, o, k, u)
    if best is None or best[0] >= 1 + 2 * n:
        return bytes([0xFF]) + b"".join(v.to_bytes(2, "big", signed=True) for v in x)
    _, o, k, u = best
    stream = "".join("1" * (v >> k) + "0" + (format(v & ((1 << k) - 1), f"0{k}b") if k else "") for v in u)
    stream += "0" * (-len(stream) % 8)
    body = bytes(int(stream[i:i + 8], 2) for i in range(0, len(stream), 8))
    return bytes([o << 5 | k]) + b"".join(v.to_bytes(2, "big", signed=True) for v in x[:o]) + body


def _signals():
    rng = np.random.default_rng(7)
    t = np.arange(256)
    ecg = 800 * np.exp(-0.5 * ((t % 100 - 50) / 3.0) ** 2) + 60 * np.sin(2 * np.pi * t / 256)
    yield (ecg + rng.normal(0, 8, 256)).astype(np.int16)  # a beat train with noise
    yield np.cumsum(rng.integers(-30, 31, 256)).astype(np.int16)  # a random walk
    yield rng.integers(-32768, 32768, 256).astype(np.int16)  # white noise at full scale: verbatim
    yield np.zeros(256, np.int16)
    yield np.array([32767, -32768] * 128, np.int16)  # the largest order-3 residuals
    yield np.array([5, -3], np.int16)
    yield np.array([], np.int16)


@pytest.mark.parametrize("i", range(7))
def test_encoder_is_its_specification_and_decodes_back(i):
    x = list(_signals())[i]
    coded = lossless.encode(x)
    assert coded == _by_the_spec(x)
    y = lossless.decode(coded, len(x))
    assert y.dtype == np.int16 and np.array_equal(x, y)
    assert len(coded) <= 1 + 2 * len(x)


def test_a_noisy_beat_train_takes_half_the_bytes_or_less():
    x = next(_signals())
    assert len(lossless.encode(x)) < 0.5 * 2 * len(x)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-32768, 32767), min_size=0, max_size=300), st.integers(0, 12))
def test_round_trip_any_int16_window(values, shift):
    x = (np.array(values, np.int64) >> shift).astype(np.int16)  # small shifts: smooth-ish, large: flat
    assert np.array_equal(lossless.decode(lossless.encode(x), len(x)), x)


@pytest.mark.parametrize("payload,n", [(b"", 4), (bytes([0x7F]), 4), (bytes([0xFF, 0, 1]), 4),
                                       (bytes([0x60 | 3]), 2), (bytes([0x00, 0xFF]), 4),
                                       (bytes([0x00, 0x00, 0x01]), 4)])
def test_malformed_payloads_raise_the_given_error(payload, n):
    class Bad(Exception):
        pass

    with pytest.raises(Bad):
        lossless.decode(payload, n, Bad)


def test_a_payload_decoding_outside_int16_is_rejected():
    # order 1 from 32767 with a residual of +1 (u = 2 at k = 1: "1", "0", then the low bit "0"): 32768
    payload = bytes([1 << 5 | 1]) + (32767).to_bytes(2, "big", signed=True) + bytes([0b10000000])
    with pytest.raises(ValueError, match="int16"):
        lossless.decode(payload, 2)
