"""A small HuBERT-style ECG model: the alternative rhythm backend (same interface as `ResNet1D`).

After HuBERT-ECG (Coppola et al. 2024) and "qHuBERT": a convolutional feature encoder on the
filtered ECG (1280 samples → 80 frames of 125 ms), a pre-norm Transformer over the frames, pre-trained
by masked prediction of cluster pseudo-labels, then fine-tuned for the rhythm classes. The public
HuBERT-ECG weights are non-commercial and not reachable here, so this one is pre-trained from
scratch on unlabelled windows we hold (never the evaluation records):

* pseudo-labels (HuBERT's first iteration): k-means (K = 64) over per-frame descriptors of the input
  (the frame's 16 samples with one neighbour frame on each side, 48 values);
* masking: span starts drawn with p = 0.08, spans of 5 frames (about 35 % of frames masked),
  masked frames replaced by a learned embedding; cross-entropy on the masked frames only;
* fine-tuning: mean-pooled frames → linear head, cross-entropy, Adam lr 1e-4 (the paper's).

Attention is written with plain ``nn.Linear`` projections so LAQ (`wardmodels.compress`) sees
every weight matrix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wardmodels.classifier import RHYTHM_CLASSES, RHYTHM_SAMPLES


@dataclass(frozen=True)
class HubertConfig:
    name: str = "hubert"
    classes: tuple[str, ...] = RHYTHM_CLASSES
    in_samples: int = RHYTHM_SAMPLES
    conv: tuple[tuple[int, int, int], ...] = ((64, 10, 4), (96, 5, 2), (128, 3, 2))  # (channels, kernel, stride)
    d_model: int = 128
    layers: int = 4
    heads: int = 4
    ff: int = 256
    dropout: float = 0.1
    clusters: int = 64
    mask_prob: float = 0.08
    mask_len: int = 5
    extra_features: int = 0
    kind: str = "hubert"

    @property
    def frame_samples(self) -> int:
        return int(np.prod([s for _, _, s in self.conv]))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HubertConfig":
        d = dict(d)
        d["classes"] = tuple(d["classes"])
        d["conv"] = tuple(tuple(c) for c in d["conv"])
        return cls(**d)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.drop.p if self.training else 0.0)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ff2(F.gelu(self.ff1(self.ln2(x)))))


class HubertECG(nn.Module):
    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.cfg = cfg
        convs, c = [], 1
        for ch, k, s in cfg.conv:
            convs += [nn.Conv1d(c, ch, k, s, (k - s) // 2 if k > s else 0), nn.GroupNorm(1, ch), nn.GELU()]
            c = ch
        self.features = nn.Sequential(*convs)
        self.proj = nn.Linear(c, cfg.d_model)
        self.ln = nn.LayerNorm(cfg.d_model)
        self.pos = nn.Conv1d(cfg.d_model, cfg.d_model, 15, padding=7, groups=8)
        self.mask_emb = nn.Parameter(torch.randn(cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.heads, cfg.ff, cfg.dropout) for _ in range(cfg.layers))
        self.ln_out = nn.LayerNorm(cfg.d_model)
        # only while pre-training: a fine-tuned model is saved with clusters = 0
        self.cluster_head = nn.Linear(cfg.d_model, cfg.clusters) if cfg.clusters else None
        self.head = nn.Linear(cfg.d_model, len(cfg.classes))

    def frames(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x[:, None] if x.dim() == 2 else x).transpose(1, 2)  # (B, T, C)
        h = self.ln(self.proj(h))
        if mask is not None:
            h = torch.where(mask[..., None], self.mask_emb.to(h.dtype), h)
        h = h + F.gelu(self.pos(h.transpose(1, 2))).transpose(1, 2)
        for blk in self.blocks:
            h = blk(h)
        return self.ln_out(h)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.frames(x).mean(dim=1))

    def n_frames(self, n_samples: int) -> int:
        with torch.no_grad():
            return self.features(torch.zeros(1, 1, n_samples)).shape[-1]


# --------------------------------------------------------------------------- pre-training
def frame_descriptors(x: np.ndarray, frame: int, n_frames: int) -> np.ndarray:
    """(N, T, 3*frame): each frame's samples with its neighbours (edge frames repeat)."""
    f = x[:, : n_frames * frame].reshape(len(x), n_frames, frame)
    prev = np.concatenate([f[:, :1], f[:, :-1]], axis=1)
    nxt = np.concatenate([f[:, 1:], f[:, -1:]], axis=1)
    return np.concatenate([prev, f, nxt], axis=2)


def span_mask(rng: np.random.Generator, n: int, t: int, p: float, length: int) -> np.ndarray:
    starts = rng.random((n, t)) < p
    m = np.zeros((n, t), bool)
    for s in range(length):
        m[:, s:] |= starts[:, : t - s]
    empty = ~m.any(1)
    if empty.any():  # at least one span per example
        m[np.flatnonzero(empty)[:, None], rng.integers(0, t - length, int(empty.sum()))[:, None] + np.arange(length)] = True
    return m
