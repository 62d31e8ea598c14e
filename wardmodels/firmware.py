"""The edge encoder's parameters as one blob the C firmware reads in place (`firmware/encoder/`).

``WSE1`` blob, little-endian; every array starts at a multiple of 8 bytes from the blob's start
(zero padding before it), so a device keeps the blob in flash and points into it::

    "WSE1"  u32 version = 1  u32 modalities  u32 0
    per modality:
      char name[8] (NUL-padded: "ecg", "eeg")
      i32 act_bits  i32 p  f32 inv_sx  i32 n_conv  i32 n_add  i32 n_cb  i32 K  i32 D
      per convolution (n_conv = 3 n_add + 1: each stage's stride-2, residual 1, residual 2, then the
      1x1 projection):
        i32 out_ch  i32 in_ch  i32 k  i32 stride
        [pad] i8 w[out_ch][in_ch][k]   [pad] i64 b[out_ch]   [pad] i32 m_pos[out_ch]   [pad] i8 shift[out_ch]
      per add:  [pad] i64 ma  i64 mb  i32 shift  i32 0
      per codebook stage:  [pad] i32 q  i32 0  [pad] i8 e[K][D]
    [pad to 8]

The arithmetic is `wardmodels.int8`'s; the entropy coder's tables are not in this blob (the C
encoder produces indices; coding them is `wardmodels.entropy`'s, not yet in C).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from wardmodels.int8 import Int8Encoder, Int8Modality

MAGIC = b"WSE1"
VERSION = 1


class _Blob:
    def __init__(self) -> None:
        self.b = bytearray()

    def pad(self) -> None:
        self.b += b"\0" * (-len(self.b) % 8)

    def i32(self, *vs: int) -> None:
        self.b += struct.pack(f"<{len(vs)}i", *vs)

    def array(self, a: np.ndarray, dtype: str) -> None:
        self.pad()
        self.b += np.ascontiguousarray(a, dtype=dtype).tobytes()


def _modality(out: _Blob, name: str, m: Int8Modality) -> None:
    if len(m.convs) != 3 * len(m.adds) + 1:
        raise ValueError(f"{name}: {len(m.convs)} convolutions for {len(m.adds)} stages")
    k, d = m.codebooks[0].shape
    out.b += name.encode().ljust(8, b"\0")[:8]
    out.i32(m.act_bits, m.p)
    out.b += struct.pack("<f", float(m.inv_sx))
    out.i32(len(m.convs), len(m.adds), len(m.codebooks), k, d)
    for c in m.convs:
        w = np.asarray(c["w"])
        out.i32(*w.shape, int(c["stride"]))
        out.array(w, "<i1")
        out.array(c["b"], "<i8")
        out.array(c["m_pos"], "<i4")
        out.array(c["shift"], "<i1")
    for a in m.adds:
        out.pad()
        out.b += struct.pack("<qqii", int(a["ma"]), int(a["mb"]), int(a["shift"]), 0)
    for cb, q in zip(m.codebooks, m.cb_exp):
        if cb.shape != (k, d):
            raise ValueError(f"{name}: codebook stages differ in shape")
        out.pad()
        out.i32(int(q), 0)
        out.array(cb, "<i1")


def blob(edge: Int8Encoder, modalities: tuple[str, ...] = ("ecg", "eeg")) -> bytes:
    out = _Blob()
    out.b += MAGIC
    out.b += struct.pack("<3I", VERSION, len(modalities), 0)
    for name in modalities:
        _modality(out, name, edge.modalities[name])
    out.pad()
    return bytes(out.b)


def export(edge_path: Path, out: Path) -> dict:
    """`wardstream export firmware`: the deployed edge encoder's blob, and what it holds."""
    edge = Int8Encoder.load(Path(edge_path))
    data = blob(edge)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return {"blob": str(out), "bytes": len(data), "edge": Path(edge_path).name,
            "modalities": {m: {"convolutions": len(edge.modalities[m].convs),
                               "codebook_stages": len(edge.modalities[m].codebooks)} for m in ("ecg", "eeg")},
            "encoder_bytes_without_entropy_tables": edge.nbytes() - edge.prior_nbytes()}
