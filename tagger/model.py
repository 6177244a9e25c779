"""Self-describing ONNX models: load, validate their metadata, pick providers, run batches.

A genreml model is one ONNX file. Its single input is a batch of log-mel patches
``[batch, n_frames, n_mels]`` (float32); each output named in its metadata is a matrix of
probabilities ``[batch, n_labels]`` for one task. Everything needed to feed and read it lives in
``metadata_props``:

===========================  ==============================================================
key                          value
===========================  ==============================================================
``genreml.format``           ``"1"``
``genreml.name``             model name, e.g. ``"4q-musicnn"``
``genreml.version``          model version, e.g. ``"1.0.0"``
``genreml.sample_rate``      audio rate in Hz the features are computed at, e.g. ``"16000"``
``genreml.clip_seconds``     clip length in seconds, e.g. ``"3.0"``
``genreml.features``         JSON of :class:`tagger.features.FeatureSettings`
``genreml.heads``            JSON list, one object per output:
                             ``{"output": name, "task": "genre"|"emotion",
                             "labels": [...], "threshold": 0.2}`` (threshold: genre only)
===========================  ==============================================================

A file with two heads (genre and emotion over one backbone) runs the backbone once per clip.
Its sessions are opened by :func:`tagger.onnxsession.open_session`, with the options every genreml
session shares.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .features import FeatureSettings
from .onnxsession import available_cores, open_session
from .result import ModelIdentity, check_threshold

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "TASKS",
    "HeadSpec",
    "ModelError",
    "ModelSet",
    "OnnxModel",
    "choose_providers",
    "default_models_dir",
    "load_model",
    "load_models",
    "metadata_for",
]

FORMAT_VERSION = "1"
TASKS = ("genre", "emotion")
PREFIX = "genreml."
# Clips per onnxruntime call. Convolution activations dominate memory (about 25 MB per clip for
# the default model); on 2 cores 8 was the fastest of 4/8/16/32 for both the default model and a
# musicnn-sized one, at a third of the memory of 32.
BATCH_SIZE = 8
REQUIRED_KEYS = ("format", "name", "version", "sample_rate", "clip_seconds", "features", "heads")


class ModelError(Exception):
    """A model file that cannot be used, with a one-line reason."""


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One output of a model: which task it answers, with which labels."""

    output: str
    task: str
    labels: tuple[str, ...]
    threshold: float | None = None

    def to_dict(self) -> dict:
        out = {"output": self.output, "task": self.task, "labels": list(self.labels)}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


def metadata_for(
    name: str,
    version: str,
    sample_rate: int,
    clip_seconds: float,
    features: FeatureSettings,
    heads: Iterable[HeadSpec],
    **extra: str,
) -> dict[str, str]:
    """The ``metadata_props`` dict that makes an ONNX file a genreml model.

    ``extra`` entries are stored as ``genreml.<key>`` (e.g. provenance, metrics).
    """
    meta = {
        "format": FORMAT_VERSION,
        "name": name,
        "version": version,
        "sample_rate": str(int(sample_rate)),
        "clip_seconds": repr(float(clip_seconds)),
        "features": features.to_json(),
        "heads": json.dumps([h.to_dict() for h in heads]),
        **extra,
    }
    return {PREFIX + k: str(v) for k, v in meta.items()}


def default_models_dir() -> Path:
    """The models bundled with the package."""
    return Path(__file__).parent / "models"


