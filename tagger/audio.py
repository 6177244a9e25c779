"""Decode audio files into mono clips at a model's sample rate, block by block.

libsndfile (through soundfile) decodes wav, aiff, flac, ogg/vorbis, opus and mp3; PyAV (FFmpeg's
libraries, bundled in its wheel; :mod:`tagger.avdecode`) decodes what libsndfile cannot, such
as m4a/aac. Decoding,
down-mixing, resampling (soxr) and slicing run on blocks, so a two-hour file never sits in
memory whole.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .avdecode import AvStream, av_blocks, open_av

log = logging.getLogger(__name__)

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioError",
    "AvStream",
    "ClipBatch",
    "ClipStream",
    "SilentAudio",
    "decode_blocks",
    "find_audio",
    "frame_clips",
    "is_audio_path",
    "load",
    "open_audio",
    "open_checked",
    "resample_blocks",
    "to_mono",
]

AUDIO_EXTENSIONS = frozenset(
    {".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".wav", ".aif", ".aiff"}
)
SILENCE_PEAK = 1e-4  # -80 dBFS: a clip quieter than this everywhere is digital silence
BLOCK_SECONDS = 30.0


class AudioError(Exception):
    """A file that cannot be analysed; the message is one line naming the reason."""


class SilentAudio(AudioError):
    """The file decodes but holds no usable (non-silent) clip: front doors report it as
    ``skipped: silent``, not as a failure."""

    def __init__(self) -> None:
        super().__init__("silent")


def is_audio_path(path: str | Path) -> bool:
    """Whether ``path`` has an extension genreml analyses."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def find_audio(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files to analyse: each named file as given, and every audio file below each named
    folder (recursive, sorted, hidden files and folders left out)."""
    for path in map(Path, paths):
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and is_audio_path(name):
                        yield Path(root) / name
        else:
            yield path


def to_mono(block: np.ndarray) -> np.ndarray:
    """Average the channels of a ``[frames, channels]`` block into ``[frames]`` float32."""
    block = np.asarray(block, dtype=np.float32)
    if block.ndim == 1:
        return block
    # a mat-vec product: several times faster than mean(axis=1) on interleaved frames
    return block @ np.full(block.shape[1], 1.0 / block.shape[1], dtype=np.float32)


def frame_clips(y: np.ndarray, clip_length: int, hop_length: int) -> np.ndarray:
    """Every full clip of ``clip_length`` samples in ``y``, ``hop_length`` apart.

    Returns
    -------
    np.ndarray [shape=(n, clip_length)]
        A read-only strided view; ``n`` is 0 when ``y`` is shorter than one clip.
    """
    if len(y) < clip_length:
        return np.zeros((0, clip_length), dtype=y.dtype)
    n = 1 + (len(y) - clip_length) // hop_length
    windows = np.lib.stride_tricks.sliding_window_view(y, clip_length)
    return windows[: (n - 1) * hop_length + 1 : hop_length]


# libsndfile's log line for a WAV 'data' / AIFF 'SSND' chunk that claims more bytes than the
# file holds: "data : 441000 (should be 220478)".
_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND) : (\d+) \(should be (\d+)\)", re.MULTILINE)


def _check_complete(f: sf.SoundFile) -> None:
    """Refuse a WAV/AIFF whose audio chunk is cut off: libsndfile would quietly decode the
    part that is there, and a partial download must not be analysed as the whole song."""
    if f.format not in ("WAV", "WAVEX", "AIFF", "RF64", "W64"):
        return
    match = _SHORT_CHUNK.search(f.extra_info)
    if match and int(match.group(2)) < int(match.group(1)):
        raise AudioError(f"cannot decode: truncated ({match.group(1)} bytes of audio announced, "
                         f"{match.group(2)} present)")


def open_soundfile(path: str | bytes | os.PathLike) -> sf.SoundFile:
    """Open ``path`` with libsndfile by its OS bytes (any file name, UTF-8 or not).

    Raises
    ------
    AudioError
        A WAV/AIFF whose audio is cut off.
    soundfile.LibsndfileError
        libsndfile cannot read the file (the caller may try FFmpeg).
    """
    f = sf.SoundFile(os.fsencode(path))
    try:
        _check_complete(f)
    except AudioError:
        f.close()
        raise
    return f


def soundfile_blocks(f: sf.SoundFile, block_seconds: float,
                     close: bool = True) -> Iterator[np.ndarray]:
    """float32 ``[frames, channels]`` blocks of an open libsndfile file from where it stands;
    ``close`` closes it when the blocks are done or abandoned."""
    size = max(1, int(block_seconds * f.samplerate))
    try:
        while len(block := f.read(size, dtype="float32", always_2d=True)):
            yield block
    finally:
        if close:
            f.close()


def open_av_stream(path: str | os.PathLike) -> AvStream:
    """Open ``path`` with PyAV and pick its first audio stream (:class:`AudioError` when it
    has none, or no sample rate); PyAV's own errors pass through."""
    container = open_av(path)
    if not container.streams.audio:
        container.close()
        raise AudioError("no audio stream")
    stream = container.streams.audio[0]
    sr = int(stream.codec_context.sample_rate or stream.rate or 0)
    if sr <= 0:
        container.close()
        raise AudioError("unknown sample rate")
    return AvStream(container, stream, sr)


