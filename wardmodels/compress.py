"""Layer-wise adaptive quantization (LAQ) and pruning (LAP) over any ``nn.Module``, and the packed
format the deployed classifier is stored in.

After "Resource-Efficient ECG Foundation Networks via Layer-wise Adaptive Compression":

* layer importance ``I_l = α·ρ_l + β·δ_l``: ρ_l the layer's share of the quantizable parameters,
  δ_l its weight variance, log-scaled and max-normalised to [0, 1] over the layers;
* LAQ: layers in order of decreasing importance, each gets the smallest bit-width ``b`` with
  ``metric(M_q) >= A0 - γ·I_l`` (the layers already decided stay quantized — greedy). If the
  finished model loses more than ``tolerance`` against A0, γ is halved and the search repeated;
* LAP: per-layer magnitude pruning at the ``p_l``-th percentile, ``p_l = p_max·(1 - I_l)`` —
  conservative on important layers;
* quantization-aware fine-tuning (`qat_finetune`), optional, after LAQ has fixed the bit-widths:
  the forward pass uses each layer's weights on exactly the grid `pack` stores (per-channel
  symmetric, float16 scales), gradients pass straight through to the float weights, and the epoch
  whose *packed* model scores best on the LAQ metric is kept (the LAQ model itself included, so
  fine-tuning can only help on that metric). Its loss may distil the FP32 source (`distill_loss`:
  KL to the teacher's softened outputs, mixed with the task loss), so the quantized model learns
  back the source's own decisions rather than new ones.

Quantization is symmetric, per output channel, to ``b`` bits (``b = 1``: sign × mean |w| per
channel). Batch norms are folded into the preceding convolutions first (`fold_batchnorm`), so the
deployed network is convolutions with bias, ReLU, add, pooling and a linear head.

Packed format (``.wpk``): ``b"WPK1"``, a little-endian uint32 header length, a JSON header
(config, per-layer name, shape, bits, byte offsets), then the payload: per quantized layer the
codes as unsigned ``b``-bit fields packed MSB-first (`np.packbits`), float16 per-channel scales and
float32 biases; other tensors float32. Loading dequantises every layer once into an FP32 module
("packed weights dequantised per layer"); the stored bytes are what `model_bytes` counts.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

MAGIC = b"WPK1"
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- folding
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy with every ``Conv1d`` directly followed by a ``BatchNorm1d`` (as attributes
    ``convN``/``bnN`` of one module, or consecutive in a Sequential) merged into the conv's weight
    and bias; the batch norm becomes ``nn.Identity``. Eval-mode semantics are unchanged."""
    m = copy.deepcopy(model).eval()

    def merge(conv: nn.Conv1d, bn: nn.BatchNorm1d) -> nn.Conv1d:
        s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        new = nn.Conv1d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, conv.groups, bias=True)
        new.weight.data = conv.weight.detach() * s[:, None, None]
        b0 = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new.bias.data = (b0 - bn.running_mean) * s + bn.bias.detach()
        return new

    for mod in list(m.modules()):
        if isinstance(mod, nn.Sequential):
            names = list(mod._modules)
            for a, b in zip(names, names[1:]):
                if isinstance(mod._modules[a], nn.Conv1d) and isinstance(mod._modules[b], nn.BatchNorm1d):
                    mod._modules[a] = merge(mod._modules[a], mod._modules[b])
                    mod._modules[b] = nn.Identity()
        for name, child in list(mod._modules.items()):
            if name.startswith("conv") and isinstance(child, nn.Conv1d):
                bn_name = "bn" + name[4:]
                if isinstance(mod._modules.get(bn_name), nn.BatchNorm1d):
                    mod._modules[name] = merge(child, mod._modules[bn_name])
                    mod._modules[bn_name] = nn.Identity()
    return m


def quantizable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Linear))]


