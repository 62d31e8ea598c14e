"""The deployed codec: committed weights, verified by the hash in their names, as both ends use it.

``wardmodels/weights/MANIFEST.json`` lists the deployed codec models by wire model id::

    {"codecs": [{"model_id": 1, "variant": "ward", "codec": "codec-ward-<sha>.pt",
                 "edge": "edge-ward-<sha>.npz", "reproduce": ["wardstream train codec ...", ...]}]}

* the cloud decodes with ``codec`` (FP32 decoder + attention) and the int8 grid of the codebooks;
* the edge encodes with ``edge`` (integer encoder + int8 codebooks, `wardmodels.int8`).

Levels (the Dynamic-Deep ladder; a higher level sends less): level 0 is raw int16 (the wire
format's own), level ``L`` in 1..stages sends residual stages ``1 .. stages - L + 1``; a model
with Dynamic-Deep weights (``"dd"`` in its manifest entry, `wardmodels.dynamic`) adds levels
3, 4, 5 (16, 8, 4 indices) on the same trunk, its integer level chain (``"dd_edge"``) and the
calibrated edge error predictor (``"predictor"``, `wardmodels.predictor`; the opt-in kinds
``"predictor_decode"`` and ``"predictor_rhythm"``, the latter with the device's small rhythm model
``"edge_rhythm"``, `wardmodels.edge_rhythm`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from wardmodels.codec import MODALITIES, DualCodec
from wardmodels.frontend import SCALE_BITS, normalise, scale_value
from wardmodels.hashname import WeightsError, verify_hash  # noqa: F401  (re-exported: where callers look)
from wardmodels.int8 import Int8Encoder, fp32_indices, snap_codebooks
from wardmodels.shapes import bucket

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS_DIR / "MANIFEST.json"


def manifest() -> list[dict]:
    if not MANIFEST.exists():
        return []
    return json.loads(MANIFEST.read_text())["codecs"]


PREDICTOR_KINDS = ("default", "decode", "rhythm")


def is_predictor_file(kind: str) -> bool:
    """Whether ``kind`` names an existing predictor file rather than a deployed kind."""
    return kind not in PREDICTOR_KINDS and Path(kind).name.startswith("predictor-") \
        and Path(kind).suffix == ".npz" and Path(kind).is_file()


def check_predictor(kind: str) -> str:
    """``kind`` if it is a predictor kind or an existing predictor file; else a ValueError that
    says what is accepted (settings, the CLI and `DeployedCodec.predictor_of` share it)."""
    if kind in PREDICTOR_KINDS or is_predictor_file(kind):
        return kind
    raise ValueError(f"the edge error predictor must be one of {', '.join(PREDICTOR_KINDS)} or an existing "
                     f"predictor file (predictor-<hash>.npz), not {kind!r}")


@lru_cache(maxsize=8)
def _predictor_file(path: str):
    from wardmodels.predictor import Predictor

    return Predictor.load(verify_hash(Path(path)))


@dataclass
class DeployedCodec:
    model_id: int
    name: str
    model: DualCodec
    edge: Int8Encoder | None
    dd: object | None = None  # wardmodels.dynamic.DynamicCodec (cloud: codebooks + adapters)
    chains: dict | None = None  # modality -> wardmodels.dd_edge.IntChain (edge)
    predictor: object | None = None  # wardmodels.predictor.Predictor (edge)
    entry: dict = field(default_factory=dict)
    # the opt-in predictor that also reads the device's decode check (`dd_edge.DecodeCheck`)
    predictor_decode: object | None = None
    # the opt-in predictor that also reads the device's small rhythm model (`wardmodels.edge_rhythm`)
    predictor_rhythm: object | None = None
    edge_rhythm: object | None = None  # wardmodels.edge_rhythm.EdgeRhythm (edge)

    def __post_init__(self):
        self._lock = threading.Lock()

    def predictor_of(self, kind: str = "default"):
        """The edge error predictor ``kind``: "default" (distortion + task features), "decode"
        (also the decode check: the device decodes every level itself) or "rhythm" (also the
        device's small rhythm model on the original and every level, `wardmodels.edge_rhythm`) —
        or the path of a predictor file (``predictor-<hash>.npz``, e.g. one fitted with
        ``wardstream train dynamic-deep --phase predictor --no-deploy``), whose inputs say which of
        those features the device computes for it."""
        if check_predictor(kind) not in PREDICTOR_KINDS:
            return _predictor_file(str(Path(kind).resolve()))
        pr = {"default": self.predictor, "decode": self.predictor_decode, "rhythm": self.predictor_rhythm}[kind]
        if pr is None:
            raise WeightsError(f"codec {self.name} has no {kind} predictor; run wardstream train dynamic-deep "
                               f"--phase predictor" + {"default": "", "decode": " --decode-check",
                                                       "rhythm": " --decode-check --rhythm-check"}[kind])
        return pr

    @property
    def priors(self) -> dict:
        return self.edge.priors if self.edge is not None else {}

    @property
    def stages(self) -> int:
        return self.model.cfg.stages

    @property
    def levels(self) -> list[int]:
        return list(range(1, self.stages + 1)) + (list(self.dd.cfg.levels) if self.dd is not None else [])

    def stages_for(self, level: int) -> int:
        """Residual stages a base level sends (validates any level of this codec)."""
        if level not in self.levels:
            raise ValueError(f"codec {self.name} has levels {self.levels}, not {level}")
        return self.stages - level + 1 if level <= self.stages else 0

    def n_indices(self, level: int) -> int:
        if level <= self.stages:
            return self.stages_for(level) * self.positions
        self.stages_for(level)
        from wardmodels.dynamic import DD_POSITIONS

        return DD_POSITIONS[level]

    def level_codebook_size(self, level: int) -> int:
        return self.codebook_size if level <= self.stages else self.dd.cfg.codebook_size(level)

    def _level_of_width(self, width: int) -> int:
        for L in self.levels:
            if self.n_indices(L) == width:
                return L
        raise ValueError(f"{width} indices is no level of codec {self.name}")

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
        if level > self.stages:
            return codes, self._encode_dd(modality, x, codes, level, encoder)
        if encoder == "int8":
            if self.edge is None:
                raise WeightsError(f"codec {self.name} has no int8 edge encoder")
            idx = self.edge.encode(modality, x, st)
        else:
            with self._lock:
                idx = fp32_indices(self.model, modality, x, st)
        return codes, idx.reshape(len(x), -1).astype(np.uint16)

    def _encode_dd(self, modality: str, x: np.ndarray, codes: np.ndarray, level: int, encoder: str):
        if encoder == "int8":
            idx, _ = self.analyse(modality, x, codes)
            return idx[level]
        with self._lock, torch.no_grad():
            z = self.dd.trunk(modality, torch.from_numpy(np.asarray(x, np.float32)))
            i = self.dd.cfg.levels.index(level)
            y = self.dd.chain[modality](z)[i]
            b, w, t = y.shape
            idx = self.dd.vq[modality][i].nearest(y.permute(0, 2, 1).reshape(-1, w)).view(b, t)
        return idx.numpy().astype(np.uint16)

    def analyse(self, modality: str, x: np.ndarray, codes: np.ndarray, encoder: str = "int8"):
        """Normalised windows -> (indices of every VQ level, predictor features without history):
        the device's one integer pass before it picks a level (`wardmodels.dd_edge`); ``encoder=
        "fp32"``: the float network on the same grid (the simulator's fast path)."""
        from wardmodels.dd_edge import analyse_float, analyse_int

        if self.chains is None or self.edge is None:
            raise WeightsError(f"codec {self.name} has no Dynamic-Deep edge")
        if encoder == "fp32":
            with self._lock:
                return analyse_float(self.dd, modality, self.edge.modalities[modality].p, self.chains[modality],
                                     np.atleast_2d(x), codes)
        return analyse_int(self.edge.modalities[modality], self.chains[modality], np.atleast_2d(x), codes)

    # ------------------------------------------------------------------ cloud
    def _latent(self, m: str, v: np.ndarray) -> torch.Tensor:
        level = self._level_of_width(v.shape[1])
        if v.size and int(v.max()) >= self.level_codebook_size(level):
            raise ValueError(f"{m}: index {int(v.max())} outside the level-{level} codebook")
        t = torch.from_numpy(v.astype(np.int64))
        if level <= self.stages:
            return self.model.vq[m].lookup(t.reshape(len(v), -1, self.positions))
        return self.dd.lookup(m, level, t)

    def decode(self, idx: dict[str, np.ndarray | None], codes: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        """Indices (N, S*32) and scale codes (N,) per modality (None if absent; both present
        means simultaneous windows) -> physical windows (N, 256) float32. One level per modality,
        whole arrays (for evaluations and benches: calling `decode_windows`, which takes mixed
        levels as per-window lists, cost 3-12 % at batches of 64 here)."""
        t = {}
        for m in MODALITIES:
            v = idx.get(m)
            if v is None:
                t[m] = None
                continue
            v = np.asarray(v)
            if v.ndim == 1:
                v = v[None]
            t[m] = v
        with self._lock, torch.no_grad():
            b = len(next(v for v in t.values() if v is not None))
            q = {m: (self._latent(m, t[m]) if t[m] is not None
                     else torch.zeros(b, self.model.cfg.dim, self.positions)) for m in MODALITIES}
            present = {m: torch.full((b,), t[m] is not None, dtype=torch.bool) for m in MODALITIES}
            rec = self.model.decode_latents(q, present)
        out = {}
        for m, r in rec.items():
            if t[m] is None:
                continue
            scale = scale_value(np.atleast_1d(np.asarray(codes[m])), m)
            out[m] = (r.numpy() * scale[:, None]).astype(np.float32)
        return out

    def decode_windows(self, idx: dict[str, list], codes: dict[str, list]) -> dict[str, list]:
        """Windows at mixed levels in one attention + decoder pass: ``idx[m]`` is a list of N
        index arrays (any level's width) or None (modality absent in that window; ``idx[m]``
        None: absent in all), ``codes[m]`` their scale codes -> per modality a list of N
        physical windows (float32) or None. Each level's indices become latents by its own
        lookup (stages, or its adapter), the shared decoder then sees them all at once: a
        Dynamic-Deep batch costs one decoder call, not one per level present."""
        n = len(next(v for v in idx.values() if v is not None))
        run_n = bucket(n)  # a few batch shapes (`wardmodels.shapes`): rows past n are empty windows
        with self._lock, torch.no_grad():
            q, present = {}, {}
            for m in MODALITIES:
                rows = idx.get(m) or [None] * n
                q[m] = torch.zeros(run_n, self.model.cfg.dim, self.positions)
                present[m] = torch.zeros(run_n, dtype=torch.bool)
                by_width: dict[int, list[int]] = {}
                for i, v in enumerate(rows):
                    if v is not None:
                        by_width.setdefault(len(v), []).append(i)
                for members in by_width.values():
                    lat = self._latent(m, np.stack([rows[i] for i in members]))
                    if len(members) == run_n:  # every window at one level: no scatter
                        q[m] = lat
                    else:
                        q[m][torch.tensor(members)] = lat
                    present[m][members] = True
            rec = self.model.decode_latents(q, present)
        out: dict[str, list] = {}
        for m in MODALITIES:
            rows = idx.get(m) or [None] * n
            have = [i for i, v in enumerate(rows) if v is not None]
            out[m] = [None] * n
            if not have:
                continue
            scale = scale_value(np.array([codes[m][i] for i in have], np.int64), m)
            r = rec[m].numpy()
            r = ((r if len(have) == len(r) else r[have]) * scale[:, None]).astype(np.float32)
            for j, i in enumerate(have):
                out[m][i] = r[j]
        return out

    def bits(self, level: int) -> int:
        """Fixed-length bits one modality sends at ``level``: indices + scale byte."""
        return self.n_indices(level) * int(np.ceil(np.log2(self.level_codebook_size(level)))) + SCALE_BITS


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
            dd = chains = predictor = predictor_decode = predictor_rhythm = edge_rhythm = None
            if entry.get("dd"):
                from wardmodels.dd_edge import load_chains
                from wardmodels.predictor import Predictor
                from wardmodels.train_dynamic import load_dd

                dd = load_dd(verify_hash(WEIGHTS_DIR / entry["dd"]), model)
                chains = load_chains(verify_hash(WEIGHTS_DIR / entry["dd_edge"]))
                from wardmodels.dd_edge import snap_dd_codebooks

                snap_dd_codebooks(dd, chains)
                if entry.get("predictor"):
                    predictor = Predictor.load(verify_hash(WEIGHTS_DIR / entry["predictor"]))
                if entry.get("predictor_decode"):
                    predictor_decode = Predictor.load(verify_hash(WEIGHTS_DIR / entry["predictor_decode"]))
                if entry.get("predictor_rhythm"):
                    predictor_rhythm = Predictor.load(verify_hash(WEIGHTS_DIR / entry["predictor_rhythm"]))
                if entry.get("edge_rhythm"):
                    from wardmodels.edge_rhythm import load_edge_rhythm

                    edge_rhythm = load_edge_rhythm(WEIGHTS_DIR / entry["edge_rhythm"])
            return DeployedCodec(model_id, f"{entry['variant']}-{model_id}", model, edge, dd, chains, predictor,
                                 entry, predictor_decode, predictor_rhythm, edge_rhythm)
    raise WeightsError(f"no deployed codec with model id {model_id} in {MANIFEST}")


def deployed_ids() -> list[int]:
    return [e["model_id"] for e in manifest()]
