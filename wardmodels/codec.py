"""Dual VQ autoencoder for 2-s ECG + EEG windows (after "Edge-Aware EEG/ECG Compression Using
Dual VQ-Autoencoders with Cross-Modal Attention", 2026).

One model family, frozen configurations per variant (`VARIANTS`):

* ``paper`` — the paper as written: encoders 1→256→512→512, D = 512, one K = 1024 codebook
  per modality, attention values from the query's own modality.
* ``ward`` — the production variant: a small encoder that fits the Cortex-M7 budget in INT8,
  a two-stage residual codebook (stage 1 alone is the low-rate level, stages 1+2 the
  high-quality level), log-magnitude spectral loss, true cross-attention (values from the
  partner), partner dropout so a window with one modality still decodes.

The edge half (`Encoder` + nearest-neighbour search) uses only Conv1d, BatchNorm (folded at
export), LeakyReLU and addition, so it maps onto integer kernels (see `wardmodels.int8`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MODALITIES = ("ecg", "eeg")


@dataclass(frozen=True)
class CodecConfig:
    name: str
    channels: tuple[int, int, int] = (64, 128, 128)
    dec_channels: tuple[int, int, int] | None = None  # decoder widths, deepest first; None: channels reversed
    folded_encoder: bool = False  # encoder convs carry a bias and no BatchNorm (see fold_and_snap_encoder)
    kernels: tuple[int, int, int] = (5, 3, 3)
    dim: int = 64
    codebook_size: int = 256
    stages: int = 2  # residual VQ stages; level 1 uses all, the last level only the first
    ema: bool = True
    ema_decay: float = 0.99
    dead_code_restart: bool = True
    commitment: float = 0.25
    attention: bool = True
    attn_heads: int = 8
    attn_values: str = "partner"  # "own" is the paper's MHA(q_a, q_b, q_a)
    shared_decoder: bool = False
    partner_dropout: float = 0.1
    stage_dropout: float = 0.5  # probability of training a batch on stage 1 only
    # (alpha_mse, alpha_prd, alpha_spectral) per modality
    loss_ecg: tuple[float, float, float] = (0.4, 0.4, 0.2)
    loss_eeg: tuple[float, float, float] = (0.2, 0.2, 0.6)
    spectral: str = "log"  # "linear" is the paper's mean | |F(x^)| - |F(x)| |
    # weight of `whitened_spectral_loss` per modality (ecg, eeg): the complex error per frequency
    # bin over the batch's power in that bin, every 0.5-40 Hz bin counting alike (as coherence does)
    whitened: tuple[float, float] = (0.0, 0.0)
    lr: float = 1e-3
    weight_decay: float = 5e-5
    lr_min: float = 1e-6
    grad_clip: float = 1.0
    batch: int = 64

    @property
    def indices_per_stage(self) -> int:
        return 256 // 8  # three stride-2 stages

    @property
    def index_bits(self) -> int:
        return math.ceil(math.log2(self.codebook_size))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CodecConfig":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kw = {}
        for k, v in d.items():
            if k in fields:
                kw[k] = tuple(v) if isinstance(v, list) else v
        unknown = set(d) - set(fields)
        if unknown:
            raise ValueError(f"unknown codec config fields {sorted(unknown)}")
        return cls(**kw)


VARIANTS: dict[str, CodecConfig] = {
    "paper": CodecConfig(
        name="paper", channels=(256, 512, 512), dim=512, codebook_size=1024, stages=1,
        attn_values="own", partner_dropout=0.0, stage_dropout=0.0, spectral="linear",
        lr=2e-4, weight_decay=5e-5),
    "ward": CodecConfig(name="ward", channels=(64, 96, 96), dim=64, codebook_size=256, stages=2),
}
# the same edge and codebooks with a decoder of about a third of the multiply-accumulates,
# trained on the frozen encoders of a trained `ward` (train --init-from)
VARIANTS["ward-fastdec"] = dataclasses.replace(VARIANTS["ward"], name="ward-fastdec", dec_channels=(64, 64, 32),
                                               folded_encoder=True)
# `ward-fastdec` whose EEG side is fine-tuned with the whitened spectral term (train --finetune eeg
# --init-from the ward-fastdec weights): the 30-40 Hz band, a quarter of the coherence metric's bins
# 20-25 dB under the delta-alpha bands, gets into the codes (the ECG side is ward-fastdec's, frozen)
VARIANTS["ward-hf"] = dataclasses.replace(VARIANTS["ward-fastdec"], name="ward-hf", whitened=(0.0, 0.7))

# the paper's five ablations, as switches on any variant
ABLATIONS = {
    "no_attention": dict(attention=False),
    "uniform_loss": dict(loss_ecg=(1 / 3, 1 / 3, 1 / 3), loss_eeg=(1 / 3, 1 / 3, 1 / 3)),
    "no_ema": dict(ema=False),
    "no_dead_code": dict(dead_code_restart=False),
    "shared_decoder": dict(shared_decoder=True),
}


def variant(name: str, ablation: str | None = None) -> CodecConfig:
    try:
        cfg = VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown codec variant {name!r}; known: {sorted(VARIANTS)}") from None
    if ablation:
        try:
            cfg = dataclasses.replace(cfg, name=f"{name}-{ablation}", **ABLATIONS[ablation])
        except KeyError:
            raise ValueError(f"unknown ablation {ablation!r}; known: {sorted(ABLATIONS)}") from None
    return cfg


# --------------------------------------------------------------------------- blocks
def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.1)


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, folded: bool = False):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, stride=stride, padding=k // 2, bias=folded)
        self.bn = nn.Identity() if folded else nn.BatchNorm1d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class ResBlock(nn.Module):
    """h + σ(W2 * σ(W1 * h)), size-3 kernels, BN after each conv (folded at export)."""

    def __init__(self, c: int, folded: bool = False):
        super().__init__()
        self.c1 = ConvBN(c, c, 3, folded=folded)
        self.c2 = ConvBN(c, c, 3, folded=folded)

    def forward(self, h):
        return h + _act(self.c2(_act(self.c1(h))))


class Encoder(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        stages = []
        cin = 1
        f = cfg.folded_encoder
        for c, k in zip(cfg.channels, cfg.kernels):
            stages.append(nn.ModuleDict({"down": ConvBN(cin, c, k, stride=2, folded=f),
                                         "res": ResBlock(c, folded=f)}))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.proj = nn.Conv1d(cin, cfg.dim, 1)

    def forward(self, x):  # (B, 256) -> (B, D, 32)
        h = x.unsqueeze(1)
        for st in self.stages:
            h = st["res"](_act(st["down"](h)))
        return self.proj(h)


class Decoder(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        ch = list(cfg.dec_channels or cfg.channels[::-1])  # deepest first, e.g. 96, 96, 64
        self.proj = nn.Conv1d(cfg.dim, ch[0], 1)
        ups = []
        for i, c in enumerate(ch):
            cout = ch[i + 1] if i + 1 < len(ch) else ch[-1]
            ups.append(nn.ModuleDict({
                "res": ResBlock(c),
                "up": nn.ConvTranspose1d(c, cout, 4, stride=2, padding=1, bias=False),
                "bn": nn.BatchNorm1d(cout),
            }))
        self.ups = nn.ModuleList(ups)
        self.out = nn.Conv1d(ch[-1], 1, 3, padding=1)

    def forward(self, q):  # (B, D, 32) -> (B, 256)
        h = self.proj(q)
        for u in self.ups:
            h = _act(u["bn"](u["up"](u["res"](h))))
        return self.out(h).squeeze(1)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook with straight-through gradients; EMA updates and dead-code
    restart (entries whose EMA count falls below 1 take a random encoder output)."""

    def __init__(self, k: int, d: int, ema: bool, decay: float, restart: bool):
        super().__init__()
        self.k, self.d, self.use_ema, self.decay, self.restart = k, d, ema, decay, restart
        embed = torch.randn(k, d) * 0.1
        if ema:
            self.register_buffer("embed", embed)
            self.register_buffer("ema_count", torch.ones(k))
            self.register_buffer("ema_sum", embed.clone())
        else:
            self.embed = nn.Parameter(embed)
            self.register_buffer("ema_count", torch.ones(k))  # usage tracking for restarts
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, D) -> index (N,) of the nearest entry (squared Euclidean)."""
        e = self.embed
        dist = (e * e).sum(1)[None, :] - 2 * z @ e.t()
        return dist.argmin(1)

    def forward(self, z: torch.Tensor):
        """z (N, D) -> (quantised with straight-through, index, commitment + codebook loss)."""
        if self.training and not bool(self.initialised):
            with torch.no_grad():
                pick = torch.randint(0, z.shape[0], (self.k,))
                self.embed.data.copy_(z[pick].detach())
                if self.use_ema:
                    self.ema_sum.copy_(self.embed)
                self.initialised.fill_(True)
        idx = self.nearest(z.detach())
        q = self.embed[idx]
        commit = F.mse_loss(z, q.detach())
        loss_cb = z.new_zeros(())
        if self.training:
            with torch.no_grad():
                onehot = F.one_hot(idx, self.k).type(z.dtype)
                count = onehot.sum(0)
                self.ema_count.mul_(self.decay).add_(count, alpha=1 - self.decay)
                if self.use_ema:
                    self.ema_sum.mul_(self.decay).add_(onehot.t() @ z.detach(), alpha=1 - self.decay)
                    n = self.ema_count.sum()
                    smoothed = (self.ema_count + 1e-5) / (n + self.k * 1e-5) * n
                    self.embed.copy_(self.ema_sum / smoothed[:, None])
                if self.restart:
                    dead = self.ema_count < 1.0
                    nd = int(dead.sum())
                    if nd:
                        pick = torch.randint(0, z.shape[0], (nd,))
                        self.embed.data[dead] = z.detach()[pick]
                        self.ema_count[dead] = 1.0
                        if self.use_ema:
                            self.ema_sum[dead] = z.detach()[pick]
            if not self.use_ema:
                loss_cb = F.mse_loss(q, z.detach())
        q_st = z + (q - z).detach()
        return q_st, idx, commit, loss_cb


class ResidualVQ(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.stages = nn.ModuleList(
            VectorQuantizer(cfg.codebook_size, cfg.dim, cfg.ema, cfg.ema_decay, cfg.dead_code_restart)
            for _ in range(cfg.stages))
        self.beta = cfg.commitment

    def forward(self, z: torch.Tensor, n_stages: int):
        """z (B, D, T) -> (q (B, D, T), idx (B, S, T), loss)."""
        b, d, t = z.shape
        flat = z.permute(0, 2, 1).reshape(-1, d)
        resid = flat
        total = torch.zeros_like(flat)
        idxs, loss = [], flat.new_zeros(())
        for s, vq in enumerate(self.stages):
            if s >= n_stages and not self.training:
                break
            q, idx, commit, cb = vq(resid)
            loss = loss + self.beta * commit + cb
            if s < n_stages:
                total = total + q
            resid = resid - q.detach()
            idxs.append(idx.view(b, t))
        qz = total.view(b, t, d).permute(0, 2, 1)
        return qz, torch.stack(idxs, 1), loss

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, S', T) with S' <= stages -> q (B, D, T)."""
        out = 0
        for s in range(idx.shape[1]):
            out = out + self.stages[s].embed[idx[:, s]]
        return out.permute(0, 2, 1)