# --------------------------------------------------------------------------- quantize / prune
def quantize_codes(w: torch.Tensor, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric codes (unsigned, offset by 2^(b-1)-1; b=1: 0/1 sign) and
    float16 scales. ``dequantize(codes, scales, bits)`` gives the weight back."""
    w2 = w.detach().reshape(w.shape[0], -1).double().numpy()
    if bits == 1:
        scale = np.abs(w2).mean(axis=1)
        codes = (w2 >= 0).astype(np.int64)
    else:
        qmax = 2 ** (bits - 1) - 1
        scale = np.abs(w2).max(axis=1) / qmax
        scale = np.where(scale > 0, scale, 1.0)
        scale16 = scale.astype(np.float16).astype(np.float64)
        scale16 = np.where(scale16 > 0, scale16, 1.0)
        codes = np.clip(np.round(w2 / scale16[:, None]), -qmax, qmax).astype(np.int64) + qmax
        scale = scale16
    return codes.reshape(w.shape), scale.astype(np.float16)


def dequantize(codes: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    s = scales.astype(np.float32).reshape(-1, *([1] * (codes.ndim - 1)))
    if bits == 1:
        return np.where(codes > 0, 1.0, -1.0).astype(np.float32) * s
    qmax = 2 ** (bits - 1) - 1
    return (codes.astype(np.float32) - qmax) * s


def quantize_dequantize(w: torch.Tensor, bits: int | None) -> torch.Tensor:
    if bits is None or bits >= 32:
        return w
    c, s = quantize_codes(w, bits)
    return torch.from_numpy(dequantize(c, s, bits)).to(w.dtype)


def prune_tensor(w: torch.Tensor, pct: float) -> torch.Tensor:
    if pct <= 0:
        return w
    thr = torch.quantile(w.detach().abs().flatten().float(), min(pct, 100.0) / 100.0)
    return torch.where(w.abs() <= thr, torch.zeros_like(w), w)


def apply(model: nn.Module, bits: dict[str, int | None] | None = None,
          prune: dict[str, float] | None = None) -> nn.Module:
    """A copy with each named layer's weight pruned (percent) and then quantized-dequantized (bits)."""
    m = copy.deepcopy(model)
    for name, mod in quantizable(m):
        w = mod.weight.data
        if prune and prune.get(name):
            w = prune_tensor(w, prune[name])
        if bits and bits.get(name):
            w = quantize_dequantize(w, bits[name])
        mod.weight.data = w
    return m


# --------------------------------------------------------------------------- importance
def importance(model: nn.Module, alpha: float = 0.5, beta: float = 0.5) -> dict[str, float]:
    layers = quantizable(model)
    n = np.array([m.weight.numel() for _, m in layers], np.float64)
    rho = n / n.sum()
    lv = np.log(np.array([float(m.weight.detach().var()) for _, m in layers]) + 1e-12)
    span = lv.max() - lv.min()
    delta = (lv - lv.min()) / span if span > 0 else np.ones_like(lv)
    return {name: float(alpha * r + beta * d) for (name, _), r, d in zip(layers, rho, delta)}


def model_bits(model: nn.Module, bits: dict[str, int | None]) -> int:
    """Storage bits of a (folded) model with per-layer weight bit-widths: codes + fp16 per-channel
    scales + fp32 biases for quantized layers, fp32 for everything else (other parameters and
    buffers)."""
    total = 0
    qnames = set()
    for name, mod in quantizable(model):
        b = bits.get(name)
        qnames.add(name + ".weight")
        if b:
            total += mod.weight.numel() * b + 16 * mod.weight.shape[0]
        else:
            total += 32 * mod.weight.numel()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if name in qnames or name.endswith("num_batches_tracked"):
            continue
        total += 32 * t.numel()
    return total


def fp32_bits(model: nn.Module) -> int:
    return sum(32 * t.numel() for n, t in list(model.named_parameters()) + list(model.named_buffers())
               if not n.endswith("num_batches_tracked"))


@dataclass
class LaqResult:
    bits: dict[str, int]
    importance: dict[str, float]
    baseline: float
    metric: float
    gamma: float
    evaluations: int
    trace: list[dict]


def laq(model: nn.Module, metric: Callable[[nn.Module], float], choices=(1, 2, 3, 4, 5, 6, 8),
        gamma: float = 0.04, tolerance: float = 0.005, alpha: float = 0.5, beta: float = 0.5,
        max_rounds: int = 5) -> LaqResult:
    """Greedy layer-wise bit allocation (see module doc). ``metric`` is higher-is-better."""
    imp = importance(model, alpha, beta)
    order = sorted(imp, key=lambda k: -imp[k])
    a0 = metric(model)
    evals, trace = 1, []
    g = gamma
    for _ in range(max_rounds):
        bits: dict[str, int] = {}
        for name in order:
            chosen = max(choices)
            for b in sorted(choices):
                cand = {**bits, name: b}
                acc = metric(apply(model, cand))
                evals += 1
                if acc >= a0 - g * imp[name]:
                    chosen = b
                    break
            bits[name] = chosen
            trace.append({"gamma": g, "layer": name, "bits": chosen, "metric": acc})
            log.info("LAQ γ=%.4g %s (I=%.3f): %d bits, metric %.4f (A0 %.4f)", g, name, imp[name], chosen, acc, a0)
        final = metric(apply(model, bits))
        evals += 1
        log.info("LAQ γ=%.4g finished: metric %.4f vs A0 %.4f (tolerance %.4f)", g, final, a0, tolerance)
        if final >= a0 - tolerance:
            return LaqResult(bits, imp, a0, final, g, evals, trace)
        g /= 2
    return LaqResult(bits, imp, a0, final, g, evals, trace)


# --------------------------------------------------------------------------- quantization-aware fine-tuning
def quantize_ste(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` on the grid `quantize_codes` / `dequantize` give for ``bits`` (same float16 scales,
    same round-half-even), with a straight-through gradient."""
    w2 = w.reshape(w.shape[0], -1).double()
    if bits == 1:
        s = w2.abs().mean(dim=1).half().double()
        q = torch.where(w2 >= 0, 1.0, -1.0).double() * s[:, None]
    else:
        qmax = 2 ** (bits - 1) - 1
        s = (w2.abs().amax(dim=1) / qmax)
        s = torch.where(s > 0, s, torch.ones_like(s)).half().double()
        s = torch.where(s > 0, s, torch.ones_like(s))
        q = torch.clamp(torch.round(w2 / s[:, None]), -qmax, qmax) * s[:, None]
    q = q.to(w.dtype).reshape(w.shape)
    return w + (q - w).detach()


class _QuantizeSTE(nn.Module):
    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return quantize_ste(w, self.bits)


def qat_finetune(model: nn.Module, bits: dict[str, int], batches: Callable[[int], object],
                 loss_fn: Callable[[nn.Module, object], torch.Tensor], metric: Callable[[nn.Module], float],
                 epochs: int, lr: float = 1e-4, weight_decay: float = 0.0) -> tuple[nn.Module, list[dict]]:
    """Fine-tune a (folded) model with its quantized layers' weights quantized (straight-through) to ``bits``.

    ``batches(epoch)`` yields training batches, ``loss_fn(model, batch)`` gives the loss;
    ``metric`` (higher is better) scores ``apply(model, bits)`` — the packed model — after every
    epoch and before the first. Returns the best such float model (its weights quantize to the
    packed ones) and the history."""
    from torch.nn.utils import parametrize

    work = copy.deepcopy(model)
    for name, mod in quantizable(work):
        if bits.get(name):
            parametrize.register_parametrization(mod, "weight", _QuantizeSTE(bits[name]))

    def latent() -> nn.Module:
        # not deepcopy(work) + remove_parametrizations: the copy shares the parametrized classes,
        # and removing the property there would remove it from `work` too
        m = copy.deepcopy(model)
        m.load_state_dict({k.replace(".parametrizations.weight.original", ".weight"): v.detach().clone()
                           for k, v in work.state_dict().items()})
        return m.eval()

    best_m = copy.deepcopy(model).eval()
    best = metric(apply(best_m, bits))
    history = [{"epoch": 0, "metric": best}]
    log.info("QAT epoch 0 (LAQ model): metric %.4f", best)
    opt = torch.optim.Adam([p for p in work.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    for ep in range(epochs):
        work.train()
        tot, n = 0.0, 0
        for batch in batches(ep):
            loss = loss_fn(work, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot, n = tot + float(loss.detach()), n + 1
        sched.step()
        cand = latent()
        score = metric(apply(cand, bits))
        history.append({"epoch": ep + 1, "train_loss": tot / max(n, 1), "metric": score})
        log.info("QAT epoch %d: train loss %.4f, packed-model metric %.4f (best %.4f)", ep + 1, tot / max(n, 1), score, best)
        if score > best:
            best, best_m = score, cand
    return best_m, history


def distill_loss(criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], teacher: nn.Module | None = None,
                 distill: float = 0.0, temperature: float = 2.0) -> Callable[[nn.Module, tuple], torch.Tensor]:
    """A ``loss_fn(model, (x, y))`` for `qat_finetune`: ``(1 - distill)·criterion(model(x), y) +
    distill·T²·KL(softmax(teacher(x)/T) ‖ softmax(model(x)/T))`` (Hinton et al.'s knowledge
    distillation). With the FP32 source as ``teacher`` the quantized model is pulled toward the
    source's own outputs, not only the labels: it keeps the source's decisions instead of learning
    new ones. ``distill`` 0: the criterion alone; 1: the teacher alone."""
    import torch.nn.functional as F

    if not 0.0 <= distill <= 1.0:
        raise ValueError(f"distill is a weight in [0, 1], got {distill}")
    if distill and teacher is None:
        raise ValueError("distillation needs a teacher model")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if teacher is not None:
        teacher = teacher.eval()

    def loss_fn(model: nn.Module, batch) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = model(x)
        loss = criterion(logits, y) if distill < 1.0 else logits.new_zeros(())
        if distill:
            with torch.no_grad():
                target = F.log_softmax(teacher(x) / temperature, dim=1)
            kl = F.kl_div(F.log_softmax(logits / temperature, dim=1), target, log_target=True, reduction="batchmean")
            loss = (1.0 - distill) * loss + distill * temperature ** 2 * kl
        return loss

    return loss_fn


def lap_percentiles(model: nn.Module, p_max: float, alpha: float = 0.5, beta: float = 0.5) -> dict[str, float]:
    imp = importance(model, alpha, beta)
    hi = max(imp.values())
    return {k: p_max * (1 - v / hi) for k, v in imp.items()}


# --------------------------------------------------------------------------- packed storage
def pack(model: nn.Module, bits: dict[str, int], config: dict, path: Path) -> Path:
    """Write the packed file (see module doc) for a folded model; returns its path."""
    layers, payload = [], bytearray()
    qnames = {}
    for name, mod in quantizable(model):
        b = bits.get(name)
        if not b:
            continue
        codes, scales = quantize_codes(mod.weight, b)
        flat = codes.astype(np.uint8).ravel()
        packed = np.packbits(np.unpackbits(flat[:, None], axis=1)[:, 8 - b:].ravel())
        entry = {"name": name + ".weight", "kind": "q", "bits": b, "shape": list(mod.weight.shape),
                 "off": len(payload), "n": int(packed.size)}
        payload += packed.tobytes()
        entry["scale_off"] = len(payload)
        payload += scales.astype("<f2").tobytes()
        layers.append(entry)
        qnames[name + ".weight"] = True
    for name, t in list(model.state_dict().items()):
        if name in qnames or name.endswith("num_batches_tracked"):
            continue
        arr = t.detach().cpu().numpy().astype("<f4")
        layers.append({"name": name, "kind": "f32", "shape": list(arr.shape), "off": len(payload)})
        payload += arr.tobytes()
    header = json.dumps({"config": config, "tensors": layers}, separators=(",", ":")).encode()
    path = Path(path)
    path.write_bytes(MAGIC + struct.pack("<I", len(header)) + header + bytes(payload))
    return path


def unpack(path: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, int]]:
    """-> (config, state dict of dequantised FP32 tensors, bits per quantized tensor)."""
    blob = Path(path).read_bytes()
    if blob[:4] != MAGIC:
        raise ValueError(f"{path}: not a packed weights file")
    (hl,) = struct.unpack("<I", blob[4:8])
    header = json.loads(blob[8:8 + hl])
    base = 8 + hl
    state, bits = {}, {}
    for e in header["tensors"]:
        shape = tuple(e["shape"])
        n = int(np.prod(shape))
        if e["kind"] == "q":
            b = e["bits"]
            raw = np.frombuffer(blob, np.uint8, e["n"], base + e["off"])
            fields = np.unpackbits(raw)[: n * b].reshape(n, b)
            codes = (fields * (1 << np.arange(b - 1, -1, -1))).sum(axis=1).reshape(shape)
            scales = np.frombuffer(blob, "<f2", shape[0], base + e["scale_off"])
            state[e["name"]] = torch.from_numpy(dequantize(codes, scales, b))
            bits[e["name"]] = b
        else:
            state[e["name"]] = torch.from_numpy(np.frombuffer(blob, "<f4", n, base + e["off"]).reshape(shape).copy())
    return header["config"], state, bits


def size_report(model_fp32: nn.Module, packed: Path) -> dict:
    fp32 = fp32_bits(model_fp32) // 8
    got = Path(packed).stat().st_size
    return {"fp32_bytes": fp32, "model_bytes": got, "compression_ratio": fp32 / got if got else math.nan}
