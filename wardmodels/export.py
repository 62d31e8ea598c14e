"""`wardstream export codec`: trained weights -> the deployed edge artefact.

Snaps the codebooks to their int8 grid, calibrates the integer encoder on training-split
windows, fits the entropy coder's context tables on the indices that encoder produces for
other training windows, writes ``edge-<variant>-<sha>.npz`` next to the weights and records
both files under a wire model id in ``MANIFEST.json``. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from wardmodels import entropy, runtime
from wardmodels.codec import MODALITIES
from wardmodels.int8 import quantise

log = logging.getLogger(__name__)


def export(codec_path: Path, data_dir: Path, model_id: int = 1, act_bits: int = 16, calib: int = 2048,
           prior_windows: int = 16384, classes: int = 4, seed: int = 7, out_dir: Path | None = None,
           reproduce: list[str] | None = None) -> dict:
    from wardmodels.codec_data import CodecData

    codec_path = Path(codec_path)
    out_dir = Path(out_dir) if out_dir else codec_path.parent
    model = runtime.load_model(codec_path)
    data = CodecData(data_dir)
    rng = np.random.default_rng(seed)
    xb, _ = data.batch(rng, calib)
    edge = quantise(model, xb, act_bits)
    xp, _ = data.batch(rng, prior_windows)
    pos = model.cfg.indices_per_stage
    for m in MODALITIES:
        idx = edge.encode(m, xp[m])
        edge.priors[m] = [entropy.fit_stage(idx[:, s], model.cfg.codebook_size, classes, seed)
                          for s in range(idx.shape[1])]
        log.info("%s: prior fitted on %d windows x %d positions", m, len(idx), pos)
    path = edge.save(out_dir, f"edge-{model.cfg.name}")
    entry = {"model_id": model_id, "variant": model.cfg.name, "codec": codec_path.name, "edge": path.name,
             "stages": model.cfg.stages, "positions": pos, "codebook_size": model.cfg.codebook_size,
             "act_bits": act_bits, "context_classes": classes, "encoder_bytes": edge.nbytes(),
             "reproduce": reproduce or []}
    if out_dir.resolve() == runtime.WEIGHTS_DIR.resolve():
        codecs = [e for e in runtime.manifest() if e["model_id"] != model_id] + [entry]
        runtime.MANIFEST.write_text(json.dumps({"codecs": sorted(codecs, key=lambda e: e["model_id"])},
                                               indent=2) + "\n")
    return {**entry, "edge_path": str(path)}
