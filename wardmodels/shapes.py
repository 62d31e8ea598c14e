"""Batch sizes the cloud's networks run at.

The worker's batches hold however many windows (beds) arrived, so without care every batch size
the ward produces is a new input shape, and the CPU back end (oneDNN, and the allocator behind it)
keeps what it prepared for each shape: measured 2026-12-06 (`runs/s20/shape_rss*.py`, one
thread), running every batch size from 1 to 240 once grew a process by ~0.8 GB for the two
classifiers (310 → 1,100 MB) and ~1.1 GB for the codec's decoder (302 → 1,421 MB); padded as
below, by 0.12 and 0.12 GB (428 and 418 MB). A live ward's batches span few sizes (a 200-bed
worker's memory levels off within minutes either way: 1.36 GB at 10 minutes unpadded, 1.47 GB
flat from minute 1 to 23 padded); a worker catching up a backlog, whose batches take any size,
is what this bounds. Padding each batch to one of a few
sizes — powers of two up to `STEP`, then multiples of `STEP` — bounds the shapes (21 up to 512
rows) for at most `STEP` - 1 rows of extra work per call. Rows are independent in these networks (inference: folded or frozen
batch norm, attention within a window pair), so the padding changes no output row beyond float
rounding.
"""

from __future__ import annotations

STEP = 32


def bucket(n: int) -> int:
    """The batch size ``n`` rows run at: the next power of two up to STEP, then the next multiple of STEP."""
    if n <= 0:
        return n
    if n <= STEP:
        return 1 << (n - 1).bit_length()
    return -(-n // STEP) * STEP
