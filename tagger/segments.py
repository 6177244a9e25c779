"""Decode only the parts of a file that are analysed: clips read after a seek.

:class:`SegmentReader` opens a file once (libsndfile, else PyAV/FFmpeg, as
:mod:`tagger.audio` does) and reads frames at its native rate from any position;
:func:`read_clips` turns positions on the clip grid of :class:`tagger.audio.ClipStream` into
the very clips a full decode would give, decoding a few seconds per clip instead of the file.

Exactness, as measured on encoded test files (``tests/test_segments.py``):

* libsndfile seeks to the exact frame in wav, aiff and flac. In its lossy formats (ogg
  vorbis, opus, mp3) a seek may give a few hundred wrong frames first (up to 923 for vorbis,
  3605 for opus, 460 for mp3 in 400 random seeks: the decoder starts without the block before,
  which it overlaps with), so reads there start :data:`SNDFILE_PREROLL` frames early and drop
  them. libsndfile 1.2.2 also misplaces a Vorbis seek that lands in the file's last Ogg page
  (whose granule position is cut to the exact length) by the frames cut, 16 in the test files,
  so reads are never sought into the last page: it is found from the end of the file
  (:func:`_ogg_last_page_frames`) and decoded into from the page before. The frames then equal
  a full decode's bit for bit.
* PyAV cuts by the packets' timestamps. In MP4/M4A they count samples from the sample table,
  so a read starts at the exact frame; it starts :data:`AV_PREROLL_SECONDS` early, as an AAC
  frame decodes right only after the one before it. FFmpeg's AAC decoder fills noise-coded
  bands (PNS) from a random generator that no seek resets, so those bands differ between two
  decodes that took other paths (as any two decoders may); the rest agrees to about one
  16-bit step. Other FFmpeg formats (raw ADTS .aac among them) have estimated timestamps:
  they are not :attr:`~SegmentReader.seekable`, and :func:`read_clips` cuts their clips in
  one sequential pass instead.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import (
    BLOCK_SECONDS,
    AudioError,
    AvStream,
    ClipBatch,
    _one_line,
    open_audio,
    open_av_stream,
    resample_blocks,
    soundfile_blocks,
)
from .avdecode import av_blocks, av_samples
from .seekmap import av_frames, av_seekable, ogg_last_page_frames

__all__ = [
    "AV_PREROLL_SECONDS",
    "MARGIN_SECONDS",
    "SNDFILE_PREROLL",
    "SegmentReader",
    "clip_count",
    "read_clips",
]

# Frames decoded and dropped before a seek target in libsndfile's lossy formats: more than a
# Vorbis block (at most 8192 frames) or Opus's 80 ms pre-roll (3840 frames at 48 kHz).
SNDFILE_PREROLL = 8192
_SNDFILE_LOSSY = frozenset({"OGG", "MP3"})
# Seconds decoded and dropped before a PyAV seek target: ten AAC frames at 44.1 kHz, room for
# codecs whose state reaches further back (SBR in HE-AAC, mp3's bit reservoir).
AV_PREROLL_SECONDS = 0.25
# Audio decoded on each side of a clip, at the model's rate. soxr's filter makes every output
# sample depend on its neighbours: the first and last ~190 samples of a resampled segment
# (8 kHz -> 16 kHz; ~100 for 22.05-192 kHz) differ from a full decode's. 50 ms keeps those
# edges outside the clip with room to spare, at 3% more decoding per 3-s clip.
MARGIN_SECONDS = 0.05


class SegmentReader:
    """An audio file opened once, read at any frame.

    Parameters
    ----------
    path : str, bytes or PathLike
        Audio file (any name, UTF-8 or not).

    Attributes
    ----------
    native_rate : int
        Sample rate of the file.
    channels : int
        Channels of every block :meth:`read` returns.
    frames : int or None
        Length in frames: libsndfile's exact count (for an mp3 without a Xing/Info header
        mpg123 estimates it from the file size); for PyAV an estimate from the stream or
        container duration (AAC's final padding is not in it), or None when unknown.
    seekable : bool
        Whether :meth:`read` is sample-exact (see the module doc): libsndfile files (an Ogg
        file once its last page is found), PyAV files in MP4/M4A with timestamps in samples.
        Reads elsewhere start where the decoder lands after a seek.

    Raises
    ------
    AudioError
        The file cannot be opened (one line naming the reason).
    """

    def __init__(self, path: str | bytes | os.PathLike) -> None:
        self.path = Path(os.fsdecode(path))
        handle = open_audio(path)
        self._sf: sf.SoundFile | None = None
        self._av: AvStream | None = None
        self._decoded = False  # whether anything was decoded since the file was opened
        self._ogg_limit: int | None = None  # the last frame a libsndfile seek may land on
        if isinstance(handle, AvStream):
            self._av = handle
            self.native_rate = handle.rate
            self.channels = int(handle.stream.codec_context.layout.nb_channels)
            self.frames = av_frames(handle)
            self.seekable = av_seekable(handle, self.frames)
            return
        self._sf = handle
        self.native_rate = int(handle.samplerate)
        self.channels = int(handle.channels)
        self.frames = int(handle.frames)
        self.seekable = bool(handle.seekable())
        if handle.format == "OGG":  # not into the last page (see the module doc)
            try:
                tail = ogg_last_page_frames(self.path, handle)
            except OSError:  # gone since it was opened: reads will say so
                tail = None
            self.seekable = self.seekable and tail is not None
            self._ogg_limit = max(0, self.frames - (tail or 0) - SNDFILE_PREROLL)

    @property
    def backend(self) -> str:
        """``libsndfile`` or ``ffmpeg``."""
        return "libsndfile" if self._sf is not None else "ffmpeg"

    @property
    def soundfile(self) -> sf.SoundFile | None:
        """The open libsndfile handle (None for PyAV): the version-2 fingerprint reads through
        it exactly as it always has."""
        return self._sf

    def read(self, start_frame: int, n_frames: int | None) -> np.ndarray:
        """``n_frames`` frames (None: to the end) from ``start_frame``, float32
        ``[n, channels]`` at the native rate; fewer at the end of the file.

        Raises
        ------
        AudioError
            The decoder fails (corrupt data), or a seek fails.
        """
        if start_frame < 0 or (n_frames is not None and n_frames < 0):
            raise ValueError("start_frame and n_frames must not be negative")
        try:
            if self._sf is not None:
                return self._read_soundfile(start_frame, n_frames)
            return self._read_av(start_frame, n_frames)
        except AudioError:
            raise
        except Exception as err:  # libsndfile and PyAV raise many error types for bad data
            raise AudioError(f"cannot decode: {_one_line(err)}") from err
        finally:
            self._decoded = True

    def blocks(self, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        """One sequential pass from the first frame: float32 ``[frames, channels]`` blocks,
        decoded as :func:`tagger.audio.decode_blocks` decodes them."""
        self.rewind()
        self._decoded = True
        if self._sf is not None:
            return soundfile_blocks(self._sf, block_seconds, close=False)
        assert self._av is not None
        return av_blocks(self._av, block_seconds, close=False)

    def rewind(self) -> None:
        """Return to the first frame with the decoder as it was when the file was opened, so
        that what is decoded next does not depend on what was read before. libsndfile seeks;
        PyAV opens the file again once anything was decoded, as a seek leaves some decoder
        state as it was (the AAC decoder's noise generator)."""
        if self._sf is not None:
            self._sf.seek(0)
        elif self._decoded:
            assert self._av is not None
            self._av.container.close()
            try:
                self._av = open_av_stream(self.path)
            except AudioError:
                raise
            except Exception as err:  # the file changed or went away since it was opened
                raise AudioError(f"not decodable audio: {_one_line(err)}") from err
        self._decoded = False

    def close(self) -> None:
        """Close the file (again is harmless)."""
        if self._sf is not None:
            self._sf.close()
        if self._av is not None:
            self._av.container.close()

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_soundfile(self, start: int, n: int | None) -> np.ndarray:
        f = self._sf
        assert f is not None
        if start >= f.frames:
            return np.zeros((0, self.channels), dtype=np.float32)
        first = max(0, start - SNDFILE_PREROLL) if f.format in _SNDFILE_LOSSY else start
        if self._ogg_limit is not None:
            first = min(first, self._ogg_limit)
        f.seek(first)
        block = f.read(-1 if n is None else n + start - first, dtype="float32", always_2d=True)
        return block[start - first:]

    def _read_av(self, start: int, n: int | None) -> np.ndarray:
        import av

        target = start - int(AV_PREROLL_SECONDS * self.native_rate)
        if target <= 0:
            # From the first packet with the decoder as opened, as a full decode: AAC's
            # priming frame decodes differently after a seek (by up to 1.5e-3 in the first
            # ~700 frames), some decoder state surviving the flush.
            self.rewind()
        assert self._av is not None
        container, stream, rate = self._av.container, self._av.stream, self._av.rate
        tb = Fraction(stream.time_base)
        origin = stream.start_time or 0  # pts of the first frame a full decode gives
        if target > 0:
            container.seek(origin + math.floor(Fraction(target, rate) / tb), stream=stream,
                           backward=True)
        resampler = av.AudioResampler(format="fltp")
        parts: list[np.ndarray] = []
        first = None
        have = 0
        for frame in container.decode(stream):
            if first is None:  # then contiguous frames, as a full decode concatenates them
                if frame.pts is None:
                    raise AudioError("cannot decode: a frame without a timestamp")
                first = round((frame.pts - origin) * tb * rate)
                if first > start:
                    raise AudioError(f"cannot decode: a seek to frame {start} landed at {first}")
            parts.append(av_samples(resampler, frame))
            have += len(parts[-1])
            if n is not None and first + have >= start + n:
                break
        if first is None:  # nothing after the seek: past the end
            return np.zeros((0, self.channels), dtype=np.float32)
        data = np.concatenate(parts)[start - first:]
        return data if n is None else data[:n]


def clip_count(reader: SegmentReader, sr: int, clip_seconds: float,
               hop_seconds: float | None = None) -> int | None:
    """How many clips :class:`tagger.audio.ClipStream` would cut (silent ones included):
    exact where :attr:`SegmentReader.frames` is, an estimate otherwise, None when the length
    is unknown. A track shorter than one clip has one (repeated to fill it)."""
    if reader.frames is None:
        return None
    length = int(round(clip_seconds * sr))
    hop = int(round((hop_seconds or clip_seconds) * sr))
    total = round(reader.frames * sr / reader.native_rate)  # soxr's output length
    if total <= 0:
        return 0
    return 1 if total < length else 1 + (total - length) // hop


def read_clips(reader: SegmentReader, sr: int, clip_seconds: float,
               starts_seconds: Sequence[float]) -> ClipBatch:
    """The clips of ``reader`` starting at ``starts_seconds``, mono at ``sr``, each decoded
    from its own segment (or, where the reader cannot seek exactly, cut in one sequential
    pass that holds no more than the clips still to come need).

    A clip equals the one :class:`tagger.audio.ClipStream` cuts at the same start (to float
    rounding; see the module doc for lossy codecs). As there, only full clips are returned:
    a clip that runs past the end is left out, and a track shorter than one clip gives one
    clip at 0 that repeats it. Silent clips are kept: leaving them out is the caller's call.

    Parameters
    ----------
    reader : SegmentReader
        The open file.
    sr : int
        Target sample rate (the model's).
    clip_seconds : float
        Clip length.
    starts_seconds : sequence of float
        Clip starts, in any order; on the grid a start is ``k * hop`` and is rounded to the
        nearest sample at ``sr``.

    Returns
    -------
    ClipBatch
        ``clips`` ``[n, clip_samples]`` float32 and their ``starts`` in seconds, in the
        order asked, without the clips past the end.

    Raises
    ------
    AudioError
        The file cannot be decoded, holds no audio frames or invalid samples (NaN, inf).
    """
    length = int(round(clip_seconds * sr))
    starts = [int(round(s * sr)) for s in starts_seconds]
    if length <= 0 or any(s < 0 for s in starts):
        raise ValueError("the clip length must be positive and starts not negative")
    if reader.frames == 0:
        raise AudioError("no audio frames")
    if reader.seekable:
        clips = {s: _clip_by_seek(reader, sr, length, s) for s in sorted(set(starts))}
    else:
        clips = _clips_in_one_pass(reader, sr, length, sorted(set(starts)))
    kept = [s for s in starts if clips.get(s) is not None]
    return ClipBatch(
        np.stack([clips[s] for s in kept]) if kept else np.zeros((0, length), np.float32),
        np.array(kept, dtype=np.float64) / sr,
    )


def _clip_by_seek(reader: SegmentReader, sr: int, length: int, start: int) -> np.ndarray | None:
    """The clip at output sample ``start``, from a segment with :data:`MARGIN_SECONDS` on each
    side; None when it runs past the end."""
    native = reader.native_rate
    gcd = math.gcd(native, sr)
    step_in, step_out = native // gcd, sr // gcd
    margin = math.ceil(MARGIN_SECONDS * sr)
    # The segment starts where native and output samples coincide (a multiple of step_in):
    # soxr then computes each output sample at the same instant a decode from frame 0 does.
    # Starting elsewhere shifts the whole clip by a fraction of a sample.
    k = max(0, start - margin) // step_out
    first, out_first = k * step_in, k * step_out
    stop = -(-(start + length + margin) * native // sr)  # ceil: the margin after the clip
    block = reader.read(first, stop - first)
    y = np.concatenate([np.zeros(0, np.float32), *resample_blocks(native, [block], sr)])
    clip = y[start - out_first:start - out_first + length]
    if len(clip) == length:
        return clip
    if first == 0 and len(block) < stop - first:  # the whole track: it ends before the clip
        if len(y) == 0:
            raise AudioError("no audio frames")
        if start == 0 and len(y) < length:
            return np.resize(y, length)  # repeated to fill one clip, as ClipStream does
    return None


def _clips_in_one_pass(reader: SegmentReader, sr: int, length: int,
                       starts: list[int]) -> dict[int, np.ndarray]:
    """The clips at output samples ``starts`` (sorted) cut from one sequential decode, which
    stops after the last clip; the buffer holds only what the next clip needs."""
    clips: dict[int, np.ndarray] = {}
    if not starts:
        return clips
    buffer = np.zeros(0, dtype=np.float32)
    offset = 0  # output sample index of buffer[0]
    i = 0
    with contextlib.closing(resample_blocks(reader.native_rate, reader.blocks(), sr)) as blocks:
        for block in blocks:
            buffer = np.concatenate([buffer, block]) if len(buffer) else block
            while i < len(starts) and starts[i] + length <= offset + len(buffer):
                at = starts[i] - offset
                clips[starts[i]] = buffer[at:at + length].copy()
                i += 1
            if i == len(starts):
                return clips
            drop = min(max(starts[i] - offset, 0), len(buffer))
            buffer, offset = buffer[drop:], offset + drop
    if offset + len(buffer) == 0:
        raise AudioError("no audio frames")
    if starts[0] == 0 and offset == 0 and len(buffer) < length:
        clips[0] = np.resize(buffer, length)  # repeated to fill one clip, as ClipStream does
    return clips
