"""Inference form of the cloud decoder and the cross-modal attention: the same functions
(checked by tests to float rounding), fewer framework calls and no layout copies.

Decoder: BatchNorm folded into the convolutions; each stride-2 transposed convolution
(kernel 4, padding 1) rewritten as an ordinary kernel-3 convolution producing the even and odd
output samples as two channel groups. For ``ConvTranspose1d(k=4, s=2, p=1)`` with weights
``W[:, :, k]``: ``y[2t] = W1·x[t] + W3·x[t-1]`` and ``y[2t+1] = W2·x[t] + W0·x[t+1]``.
Activations are kept channels-last, (B, C, 1, T) with memory order [B][T][C], through kernel
(1, k) 2-D convolutions: the up-convolution's output [B][T][phase][C] then *is* the
interleaved (B, C, 1, 2T) sequence, a strided view, where the channels-first form needed a
permute-and-copy per stage (12 % of decode time). Decoder time at batches of 8 / 64 / 256
window pairs: 2.7 / 12.3 / 38–46 ms → 1.8 / 7.6 / 34–37 ms on 2 cores (AVX-512).

Attention: both directions' query, key and value projections in one matrix product per source
modality, one attention call for both directions, one batched output projection.

Classifiers: `channels_last_convs` gives any network's Conv1d layers the same channels-last
computation (the deployed rhythm and beat models, `wardmodels.clf_runtime`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wardmodels.codec import MODALITIES, ConvBN, CrossModal, Decoder

_CL = torch.channels_last


def _conv2d(weight: torch.Tensor, bias: torch.Tensor) -> tuple[nn.Parameter, nn.Parameter]:
    """A Conv1d's (out, in, k) weight as a channels-last (out, in, 1, k) Conv2d weight."""
    return (nn.Parameter(weight.detach().unsqueeze(2).contiguous(memory_format=_CL), requires_grad=False),
            nn.Parameter(bias.detach().clone(), requires_grad=False))


