"""LAQ / LAP tools and the packed weight format, on small models (no recordings needed)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from wardmodels import compress
from wardmodels.classifier import VARIANTS, ResNet1D


def _x(m, n):
    return torch.randn(n, m.cfg.in_channels, m.cfg.in_samples)


def _trained_like(cfg_name="beat", seed=0):
    torch.manual_seed(seed)
    m = ResNet1D(VARIANTS[cfg_name])
    # give the batch norms non-trivial statistics, as training would
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(_x(m, 64), torch.randn(64, m.cfg.extra_features) if m.cfg.extra_features else None)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm1d):
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


def test_fold_batchnorm_preserves_the_function():
    m = _trained_like()
    f = compress.fold_batchnorm(m)
    x, e = _x(m, 16), torch.randn(16, m.cfg.extra_features)
    with torch.no_grad():
        assert torch.allclose(m(x, e), f(x, e), atol=1e-4)
    assert not any(isinstance(k, nn.BatchNorm1d) for k in f.modules())


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_quantize_codes_roundtrip_and_error_bound(bits, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 3, 5, generator=g)
    codes, scales = compress.quantize_codes(w, bits)
    assert codes.min() >= 0 and codes.max() < 2 ** bits
    deq = compress.dequantize(codes, scales, bits)
    if bits > 1:
        # symmetric rounding: every weight within half a step of its channel's scale
        step = scales.astype(np.float64).reshape(-1, 1, 1)
        assert np.all(np.abs(deq - w.numpy()) <= step / 2 + 1e-3 * np.abs(w.numpy()) + 1e-6)
    else:
        assert np.array_equal(np.sign(deq), np.where(w.numpy() >= 0, 1.0, -1.0))


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_pack_unpack_gives_the_quantized_dequantized_model(tmp_path, bits):
    m = compress.fold_batchnorm(_trained_like())
    names = [n for n, _ in compress.quantizable(m)]
    b = dict.fromkeys(names, bits)
    path = compress.pack(m, b, m.cfg.to_dict(), tmp_path / "m.wpk")
    cfg, state, got_bits = compress.unpack(path)
    assert cfg["name"] == "beat" and set(got_bits.values()) == {bits}
    fq = compress.apply(m, b)
    for k, v in fq.state_dict().items():
        assert torch.equal(state[k], v), k
    # the file is what the size report counts, and smaller than FP32 by about 32/bits
    rep = compress.size_report(_trained_like(), path)
    assert rep["model_bytes"] == path.stat().st_size
    assert rep["compression_ratio"] > 0.6 * 32 / bits


def test_unpack_refuses_other_files(tmp_path):
    p = tmp_path / "x.wpk"
    p.write_bytes(b"PK\x03\x04 not packed")
    with pytest.raises(ValueError, match="not a packed"):
        compress.unpack(p)


def test_prune_percentile_and_lap_conservative_on_important_layers():
    m = compress.fold_batchnorm(_trained_like())
    w = m.head.weight.data
    pr = compress.prune_tensor(w, 50)
    assert abs((pr == 0).float().mean().item() - 0.5) < 0.05
    lp = compress.lap_percentiles(m, 60)
    imp = compress.importance(m)
    top = max(imp, key=imp.get)
    assert lp[top] == pytest.approx(0.0) and max(lp.values()) <= 60
    low = min(imp, key=imp.get)
    assert lp[low] == max(lp.values())


def test_importance_mixes_share_and_variance():
    m = compress.fold_batchnorm(_trained_like())
    imp = compress.importance(m, alpha=1.0, beta=0.0)
    layers = compress.quantizable(m)
    n = {k: v.weight.numel() for k, v in layers}
    assert sum(imp.values()) == pytest.approx(1.0)
    assert max(imp, key=imp.get) == max(n, key=n.get)


def test_laq_meets_its_tolerance_and_uses_fewer_bits_where_allowed():
    """A toy task where the metric is agreement with the FP32 model's decisions."""
    torch.manual_seed(0)
    m = compress.fold_batchnorm(_trained_like())
    x, e = _x(m, 512), torch.randn(512, m.cfg.extra_features)
    with torch.no_grad():
        ref = m(x, e).argmax(1)

    def metric(model):
        with torch.no_grad():
            return float((model.eval()(x, e).argmax(1) == ref).float().mean())

    res = compress.laq(m, metric, gamma=0.2, tolerance=0.05)
    assert res.baseline == 1.0
    assert res.metric >= 0.95
    assert metric(compress.apply(m, res.bits)) == pytest.approx(res.metric)
    assert min(res.bits.values()) < 8  # something was compressed below 8 bits
    full = compress.model_bits(m, dict.fromkeys(res.bits, 8))
    assert compress.model_bits(m, res.bits) < full


