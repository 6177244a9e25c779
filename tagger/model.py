"""Load a model folder: one backbone and the heads trained on it, with their sessions.

The file format is :mod:`tagger.modelmeta`'s. A head names its backbone by sha256 and
embedding layout; :func:`load_models` refuses a head whose backbone is absent or different.
The backbone runs where the user asked (CUDA when present); heads are a few matrix products
and always run on one CPU thread, so CPU and CUDA runs decide with the same head arithmetic.
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
from .modelmeta import (FORMAT_VERSION, PREFIX, TASKS, EmbeddingLayout, HeadSpec, ModelError,
                        backbone_metadata, head_metadata, parse_heads, read_metadata)
from .onnxsession import CPU, available_cores, open_session
from .result import ModelIdentity

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "PREFIX",
    "TASKS",
    "Backbone",
    "EmbeddingLayout",
    "HeadModel",
    "HeadSpec",
    "ModelError",
    "ModelSet",
    "backbone_metadata",
    "choose_providers",
    "default_models_dir",
    "file_sha256",
    "head_metadata",
    "load_models",
]

# Clips per backbone call. Convolution activations dominate memory (about 25 MB per clip for
# the default model); on 2 cores 8 was the fastest of 4/8/16/32 for both the default model and a
# musicnn-sized one, at a third of the memory of 32.
BATCH_SIZE = 8


def default_models_dir() -> Path:
    """The models bundled with the package."""
    return Path(__file__).parent / "models"


def choose_providers(device: str = "auto") -> list[str]:
    """onnxruntime execution providers for ``device`` (``auto``, ``cpu`` or ``cuda``)."""
    available = ort.get_available_providers()
    if device == "cpu":
        return list(CPU)
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
    return list(CPU)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (how a head names its backbone)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


@dataclasses.dataclass
class _Session:
    """An ONNX file with its identity and session."""

    path: Path
    identity: ModelIdentity
    session: ort.InferenceSession
    embedding: EmbeddingLayout
    threads: int

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name


@dataclasses.dataclass
class Backbone(_Session):
    """The one backbone of a model folder: log-mel patches in, clip embeddings out."""

    sample_rate: int = 16000
    clip_seconds: float = 3.0
    features: FeatureSettings = dataclasses.field(default_factory=FeatureSettings)
    batch_size: int = BATCH_SIZE
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

    def embed(self, mel: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Clip embeddings ``[n, dim]`` (float32) of log-mel patches ``[n, n_frames, n_mels]``,
        with at most ``threads`` CPU threads (default: all the backbone's)."""
        session = self.session_for(threads)
        out = [np.zeros((0, self.embedding.dim), np.float32)]
        for start in range(0, len(mel), self.batch_size):
            chunk = np.ascontiguousarray(mel[start:start + self.batch_size], dtype=np.float32)
            (emb,) = session.run([self.embedding.output], {self.input_name: chunk})
            out.append(np.asarray(emb, dtype=np.float32).reshape(len(chunk), -1))
        return np.concatenate(out)


