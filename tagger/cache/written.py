"""What genreml's own tag writes left in each file: the record learning leaves out."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, select

from .database import Database
from .match import PathLike, _norm
from .results import _chunks
from .rows import _load, _track_select
from .schema import TrackRow

logger = logging.getLogger(__name__)

__all__ = ["Written"]


class Written(Database):
    """The ``tracks.written`` part of :class:`~tagger.cache.Cache` (it is set by
    :meth:`~tagger.cache.Cache.update_stat`)."""

    def written(self, paths: Iterable[PathLike]) -> dict[str, dict[str, Any]]:
        """What genreml's own tag writes left in each file: ``{"genres": [...], "mood": m}``
        per path it recorded (another analysis does not reset it); for a file tagged before
        this record was kept, what the result written there decided. Learning from a library
        takes these values out of the labels it reads (:mod:`tagger.learn`)."""
        keys = [_norm(p) for p in paths]
        out: dict[str, dict[str, Any]] = {}
        with self._connect() as conn:
            for chunk in _chunks(keys):
                rows = conn.execute(select(TrackRow.path, TrackRow.written).where(
                    TrackRow.path.in_(chunk), TrackRow.written.is_not(None)))
                for path, text in rows:
                    try:
                        out[path] = json.loads(text)
                    except ValueError:  # a damaged value: trust none of its labels
                        logger.warning("%s: unreadable record of genreml's tags", path)
                        out[path] = {"genres": [], "mood": None, "damaged": True}
                # tagged before genreml kept this record (schema 3): what its result decided
                older = _load(conn, _track_select(and_(
                    TrackRow.path.in_(chunk), TrackRow.written.is_(None),
                    TrackRow.tagged.is_(True)), None))
                for path, result in older.items():
                    mood = result.emotion[0] if result.emotion else None
                    out[path] = {"genres": [g for g, _ in result.genres], "mood": mood}
        return out