def test_hubert_backend_has_the_classifier_interface_and_laq_sees_every_matrix():
    from wardmodels.hubert import HubertConfig, HubertECG, frame_descriptors, span_mask

    m = HubertECG(HubertConfig()).eval()
    x = torch.randn(3, 1280)
    assert m(x).shape == (3, 4)
    t = m.n_frames(1280)
    mask = span_mask(np.random.default_rng(0), 3, t, 0.08, 5)
    assert mask.any(1).all() and 0.1 < mask.mean() < 0.7
    assert m.cluster_head(m.frames(x, torch.from_numpy(mask))).shape == (3, t, 64)
    d = frame_descriptors(x.numpy(), m.cfg.frame_samples, t)
    assert d.shape == (3, t, 48)
    names = {n for n, _ in compress.quantizable(m)}
    assert {"blocks.0.qkv", "blocks.0.out", "blocks.3.ff2", "head"} <= names


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_quantize_ste_is_the_packed_grid_with_a_straight_through_gradient(bits):
    torch.manual_seed(bits)
    w = torch.randn(16, 8, 5, requires_grad=True)
    q = compress.quantize_ste(w, bits)
    assert torch.equal(q.detach(), compress.quantize_dequantize(w.detach(), bits))
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_qat_recovers_what_2_bit_quantization_lost_and_the_kept_model_packs_to_its_score(tmp_path):
    """Fit-to-teacher task: the packed 2-bit student starts below the FP32 teacher's decisions; a
    few epochs of quantization-aware fine-tuning raise the *packed* model's agreement, and the kept
    model, packed and unpacked, scores exactly what the fine-tuning reported."""
    torch.manual_seed(0)
    m = compress.fold_batchnorm(_trained_like())
    x, e = _x(m, 512), torch.randn(512, m.cfg.extra_features)
    with torch.no_grad():
        ref = m(x, e).argmax(1)
    bits = dict.fromkeys([n for n, _ in compress.quantizable(m)], 2)

    def metric(model):
        with torch.no_grad():
            return float((model.eval()(x, e).argmax(1) == ref).float().mean())

    def batches(ep):
        g = torch.Generator().manual_seed(ep)
        for i in torch.randperm(512, generator=g).split(64):
            yield i

    def loss_fn(model, i):
        return nn.functional.cross_entropy(model(x[i], e[i]), ref[i])

    before = metric(compress.apply(m, bits))
    kept, hist = compress.qat_finetune(m, bits, batches, loss_fn, metric, epochs=4, lr=1e-3)
    assert hist[0]["metric"] == pytest.approx(before)
    after = metric(compress.apply(kept, bits))
    assert after == max(h["metric"] for h in hist)
    assert after > before + 0.05
    path = compress.pack(kept, bits, m.cfg.to_dict(), tmp_path / "m.wpk")
    _, state, _ = compress.unpack(path)
    back = compress.fold_batchnorm(ResNet1D(m.cfg))
    back.load_state_dict(state)
    assert metric(back) == pytest.approx(after)


def _tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                         nn.Linear(8, 4)).eval()


