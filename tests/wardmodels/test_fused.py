import copy
import dataclasses

import pytest
import torch

from wardmodels import codec as C
from wardmodels.fused import FusedCrossModal, FusedDecoder, fuse_decoders

CONFIGS = {
    "ward": C.variant("ward"),
    "ward-fastdec": C.variant("ward-fastdec"),
    # the paper's attention (own values) and two ablations, at the ward's size to stay fast
    "own-values": dataclasses.replace(C.variant("ward"), attn_values="own"),
    "shared-decoder": C.variant("ward", "shared_decoder"),
    "no-attention": C.variant("ward", "no_attention"),
}


def _trained_statistics(cfg):
    torch.manual_seed(0)
    m = C.DualCodec(cfg)
    m.train()
    x = {k: torch.randn(32, 256) for k in C.MODALITIES}
    with torch.no_grad():
        for _ in range(3):  # non-trivial BatchNorm statistics
            m(x, {k: torch.ones(32, dtype=torch.bool) for k in x}, 2)
    return m.eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fused_decoder_and_attention_are_the_same_function(name):
    m = _trained_statistics(CONFIGS[name])
    f = copy.deepcopy(m)
    fuse_decoders(f)
    assert all(isinstance(d, FusedDecoder) for d in f.dec.values())
    assert isinstance(f.attn, FusedCrossModal) == (m.attn is not None)
    if CONFIGS[name].shared_decoder:
        assert f.dec["ecg"] is f.dec["eeg"]
    idx = {k: torch.randint(0, 256, (16, 2, 32)) for k in C.MODALITIES}
    cases = [idx, {"ecg": idx["ecg"], "eeg": None}, {"ecg": None, "eeg": idx["eeg"][:, :1]}]
    for case in cases:
        a, b = m.decode(case), f.decode(case)
        assert a.keys() == b.keys() and a
        for k in a:
            scale = a[k].abs().max()
            assert scale > 0
            assert (a[k] - b[k]).abs().max() <= 1e-5 * scale, (name, k)
    # windows whose partner is present in some rows only (a Dynamic-Deep batch)
    with torch.no_grad():
        q = {k: m.vq[k].lookup(idx[k]) for k in C.MODALITIES}
        present = {"ecg": torch.ones(16, dtype=torch.bool), "eeg": torch.arange(16) % 3 > 0}
        a, b = m.decode_latents(q, present), f.decode_latents(q, present)
    for k in a:
        assert (a[k] - b[k]).abs().max() <= 1e-5 * a[k].abs().max(), (name, k)


@pytest.mark.parametrize("name", ["rhythm", "beat", "rhythm-stream"])
def test_channels_last_convs_are_the_same_function(name):
    """The classifiers' convolutions computed channels-last (what `clf_runtime.load_packed`
    deploys): same outputs, same parameters, and the causal stream still continues chunk to chunk."""
    from wardmodels.classifier import VARIANTS, ResNet1D
    from wardmodels.compress import fold_batchnorm
    from wardmodels.fused import ChannelsLastConv1d, channels_last_convs

    torch.manual_seed(0)
    cfg = VARIANTS[name]
    ref = fold_batchnorm(ResNet1D(cfg)).eval()
    cl = channels_last_convs(copy.deepcopy(ref))
    n_conv = sum(type(m) is torch.nn.Conv1d for m in ref.modules())
    assert n_conv > 0 and sum(isinstance(m, ChannelsLastConv1d) for m in cl.modules()) == n_conv
    assert ref.state_dict().keys() == cl.state_dict().keys()
    x = torch.randn(5, cfg.in_channels, cfg.in_samples)
    extra = torch.randn(5, cfg.extra_features) if cfg.extra_features else None
    with torch.no_grad():
        a, b = ref(x, extra), cl(x, extra)
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
        if cfg.causal:  # two chunks through the causal trunk equal one pass
            half = cfg.in_samples // 2
            h1, s1 = cl.trunk_causal(x[..., :half])
            h2, _ = cl.trunk_causal(x[..., half:], s1)
            whole, _ = ref.trunk_causal(x)
            got = torch.cat([h1, h2], dim=-1)
            assert (got - whole).abs().max() <= 1e-5 * whole.abs().max()
