"""Dynamic-Deep levels on top of the deployed VQ codec (after Brosh, Wasserstein, Bremler-Barr).

The codec's levels 1 and 2 send 64 and 32 indices per window. Three further levels share its
whole edge trunk (the frozen encoder up to ``z``, D x 32) and add only a thin chain of their own::

    z (64 x 32) --conv k3 s2--> y3 (8 x 16) --LReLU, conv k3 s2--> y4 (8 x 8) --LReLU, conv k3 s2--> y5 (8 x 4)

Level ``L`` in {3, 4, 5} sends the nearest-neighbour index of every position of ``y_L`` in its own
codebook (16, 8 and 4 indices per window), plus the codec's one-byte scale code. On the cloud, a
per-level *adapter* (1x1 conv, transposed-conv upsampling, a residual conv) maps the looked-up
codewords back to a D x 32 latent that enters the codec's own, frozen cross-modal attention and
decoder — the paper's "decoder adapter per level feeding a shared decoder". Levels 0–2 are
untouched, so everything already on the wire keeps its meaning.

Training (`wardstream train dynamic-deep`, see `wardmodels.train_dynamic`) follows the paper's
phases: (1) chains + adapters for reconstruction, (2) fine-tuning with the frozen rhythm
classifier's loss added, (3) the edge error predictors (`wardmodels.predictor`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wardmodels.codec import MODALITIES, DualCodec, VectorQuantizer, _act

# level -> positions (indices per window per modality)
DD_POSITIONS = {3: 16, 4: 8, 5: 4}


@dataclass(frozen=True)
class DDConfig:
    name: str = "ward-dd"
    width: int = 8  # channels of the level chain = codeword dimension
    codebook_sizes: tuple[int, int, int] = (128, 128, 256)  # levels 3, 4, 5 (4 x 8 bits = 4 bytes)
    adapter_channels: int = 64
    ema_decay: float = 0.99
    commitment: float = 0.25
    lr: float = 1e-3
    lr_min: float = 1e-5
    batch: int = 64
    grad_clip: float = 1.0

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(DD_POSITIONS)

    def codebook_size(self, level: int) -> int:
        return self.codebook_sizes[self.levels.index(level)]

    def index_bits(self, level: int) -> int:
        return math.ceil(math.log2(self.codebook_size(level)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DDConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown dynamic-deep config fields {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class LevelChain(nn.Module):
    """Edge side, one modality: z (B, D, 32) -> [y3 (B, w, 16), y4 (B, w, 8), y5 (B, w, 4)]."""

    def __init__(self, dim: int, cfg: DDConfig):
        super().__init__()
        w = cfg.width
        self.convs = nn.ModuleList([nn.Conv1d(dim, w, 3, stride=2, padding=1)]
                                   + [nn.Conv1d(w, w, 3, stride=2, padding=1) for _ in cfg.levels[1:]])

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        ys, h = [], z
        for i, conv in enumerate(self.convs):
            y = conv(h if i == 0 else _act(h))
            ys.append(y)
            h = y
        return ys


class Adapter(nn.Module):
    """Cloud side, one level: codewords (B, w, T) -> latent (B, D, 32) for the shared decoder."""

    def __init__(self, width: int, dim: int, positions: int, channels: int):
        super().__init__()
        n_up = int(round(math.log2(32 // positions)))
        self.inp = nn.Conv1d(width, channels, 1)
        self.ups = nn.ModuleList(nn.ConvTranspose1d(channels, channels, 4, stride=2, padding=1)
                                 for _ in range(n_up))
        self.res1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.res2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.out = nn.Conv1d(channels, dim, 1)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        h = _act(self.inp(q))
        for up in self.ups:
            h = _act(up(h))
        h = h + self.res2(_act(self.res1(h)))
        return self.out(h)


class DynamicCodec(nn.Module):
    """The base codec (frozen) plus the level chains, codebooks and adapters of levels 3–5."""

    def __init__(self, base: DualCodec, cfg: DDConfig):
        super().__init__()
        self.cfg = cfg
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        dim = base.cfg.dim
        self.chain = nn.ModuleDict({m: LevelChain(dim, cfg) for m in MODALITIES})
        self.vq = nn.ModuleDict({m: nn.ModuleList(
            VectorQuantizer(cfg.codebook_size(L), cfg.width, True, cfg.ema_decay, True) for L in cfg.levels)
            for m in MODALITIES})
        self.adapt = nn.ModuleDict({m: nn.ModuleList(
            Adapter(cfg.width, dim, DD_POSITIONS[L], cfg.adapter_channels) for L in cfg.levels)
            for m in MODALITIES})

    def train(self, mode: bool = True):
        super().train(mode)
        self.base.eval()  # frozen: no BatchNorm statistics or codebook EMA updates
        return self

    # ------------------------------------------------------------------ pieces
    def trunk(self, m: str, x: torch.Tensor) -> torch.Tensor:
        return self.base.enc[m](x)

    def base_latent(self, m: str, z: torch.Tensor, stages: int) -> torch.Tensor:
        q, _, _ = self.base.vq[m](z, stages)
        return q

    def level_latents(self, m: str, z: torch.Tensor):
        """-> per level: (latent (B, D, 32), indices (B, T), vq loss)."""
        out = []
        for i, y in enumerate(self.chain[m](z)):
            b, w, t = y.shape
            flat = y.permute(0, 2, 1).reshape(-1, w)
            q, idx, commit, cb = self.vq[m][i](flat)
            q = q.view(b, t, w).permute(0, 2, 1)
            out.append((self.adapt[m][i](q), idx.view(b, t), self.cfg.commitment * commit + cb))
        return out

    def lookup(self, m: str, level: int, idx: torch.Tensor) -> torch.Tensor:
        """Indices (B, T) of a level >= 3 -> latent (B, D, 32)."""
        i = self.cfg.levels.index(level)
        q = self.vq[m][i].embed[idx.long()].permute(0, 2, 1)
        return self.adapt[m][i](q)

    def decode_one(self, m: str, q: torch.Tensor, partner: torch.Tensor | None,
                   present: torch.Tensor | None) -> torch.Tensor:
        """Latent of modality m (B, D, 32), optionally its partner's latent -> normalised window."""
        base = self.base
        if base.attn is not None and partner is not None:
            sa, sb = q.transpose(1, 2), partner.transpose(1, 2)
            v = sa if base.attn.own else sb
            att, _ = base.attn.mha[m](sa, sb, v, need_weights=False)
            gate = present.to(att.dtype)[:, None, None]
            q = (sa + gate * att).transpose(1, 2)
        return base.dec[m](q)


