"""The user's personal heads (``genreml learn``) next to the bundled ones.

Personal heads live in ``$XDG_DATA_HOME/genreml/personal/`` (else
``~/.local/share/genreml/personal/``), one file per task, each naming the backbone it was
learned on. Every front door loads its models through :func:`load_run_models`, with one choice
of heads:

``default``   the bundled heads (or the ``--models`` folder's) only
``personal``  the personal heads only (a task without one is not analysed)
``both``      the personal mood head replaces the default one; the genres written are the
              union of both genre heads, the personal labels first (one genre head,
              :class:`UnionHead`, so the cache, the tags and the playlists see one result)
``auto``      ``both`` when a personal head exists and no ``--models`` was given, else
              ``default`` (the default choice)
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .labels import ALLMUSIC_SYNONYMS, fold
from .model import HeadModel, ModelSet, load_models
from .modelmeta import EmbeddingLayout, HeadSpec, ModelError
from .result import ModelIdentity
from .xdg import data_home

log = logging.getLogger(__name__)

__all__ = ["HEAD_CHOICES", "HeadView", "UnionHead", "load_run_models", "personal_dir",
           "personal_heads"]

HEAD_CHOICES = ("auto", "default", "personal", "both")


def personal_dir() -> Path:
    """Where ``genreml learn`` keeps the personal heads and their reports."""
    return data_home() / "personal"


def personal_heads(folder: Path | None = None) -> list[Path]:
    """The personal head files (``*.onnx``) in ``folder`` (default :func:`personal_dir`)."""
    folder = folder if folder is not None else personal_dir()
    try:
        return sorted(p for p in folder.glob("*.onnx") if p.is_file())
    except OSError:
        return []


@dataclasses.dataclass
class UnionHead:
    """Two genre heads on one backbone as one: the personal labels, then the default labels
    the personal head does not have (compared folded, AllMusic's names as their lastgenre
    synonyms: a personal "Rap" leaves out the default "Hip Hop"). Each output keeps its own
    probabilities; both heads decide at the default head's threshold (``genreml learn``
    chooses the personal operating points for it)."""

    personal: HeadModel
    default: HeadModel

    def __post_init__(self) -> None:
        mine, theirs = _genre_spec(self.personal), _genre_spec(self.default)
        if mine.threshold != theirs.threshold:
            log.warning("%s was learned for threshold %s, %s decides at %s: learn it again "
                        "for exact decisions", self.personal.path.name, mine.threshold,
                        self.default.path.name, theirs.threshold)
        synonyms = {fold(a): fold(b) for a, b in ALLMUSIC_SYNONYMS.items()}
        known = {fold(label) for label in mine.labels}
        known |= {synonyms[k] for k in known if k in synonyms}  # "Rap" covers "Hip Hop"
        self._keep = [i for i, label in enumerate(theirs.labels) if fold(label) not in known]
        labels = mine.labels + tuple(theirs.labels[i] for i in self._keep)
        self.heads = (HeadSpec("genre", "genre", labels, theirs.threshold),)
        self.preferred = mine.labels
        a, b = self.personal.identity, self.default.identity
        digest = hashlib.sha256(f"{a.sha256}+{b.sha256}".encode()).hexdigest()
        self.identity = ModelIdentity(f"{a.name}+{b.name}", f"{a.version}+{b.version}",
                                      digest)
        self.path = self.personal.path
        self.backbone_sha256 = self.personal.backbone_sha256
        self.embedding: EmbeddingLayout = self.personal.embedding
        if self.default.backbone_sha256 != self.backbone_sha256:
            raise ModelError(f"{self.personal.path.name} and {self.default.path.name} belong "
                             "to different backbones")

    def run(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        """Genre probabilities ``[n, n_labels]``: the personal head's, then the default's."""
        mine = self.personal.run(embeddings)["genre"]
        theirs = self.default.run(embeddings)["genre"][:, self._keep]
        return {"genre": np.concatenate([mine, theirs], axis=1)}


@dataclasses.dataclass
class HeadView:
    """One task of a head file that answers several: what a run takes from it when another
    file answers its other tasks. Its results keep the file's identity."""

    model: HeadModel
    task: str

    def __post_init__(self) -> None:
        self.heads = tuple(h for h in self.model.heads if h.task == self.task)
        self.identity = self.model.identity
        self.path = self.model.path
        self.backbone_sha256 = self.model.backbone_sha256
        self.embedding = self.model.embedding

    def run(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        return {self.task: self.model.run(embeddings)[self.task]}


def _task(model: HeadModel, task: str) -> HeadModel | HeadView:
    return model if len(model.heads) == 1 else HeadView(model, task)


def _genre_spec(head: HeadModel) -> HeadSpec:
    return next(h for h in head.heads if h.task == "genre")


def _by_task(heads: Sequence[HeadModel]) -> dict[str, HeadModel]:
    out: dict[str, HeadModel] = {}
    for m in heads:
        for spec in m.heads:
            if spec.task in out:
                raise ModelError(f"two {spec.task} heads: {out[spec.task].path.name} and "
                                 f"{m.path.name}; keep one")
            out[spec.task] = m
    return out


def load_run_models(models: str | Path | None = None, heads: str = "auto",
                    device: str = "auto", threads: int | None = None,
                    personal: Path | None = None) -> ModelSet:
    """The models a run uses: ``models`` (default: the bundled ones) with the personal heads
    as ``heads`` says (see the module doc).

    Raises
    ------
    ModelError
        A missing or unusable model, ``personal``/``both`` without a personal head, or a
        personal head learned on another backbone.
    """
    if heads not in HEAD_CHOICES:
        raise ModelError(f"unknown heads choice {heads!r}; expected one of "
                         f"{', '.join(HEAD_CHOICES)}")
    found = personal_heads(personal)
    auto = heads == "auto"
    if auto:
        heads = "both" if found and models is None else "default"
    base = load_models(models, device=device, threads=threads)
    if heads == "default":
        return base
    where = personal if personal is not None else personal_dir()
    if not found:
        raise ModelError(f"no personal head in {where}: learn one with `genreml learn PATH`")
    backbone = base.backbone
    try:
        loaded = load_models([backbone.path, *found], device=device, threads=threads).heads
        mine = _by_task(loaded)
    except ModelError as err:
        if not auto:
            raise
        # a head learned on another backbone must not stop every run: say so, go on without
        log.warning("personal heads in %s not used: %s", where, err)
        return base
    if heads == "personal":
        return ModelSet(backbone, list({id(m): m for m in mine.values()}.values()), "personal")
    theirs = _by_task(base.heads)
    chosen: list = []
    for task in dict.fromkeys([*mine, *theirs]):
        if task == "genre" and task in mine and task in theirs:
            chosen.append(UnionHead(mine[task], theirs[task]))
        elif task in mine:
            chosen.append(_task(mine[task], task))
        else:
            chosen.append(_task(theirs[task], task))
    return ModelSet(backbone, chosen, "both")
