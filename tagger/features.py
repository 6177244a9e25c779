"""Log-mel features: the one feature function shared by the tagger and the trainer.

A model's ONNX metadata stores a :class:`FeatureSettings`; whatever computes features for
that model (training, evaluation, tagging) calls :func:`log_mel` with exactly those settings,
so a model sees in use what it saw in training.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import numpy as np

__all__ = [
    "FeatureSettings",
    "MUSICNN_FEATURES",
    "hz_to_mel",
    "log_mel",
    "mel_filterbank",
    "mel_to_hz",
    "n_frames_for",
    "power_spectrogram",
]

LOG_KINDS = ("log10_1p", "db")


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    """How a clip becomes a log-mel patch.

    Parameters
    ----------
    n_fft, hop_length : int
        STFT size and hop, in samples.
    n_mels : int
        Number of mel bands.
    fmin, fmax : float
        Mel filterbank range in Hz (``fmax`` <= sample rate / 2).
    log : {"log10_1p", "db"}
        ``log10_1p``: ``log10(1 + log_multiplier * mel)`` (musicnn);
        ``db``: ``librosa.power_to_db(mel, ref=1.0, top_db=None)``.
    log_multiplier : float
        Scale inside the ``log10_1p`` compression.
    n_frames : int
        Frames per patch; the STFT output is cropped or edge-padded to this length.
    """

    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    fmin: float = 0.0
    fmax: float = 8000.0
    log: str = "log10_1p"
    log_multiplier: float = 10000.0
    n_frames: int = 187

    def __post_init__(self) -> None:
        if self.log not in LOG_KINDS:
            raise ValueError(f"unknown log compression {self.log!r}; expected one of {LOG_KINDS}")
        for name in ("n_fft", "hop_length", "n_mels", "n_frames"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"feature setting {name} must be positive")
        if not 0 <= self.fmin < self.fmax:
            raise ValueError("feature settings need 0 <= fmin < fmax")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown feature settings: {sorted(unknown)}")
        return cls(**data)


# musicnn (Pons & Serra 2019): 16 kHz, 512-point FFT, hop 256, 96 mel bands, 187 frames (3 s).
MUSICNN_FEATURES = FeatureSettings()


def n_frames_for(n_samples: int, hop_length: int) -> int:
    """Number of STFT frames librosa returns (``center=True``) for ``n_samples``."""
    return 1 + n_samples // hop_length


# Slaney's mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above.
_MEL_F_SP = 200.0 / 3
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa's default, ``htk=False``): linear below 1 kHz, then log."""
    hz = np.asanyarray(hz, dtype=np.float64)
    log_part = np.log(np.maximum(hz, _MEL_MIN_LOG_HZ) / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP
    return np.where(hz >= _MEL_MIN_LOG_HZ, _MEL_MIN_LOG_MEL + log_part, hz / _MEL_F_SP)


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mels = np.asanyarray(mels, dtype=np.float64)
    log_part = _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (mels - _MEL_MIN_LOG_MEL))
    return np.where(mels >= _MEL_MIN_LOG_MEL, log_part, _MEL_F_SP * mels)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filters with Slaney's area normalisation, as ``librosa.filters.mel``
    builds them by default.

    Returns
    -------
    np.ndarray [shape=(1 + n_fft // 2, n_mels), dtype=float32]
        Read-only, frequency-major (ready for ``power @ filters``).
    """
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:-2] / fdiff[:-1, np.newaxis]
    upper = ramps[2:] / fdiff[1:, np.newaxis]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, np.newaxis]
    out = np.ascontiguousarray(weights.T, dtype=np.float32)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    """Periodic Hann window (``scipy.signal.get_window("hann", n_fft)``)."""
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    window.flags.writeable = False
    return window


def power_spectrogram(clips: np.ndarray, n_fft: int, hop_length: int,
                      n_frames: int | None = None) -> np.ndarray:
    """Power STFT of a batch of clips, time-major, framed as librosa's ``stft`` frames them
    (``center=True``, zero padding, periodic Hann window).

    Parameters
    ----------
    clips : np.ndarray [shape=(n, samples)]
        float32 audio.
    n_fft, hop_length : int
        STFT size and hop.
    n_frames : int, optional
        Compute only the first ``n_frames`` frames.

    Returns
    -------
    np.ndarray [shape=(n, frames, 1 + n_fft // 2), dtype=float32]
    """
    pad = n_fft // 2
    padded = np.pad(clips, ((0, 0), (pad, pad)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=1)[:, ::hop_length]
    if n_frames is not None:
        frames = frames[:, :n_frames]
    import scipy.fft  # here, not at module level: a `beet` start must not pay its import

    # scipy's pocketfft vectorises across frames: 2-3x faster than numpy.fft here
    spec = scipy.fft.rfft(frames * _hann(n_fft), axis=-1)  # float32 in, complex64 out
    power = np.square(spec.real)
    power += np.square(spec.imag)
    return power


def log_mel(clips: np.ndarray, sr: int, settings: FeatureSettings = MUSICNN_FEATURES) -> np.ndarray:
    """Log-mel patches of a batch of clips.

    The mel power spectrogram equals ``librosa.feature.melspectrogram(y, sr=sr, n_fft=...,
    hop_length=..., n_mels=..., fmin=..., fmax=..., power=2.0)`` to float32 precision (the
    tests check it), computed with numpy and ``scipy.fft`` alone: importing librosa's spectral
    code takes seconds, which every ``genreml`` start would pay.

    Parameters
    ----------
    clips : np.ndarray [shape=(n, samples) or (samples,)]
        Mono audio clips at ``sr``, float.
    sr : int
        Sample rate of ``clips`` in Hz.
    settings : FeatureSettings
        STFT, mel and compression settings (stored in each model's metadata).

    Returns
    -------
    np.ndarray [shape=(n, settings.n_frames, settings.n_mels), dtype=float32]
        Time-major log-mel patches.
    """
    clips = np.asarray(clips, dtype=np.float32)
    if clips.ndim == 1:
        clips = clips[np.newaxis]
    if clips.ndim != 2:
        raise ValueError(f"clips must be 1-D or 2-D, got shape {clips.shape}")
    if settings.fmax > sr / 2:
        raise ValueError(f"fmax {settings.fmax} Hz is above the Nyquist frequency of {sr} Hz")
    if clips.shape[0] == 0:
        return np.zeros((0, settings.n_frames, settings.n_mels), dtype=np.float32)
    power = power_spectrogram(clips, settings.n_fft, settings.hop_length, settings.n_frames)
    filters = mel_filterbank(sr, settings.n_fft, settings.n_mels, settings.fmin, settings.fmax)
    # one 2-D product: BLAS runs it faster than the batched 3-D matmul
    mel = (power.reshape(-1, power.shape[-1]) @ filters).reshape(*power.shape[:2], -1)
    if settings.log == "log10_1p":
        # float32 throughout: musicnn's float16 mel overflows to inf on loud bins.
        out = np.log10(1.0 + np.float32(settings.log_multiplier) * mel)
    else:  # librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
        out = np.float32(10.0) * np.log10(np.maximum(mel, np.float32(1e-10)))
    frames = out.shape[1]
    if frames < settings.n_frames:
        out = np.pad(out, ((0, 0), (0, settings.n_frames - frames), (0, 0)), mode="edge")
    return np.ascontiguousarray(out, dtype=np.float32)
