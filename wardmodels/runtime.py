"""The deployed codec: committed weights, verified by the hash in their names, as both ends use it.

``wardmodels/weights/MANIFEST.json`` lists the deployed codec models by wire model id::

    {"codecs": [{"model_id": 1, "variant": "ward", "codec": "codec-ward-<sha>.pt",
                 "edge": "edge-ward-<sha>.npz", "reproduce": ["wardstream train codec ...", ...]}]}

* the cloud decodes with ``codec`` (FP32 decoder + attention) and the int8 grid of the codebooks;
* the edge encodes with ``edge`` (integer encoder + int8 codebooks, `wardmodels.int8`).

Levels (the Dynamic-Deep ladder; a higher level sends less): level 0 is raw int16 (the wire
format's own), level ``L >= 1`` sends residual stages ``1 .. stages - L + 1``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from wardmodels.codec import MODALITIES, DualCodec
from wardmodels.frontend import SCALE_BITS, normalise, scale_value
from wardmodels.int8 import Int8Encoder, fp32_indices, snap_codebooks

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS_DIR / "MANIFEST.json"


class WeightsError(RuntimeError):
    pass


def verify_hash(path: Path) -> Path:
    """The name ends in the first 12 hex digits of the file's sha256; refuse anything else."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file {path} is missing")
    want = path.stem.rsplit("-", 1)[-1]
    got = hashlib.sha256(path.read_bytes()).hexdigest()[: len(want)]
    if len(want) < 8 or got != want:
        raise WeightsError(f"{path.name}: content hash {got} does not match its name")
    return path


def manifest() -> list[dict]:
    if not MANIFEST.exists():
        return []
    return json.loads(MANIFEST.read_text())["codecs"]


@dataclass
class DeployedCodec:
    model_id: int
    name: str
    model: DualCodec
    edge: Int8Encoder | None

    def __post_init__(self):
        self._lock = threading.Lock()

    @property
    def priors(self) -> dict:
        return self.edge.priors if self.edge is not None else {}

    @property
    def stages(self) -> int:
        return self.model.cfg.stages

    @property
    def levels(self) -> list[int]:
        return list(range(1, self.stages + 1))

    def stages_for(self, level: int) -> int:
        if not 1 <= level <= self.stages:
            raise ValueError(f"codec {self.name} has levels 1..{self.stages}, not {level}")
        return self.stages - level + 1

    @property
    def codebook_size(self) -> int:
        return self.model.cfg.codebook_size

    @property
    def positions(self) -> int:
        return self.model.cfg.indices_per_stage

    # ------------------------------------------------------------------ edge
    def encode(self, modality: str, filtered: np.ndarray, level: int, encoder: str = "int8"):
        """Band-passed windows (N, 256) -> (scale codes uint8 (N,), indices uint16 (N, S*32)).
        Indices are stage-major: stage 1's 32 positions, then stage 2's."""
        x, codes = normalise(np.atleast_2d(filtered), modality)
        st = self.stages_for(level)
        if encoder == "int8":
            if self.edge is None:
                raise WeightsError(f"codec {self.name} has no int8 edge encoder")
            idx = self.edge.encode(modality, x, st)
        else:
            with self._lock:
                idx = fp32_indices(self.model, modality, x, st)
        return codes, idx.reshape(len(x), -1).astype(np.uint16)

    # ------------------------------------------------------------------ cloud
    def decode(self, idx: dict[str, np.ndarray | None], codes: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        """Indices (N, S*32) and scale codes (N,) per modality (None if absent; both present
        means simultaneous windows) -> physical windows (N, 256) float32."""
        t = {}
        for m in MODALITIES:
            v = idx.get(m)
            if v is None:
                t[m] = None
                continue
            v = np.asarray(v)
            if v.ndim == 1:
                v = v[None]
            if v.shape[1] % self.positions or v.shape[1] // self.positions > self.stages:
                raise ValueError(f"{m}: {v.shape[1]} indices is not a whole number of stages")
            if v.size and int(v.max()) >= self.codebook_size:
                raise ValueError(f"{m}: index {int(v.max())} outside the codebook")
            t[m] = torch.from_numpy(v.astype(np.int64).reshape(len(v), -1, self.positions))
        with self._lock, torch.no_grad():
            rec = self.model.decode(t)
        out = {}
        for m, r in rec.items():
            scale = scale_value(np.atleast_1d(np.asarray(codes[m])), m)
            out[m] = (r.numpy() * scale[:, None]).astype(np.float32)
        return out

    def bits(self, level: int) -> int:
        """Fixed-length bits one modality sends at ``level``: indices + scale byte."""
        return self.stages_for(level) * self.positions * int(np.ceil(np.log2(self.codebook_size))) + SCALE_BITS


def load_model(path: Path) -> DualCodec:
    from wardmodels.train_codec import load_weights

    return snap_codebooks(load_weights(verify_hash(path)))


@lru_cache(maxsize=None)
def load_deployed(model_id: int) -> DeployedCodec:
    for entry in manifest():
        if entry["model_id"] == model_id:
            from wardmodels.fused import fuse_decoders

            model = load_model(WEIGHTS_DIR / entry["codec"])
            fuse_decoders(model)
            edge = Int8Encoder.load(verify_hash(WEIGHTS_DIR / entry["edge"])) if entry.get("edge") else None
            return DeployedCodec(model_id, f"{entry['variant']}-{model_id}", model, edge)
    raise WeightsError(f"no deployed codec with model id {model_id} in {MANIFEST}")


def deployed_ids() -> list[int]:
    return [e["model_id"] for e in manifest()]