class CrossModal(nn.Module):
    """q̃_a = q_a + MHA(q_a, q_b, v) for both directions; v = q_b ("partner") or q_a ("own")."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.own = cfg.attn_values == "own"
        self.mha = nn.ModuleDict({m: nn.MultiheadAttention(cfg.dim, cfg.attn_heads, batch_first=True)
                                  for m in MODALITIES})

    def forward(self, q: dict[str, torch.Tensor], present: dict[str, torch.Tensor]):
        """q[m]: (B, D, T); present[m]: (B,) bool — a missing partner contributes nothing."""
        seq = {m: q[m].transpose(1, 2) for m in MODALITIES}
        out = {}
        for a, b in (("ecg", "eeg"), ("eeg", "ecg")):
            v = seq[a] if self.own else seq[b]
            att, _ = self.mha[a](seq[a], seq[b], v, need_weights=False)
            gate = present[b].to(att.dtype)[:, None, None]
            out[a] = (seq[a] + gate * att).transpose(1, 2)
        return out


class DualCodec(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        self.enc = nn.ModuleDict({m: Encoder(cfg) for m in MODALITIES})
        self.vq = nn.ModuleDict({m: ResidualVQ(cfg) for m in MODALITIES})
        self.attn = CrossModal(cfg) if cfg.attention else None
        if cfg.shared_decoder:
            shared = Decoder(cfg)
            self.dec = nn.ModuleDict({m: shared for m in MODALITIES})
        else:
            self.dec = nn.ModuleDict({m: Decoder(cfg) for m in MODALITIES})

    # ---------------------------------------------------------------- edge
    @torch.no_grad()
    def encode(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Normalised windows (B, 256) per modality -> indices (B, stages, 32) (FP32 reference)."""
        out = {}
        for m, xm in x.items():
            z = self.enc[m](xm)
            _, idx, _ = self.vq[m](z, self.cfg.stages)
            out[m] = idx
        return out

    # ---------------------------------------------------------------- cloud
    def decode_latents(self, q: dict[str, torch.Tensor], present: dict[str, torch.Tensor]):
        if self.attn is not None:
            q = self.attn(q, present)
        return {m: self.dec[m](q[m]) for m in MODALITIES}

    @torch.no_grad()
    def decode(self, idx: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        """Indices (B, S', 32) per modality (None when absent) -> normalised windows (B, 256)."""
        ref = next(v for v in idx.values() if v is not None)
        b = ref.shape[0]
        q, present = {}, {}
        for m in MODALITIES:
            if idx.get(m) is None:
                q[m] = torch.zeros(b, self.cfg.dim, self.cfg.indices_per_stage)
                present[m] = torch.zeros(b, dtype=torch.bool)
            else:
                q[m] = self.vq[m].lookup(idx[m].long())
                present[m] = torch.ones(b, dtype=torch.bool)
        rec = self.decode_latents(q, present)
        return {m: rec[m] for m in MODALITIES if idx.get(m) is not None}

    def forward(self, x: dict[str, torch.Tensor], present: dict[str, torch.Tensor], n_stages: int):
        q, idx, vq_loss = {}, {}, 0
        for m in MODALITIES:
            z = self.enc[m](x[m])
            q[m], idx[m], lm = self.vq[m](z, n_stages)
            vq_loss = vq_loss + lm
        rec = self.decode_latents(q, present)
        return rec, idx, vq_loss


# --------------------------------------------------------------------------- losses
WHITENED_BINS = slice(1, 81)  # 0.5-40 Hz of a 256-point window at 128 Hz (0.5-Hz bins)


def whitened_spectral_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the 0.5-40 Hz bins of |F(y) - F(x)|^2 / (the batch's mean |F(x)|^2 in that bin).

    Phase-aware, and blind to how much power a band holds: the magnitude-squared coherence the
    codec is scored on averages its bins alike, so a weak band (EEG above 30 Hz, 20-25 dB under
    the delta-alpha bands) counts as much as a strong one. MSE and PRD let the weak bands go; the
    log-magnitude term keeps their power but not their phase."""
    fx, fy = torch.fft.rfft(x)[:, WHITENED_BINS], torch.fft.rfft(y)[:, WHITENED_BINS]
    power = (fx.abs() ** 2).mean(0).detach() + 1e-6
    return ((fy - fx).abs() ** 2 / power).mean()


def recon_loss(x: torch.Tensor, y: torch.Tensor, w: tuple[float, float, float], spectral: str,
               whitened: float = 0.0):
    mse = F.mse_loss(y, x)
    prd = torch.sqrt(((x - y) ** 2).sum(-1) / ((x ** 2).sum(-1) + 1e-8)).mean()
    fx, fy = torch.fft.rfft(x).abs(), torch.fft.rfft(y).abs()
    if spectral == "log":
        spec = (torch.log1p(fy) - torch.log1p(fx)).abs().mean()
    else:
        spec = (fy - fx).abs().mean()
    loss = w[0] * mse + w[1] * prd + w[2] * spec
    return loss + whitened * whitened_spectral_loss(x, y) if whitened else loss


@torch.no_grad()
def fold_and_snap_encoder(model: "DualCodec") -> "DualCodec":
    """The same codec with BatchNorm folded into the encoder convolutions and every encoder
    weight rounded to its per-output-channel int8 grid (scale max|w| / 127).

    The result is still a float network, but one whose weights the int8 encoder holds exactly,
    so the integer encoder differs from it only by activation rounding. Decoders trained on it
    (``train --init-from``) learn from the codes the device really sends.
    """
    cfg = dataclasses.replace(model.cfg, folded_encoder=True)
    out = DualCodec(cfg)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("enc.")}
    out.load_state_dict(state, strict=False)

    def snap(w):
        sw = w.abs().reshape(w.shape[0], -1).amax(1).clamp_min(1e-12) / 127.0
        return torch.round(w / sw[:, None, None]).clamp(-127, 127) * sw[:, None, None]

    for m in MODALITIES:
        src, dst = model.enc[m], out.enc[m]
        pairs = []
        for s_st, d_st in zip(src.stages, dst.stages):
            pairs += [(s_st["down"], d_st["down"]), (s_st["res"].c1, d_st["res"].c1),
                      (s_st["res"].c2, d_st["res"].c2)]
        for a, b in pairs:
            if isinstance(a.bn, nn.Identity):
                w, bias = a.conv.weight, a.conv.bias
            else:
                g = a.bn.weight / torch.sqrt(a.bn.running_var + a.bn.eps)
                w = a.conv.weight * g[:, None, None]
                bias = a.bn.bias - a.bn.running_mean * g
            b.conv.weight.copy_(snap(w))
            b.conv.bias.copy_(bias)
        dst.proj.weight.copy_(snap(src.proj.weight))
        dst.proj.bias.copy_(src.proj.bias)
    out.eval()
    return out


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
