"""Entropy-coded VQ sections: what a v2 frame with flag bit 6 (`stream.wire.FLAG_CODED`) carries
in place of the scale bytes and bit-packed indices of its codec-level sections.

All coded sections of a frame share one `stream.arith` stream, placed after everything else in
the frame body (sections, predicted error, audit reference) and before the CRC: its length is
what is left, so it needs no length field. Per coded section, in the frame's modality order:

    scale code   one symbol of the section model's scale table (256 symbols)
    stages       per stage of the level (e.g. level 1 of a two-stage codec: stage 1's 32
                 positions, then stage 2's), its indices in position order, each with its
                 stage's table: a single row, or (context tables) row 0 for the stage's first
                 index and row 1 + ctx_map[previous index of the same stage] for every later one

Only the sections whose (modality, level) the codec model has tables for are coded; the others
of the same frame keep their plain form. The tables are static, part of the codec model (the
device and the cloud hold the same ones): u8 frequencies (every symbol at least 1, so a row's
total is at most 255 K), used as they are by `stream.arith`. The decoder checks that the stream ends exactly where and how the encoder would end it after those sections
(`arith.Decoder.check_end`) and rejects anything else (`bad_coding`): one valid stream per
content.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream import arith

SCALE_SYMBOLS = 256


def u8_from_counts(counts: np.ndarray) -> np.ndarray:
    """Symbol counts (rows, K) -> u8 frequency rows: 255 for each row's most frequent symbol,
    the others in proportion, rounded, at least 1."""
    counts = np.atleast_2d(np.asarray(counts, np.float64))
    top = np.maximum(counts.max(1, keepdims=True), 1.0)
    return np.clip(np.round(255.0 * counts / top), 1, 255).astype(np.uint8)


@dataclass(frozen=True)
class StageModel:
    positions: int
    ctx_map: np.ndarray  # (K,) uint8: an index -> the context class of the next position; (0,): one row
    cum: np.ndarray  # (rows, K + 1) int64 cumulative frequencies; with contexts row 0 = start

    def __post_init__(self):  # the coder's rows as Python ints (bisect, no numpy per symbol)
        object.__setattr__(self, "rows", tuple(r.tolist() for r in self.cum))
        object.__setattr__(self, "next", [1 + int(c) for c in self.ctx_map] if self.ctx_map.size else None)

    @property
    def codebook_size(self) -> int:
        return self.cum.shape[1] - 1

    def nbytes(self) -> int:
        """Device bytes: the frequency rows (u8) and the context map (u8)."""
        return self.ctx_map.size + self.cum.shape[0] * (self.cum.shape[1] - 1)


@dataclass(frozen=True)
class SectionModel:
    """How one (modality, level) section is coded."""

    scale_cum: np.ndarray  # (SCALE_SYMBOLS + 1,) int64
    stages: tuple[StageModel, ...]

    def __post_init__(self):
        object.__setattr__(self, "scale_row", self.scale_cum.tolist())

    @classmethod
    def from_freqs(cls, scale_freqs: np.ndarray, stages: list[tuple[int, np.ndarray, np.ndarray]]) -> "SectionModel":
        """``stages``: (positions, ctx_map (K,) or (0,) for a single row, u8 freqs (rows, K)) per
        stage; checks the tables."""
        def u8(f):
            f = np.asarray(f)
            if f.dtype != np.uint8:
                raise ValueError(f"coding tables are u8 frequencies, got {f.dtype}")
            return f

        sc = arith.cumulative(u8(scale_freqs).reshape(1, -1))[0]
        if len(sc) != SCALE_SYMBOLS + 1:
            raise ValueError(f"the scale table has {SCALE_SYMBOLS} symbols, got {len(sc) - 1}")
        out = []
        for pos, ctx_map, freqs in stages:
            cum = arith.cumulative(u8(freqs))
            ctx_map = np.asarray(ctx_map, np.uint8)
            single = ctx_map.size == 0 and cum.shape[0] == 1
            if not single and (ctx_map.shape != (cum.shape[1] - 1,) or int(ctx_map.max(initial=0)) >= cum.shape[0] - 1):
                raise ValueError("a stage's context map needs one class per index, below its table rows "
                                 "(or no map and a single row)")
            out.append(StageModel(int(pos), ctx_map, cum))
        return cls(sc, tuple(out))

    @property
    def n_indices(self) -> int:
        return sum(s.positions for s in self.stages)

    def nbytes(self) -> int:
        return SCALE_SYMBOLS + sum(s.nbytes() for s in self.stages)

    def put(self, enc: arith.Encoder, scale: int, indices: np.ndarray) -> None:
        enc.put(self.scale_row, int(scale))
        idx = np.asarray(indices).tolist()
        k = 0
        for st in self.stages:
            rows, nxt, row = st.rows, st.next, 0
            for s in idx[k:k + st.positions]:
                enc.put(rows[row], s)
                if nxt is not None:
                    row = nxt[s]
            k += st.positions

    def get(self, dec: arith.Decoder) -> tuple[int, np.ndarray]:
        scale = dec.get(self.scale_row)
        out = []
        for st in self.stages:
            rows, nxt, row = st.rows, st.next, 0
            for _ in range(st.positions):
                s = dec.get(rows[row])
                out.append(s)
                if nxt is not None:
                    row = nxt[s]
        return scale, np.array(out, np.uint16)


def encode_sections(models: list[SectionModel], sections: list[tuple[int, np.ndarray]]) -> tuple[bytes, list[int]]:
    """(scale code, indices) per section, in frame order -> (the stream's bytes, bits per
    section). A section's bits are what the stream would have cost had it ended after it, less
    what the sections before it cost; the last one's include the stream's ending. Their sum is
    the exact coded length; the zero padding to a byte (``8 * len(bytes) - sum``) is the frame's."""
    enc = arith.Encoder()
    bits, before = [], 0
    for m, (scale, idx) in zip(models, sections):
        idx = np.asarray(idx)
        if idx.shape != (m.n_indices,):
            raise ValueError(f"the section model codes {m.n_indices} indices, got {idx.shape}")
        m.put(enc, scale, idx)
        now = enc.cost()
        bits.append(now - before)
        before = now
    buf, n = enc.finish()
    assert n == before, (n, before)
    return buf, bits


def coded_bits(model: SectionModel, scale: int, indices: np.ndarray) -> int:
    """Bits of one section's scale code and indices coded as a stream of their own, its ending
    included (what it adds to a frame's stream, give or take the shared ending and padding)."""
    return encode_sections([model], [(int(scale), indices)])[1][0]


def decode_sections(models: list[SectionModel], buf: bytes) -> tuple[list[tuple[int, np.ndarray]], list[int]]:
    """The stream of `encode_sections` -> ((scale code, indices) per section, bits per section, as
    `encode_sections` counts them). Raises ValueError unless the stream ends exactly as the encoder
    ends it after these sections (`arith.Decoder.check_end`)."""
    dec = arith.Decoder(buf)
    out, bits, before = [], [], 0
    for m in models:
        out.append(m.get(dec))
        bits.append(dec.cost() - before)
        before = dec.cost()
    dec.check_end()
    return out, bits