class _Conv(nn.Module):
    """Kernel-(1, k) convolution over channels-last (B, C, 1, T), 'same' padding. (The decoder
    stays 4-D from its first layer to its last; built from `ChannelsLastConv1d`, which reshapes
    at every call, it was 5-15 % slower at batches of 8-64, in-process A/B.)"""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight, self.bias = _conv2d(weight, bias)
        self.pad = (0, weight.shape[-1] // 2)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, padding=self.pad)


def _fold_convbn(cb: ConvBN) -> _Conv:
    assert cb.conv.stride[0] == 1 and cb.conv.padding[0] == cb.conv.kernel_size[0] // 2
    bn = cb.bn
    g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return _Conv(cb.conv.weight * g[:, None, None], bn.bias - bn.running_mean * g)


class _SubPixelUp(nn.Module):
    def __init__(self, up: nn.ConvTranspose1d, bn: nn.BatchNorm1d):
        super().__init__()
        assert up.kernel_size[0] == 4 and up.stride[0] == 2 and up.padding[0] == 1
        g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        w = up.weight.data * g[None, :, None]  # (in, out, 4)
        cin, cout = w.shape[0], w.shape[1]
        k = torch.zeros(2 * cout, cin, 3)
        k[:cout, :, 0] = w[:, :, 3].t()  # even: x[t-1]
        k[:cout, :, 1] = w[:, :, 1].t()  # even: x[t]
        k[cout:, :, 1] = w[:, :, 2].t()  # odd: x[t]
        k[cout:, :, 2] = w[:, :, 0].t()  # odd: x[t+1]
        b = bn.bias.data - bn.running_mean * g
        self.conv = _Conv(k, torch.cat([b, b]))
        self.cout = cout

    def forward(self, x):
        y = F.leaky_relu(self.conv(x), 0.1, inplace=True).contiguous(memory_format=_CL)  # [B][T][phase][C]
        b, _, _, t = y.shape
        return y.as_strided((b, self.cout, 1, 2 * t), (2 * t * self.cout, 1, 2 * t * self.cout, self.cout))


class FusedDecoder(nn.Module):
    def __init__(self, dec: Decoder):
        super().__init__()
        self.proj = _Conv(dec.proj.weight, dec.proj.bias)
        self.res = nn.ModuleList(nn.ModuleList([_fold_convbn(u["res"].c1), _fold_convbn(u["res"].c2)])
                                 for u in dec.ups)
        self.up = nn.ModuleList(_SubPixelUp(u["up"], u["bn"]) for u in dec.ups)
        self.out = _Conv(dec.out.weight, dec.out.bias)

    def forward(self, q):  # (B, D, 32), any strides -> (B, 256)
        h = self.proj(q.unsqueeze(2).contiguous(memory_format=_CL))
        for (c1, c2), up in zip(self.res, self.up):
            h = up(h + F.leaky_relu(c2(F.leaky_relu(c1(h), 0.1, inplace=True)), 0.1, inplace=True))
        return self.out(h).reshape(len(q), -1)


class FusedCrossModal(nn.Module):
    """`CrossModal.forward` with the projections batched. Keeps ``mha`` and ``own`` (the
    parameters are counted and single directions attended from them, `wardmodels.dynamic`)."""

    def __init__(self, attn: CrossModal):
        super().__init__()
        self.mha, self.own = attn.mha, attn.own
        a, b = MODALITIES
        m0 = attn.mha[a]
        self.heads, d = m0.num_heads, m0.embed_dim
        for mha in attn.mha.values():
            assert mha.batch_first and mha._qkv_same_embed_dim and mha.bias_k is None and not mha.add_zero_attn
        w = {m: mha.in_proj_weight.detach().split(d) for m, mha in attn.mha.items()}
        bias = {m: mha.in_proj_bias.detach().split(d) for m, mha in attn.mha.items()}
        # from each source modality x: x's queries, its partner's keys on x, and the values
        # that x supplies (its partner's values on x, or x's own when values are "own")
        ws, bs = [], []
        for x, y in ((a, b), (b, a)):
            vw, vb = (w[x][2], bias[x][2]) if self.own else (w[y][2], bias[y][2])
            ws.append(torch.cat([w[x][0], w[y][1], vw]).t())
            bs.append(torch.cat([bias[x][0], bias[y][1], vb]))
        # buffers (not parameters: the counted ones stay ``mha``'s), so ``.to()`` moves them too
        self.register_buffer("w", torch.stack(ws).contiguous())  # (2, D, 3D)
        self.register_buffer("b", torch.stack(bs))  # (2, 3D)
        self.register_buffer("wo", torch.stack([attn.mha[m].out_proj.weight.detach().t()
                                                for m in MODALITIES]).contiguous())  # (2, D, D)
        self.register_buffer("bo", torch.stack([attn.mha[m].out_proj.bias.detach() for m in MODALITIES])[:, None, :])

    def forward(self, q: dict[str, torch.Tensor], present: dict[str, torch.Tensor]):
        a, b = MODALITIES
        s = [q[m].transpose(1, 2) for m in MODALITIES]  # (B, T, D)
        n, t, d = s[0].shape
        h = self.heads
        p = [torch.addmm(self.b[i], s[i].reshape(-1, d), self.w[i]).view(n, t, 3, h, d // h) for i in (0, 1)]
        # direction 0: a attends to b (queries from a, keys from b); direction 1: b to a
        qq = torch.cat([p[0][:, :, 0], p[1][:, :, 0]]).transpose(1, 2)
        kk = torch.cat([p[1][:, :, 1], p[0][:, :, 1]]).transpose(1, 2)
        if self.own:
            vv = torch.cat([p[0][:, :, 2], p[1][:, :, 2]]).transpose(1, 2)
        else:
            vv = torch.cat([p[1][:, :, 2], p[0][:, :, 2]]).transpose(1, 2)
        o = F.scaled_dot_product_attention(qq, kk, vv).transpose(1, 2).reshape(2, n * t, d)
        o = torch.baddbmm(self.bo, o, self.wo).view(2, n, t, d)
        out = {}
        for i, (m, partner) in enumerate(((a, b), (b, a))):
            gate = present[partner].to(o.dtype)[:, None, None]
            out[m] = torch.addcmul(s[i], gate, o[i]).transpose(1, 2)  # memory (B, T, D)
        return out


@torch.no_grad()
def fuse_decoders(model) -> None:
    """Swap the model's decoders and attention for their inference form, in place (eval use
    only)."""
    model.eval()
    fused = {}
    for m, dec in model.dec.items():
        if id(dec) not in fused:
            fused[id(dec)] = FusedDecoder(dec).eval()
        model.dec[m] = fused[id(dec)]
    if isinstance(model.attn, CrossModal):
        model.attn = FusedCrossModal(model.attn).eval()


class ChannelsLastConv1d(nn.Conv1d):
    """A Conv1d computed as a kernel-(1, k) Conv2d on channels-last memory, (B, C, T) in and out
    (the output a strided view whose memory is [B][T][C]; elementwise ops keep it, the next such
    convolution reads it without a copy). Same parameters and state dict as the Conv1d it was;
    oneDNN's channels-last kernels are what make it faster on small batches of 1-D signals."""

    def forward(self, x):
        y = F.conv2d(x.unsqueeze(2).contiguous(memory_format=_CL), self.weight.unsqueeze(2), self.bias,
                     (1, self.stride[0]), (0, self.padding[0]))
        return y.squeeze(2)


def channels_last_convs(module: nn.Module) -> nn.Module:
    """Make every plain ``nn.Conv1d`` of ``module`` a `ChannelsLastConv1d`, in place (inference;
    the parameters are the same tensors). On the deployed classifiers (2 cores, AVX-512, the
    best of alternating runs): rhythm model bf16 30.4 → 22.5 ms per 64 decisions, fp32 202 → 129
    ms per 200; beat model bf16 5.9 → 3.6 ms per 40 beats; bf16 outputs bit-identical, fp32
    within float rounding (1e-6)."""
    for m in module.modules():
        if (type(m) is nn.Conv1d and m.padding_mode == "zeros" and m.groups == 1 and m.dilation == (1,)
                and isinstance(m.padding, tuple)):
            m.__class__ = ChannelsLastConv1d
    return module
