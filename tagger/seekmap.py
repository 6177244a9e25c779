"""What a file's container says about seeking in it: the length PyAV announces, whether its
timestamps count samples, where the last Ogg page starts.

Facts read from headers and indexes, never by decoding (see :mod:`tagger.segments`).
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path

import soundfile as sf

from .avdecode import AvStream

__all__ = ["AV_SEEKABLE_FORMATS", "av_frames", "av_seekable", "ogg_last_page_frames"]

# Containers whose timestamps count samples from an index (FFmpeg's name for the demuxer).
AV_SEEKABLE_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2"})
# Bytes read from the end of an Ogg file to find its last two pages (at most 65307 each).
_OGG_TAIL_BYTES = 2 * 65307


def ogg_last_page_frames(path: Path, f: sf.SoundFile) -> int | None:
    """How many frames the last Ogg page of ``path`` holds, from the granule positions of it
    and the page before (found by walking back from the end of the file); None when the
    pages are not found (junk after them, another stream last)."""
    size = os.stat(os.fsencode(path)).st_size
    with open(os.fsencode(path), "rb") as handle:
        handle.seek(max(0, size - _OGG_TAIL_BYTES))
        data = handle.read()
    base = size - len(data)
    pages: dict[int, tuple[int, int, int]] = {}  # end -> (start, granule position, serial)
    at = data.find(b"OggS")
    while at >= 0:
        if at + 27 <= len(data) and data[at + 4] == 0:  # stream structure version 0
            segments = data[at + 27:at + 27 + data[at + 26]]
            end = at + 27 + len(segments) + sum(segments)
            if len(segments) == data[at + 26] and end <= len(data):
                granule, serial = struct.unpack_from("<qI", data, at + 6)
                pages[base + end] = (base + at, granule, serial)
        at = data.find(b"OggS", at + 1)
    if size not in pages or pages[size][0] not in pages:
        return None
    start, last_granule, serial = pages[size]
    _, previous_granule, previous_serial = pages[start]
    if serial != previous_serial or last_granule < previous_granule:
        return None
    per_second = 48000 if f.subtype == "OPUS" else f.samplerate  # Opus counts at 48 kHz
    return -(-(last_granule - previous_granule) * f.samplerate // per_second)


def av_frames(av_in: AvStream) -> int | None:
    """The length in frames the container announces (an estimate), or None."""
    stream, rate = av_in.stream, av_in.rate
    if stream.duration and stream.time_base:
        return round(stream.duration * Fraction(stream.time_base) * rate)
    if av_in.container.duration:
        return round(av_in.container.duration * rate / 1_000_000)
    return None


def av_seekable(av_in: AvStream, frames: int | None) -> bool:
    """Whether PyAV can cut ``av_in`` at the exact frame: an indexed container whose
    timestamps count samples."""
    stream = av_in.stream
    return (av_in.container.format.name in AV_SEEKABLE_FORMATS and frames is not None
            and stream.time_base is not None
            and Fraction(stream.time_base) == Fraction(1, av_in.rate))
