"""What the arguments of a cache call select: the key a path is stored under, the paths at or
below a folder, and the result rows holding a current output of the wanted models.

The lookups, the staleness checks and the playlist queries share these, so that a path or a
set of models means the same to each.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Union

from sqlalchemy import ColumnElement, and_, false, or_

from ..result import ModelIdentity
from .schema import ResultRow

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
Models = Union[Mapping[str, ModelIdentity], Sequence[ModelIdentity]]
_Wanted = tuple[tuple[Union[str, None], ModelIdentity], ...]  # hashable: statements are cached


def _norm(path: PathLike) -> str:
    """The key a path is stored under: absolute, normalised, not symlink-resolved (the
    library's own view of its files)."""
    return os.fsdecode(os.path.abspath(os.fsdecode(path)))


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _wanted(models: Models) -> _Wanted:
    """``(task or None, model)`` pairs: a mapping is keyed by task, a list is not."""
    if isinstance(models, Mapping):
        pairs: _Wanted = tuple(models.items())
    else:
        pairs = tuple((None, m) for m in models)
    if not pairs:
        raise ValueError("no models given")
    return pairs


def _model_matches(task: str | None, model: ModelIdentity) -> ColumnElement[bool]:
    clause = and_(
        ResultRow.model_name == model.name,
        ResultRow.model_version == model.version,
        ResultRow.model_sha256 == model.sha256,
    )
    return clause if task is None else and_(ResultRow.task == task, clause)


def _fresh(wanted: _Wanted) -> ColumnElement[bool]:
    """SQL: the result row is a current (not stale) output of one of the wanted models."""
    return and_(ResultRow.stale.is_(False), or_(*(_model_matches(t, m) for t, m in wanted)))


def _same_slot(task: str | None, model: ModelIdentity) -> ColumnElement[bool]:
    """SQL: the result row fills the same role as ``model`` (same task; by name for a list)."""
    return ResultRow.model_name == model.name if task is None else ResultRow.task == task


def _under(column: Any, roots: Sequence[PathLike]) -> ColumnElement[bool]:
    """SQL: the path is one of ``roots`` or lies below one (an index range, no LIKE escaping)."""
    clauses = []
    for root in map(_norm, roots):
        prefix = root if root.endswith(os.sep) else root + os.sep
        upper = prefix[:-1] + chr(ord(os.sep) + 1)  # first string after every "prefix..."
        clauses.append(or_(column == root, and_(column >= prefix, column < upper)))
    return or_(*clauses) if clauses else false()