def open_checked(path: str | bytes | os.PathLike) -> Path:
    """``path`` as a Path after checking it is a non-empty regular file.

    Checked before any decoder opens it: opening a FIFO would block until a writer comes.

    Raises
    ------
    AudioError
        ``no such file``, ``not a regular file`` or ``empty file``.
    """
    path = Path(os.fsdecode(path))
    try:
        st = os.stat(os.fsencode(path))
    except FileNotFoundError:
        raise AudioError("no such file") from None
    except OSError as err:
        raise AudioError(f"cannot read: {err.strerror or err}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AudioError("not a regular file")
    if st.st_size == 0:
        raise AudioError("empty file")
    return path


def open_audio(path: str | bytes | os.PathLike) -> sf.SoundFile | AvStream:
    """Open ``path`` with libsndfile, or with PyAV (FFmpeg) when libsndfile cannot read it.

    Raises
    ------
    AudioError
        When neither can open the file, or it is not a regular file.
    """
    path = open_checked(path)
    try:
        return open_soundfile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        try:
            return open_av_stream(path)
        except AudioError:
            raise
        except Exception as av_err:  # PyAV raises many error types for junk input
            reason = getattr(av_err, "strerror", None) or _one_line(av_err)
            raise AudioError(f"not decodable audio: {reason}") from av_err


def decode_blocks(
    path: str | bytes | os.PathLike, block_seconds: float = BLOCK_SECONDS
) -> tuple[int, Iterator[np.ndarray]]:
    """Open ``path`` (:func:`open_audio`) and return its native sample rate and an iterator
    of float32 ``[frames, channels]`` blocks."""
    handle = open_audio(path)
    if isinstance(handle, AvStream):
        return handle.rate, av_blocks(handle, block_seconds)
    return handle.samplerate, soundfile_blocks(handle, block_seconds)


def check_finite(block: np.ndarray) -> np.ndarray:
    """``block`` itself, or :class:`AudioError` when it holds NaN or infinity (a broken float
    file: every feature computed from it would be NaN)."""
    if not np.isfinite(block).all():
        raise AudioError("invalid samples (NaN or infinity)")
    return block


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def resample_blocks(native_sr: int, blocks: Iterable[np.ndarray], sr: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks at ``sr`` from native ``[frames, channels]`` blocks, through one
    soxr stream (quality HQ) that is flushed at the end.

    Raises
    ------
    AudioError
        Invalid samples, or the decoder failing mid-stream (corrupt data).
    """
    resampler = None if native_sr == sr else soxr.ResampleStream(
        native_sr, sr, 1, dtype="float32", quality="HQ"
    )
    try:
        for block in blocks:
            mono = check_finite(to_mono(block))  # NaN/inf survive the channel mean
            yield mono if resampler is None else resampler.resample_chunk(mono, last=False)
    except AudioError:
        raise
    except Exception as err:  # a decoder failing mid-stream: corrupt data
        raise AudioError(f"cannot decode: {_one_line(err)}") from err
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def load(path: str | Path, sr: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sr`` (whole file, or its first ``max_seconds``)."""
    out: list[np.ndarray] = []
    have = 0
    limit = None if max_seconds is None else int(max_seconds * sr)
    for block in resample_blocks(*decode_blocks(path), sr):
        out.append(block)
        have += len(block)
        if limit is not None and have >= limit:
            break
    y = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
    return y if limit is None else y[:limit]


@dataclasses.dataclass
class ClipBatch:
    """Up to ``batch_size`` clips ``[n, samples]`` and their start times in seconds."""

    clips: np.ndarray
    starts: np.ndarray


class ClipStream:
    """Iterate over the clips of one file, decoded and resampled block by block.

    Parameters
    ----------
    path : str or Path
        Audio file.
    sr : int
        Target sample rate (the model's).
    clip_seconds : float
        Clip length.
    hop_seconds : float, optional
        Distance between clip starts; defaults to ``clip_seconds`` (no overlap).
    batch_size : int
        Clips per yielded :class:`ClipBatch`.

    After iteration, ``duration`` holds the decoded length in seconds and ``skipped_silent``
    the number of silent clips left out. A track shorter than one clip is repeated to fill one
    clip. A track that cannot be decoded raises :class:`AudioError`; one without a usable
    (non-silent) clip raises :class:`SilentAudio`.
    """

    def __init__(self, path: str | Path, sr: int, clip_seconds: float,
                 hop_seconds: float | None = None, batch_size: int = 64) -> None:
        self.path = Path(os.fsdecode(path))
        self.sr = int(sr)
        self.clip_length = int(round(clip_seconds * sr))
        self.hop_length = int(round((hop_seconds or clip_seconds) * sr))
        if self.clip_length <= 0 or self.hop_length <= 0:
            raise ValueError("clip and hop lengths must be positive")
        self.batch_size = batch_size
        self.duration = 0.0
        self.skipped_silent = 0

    def __iter__(self) -> Iterator[ClipBatch]:
        buffer = np.zeros(0, dtype=np.float32)
        offset = 0  # sample index of buffer[0]
        total = 0
        emitted = 0
        pending_clips: list[np.ndarray] = []
        pending_starts: list[np.ndarray] = []
        pending = 0

        def flush() -> ClipBatch:
            nonlocal pending_clips, pending_starts, pending
            batch = ClipBatch(np.concatenate(pending_clips), np.concatenate(pending_starts))
            pending_clips, pending_starts, pending = [], [], 0
            return batch

        for block in resample_blocks(*decode_blocks(self.path), self.sr):
            total += len(block)
            buffer = np.concatenate([buffer, block]) if len(buffer) else block
            clips = frame_clips(buffer, self.clip_length, self.hop_length)
            if len(clips):
                starts = offset + np.arange(len(clips)) * self.hop_length
                kept = self._usable(clips)
                pending_clips.append(np.array(clips[kept]))
                pending_starts.append(starts[kept] / self.sr)
                pending += int(kept.sum())
                emitted += int(kept.sum())
                consumed = len(clips) * self.hop_length
                buffer = buffer[consumed:].copy()
                offset += consumed
            while pending >= self.batch_size:
                batch = flush()
                head = ClipBatch(batch.clips[: self.batch_size], batch.starts[: self.batch_size])
                if len(batch.clips) > self.batch_size:
                    pending_clips = [batch.clips[self.batch_size:]]
                    pending_starts = [batch.starts[self.batch_size:]]
                    pending = len(pending_clips[0])
                yield head
        self.duration = total / self.sr
        if total == 0:
            raise AudioError("no audio frames")
        if emitted == 0 and offset == 0 and 0 < total < self.clip_length:
            clip = np.resize(buffer, self.clip_length)[np.newaxis]  # repeat to fill one clip
            kept = self._usable(clip)
            if kept.all():
                pending_clips.append(clip)
                pending_starts.append(np.zeros(1))
                pending += 1
                emitted += 1
        if emitted == 0:
            raise SilentAudio()
        if pending:
            yield flush()

    def _usable(self, clips: np.ndarray) -> np.ndarray:
        keep = np.abs(clips).max(axis=1) >= SILENCE_PEAK
        self.skipped_silent += int((~keep).sum())
        return keep
