"""The static tables with which a wire model's codec-level sections travel entropy-coded
(`stream.vqcode`, wire v2 flag bit 6): per modality, one u8 table of the window's scale code
and, per level and stage, one u8 table of its indices (``--context-classes C``: `entropy.fit_stage`'s
context model instead, C + 1 rows and a context map; 0, the default, keeps the tables within the
device's 480,000 bytes: 2,560 bytes for both modalities and every level of wire model 5).
Level 2 is the first stage of level 1 and shares its table.

`wardstream export wire-tables --model-id N` fits them on windows of the codec's own training
data (`codec_data.CodecData`: MIT-BIH DS1, the CinC training split, eegmat subjects 00-23, Bonn
Z/O; no test record), as the device's integer encoder indexes them, and records the file
(``wiretab-<variant>-<sha256[:12]>.npz``) as ``wire_tables`` of the model's manifest entry;
`wire_codec.spec_for` gives them to the wire format. They are lossless: a table changes how many
bits a section costs, never what the cloud decodes.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np

from stream.vqcode import SCALE_SYMBOLS, SectionModel, u8_from_counts
from wardmodels import entropy, runtime
from wardmodels.codec import MODALITIES
from wardmodels.hashname import verify_hash, write_hashed

log = logging.getLogger(__name__)
MOD_ID = {"ecg": 0, "eeg": 1}  # stream.wire.Modality


def stage_sizes(entry: dict, level: int) -> list[int]:
    """Indices per stage of a section at ``level``, stage-major, from the model's manifest entry:
    a base level sends stages 1 .. S - level + 1 of the codec, a Dynamic-Deep level one of its own."""
    if level <= entry["stages"]:
        return [entry["positions"]] * (entry["stages"] - level + 1)
    return [entry["dd_levels"][str(level)]["indices"]]


def level_indices(codec, modality: str, x: np.ndarray, codes: np.ndarray) -> dict[int, np.ndarray]:
    """Normalised windows -> {level: indices (N, n_L)} from the device's integer encoder."""
    if codec.dd is not None and codec.chains is not None:
        idx, _ = codec.analyse(modality, x, codes)
        return {int(L): np.asarray(v) for L, v in idx.items()}
    st = codec.edge.encode(modality, x)  # (N, S, T)
    return {L: st[:, : codec.stages_for(L)].reshape(len(x), -1) for L in range(1, codec.stages + 1)}


def _stage_table(idx: np.ndarray, k: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ctx_map, u8 rows) of one stage's indices (N, positions)."""
    if classes == 0:
        return np.zeros(0, np.uint8), u8_from_counts(np.bincount(idx.ravel(), minlength=k))
    pr = entropy.fit_stage(idx, k, classes, seed)  # its 14-bit rows, rescaled to u8
    return pr.ctx_map, u8_from_counts(pr.freqs)


def fit_tables(codec, data_dir: Path, windows: int = 16384, classes: int = 0, seed: int = 7) -> dict[str, np.ndarray]:
    from wardmodels.codec_data import CodecData

    data = CodecData(data_dir)
    x, _, codes = data.batch(np.random.default_rng(seed), windows, codes=True)
    arrays: dict[str, np.ndarray] = {"classes": np.array(classes, np.int32), "windows": np.array(windows, np.int32)}
    for m in MODALITIES:
        arrays[f"{m}/scale"] = u8_from_counts(np.bincount(codes[m].astype(np.int64), minlength=SCALE_SYMBOLS))[0]
        idx = level_indices(codec, m, x[m], codes[m])
        for L, v in sorted(idx.items()):
            if L <= codec.stages:  # a base level sends stages 1.. of level 1: one table per stage
                v = idx[1]
            lo = 0
            for j, n in enumerate(stage_sizes(codec.entry, L)):
                ctx, freqs = _stage_table(v[:, lo:lo + n].astype(np.int64), codec.level_codebook_size(L), classes, seed)
                arrays[f"{m}/{L}/{j}/ctx_map"], arrays[f"{m}/{L}/{j}/freqs"] = ctx, freqs
                lo += n
        log.info("%s: tables fitted on %d windows", m, len(x[m]))
    return arrays


def to_models(arrays, entry: dict) -> dict[tuple[int, int], SectionModel]:
    """The npz arrays -> {(modality id, level): SectionModel} for `stream.wire.CodecSpec.coding`,
    the stage layout read from the model's manifest ``entry`` (stages, positions, dd_levels)."""
    levels = list(range(1, entry["stages"] + 1)) + sorted(int(L) for L in entry.get("dd_levels", {}))
    out = {}
    for m in MODALITIES:
        if f"{m}/scale" not in arrays:
            continue
        for L in levels:
            if f"{m}/{L}/0/freqs" not in arrays:
                continue
            out[(MOD_ID[m], L)] = SectionModel.from_freqs(
                arrays[f"{m}/scale"], [(n, arrays[f"{m}/{L}/{j}/ctx_map"], arrays[f"{m}/{L}/{j}/freqs"])
                                       for j, n in enumerate(stage_sizes(entry, L))])
    return out


def load_models(path: Path, entry: dict) -> dict[tuple[int, int], SectionModel]:
    with np.load(verify_hash(path)) as z:
        return to_models({k: z[k] for k in z.files}, entry)


def device_bytes(models: dict[tuple[int, int], SectionModel], modality: int | None = None) -> int:
    """Bytes the tables take on a device (u8 frequencies and context maps), of one modality or
    all: each distinct table once (a modality's scale table is shared by its levels, a base
    level's stage tables are level 1's)."""
    seen, total = set(), 0
    for (mod, _), v in sorted(models.items(), key=lambda kv: kv[0]):
        if modality is not None and mod != modality:
            continue
        for key, nb in [((mod, "scale", v.scale_cum.tobytes()), SCALE_SYMBOLS)] + [
                ((mod, st.ctx_map.tobytes(), st.cum.tobytes()), st.nbytes()) for st in v.stages]:
            if key not in seen:
                seen.add(key)
                total += nb
    return total


def export(model_id: int, data_dir: Path, windows: int = 16384, classes: int = 0, seed: int = 7,
           out_dir: Path | None = None, reproduce: str | None = None) -> dict:
    codec = runtime.load_deployed(model_id)
    arrays = fit_tables(codec, data_dir, windows, classes, seed)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out_dir = Path(out_dir) if out_dir else runtime.WEIGHTS_DIR
    path = write_hashed(out_dir, f"wiretab-{codec.entry['variant']}", buf.getvalue(), ".npz")
    models = to_models(arrays, codec.entry)
    res = {"model_id": model_id, "wire_tables": path.name, "sections": len(models),
           "device_bytes": {m: device_bytes(models, MOD_ID[m]) for m in MODALITIES}}
    if out_dir.resolve() == runtime.WEIGHTS_DIR.resolve():
        entries = runtime.manifest()
        for e in entries:
            if e["model_id"] == model_id:
                e["wire_tables"] = path.name
                e["wire_tables_bytes"] = res["device_bytes"]
                if reproduce:
                    e.setdefault("reproduce", [])
                    e["reproduce"] = [r for r in e["reproduce"] if "export wire-tables" not in r] + [reproduce]
        runtime.MANIFEST.write_text(json.dumps({"codecs": entries}, indent=2) + "\n")
        runtime.load_deployed.cache_clear()
    return res