@dataclasses.dataclass
class HeadModel(_Session):
    """A head file: clip embeddings in, per-task probabilities out."""

    heads: tuple[HeadSpec, ...] = ()
    backbone_sha256: str = ""

    def run(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        """Probabilities per task, ``[n, n_labels]`` float32, of embeddings ``[n, dim]``."""
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        if not len(x):
            return {h.task: np.zeros((0, len(h.labels)), np.float32) for h in self.heads}
        outs = self.session.run([h.output for h in self.heads], {self.input_name: x})
        return {h.task: np.asarray(o, dtype=np.float32).reshape(len(x), -1)
                for h, o in zip(self.heads, outs)}


def _identity(own: dict[str, str], sha256: str) -> ModelIdentity:
    return ModelIdentity(own["name"], own["version"], sha256)


def _open(path: Path, threads: int, providers: list[str]) -> tuple[ort.InferenceSession, dict]:
    try:
        session = open_session(path, threads, providers)
    except Exception as err:
        raise ModelError(f"{path.name}: not a loadable ONNX model "
                         f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") \
            from err
    return session, read_metadata(path.name, session.get_modelmeta().custom_metadata_map)


def _backbone(path: Path, session: ort.InferenceSession, own: dict[str, str], sha256: str,
              threads: int, batch_size: int) -> Backbone:
    sample_rate = int(own["sample_rate"])
    clip_seconds = float(own["clip_seconds"])
    if sample_rate <= 0 or clip_seconds <= 0:
        raise ValueError("sample_rate and clip_seconds must be positive")
    features = FeatureSettings.from_dict(json.loads(own["features"]))
    if features.fmax > sample_rate / 2:
        raise ValueError(f"fmax {features.fmax} is above Nyquist for {sample_rate} Hz")
    embedding = EmbeddingLayout.from_json(own["embedding"])
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 3:
        raise ValueError("a backbone has one input [batch, frames, mels]")
    shape = inputs[0].shape
    for got, want, what in ((shape[1], features.n_frames, "frames"),
                            (shape[2], features.n_mels, "mel bands")):
        if _static(got) is not None and got != want:
            raise ValueError(f"input has {got} {what}, features say {want}")
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if embedding.output not in outputs:
        raise ValueError(f"no output named {embedding.output!r}")
    width = _static(outputs[embedding.output][-1])
    if width is not None and width != embedding.dim:
        raise ValueError(f"embedding output has {width} values, metadata says {embedding.dim}")
    return Backbone(path, _identity(own, sha256), session, embedding, threads, sample_rate,
                    clip_seconds, features, batch_size)


def _head(path: Path, session: ort.InferenceSession, own: dict[str, str],
          sha256: str) -> HeadModel:
    heads = parse_heads(own["heads"])
    embedding = EmbeddingLayout.from_json(own["embedding"])
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        raise ValueError("a head has one input [batch, dim]")
    if _static(inputs[0].shape[1]) not in (None, embedding.dim):
        raise ValueError(f"input has {inputs[0].shape[1]} values, embedding says {embedding.dim}")
    outputs = {o.name: o.shape for o in session.get_outputs()}
    for head in heads:
        if head.output not in outputs:
            raise ValueError(f"{head.task} head: no output named {head.output!r}")
        width = _static(outputs[head.output][-1]) if outputs[head.output] else None
        if width is not None and width != len(head.labels):
            raise ValueError(
                f"{head.task} head: output has {width} values but {len(head.labels)} labels")
    return HeadModel(path, _identity(own, sha256), session, embedding, 1, heads,
                     own["backbone_sha256"])


def _load(path: Path, providers: list[str], threads: int, batch_size: int,
          ) -> Backbone | HeadModel:
    """One validated file: a backbone on ``providers``, heads on one CPU thread."""
    session, own = _open(path, threads, providers)
    sha256 = file_sha256(path)
    try:
        if own["kind"] == "backbone":
            return _backbone(path, session, own, sha256, threads, batch_size)
        if providers != list(CPU) or threads != 1:  # a head is tiny: re-opening costs little
            session, own = _open(path, 1, list(CPU))
        return _head(path, session, own, sha256)
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path.name}: inconsistent genreml metadata: {err}") from err


@dataclasses.dataclass
class ModelSet:
    """What one analysis runs: the backbone, and at most one head per task on it."""

    backbone: Backbone
    heads: list[HeadModel]  # or objects that run like one (tagger.personal's views)
    choice: str = "default"  # which heads tagger.personal.load_run_models chose

    def __post_init__(self) -> None:
        if not self.heads:
            raise ModelError("no head models to run")
        seen: dict[str, Path] = {}
        for m in self.heads:
            for h in m.heads:
                if h.task in seen:
                    raise ModelError(
                        f"two {h.task} heads: {seen[h.task].name} and {m.path.name}; keep one")
                seen[h.task] = m.path
            _check_pair(self.backbone, m)

    @property
    def sample_rate(self) -> int:
        return self.backbone.sample_rate

    @property
    def clip_seconds(self) -> float:
        return self.backbone.clip_seconds

    @property
    def identities(self) -> dict[str, ModelIdentity]:
        """Head identity per task (a head names its backbone, so this keys results)."""
        return {h.task: m.identity for m in self.heads for h in m.heads}

    @property
    def specs(self) -> list[tuple[HeadSpec, ModelIdentity]]:
        """Every head output with the identity of its file, in file order."""
        return [(h, m.identity) for m in self.heads for h in m.heads]

    @property
    def providers(self) -> list[str]:
        return self.backbone.providers

    @property
    def preferred(self) -> tuple[str, ...]:
        """Genre labels decided before the others: a personal head's, in a union with the
        default genre head (:class:`tagger.personal.UnionHead`)."""
        return tuple(label for m in self.heads for label in getattr(m, "preferred", ()))

    def apply_heads(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        """Per-task clip probabilities ``[n, n_labels]`` of clip embeddings ``[n, dim]``."""
        out: dict[str, np.ndarray] = {}
        for m in self.heads:
            out.update(m.run(embeddings))
        return out


def _check_pair(backbone: Backbone, head: HeadModel) -> None:
    if head.backbone_sha256 != backbone.identity.sha256:
        raise ModelError(
            f"{head.path.name} was trained on another backbone (sha256 "
            f"{head.backbone_sha256[:12]}) than {backbone.path.name} "
            f"({backbone.identity.sha256[:12]}): use the backbone it names")
    if head.embedding != backbone.embedding:
        raise ModelError(f"{head.path.name} expects embedding {head.embedding.to_json()}, "
                         f"{backbone.path.name} gives {backbone.embedding.to_json()}")


def _files(source: str | Path | Iterable[str | Path] | None) -> list[Path]:
    if source is None:
        source = default_models_dir()
    if not isinstance(source, (str, Path)):
        return [Path(p) for p in source]
    source = Path(source)
    if source.is_dir():
        files = sorted(source.glob("*.onnx"))
        if not files:
            raise ModelError(f"no .onnx models in {source}")
        return files
    if source.is_file():
        return [source]
    raise ModelError(f"no such model file or folder: {source}")


def _find_backbone(sha256: str, heads: list[HeadModel], seen: set[Path]) -> Path | None:
    """A file next to one of ``heads`` whose sha256 is ``sha256``."""
    for folder in dict.fromkeys(m.path.parent for m in heads):
        for candidate in sorted(folder.glob("*.onnx")):
            if candidate not in seen and file_sha256(candidate) == sha256:
                return candidate
    return None


def load_models(
    source: str | Path | Iterable[str | Path] | None = None,
    device: str = "auto",
    threads: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> ModelSet:
    """Load a model folder (default: the bundled models), a head file, or several files.

    Heads need their backbone: the one given, or the file beside them whose sha256 they name.
    Backbones no head uses are left unopened or ignored.

    Raises
    ------
    ModelError
        A file that is not a genreml model, no head, heads of different backbones, or a head
        whose backbone is absent or different.
    """
    threads = threads or available_cores()
    providers = choose_providers(device)
    files = _files(source)
    loaded = [_load(p, providers, threads, batch_size) for p in files]
    heads = [m for m in loaded if isinstance(m, HeadModel)]
    if not heads:
        raise ModelError(f"no head model among {', '.join(p.name for p in files)}")
    wanted = {m.backbone_sha256 for m in heads}
    if len(wanted) > 1:
        raise ModelError(f"the heads {', '.join(m.path.name for m in heads)} belong to "
                         f"different backbones; load one backbone's heads at a time")
    (sha256,) = wanted
    backbones = {m.identity.sha256: m for m in loaded if isinstance(m, Backbone)}
    if sha256 not in backbones:
        found = _find_backbone(sha256, heads, set(files))
        if found is None:
            others = "".join(f"; it was trained on another backbone than {b.path.name} "
                             f"(sha256 {b.identity.sha256[:12]})" for b in backbones.values())
            raise ModelError(
                f"{heads[0].path.name}: its backbone (sha256 {sha256[:12]}) is not in "
                f"{heads[0].path.parent}{others}; put the backbone file it was trained on "
                f"beside it")
        backbones[sha256] = _load(found, providers, threads, batch_size)
    return ModelSet(backbones[sha256], heads)
