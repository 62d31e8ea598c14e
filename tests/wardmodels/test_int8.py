"""The integer encoder: its documented arithmetic, its persistence, and the committed artefact."""

import dataclasses

import numpy as np
import pytest
import torch

from wardmodels.codec import DualCodec, variant
from wardmodels.int8 import Int8Encoder, fp32_indices, neg_multiplier, quantise, snap_codebooks


def _tiny_encoder(act_bits):
    """A tiny network (arithmetic check only; its weights mean nothing) with BN statistics."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(variant("ward"), channels=(4, 6, 6), dim=8, codebook_size=16)
    m = DualCodec(cfg)
    m.train()
    x = {k: torch.randn(64, 256) for k in ("ecg", "eeg")}
    with torch.no_grad():
        for _ in range(3):  # BN running statistics and codebook initialisation
            m(x, {k: torch.ones(64, dtype=torch.bool) for k in x}, 2)
    m.eval()
    snap_codebooks(m)
    calib = {k: np.random.default_rng(1).standard_normal((128, 256)).astype(np.float32) for k in x}
    return m, quantise(m, calib, act_bits)


def _scalar_spec(mod, x):
    """The module docstring's rules, written out element by element."""
    lo, hi = -(2 ** (mod.act_bits - 1)), 2 ** (mod.act_bits - 1) - 1
    xs = np.float32(x) * mod.inv_sx + np.float32(0.5)
    h = [[int(min(max(np.floor(v), lo), hi)) for v in xs]]

    def conv(inp, c, act, out_lo, out_hi):
        w, b = c["w"].astype(int), c["b"].astype(int)
        o_n, i_n, k_n = w.shape
        stride, pad = int(c["stride"]), k_n // 2
        length = (len(inp[0]) + 2 * pad - k_n) // stride + 1
        out = []
        for o in range(o_n):
            m_pos, s = int(c["m_pos"][o]), int(c["shift"][o])
            m_neg = (m_pos * 6554 + 32768) >> 16 if act else m_pos
            row = []
            for t in range(length):
                acc = int(b[o])
                for i in range(i_n):
                    for k in range(k_n):
                        p = t * stride + k - pad
                        if 0 <= p < len(inp[i]):
                            acc += int(w[o, i, k]) * inp[i][p]
                m = m_pos if acc >= 0 else m_neg
                row.append(min(max((acc * m + (1 << (s - 1))) >> s, out_lo), out_hi))
            out.append(row)
        return out

    for s in range(3):
        a = conv(h, mod.convs[3 * s], True, lo, hi)
        r1 = conv(a, mod.convs[3 * s + 1], True, lo, hi)
        r2 = conv(r1, mod.convs[3 * s + 2], True, lo, hi)
        ad = mod.adds[s]
        sh = ad["shift"]
        h = [[min(max((av * ad["ma"] + bv * ad["mb"] + (1 << (sh - 1))) >> sh, lo), hi)
              for av, bv in zip(ra, rb)] for ra, rb in zip(a, r2)]
    z = conv(h, mod.convs[-1], False, -32768, 32767)
    idx = []
    for t in range(len(z[0])):
        r = [z[d][t] for d in range(len(z))]
        row = []
        for cb, q in zip(mod.codebooks, mod.cb_exp):
            e = [[int(v) << (mod.p - q) for v in cw] for cw in cb]
            dist = [sum((rv - ev) ** 2 for rv, ev in zip(r, cw)) for cw in e]
            k = dist.index(min(dist))
            row.append(k)
            r = [rv - ev for rv, ev in zip(r, e[k])]
        idx.append(row)
    return np.array(z), np.array(idx).T


@pytest.mark.parametrize("act_bits", [8, 16])
def test_vectorised_encoder_is_the_documented_integer_spec(act_bits):
    _, enc = _tiny_encoder(act_bits)
    mod = enc.modalities["ecg"]
    x = np.random.default_rng(2).standard_normal((2, 256)).astype(np.float32) * 2
    z = mod.run(x)
    idx = mod.search(z)
    for n in range(2):
        z_ref, idx_ref = _scalar_spec(mod, x[n])
        assert np.array_equal(z[n], z_ref)
        assert np.array_equal(idx[n], idx_ref)


def test_leaky_slope_multiplier_and_rounding_rule():
    assert neg_multiplier(np.array([2 ** 30]), True)[0] == (2 ** 30 * 6554 + 32768) >> 16
    assert neg_multiplier(np.array([1234567890]), False)[0] == 1234567890
    from wardmodels.int8 import _requant
    acc = np.array([[[5, -5, 6, -6]]], dtype=np.int64)
    one = np.array([2 ** 30]), np.array([2 ** 30]), np.array([31])  # multiply by 1/2
    # (acc * m + 2^30) >> 31 = floor(acc / 2 + 1/2): round half up
    assert _requant(acc, *one, -128, 127).tolist() == [[[3, -2, 3, -3]]]


def test_saved_encoder_reloads_identically(tmp_path):
    _, enc = _tiny_encoder(16)
    p = enc.save(tmp_path, "edge-tiny")
    again = Int8Encoder.load(p)
    x = np.random.default_rng(3).standard_normal((8, 256)).astype(np.float32)
    for m in ("ecg", "eeg"):
        assert np.array_equal(again.encode(m, x), enc.encode(m, x))
    assert again.nbytes() == enc.nbytes()


def test_committed_edge_encoder_fits_budget_and_agrees_with_fp32(codec, ecg_windows, eeg_windows):
    from wardmodels.frontend import normalise

    assert codec.edge.nbytes() <= 480_000
    agree, total = 0, 0
    for m, w in (("ecg", ecg_windows), ("eeg", eeg_windows[0])):
        x, _ = normalise(w, m)
        a, b = codec.edge.encode(m, x), fp32_indices(codec.model, m, x)
        agree += int((a == b).sum())  # every position of both stages
        total += a.size
    assert agree / total >= 0.99


def test_fold_and_snap_keeps_the_function_and_lands_on_the_int8_grid():
    from wardmodels.codec import fold_and_snap_encoder
    from wardmodels.int8 import folded_layers

    m, _ = _tiny_encoder(16)
    f = fold_and_snap_encoder(m)
    x = torch.randn(16, 256)
    with torch.no_grad():
        z0, z1 = m.enc["ecg"](x), f.enc["ecg"](x)
    assert (z0 - z1).abs().max() <= 0.05 * z0.abs().max()  # int8 weight rounding only
    for layer in folded_layers(f.enc["ecg"]):
        w = layer["w"].reshape(layer["w"].shape[0], -1)
        q = w / (np.abs(w).max(1, keepdims=True) / 127)
        assert np.abs(q - np.round(q)).max() < 1e-4
