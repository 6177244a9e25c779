"""What makes an ONNX file a genreml model: its metadata, written and validated.

genreml's models are embedding-first. A model folder holds one **backbone** (log-mel patches
``[batch, n_frames, n_mels]`` in, clip embeddings ``[batch, dim]`` out) and **head** files
(embeddings ``[batch, dim]`` in, one probability matrix ``[batch, n_labels]`` per task out).
The backbone runs once per analysed clip; the heads are small and run on the embeddings, also
on embeddings stored in the cache, so a new head re-tags a library without decoding it.

Everything needed to feed and read a file lives in its ``metadata_props``:

===========================  =================  ============================================
key                          in                 value
===========================  =================  ============================================
``genreml.format``           both               ``"2"`` (format 1 held backbone and heads
                                                in one file)
``genreml.kind``             both               ``"backbone"`` or ``"head"``
``genreml.name``             both               e.g. ``"genreml-4q"``, ``"MSD_musicnn"``
``genreml.version``          both               e.g. ``"2.0.0"``
``genreml.embedding``        both               JSON of :class:`EmbeddingLayout`: the
                                                backbone output's name, width and layers
``genreml.sample_rate``      backbone           audio rate in Hz of the features
``genreml.clip_seconds``     backbone           clip length in seconds
``genreml.features``         backbone           JSON of :class:`tagger.features.FeatureSettings`
``genreml.backbone_sha256``  head               sha256 of the backbone file it was trained on
``genreml.heads``            head               JSON list, one object per output:
                                                ``{"output": name, "task": "genre"|"emotion",
                                                "labels": [...], "threshold": 0.2}``
===========================  =================  ============================================
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping

from .features import FeatureSettings
from .result import check_threshold

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "PREFIX",
    "TASKS",
    "EmbeddingLayout",
    "HeadSpec",
    "ModelError",
    "backbone_metadata",
    "head_metadata",
    "parse_heads",
    "read_metadata",
]

FORMAT_VERSION = "2"
PREFIX = "genreml."
TASKS = ("genre", "emotion")
KINDS = ("backbone", "head")
_REQUIRED = {
    "backbone": ("name", "version", "embedding", "sample_rate", "clip_seconds", "features"),
    "head": ("name", "version", "embedding", "backbone_sha256", "heads"),
}


class ModelError(Exception):
    """A model file that cannot be used, with a one-line reason."""


@dataclasses.dataclass(frozen=True)
class EmbeddingLayout:
    """What a backbone's embedding is: a head fits only the layout it was trained on.

    ``output`` is the backbone's output tensor, ``dim`` its width per clip, ``layers`` the
    backbone layers concatenated into it (e.g. ``("penultimate",)``).
    """

    output: str
    dim: int
    layers: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"output": self.output, "dim": self.dim, "layers": list(self.layers)})

    @classmethod
    def from_json(cls, text: str) -> "EmbeddingLayout":
        data = json.loads(text)
        dim = data.get("dim")
        if not isinstance(data.get("output"), str) or not isinstance(dim, int) or dim <= 0:
            raise ValueError("embedding: needs an output name and a positive dim")
        return cls(data["output"], dim, tuple(data.get("layers") or ()))


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One output of a head file: which task it answers, with which labels."""

    output: str
    task: str
    labels: tuple[str, ...]
    threshold: float | None = None

    def to_dict(self) -> dict:
        out = {"output": self.output, "task": self.task, "labels": list(self.labels)}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


def _props(kind: str, name: str, version: str, embedding: EmbeddingLayout,
           values: Mapping[str, object]) -> dict[str, str]:
    meta = {"format": FORMAT_VERSION, "kind": kind, "name": name, "version": version,
            "embedding": embedding.to_json(), **values}
    return {PREFIX + k: str(v) for k, v in meta.items()}


def backbone_metadata(name: str, version: str, sample_rate: int, clip_seconds: float,
                      features: FeatureSettings, embedding: EmbeddingLayout,
                      **extra: str) -> dict[str, str]:
    """The ``metadata_props`` of a backbone file (``extra`` as ``genreml.<key>``)."""
    return _props("backbone", name, version, embedding, {
        "sample_rate": int(sample_rate), "clip_seconds": repr(float(clip_seconds)),
        "features": features.to_json(), **extra})


def head_metadata(name: str, version: str, heads: Iterable[HeadSpec], backbone_sha256: str,
                  embedding: EmbeddingLayout, **extra: str) -> dict[str, str]:
    """The ``metadata_props`` of a head file (``extra`` as ``genreml.<key>``)."""
    return _props("head", name, version, embedding, {
        "backbone_sha256": backbone_sha256,
        "heads": json.dumps([h.to_dict() for h in heads]), **extra})


def parse_heads(raw: str) -> tuple[HeadSpec, ...]:
    """The :class:`HeadSpec` list of a ``genreml.heads`` value.

    Raises
    ------
    ValueError
        With what is wrong in it.
    """
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


def read_metadata(name: str, meta: Mapping[str, str]) -> dict[str, str]:
    """The genreml keys of a file's metadata (without the prefix), after checking its format,
    kind and required keys.

    Raises
    ------
    ModelError
        ``<name>: not a genreml model ...``, or format 1 with how to convert it.
    """
    own = {k[len(PREFIX):]: v for k, v in meta.items() if k.startswith(PREFIX)}
    if not own:
        raise ModelError(f"{name}: not a genreml model (no genreml metadata)")
    if own.get("format") == "1":
        raise ModelError(
            f"{name}: a format 1 model (backbone and heads in one file); split it into a "
            f"backbone and a head file with `python -m trainer.split {name} FOLDER`")
    if own.get("format") != FORMAT_VERSION:
        raise ModelError(f"{name}: metadata format {own.get('format')!r} is not supported")
    kind = own.get("kind")
    if kind not in KINDS:
        raise ModelError(f"{name}: genreml.kind must be one of {', '.join(KINDS)}")
    missing = [PREFIX + k for k in _REQUIRED[kind] if k not in own]
    if missing:
        raise ModelError(f"{name}: not a genreml {kind}, metadata missing {', '.join(missing)}")
    return own
