"""Log-mel features: the one feature function shared by the tagger and the trainer.

A model's ONNX metadata stores a :class:`FeatureSettings`; whatever computes features for
that model (training, evaluation, tagging) calls :func:`log_mel` with exactly those settings,
so a model sees in use what it saw in training.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import librosa
import numpy as np

__all__ = ["FeatureSettings", "MUSICNN_FEATURES", "log_mel", "n_frames_for"]

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


def log_mel(clips: np.ndarray, sr: int, settings: FeatureSettings = MUSICNN_FEATURES) -> np.ndarray:
    """Log-mel patches of a batch of clips.

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
    mel = librosa.feature.melspectrogram(
        y=clips,
        sr=sr,
        n_fft=settings.n_fft,
        hop_length=settings.hop_length,
        n_mels=settings.n_mels,
        fmin=settings.fmin,
        fmax=settings.fmax,
        power=2.0,
    )  # (n, n_mels, frames), float32
    if settings.log == "log10_1p":
        # float32 throughout: musicnn's float16 mel overflows to inf on loud bins.
        out = np.log10(1.0 + np.float32(settings.log_multiplier) * mel)
    else:
        out = librosa.power_to_db(mel, ref=1.0, top_db=None)
    out = np.swapaxes(out, 1, 2)
    frames = out.shape[1]
    if frames > settings.n_frames:
        out = out[:, : settings.n_frames]
    elif frames < settings.n_frames:
        out = np.pad(out, ((0, 0), (0, settings.n_frames - frames), (0, 0)), mode="edge")
    return np.ascontiguousarray(out, dtype=np.float32)
