"""The FFmpeg side of decoding: files opened and decoded through PyAV (FFmpeg's libraries,
bundled in its wheel), for what libsndfile cannot read, such as m4a/aac.

PyAV is imported lazily, inside the functions: most libraries never need it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["AvStream", "av_blocks", "av_samples", "open_av"]


def open_av(path: str | os.PathLike) -> Any:
    """Open ``path`` with PyAV; a name that is not valid UTF-8 goes through a Python file
    object, since FFmpeg takes names as UTF-8 text."""
    import av  # imported lazily: only files libsndfile cannot read need it

    name = os.fsdecode(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        handle = open(os.fsencode(path), "rb")
        try:
            return av.open(handle)
        except BaseException:
            handle.close()
            raise
    return av.open(name)


@dataclasses.dataclass
class AvStream:
    """A file opened with PyAV: its container, first audio stream and sample rate."""

    container: Any
    stream: Any
    rate: int


def av_samples(resampler: Any, frame: Any) -> np.ndarray:
    """A decoded PyAV frame as float32 ``[samples, channels]`` (``resampler``: an
    ``av.AudioResampler(format="fltp")``, which keeps rate and channels)."""
    out = [o.to_ndarray().T for o in resampler.resample(frame)]
    if not out:
        return np.zeros((0, frame.layout.nb_channels), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def av_blocks(av_in: AvStream, block_seconds: float, close: bool = True) -> Iterator[np.ndarray]:
    """float32 ``[frames, channels]`` blocks of an opened PyAV stream from where it stands;
    ``close`` closes the container when the blocks are done or abandoned."""
    import av

    resampler = av.AudioResampler(format="fltp")  # planar float32, channels kept
    pending: list[np.ndarray] = []
    have = 0
    size = int(block_seconds * av_in.rate)
    try:
        for frame in av_in.container.decode(av_in.stream):
            pending.append(av_samples(resampler, frame))
            have += len(pending[-1])
            if have >= size:
                yield np.concatenate(pending)
                pending, have = [], 0
    finally:
        if close:
            av_in.container.close()
    if pending:
        yield np.concatenate(pending)
