"""What a training run depends on: its settings (saved as ``config.json``) and their checks.

Kept apart from :mod:`trainer.train` so that the CLI and scripts can build and check a
configuration without the training code, and so that one file lists every setting a run has.
"""

from __future__ import annotations

import dataclasses

from tagger.features import MUSICNN_FEATURES, FeatureSettings
from tagger.result import check_threshold

__all__ = ["BACKBONES", "EMBEDDINGS", "TrainConfig", "TrainError", "feature_settings"]

BACKBONES = ("cnn", "musicnn")
EMBEDDINGS = ("penultimate", "mean_pool", "max_pool", "taggram")
# Unset learning rate and dropout per backbone. A dense head on frozen embeddings overfits
# within an epoch or two at the CNN's rate; on 4Q emotion (validation split) 3e-4 and dropout
# 0.5 trained for 8 epochs before the best one and scored as well or better.
BACKBONE_DEFAULTS = {"cnn": {"learning_rate": 1.5e-3, "dropout": 0.2},
                     "musicnn": {"learning_rate": 3e-4, "dropout": 0.5}}


class TrainError(Exception):
    """A run that cannot start: bad configuration, unreadable dataset (one-line reason)."""


def feature_settings(sample_rate: int = 16000, clip_seconds: float = 3.0, n_mels: int = 96,
                     n_fft: int = 512, hop_length: int = 256,
                     fmax: float | None = None) -> FeatureSettings:
    """Log-mel settings for clips of ``clip_seconds``: ``n_frames`` is the number of whole STFT
    hops in a clip (187 for musicnn's 3 s at 16 kHz; the defaults give
    :data:`tagger.features.MUSICNN_FEATURES`)."""
    n_frames = int(round(clip_seconds * sample_rate)) // hop_length
    fmax = min(8000.0, sample_rate / 2) if fmax is None else fmax
    return FeatureSettings(n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=0.0,
                           fmax=float(fmax), n_frames=n_frames)


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on (saved as ``config.json``).

    ``hop_seconds`` is the distance between *training* clips (default: half a clip, so
    overlapping clips augment the data); validation and test clips never overlap, as in the
    tagger. ``threshold`` is the genre decision threshold unless ``tune_threshold`` picks one
    on the validation split. ``evaluate_test=False`` leaves the test split untouched, for
    comparing settings on the validation split (``genreml evaluate`` the chosen run at the end).
    ``embedding`` names the backbone outputs concatenated into the
    head's input. ``filters``/``blocks``: first block's filters (doubling per block) and block
    count of the ``cnn``.
    """

    dataset: str
    data_path: str
    task: str = "genre"
    backbone: str = "cnn"
    backbone_onnx: str | None = None
    musicnn_model: str = "MSD_musicnn"
    embedding: tuple[str, ...] = ("penultimate",)
    out: str | None = None
    name: str | None = None
    version: str = "1.0.0"
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float | None = None
    patience: int = 8
    seed: int = 0
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    sample_rate: int = 16000
    clip_seconds: float = 3.0
    hop_seconds: float | None = None
    features: FeatureSettings = MUSICNN_FEATURES
    filters: int = 8
    blocks: int = 5
    dropout: float | None = None
    hidden: tuple[int, ...] = (256,)
    min_count: int = 1
    label_mode: str = "dominant"
    tune_threshold: bool = False
    threshold: float = 0.2
    class_weights: bool = True
    cache_dir: str | None = None
    evaluate_test: bool = True
    verbose: int | str = "auto"

    def __post_init__(self) -> None:
        for key, value in BACKBONE_DEFAULTS.get(self.backbone, {}).items():
            if getattr(self, key) is None:
                setattr(self, key, value)

    def check(self) -> None:
        """Raise :class:`TrainError` for settings that cannot work."""
        if self.task not in ("genre", "emotion"):
            raise TrainError(f"--task must be genre or emotion, not {self.task!r}")
        if self.backbone not in BACKBONES:
            raise TrainError(f"--backbone must be one of {BACKBONES}, not {self.backbone!r}")
        unknown = [e for e in self.embedding if e not in EMBEDDINGS]
        if unknown or not self.embedding:
            raise TrainError(f"--embedding takes {', '.join(EMBEDDINGS)}; got {unknown}")
        check_threshold(self.threshold, "--threshold", TrainError)
        if not 0.0 <= self.dropout < 1.0 or self.learning_rate <= 0:
            raise TrainError("--dropout must be in [0, 1) and --lr positive")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise TrainError("--epochs, --batch-size and --patience must be positive")
        if self.clip_seconds <= 0 or (self.hop_seconds is not None and self.hop_seconds <= 0):
            raise TrainError("--clip-seconds and --hop-seconds must be positive")
        if self.features.fmax > self.sample_rate / 2:
            raise TrainError(f"fmax {self.features.fmax} Hz is above Nyquist at "
                             f"{self.sample_rate} Hz")

    @property
    def model_name(self) -> str:
        return self.name or f"{self.dataset}-{self.task}-{self.backbone}"

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["features"] = dataclasses.asdict(self.features)
        return out
