"""Content fingerprints: find a file again after a rename or move, and never take another
song (or a partial download of this one) for it.

A fingerprint is ``v2:<rate>:<channels>:<frames>:<sha1>``:

* ``frames`` is the track's exact length in frames at its native rate (libsndfile's count
  from the header; for FFmpeg-decoded files the frames actually decoded);
* the hash covers :data:`SEGMENTS` segments of :data:`SEGMENT_SECONDS` each, spread evenly from
  the first frame to the last (read after a seek: libsndfile seeks sample-exactly in wav,
  aiff, flac, ogg and mp3), with the frame count each segment actually gave. Files that
  libsndfile cannot read, or shorter than all segments together, are hashed whole in one
  sequential decode, as FFmpeg cannot seek to the sample in aac.

Samples are hashed at the native rate and channel layout, quantised to 16 bits, so tags
never enter it (retagging or a new cover keeps it) while the audio does: two songs that share
a silent opening differ in their later segments, and a cut-off copy differs in its length and
its last segment (which then cannot be read, or comes up short).

The version prefix keeps fingerprints of older genreml versions (``<sha1>:<samples>`` of the
first 10 s) from ever matching a new one: they are compared as plain strings.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Iterator

import numpy as np
import soundfile as sf

from .audio import AudioError, _pyav_blocks, check_finite, open_checked, open_soundfile

log = logging.getLogger(__name__)

__all__ = ["FINGERPRINT_VERSION", "SEGMENTS", "SEGMENT_SECONDS", "fingerprint",
           "fingerprint_duration"]

FINGERPRINT_VERSION = "v2"
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


def _hash_sequential(blocks: Iterator[np.ndarray], digest: "hashlib._Hash") -> int:
    frames = 0
    for block in blocks:
        digest.update(_quantised(block))
        frames += len(block)
    return frames


def _hash_segments(f: sf.SoundFile, digest: "hashlib._Hash") -> int:
    """Hash the segments of an open file; returns its frame count."""
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


def fingerprint(path: str | bytes | os.PathLike) -> str:
    """The content fingerprint of an audio file (see the module doc).

    Raises
    ------
    tagger.audio.AudioError
        The file cannot be decoded, holds no audio frames or invalid samples.
    """
    path = open_checked(path)
    digest = hashlib.sha1()
    try:
        f = open_soundfile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        f = None
    try:
        if f is not None:
            with f:
                rate, channels = f.samplerate, f.channels
                if f.frames > SEGMENTS * SEGMENT_SECONDS * rate:
                    frames = _hash_segments(f, digest)
                else:
                    frames = _hash_sequential(f.blocks(int(30 * rate), dtype="float32",
                                                       always_2d=True), digest)
        else:
            try:
                rate, blocks = _pyav_blocks(path, 30.0)
            except AudioError:
                raise
            except Exception as err:  # PyAV raises many error types for junk input
                raise AudioError(f"not decodable audio: {err}".splitlines()[0]) from err
            first = next(blocks, None)
            channels = 0 if first is None else first.shape[1]
            frames = 0 if first is None else _hash_sequential(iter([first]), digest)
            frames += _hash_sequential(blocks, digest)
    except AudioError:
        raise
    except Exception as err:  # a decoder failing mid-stream: corrupt data
        text = str(err).strip().splitlines()
        raise AudioError(f"cannot decode: {text[0] if text else type(err).__name__}") from err
    if frames == 0:
        raise AudioError("no audio frames")
    return f"{FINGERPRINT_VERSION}:{rate}:{channels}:{frames}:{digest.hexdigest()}"


def fingerprint_duration(fp: str | None) -> float | None:
    """The exact duration in seconds a current fingerprint records; None for another
    version's."""
    parts = (fp or "").split(":")
    if len(parts) != 5 or parts[0] != FINGERPRINT_VERSION:
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