def test_distill_loss_is_the_weighted_sum_of_its_parts():
    teacher, student = _tiny(0), _tiny(1)
    x, y = torch.randn(32, 1, 64), torch.randint(0, 4, (32,))
    ce = nn.CrossEntropyLoss()
    with torch.no_grad():
        s, t = student(x), teacher(x)
        want_ce = float(ce(s, y))
        kl_t2 = float(nn.functional.kl_div(torch.log_softmax(s / 2, 1), torch.log_softmax(t / 2, 1),
                                           log_target=True, reduction="batchmean"))
        assert float(compress.distill_loss(ce)(student, (x, y))) == pytest.approx(want_ce)
        assert float(compress.distill_loss(ce, teacher, 1.0, 2.0)(student, (x, y))) == pytest.approx(4 * kl_t2)
        assert float(compress.distill_loss(ce, teacher, 0.25, 2.0)(student, (x, y))) == pytest.approx(
            0.75 * want_ce + 0.25 * 4 * kl_t2)
        # a student that is its teacher has nothing left to learn from it
        assert float(compress.distill_loss(ce, teacher, 1.0, 1.0)(_tiny(0), (x, y))) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="teacher"):
        compress.distill_loss(ce, None, 0.5)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        compress.distill_loss(ce, teacher, 1.5)


def test_qat_by_distillation_brings_the_packed_model_back_toward_its_fp32_source():
    """The use in `export classifier --qat-distill 1`: the teacher is the FP32 source itself, the
    student its 2-bit quantization; fine-tuning on the teacher's soft outputs alone (no labels)
    lowers the packed model's divergence from the source."""
    src = _tiny(3)
    x = torch.randn(512, 1, 64)
    bits = dict.fromkeys([n for n, _ in compress.quantizable(src)], 2)

    def kl_to_source(model):
        with torch.no_grad():
            return float(nn.functional.kl_div(torch.log_softmax(model.eval()(x), 1), torch.log_softmax(src(x), 1),
                                              log_target=True, reduction="batchmean"))

    def batches(ep):
        for i in torch.randperm(512, generator=torch.Generator().manual_seed(ep)).split(64):
            yield x[i], torch.zeros(len(i), dtype=torch.long)  # labels unused at distill = 1

    loss_fn = compress.distill_loss(nn.CrossEntropyLoss(), src, 1.0, 1.0)
    before = kl_to_source(compress.apply(src, bits))
    kept, hist = compress.qat_finetune(src, bits, batches, loss_fn, lambda m: -kl_to_source(m), epochs=5, lr=3e-3)
    after = kl_to_source(compress.apply(kept, bits))
    assert before > 1e-4
    assert after < 0.5 * before
    assert -after == pytest.approx(max(h["metric"] for h in hist))


def test_bits_from_manifest_reuses_the_deployed_allocation_only_for_its_source_or_a_model_tuned_from_it(tmp_path):
    import json

    from wardmodels.clf_runtime import bits_from_manifest
    from wardmodels.runtime import WEIGHTS_DIR

    man = json.loads((WEIGHTS_DIR / "CLASSIFIERS.json").read_text())["rhythm"]
    bits = bits_from_manifest(WEIGHTS_DIR / "CLASSIFIERS.json", "rhythm", WEIGHTS_DIR / man["source"])
    assert bits == man["bits"] and set(bits.values()) <= {2, 3, 4, 5, 6, 8}
    with pytest.raises(ValueError, match="chosen for"):
        bits_from_manifest(WEIGHTS_DIR / "CLASSIFIERS.json", "rhythm", tmp_path / "clf-rhythm-000000000000.pt")
    # a model fine-tuned from the recorded source (`train_rhythm(init_from=...)`) shares its layers
    import torch

    tuned = tmp_path / "clf-rhythm-111111111111.pt"
    torch.save({"config": {}, "state_dict": {}, "train": {"args": {"init_from": man["source"]}}}, tuned)
    assert bits_from_manifest(WEIGHTS_DIR / "CLASSIFIERS.json", "rhythm", tuned) == man["bits"]
    torch.save({"config": {}, "state_dict": {}, "train": {"args": {"init_from": "clf-rhythm-000000000000.pt"}}}, tuned)
    with pytest.raises(ValueError, match="chosen for"):
        bits_from_manifest(WEIGHTS_DIR / "CLASSIFIERS.json", "rhythm", tuned)
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(ValueError, match="no rhythm entry"):
        bits_from_manifest(tmp_path / "m.json", "rhythm", WEIGHTS_DIR / man["source"])
