"""Content fingerprints: find a file again after a rename or move, and never take another
song (or a partial download of this one) for it.

A fingerprint is ``<version>:<rate>:<channels>:<frames>:<sha1>``:

* ``frames`` is the track's exact length in frames at its native rate;
* the hash covers :data:`SEGMENTS` segments of :data:`SEGMENT_SECONDS` each, spread evenly from
  the first frame to the last, with the frame count each segment actually gave, or, for a
  file shorter than all segments together or one that cannot be cut at the exact frame, the
  whole track in one sequential decode.

Samples are hashed at the native rate and channel layout, quantised to 16 bits, so tags
never enter it (retagging or a new cover keeps it) while the audio does: two songs that share
a silent opening differ in their later segments, and a cut-off copy differs in its length and
its last segment (which then cannot be read, or comes up short).

What is hashed, per backend (fingerprints are compared as plain strings, so one version never
matches another; :func:`fingerprint_duration` and :func:`same_duration` read every one):

* ``v2``, libsndfile files (wav, aiff, flac, ogg, opus, mp3): ``frames`` from the header;
  segments read after a plain libsndfile seek. Caches hold these values, so they are read
  exactly as before, without the pre-roll :mod:`tagger.segments` adds for its clips (the few
  frames a Vorbis, Opus or mp3 seek may get wrong are the same for the same reads).
* ``v3``, FFmpeg files that PyAV cuts at the exact frame (MP4/M4A, longer than the segments
  together): segments placed on the length the container announces, read through
  :meth:`tagger.segments.SegmentReader.read` from a decoder as opened
  (:meth:`~tagger.segments.SegmentReader.rewind`; FFmpeg's AAC decoder draws the noise of
  PNS bands from a generator that seeks do not reset, so only the same reads in the same
  order from the same state give the same samples, in every run); ``frames`` is where the
  last segment, read to the end, stops: the count a sequential decode gives, as in ``v2``.
  Until then these files were hashed whole, as ``v2``: a 4-minute m4a was decoded entirely
  to be recognised. A file analysed before keeps its ``v2`` value in the cache, so after a
  move it is analysed once more instead of found.
* ``v2``, other FFmpeg files (raw ADTS .aac and the like, whose timestamps are estimates) and
  files shorter than the segments together: the whole track in one sequential decode;
  ``frames`` the frames decoded.

Fingerprints of genreml before version 2 (``<sha1>:<samples>`` of the first 10 s) never match
either.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Iterable

import numpy as np
import soundfile as sf

from .audio import AudioError, _one_line, check_finite
from .segments import SegmentReader

log = logging.getLogger(__name__)

__all__ = ["FINGERPRINT_VERSION", "SEGMENTS", "SEGMENT_SECONDS", "SEEK_VERSION", "VERSIONS",
           "fingerprint", "fingerprint_duration", "fingerprint_of"]

FINGERPRINT_VERSION = "v2"  # libsndfile files, and files hashed whole
SEEK_VERSION = "v3"  # FFmpeg files hashed in segments read after a seek
VERSIONS = (FINGERPRINT_VERSION, SEEK_VERSION)
SEGMENTS = 8
SEGMENT_SECONDS = 2.0


def _quantised(block: np.ndarray) -> bytes:
    """16-bit little-endian PCM of a float block (what a codec's output is worth)."""
    check_finite(block)
    return np.clip(np.round(block * 32767.0), -32768, 32767).astype("<i2").tobytes()


def _segment_starts(frames: int, length: int) -> list[int]:
    """Starts of :data:`SEGMENTS` segments of ``length`` frames from the first frame to the
    last."""
    span = frames - length
    return [span * i // (SEGMENTS - 1) for i in range(SEGMENTS)]


def _hash_sequential(blocks: Iterable[np.ndarray], digest: "hashlib._Hash") -> int:
    frames = 0
    for block in blocks:
        digest.update(_quantised(block))
        frames += len(block)
    return frames


def _hash_segments(f: sf.SoundFile, digest: "hashlib._Hash") -> int:
    """Hash the segments of an open libsndfile file (version 2); returns its frame count."""
    length = int(SEGMENT_SECONDS * f.samplerate)
    for start in _segment_starts(f.frames, length):
        try:
            f.seek(start)
            # the last segment is read to the end: a file shorter than its header says shows
            block = f.read(length if start + length < f.frames else -1,
                           dtype="float32", always_2d=True)
        except sf.LibsndfileError:  # a seek past the data of a cut-off file
            digest.update(b"unreadable")
            continue
        digest.update(struct.pack("<q", len(block)))
        digest.update(_quantised(block))
    return int(f.frames)


def _hash_seek_segments(reader: SegmentReader, digest: "hashlib._Hash") -> int:
    """Hash the segments of an exactly seekable FFmpeg file (version 3); returns the frame
    where the last segment, read to the end, stops."""
    assert reader.frames is not None
    reader.rewind()  # the decoder as opened: the same reads then give the same samples
    length = int(SEGMENT_SECONDS * reader.native_rate)
    starts = _segment_starts(reader.frames, length)
    for start in starts:
        block = reader.read(start, length if start != starts[-1] else None)
        digest.update(struct.pack("<q", len(block)))
        digest.update(_quantised(block))
    return starts[-1] + len(block)


def _long_enough(reader: SegmentReader) -> bool:
    """Whether the file is longer than its segments together (else it is hashed whole)."""
    limit = SEGMENTS * SEGMENT_SECONDS * reader.native_rate
    return reader.frames is not None and reader.frames > limit


def fingerprint(path: str | bytes | os.PathLike) -> str:
    """The content fingerprint of an audio file (see the module doc).

    Raises
    ------
    tagger.audio.AudioError
        The file cannot be decoded, holds no audio frames or invalid samples.
    """
    with SegmentReader(path) as reader:
        return fingerprint_of(reader)


def fingerprint_of(reader: SegmentReader) -> str:
    """The content fingerprint of an open file, the same as :func:`fingerprint` of its path
    whatever was read from it before (it seeks, or rewinds, to where it starts). The file is
    left at an unspecified position.

    Raises
    ------
    tagger.audio.AudioError
        The file cannot be decoded, holds no audio frames or invalid samples.
    """
    digest = hashlib.sha1()
    version, rate, channels = FINGERPRINT_VERSION, reader.native_rate, reader.channels
    f = reader.soundfile
    try:
        if f is not None and _long_enough(reader):
            frames = _hash_segments(f, digest)
        elif f is None and reader.seekable and _long_enough(reader):
            version, frames = SEEK_VERSION, _hash_seek_segments(reader, digest)
        else:
            blocks = reader.blocks(30.0)
            first = next(blocks, None)
            channels = channels if first is None else first.shape[1]
            frames = 0 if first is None else _hash_sequential([first], digest)
            frames += _hash_sequential(blocks, digest)
    except AudioError:
        raise
    except Exception as err:  # a decoder failing mid-stream: corrupt data
        raise AudioError(f"cannot decode: {_one_line(err)}") from err
    if frames == 0:
        raise AudioError("no audio frames")
    return f"{version}:{rate}:{channels}:{frames}:{digest.hexdigest()}"


def fingerprint_duration(fp: str | None) -> float | None:
    """The exact duration in seconds a fingerprint of any of :data:`VERSIONS` records; None
    for an older one's."""
    parts = (fp or "").split(":")
    if len(parts) != 5 or parts[0] not in VERSIONS:
        return None
    return int(parts[3]) / int(parts[1])


# A moved file must also agree with the stored one on these before its result is trusted.
DURATION_TOLERANCE = 0.25  # seconds: the stored duration is decoded at the model's rate
SIZE_SLACK_BYTES = 1 << 20  # tags and a cover picture may come and go


def same_size_class(stored: int, now: int) -> bool:
    """Whether two file sizes may belong to the same audio.

    The size class of a file is its size give or take what tags can add or remove: 1 MiB
    (a re-tag, a new cover picture of usual size) plus 1% of the larger size (padding and
    container bookkeeping grow with the file). A partial download that lacks more than that
    is another class; a shorter cut is caught by the fingerprint itself, which records the
    exact length and reads the last segment to the end of the file. A larger cover than 1 MiB
    costs a re-analysis, never a wrong result.
    """
    return abs(stored - now) <= SIZE_SLACK_BYTES + max(stored, now) // 100


def same_duration(stored: float, fp: str | None) -> bool:
    """Whether a stored duration agrees with the one a fingerprint records (an old
    fingerprint records none and never agrees)."""
    duration = fingerprint_duration(fp)
    return duration is not None and abs(duration - stored) <= DURATION_TOLERANCE
