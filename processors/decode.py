"""Reconstruct each modality of validated frames in physical units (ECG mV, EEG µV).

Raw channels are scaled samples; codec channels go through the deployed codec's decoder
(`wardmodels.wire_codec`), batched over all frames of a worker batch.
"""

from __future__ import annotations

import numpy as np

from stream.wire import Frame, FrameError, Modality
from wardmodels.wire_codec import NoDecoder, decode_frames, register_deployed

__all__ = ["NoDecoder", "reconstruct", "reconstruct_batch", "register_deployed"]

# every process that parses frames must know the deployed codecs' model ids
register_deployed()


def reconstruct_batch(frames: list[Frame]) -> list[dict[Modality, np.ndarray] | FrameError]:
    return decode_frames(frames)


def reconstruct(frame: Frame) -> dict[Modality, np.ndarray]:
    res = decode_frames([frame])[0]
    if isinstance(res, FrameError):
        raise res
    return res