def choose_providers(device: str = "auto") -> list[str]:
    """onnxruntime execution providers for ``device`` (``auto``, ``cpu`` or ``cuda``)."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ModelError(
                "--device cuda: onnxruntime has no CUDA provider (pip install '.[gpu]' in a "
                f"genreml clone, and a CUDA runtime); available: {', '.join(available)}"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "auto":
        raise ModelError(f"unknown device {device!r}; expected auto, cpu or cuda")
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _parse_heads(raw: str) -> tuple[HeadSpec, ...]:
    data = json.loads(raw)
    if not isinstance(data, list) or not data:
        raise ValueError("heads must be a non-empty JSON list")
    heads = []
    for item in data:
        task = item.get("task")
        if task not in TASKS:
            raise ValueError(f"head task {task!r} is not one of {TASKS}")
        labels = item.get("labels")
        if (not isinstance(labels, list) or not labels
                or not all(isinstance(x, str) and x for x in labels)):
            raise ValueError(f"{task} head: labels must be a non-empty list of strings")
        if len(set(labels)) != len(labels):
            raise ValueError(f"{task} head: labels are not unique")
        threshold = item.get("threshold")
        if task == "genre":
            if not isinstance(threshold, (int, float)):
                raise ValueError("genre head: threshold must be a number in (0, 1)")
            threshold = check_threshold(float(threshold), "genre head: threshold")
        if not isinstance(item.get("output"), str):
            raise ValueError(f"{task} head: output name missing")
        heads.append(HeadSpec(item["output"], task, tuple(labels), threshold))
    tasks = [h.task for h in heads]
    if len(set(tasks)) != len(tasks):
        raise ValueError("one head per task")
    return tuple(heads)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclasses.dataclass
class OnnxModel:
    """A validated genreml ONNX model and its inference session."""

    path: Path
    identity: ModelIdentity
    sample_rate: int
    clip_seconds: float
    features: FeatureSettings
    heads: tuple[HeadSpec, ...]
    session: ort.InferenceSession
    input_name: str
    batch_size: int = BATCH_SIZE
    threads: int = 1
    _fewer_threads: dict[int, ort.InferenceSession] = dataclasses.field(
        default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = dataclasses.field(
        default_factory=threading.Lock, repr=False, compare=False)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    @property
    def on_cpu(self) -> bool:
        return self.providers[0] == "CPUExecutionProvider"

    def session_for(self, threads: int | None = None) -> ort.InferenceSession:
        """The session to run with at most ``threads`` CPU threads.

        A second session with fewer intra-op threads lets inference share the cores with
        decoding in another thread: an onnxruntime pool that loses a core to another thread
        waits for its slowest worker at every parallel step. It is built on first use; GPU
        sessions are shared as they are.
        """
        if threads is None or threads >= self.threads or not self.on_cpu:
            return self.session
        threads = max(1, threads)
        with self._lock:  # daemon workers share one model
            if threads not in self._fewer_threads:
                self._fewer_threads[threads] = open_session(self.path, threads)
            return self._fewer_threads[threads]

    def run(self, mel: np.ndarray, threads: int | None = None) -> dict[str, np.ndarray]:
        """Probabilities per task for log-mel patches ``[n, n_frames, n_mels]``, using at most
        ``threads`` CPU threads (default: the model's :attr:`threads`).

        Returns
        -------
        dict
            task -> float32 array ``[n, n_labels]``.
        """
        session = self.session_for(threads)
        outputs = [h.output for h in self.heads]
        parts: dict[str, list[np.ndarray]] = {h.task: [] for h in self.heads}
        for start in range(0, len(mel), self.batch_size):
            chunk = np.ascontiguousarray(mel[start : start + self.batch_size], dtype=np.float32)
            for head, out in zip(self.heads, session.run(outputs, {self.input_name: chunk})):
                parts[head.task].append(np.asarray(out, dtype=np.float32).reshape(len(chunk), -1))
        return {
            task: (np.concatenate(p) if p else np.zeros((0, len(h.labels)), np.float32))
            for (task, p), h in zip(parts.items(), self.heads)
        }


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def load_model(
    path: str | Path, device: str = "auto", threads: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> OnnxModel:
    """Load and validate one genreml ONNX model.

    Raises
    ------
    ModelError
        When the file is not an ONNX model or its metadata is missing or inconsistent.
    """
    path = Path(path)
    threads = threads or available_cores()
    try:
        providers = choose_providers(device)
        session = open_session(path, threads, providers)
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(f"{path.name}: not a loadable ONNX model ({str(err).splitlines()[0]})") \
            from err
    meta = session.get_modelmeta().custom_metadata_map
    missing = [PREFIX + k for k in REQUIRED_KEYS if PREFIX + k not in meta]
    if missing:
        raise ModelError(f"{path.name}: not a genreml model, metadata missing {', '.join(missing)}")
    try:
        if meta[PREFIX + "format"] != FORMAT_VERSION:
            raise ValueError(f"metadata format {meta[PREFIX + 'format']!r} is not supported")
        sample_rate = int(meta[PREFIX + "sample_rate"])
        clip_seconds = float(meta[PREFIX + "clip_seconds"])
        if sample_rate <= 0 or clip_seconds <= 0:
            raise ValueError("sample_rate and clip_seconds must be positive")
        features = FeatureSettings.from_dict(json.loads(meta[PREFIX + "features"]))
        if features.fmax > sample_rate / 2:
            raise ValueError(f"fmax {features.fmax} is above Nyquist for {sample_rate} Hz")
        heads = _parse_heads(meta[PREFIX + "heads"])
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"expected one input, found {len(inputs)}")
        shape = inputs[0].shape
        if len(shape) != 3:
            raise ValueError(f"input must be [batch, frames, mels], found {shape}")
        for got, want, what in ((shape[1], features.n_frames, "frames"),
                                (shape[2], features.n_mels, "mel bands")):
            if _static(got) is not None and got != want:
                raise ValueError(f"input has {got} {what}, features say {want}")
        outputs = {o.name: o.shape for o in session.get_outputs()}
        for head in heads:
            if head.output not in outputs:
                raise ValueError(f"{head.task} head: no output named {head.output!r}")
            width = _static(outputs[head.output][-1]) if outputs[head.output] else None
            if width is not None and width != len(head.labels):
                raise ValueError(
                    f"{head.task} head: output has {width} values but {len(head.labels)} labels"
                )
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path.name}: inconsistent genreml metadata: {err}") from err
    identity = ModelIdentity(meta[PREFIX + "name"], meta[PREFIX + "version"], _sha256(path))
    return OnnxModel(path, identity, sample_rate, clip_seconds, features, heads, session,
                     inputs[0].name, batch_size, threads)


@dataclasses.dataclass
class ModelSet:
    """The models one analysis runs: at most one head per task, one sample rate and clip."""

    models: list[OnnxModel]

    def __post_init__(self) -> None:
        if not self.models:
            raise ModelError("no models to run")
        seen: dict[str, Path] = {}
        for m in self.models:
            for h in m.heads:
                if h.task in seen:
                    raise ModelError(
                        f"two {h.task} models: {seen[h.task].name} and {m.path.name}; keep one"
                    )
                seen[h.task] = m.path
        first = self.models[0]
        for m in self.models[1:]:
            if (m.sample_rate, m.clip_seconds) != (first.sample_rate, first.clip_seconds):
                raise ModelError(
                    f"{m.path.name} wants {m.sample_rate} Hz / {m.clip_seconds} s clips but "
                    f"{first.path.name} wants {first.sample_rate} Hz / {first.clip_seconds} s"
                )

    @property
    def sample_rate(self) -> int:
        return self.models[0].sample_rate

    @property
    def clip_seconds(self) -> float:
        return self.models[0].clip_seconds

    @property
    def identities(self) -> dict[str, ModelIdentity]:
        """Model identity per task."""
        return {h.task: m.identity for m in self.models for h in m.heads}

    @property
    def providers(self) -> list[str]:
        return self.models[0].providers


def load_models(
    source: str | Path | Iterable[str | Path] | None = None,
    device: str = "auto",
    threads: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> ModelSet:
    """Load every ``*.onnx`` of a folder (default: the bundled models), or the given files."""
    if source is None:
        source = default_models_dir()
    if isinstance(source, (str, Path)):
        source = Path(source)
        if source.is_dir():
            files = sorted(source.glob("*.onnx"))
            if not files:
                raise ModelError(f"no .onnx models in {source}")
        elif source.is_file():
            files = [source]
        else:
            raise ModelError(f"no such model file or folder: {source}")
    else:
        files = [Path(p) for p in source]
    return ModelSet([load_model(f, device, threads, batch_size) for f in files])
