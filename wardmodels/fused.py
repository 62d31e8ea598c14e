"""Inference form of the cloud decoder: BatchNorm folded into the convolutions and each
stride-2 transposed convolution (kernel 4, padding 1) rewritten as an ordinary kernel-3
convolution producing the even and odd output samples as two channel groups, interleaved.
Same function (checked by tests to float rounding), several times fewer framework calls.

For ``ConvTranspose1d(k=4, s=2, p=1)`` with weights ``W[:, :, k]``:
``y[2t] = W1·x[t] + W3·x[t-1]`` and ``y[2t+1] = W2·x[t] + W0·x[t+1]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wardmodels.codec import ConvBN, Decoder


def _fold_convbn(cb: ConvBN) -> nn.Conv1d:
    bn = cb.bn
    g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv = nn.Conv1d(cb.conv.in_channels, cb.conv.out_channels, cb.conv.kernel_size[0],
                     stride=cb.conv.stride, padding=cb.conv.padding)
    conv.weight.data = cb.conv.weight.data * g[:, None, None]
    conv.bias.data = bn.bias.data - bn.running_mean * g
    return conv


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
        self.conv = nn.Conv1d(cin, 2 * cout, 3, padding=1)
        self.conv.weight.data = k
        self.conv.bias.data = torch.cat([b, b])
        self.cout = cout

    def forward(self, x):
        y = self.conv(x)  # (B, 2C, T)
        b, _, t = y.shape
        return y.view(b, 2, self.cout, t).permute(0, 2, 3, 1).reshape(b, self.cout, 2 * t)


class FusedDecoder(nn.Module):
    def __init__(self, dec: Decoder):
        super().__init__()
        self.proj = dec.proj
        self.res = nn.ModuleList(nn.ModuleList([_fold_convbn(u["res"].c1), _fold_convbn(u["res"].c2)])
                                 for u in dec.ups)
        self.up = nn.ModuleList(_SubPixelUp(u["up"], u["bn"]) for u in dec.ups)
        self.out = dec.out

    def forward(self, q):
        h = self.proj(q)
        for (c1, c2), up in zip(self.res, self.up):
            h = h + F.leaky_relu(c2(F.leaky_relu(c1(h), 0.1)), 0.1)
            h = F.leaky_relu(up(h), 0.1)
        return self.out(h).squeeze(1)


@torch.no_grad()
def fuse_decoders(model) -> None:
    """Swap the model's decoders for their inference form, in place (eval use only)."""
    model.eval()
    fused = {}
    for m, dec in model.dec.items():
        if id(dec) not in fused:
            fused[id(dec)] = FusedDecoder(dec).eval()
        model.dec[m] = fused[id(dec)]