def level_loss(x: torch.Tensor, y: torch.Tensor, modality: str, base_cfg) -> torch.Tensor:
    from wardmodels.codec import recon_loss

    w = base_cfg.loss_ecg if modality == "ecg" else base_cfg.loss_eeg
    return recon_loss(x, y, w, base_cfg.spectral)


def prd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(((x - y) ** 2).sum(-1) / ((x ** 2).sum(-1) + 1e-8))


def kl_to(p_ref: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || softmax(logits)) per row."""
    logq = F.log_softmax(logits, dim=1)
    return (p_ref * (torch.log(p_ref.clamp_min(1e-8)) - logq)).sum(1)


def qrs_envelope(x: torch.Tensor, fs: float = 128.0) -> torch.Tensor:
    """(n, T) ECG -> a differentiable stand-in for the QRS detector's feature (`processors.qrs`):
    5-18 Hz band-pass (FFT mask), squared central slope, 0.15-s moving mean; (n, T - 2)."""
    f = torch.fft.rfftfreq(x.shape[-1], 1 / fs)
    band = ((f >= 5) & (f <= 18)).to(x.dtype)
    y = torch.fft.irfft(torch.fft.rfft(x) * band, n=x.shape[-1])
    s = y[:, 2:] - y[:, :-2]
    k = int(round(0.15 * fs)) | 1
    return F.avg_pool1d((s * s)[:, None], k, 1, k // 2)[:, 0]


def qrs_envelope_loss(ref: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
    """Relative L1 between the QRS envelopes of the original and reconstructed crops, per row: the
    task phase's QRS term (the QRS timing error itself is not differentiable)."""
    e_ref = qrs_envelope(ref)
    return (qrs_envelope(rec) - e_ref).abs().mean(1) / e_ref.mean(1).clamp_min(1e-6)
