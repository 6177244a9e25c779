"""Analysis results per file: looked up by path (or by fingerprint, for a file that moved),
stored, moved along with their file, and marked stale when a model changes.

File tags and beets fields are projections of what is stored here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from sqlalchemy import and_, bindparam, delete, select, update
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from ..fingerprint import same_duration, same_size_class
from ..result import ClipEmbeddings, TrackResult
from .database import Database
from .engine import translate_errors
from .match import Models, PathLike, _model_matches, _norm, _same_slot, _stat, _wanted
from .rows import (
    _by_path_select,
    _collect,
    _load,
    _lookup_query,
    _relocate,
    _result_info,
    _store,
    _track_select,
)
from .schema import EmbeddingRow, ResultRow, TrackRow, _utcnow

logger = logging.getLogger(__name__)


def _embedding_sql() -> str:
    """:meth:`Results.embedding`'s SELECT as the driver's SQL, parameters ``(path, size,
    mtime_ns, backbone)`` in that order."""
    names = ("path", "size", "mtime_ns", "backbone")
    stmt = (select(TrackRow.duration, TrackRow.fingerprint, EmbeddingRow.n_clips,
                   EmbeddingRow.dim, EmbeddingRow.clip_starts, EmbeddingRow.clips)
            .join(EmbeddingRow, EmbeddingRow.track_id == TrackRow.id)
            .where(TrackRow.path == bindparam(names[0]), TrackRow.size == bindparam(names[1]),
                   TrackRow.mtime_ns == bindparam(names[2]),
                   EmbeddingRow.backbone_sha256 == bindparam(names[3])))
    compiled = stmt.compile(dialect=SQLiteDialect_pysqlite())
    assert tuple(compiled.positiontup or ()) == names
    return compiled.string


_EMBEDDING_SQL = _embedding_sql()


class StoredEmbedding(NamedTuple):
    """What a re-heading needs of a cached track (:meth:`Results.embedding`)."""

    duration: float
    clip_starts: np.ndarray
    embeddings: ClipEmbeddings
    fingerprint: str | None

# Paths / ids per IN (...) query: well under SQLite's bound-parameter limit.
_CHUNK = 500


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


class Results(Database):
    """The results part of :class:`~tagger.cache.Cache`."""

    # -- lookups

    def lookup(self, path: PathLike, models: Models, stat: os.stat_result | None = None
               ) -> TrackResult | None:
        """The cached result of one file, if still valid.

        Valid means: the file's size and mtime_ns equal the stored ones and every model in
        ``models`` has a fresh (same name, version and sha256; not stale) result. The audio is
        never read. For many files prefer :meth:`lookup_many`.

        Parameters
        ----------
        path : path-like
            The audio file.
        models : dict[str, ModelIdentity] or list[ModelIdentity]
            The current models, by task or as a list.
        stat : os.stat_result, optional
            The file's stat if the caller already has it; else ``os.stat(path)``.

        Returns
        -------
        TrackResult or None
            With the heads of ``models`` only; None on a miss (or if the file is gone).
        """
        wanted = _wanted(models)
        key = _norm(path)
        st = stat if stat is not None else _stat(key)
        if st is None:
            return None
        query = _lookup_query(wanted)
        params = list(query.params)
        params[query.path_index] = os.fsencode(key)  # as FsPath binds it
        with translate_errors(self.path):
            conn = self._engine.raw_connection()
            try:
                raw = conn.driver_connection.execute(query.sql, params).fetchall()
            finally:
                conn.close()
        rows = [query.row(os.fsdecode(r[0]), *r[1:]) for r in raw]  # path comes first
        return _collect(rows, wanted, {key: (st.st_size, st.st_mtime_ns)}).get(key)

    def lookup_many(self, paths: Iterable[PathLike], models: Models,
                    stats: Mapping[str, os.stat_result] | None = None
                    ) -> dict[PathLike, TrackResult]:
        """The valid cached results of many files, by :meth:`lookup`'s rules, with one query
        per 500 files: the fast path for re-running over a library.

        Parameters
        ----------
        paths : iterable of path-like
        models : dict[str, ModelIdentity] or list[ModelIdentity]
        stats : mapping of normalised path to os.stat_result, optional
            Stats the caller already has; missing ones are taken with ``os.stat``.

        Returns
        -------
        dict
            The hits only, keyed by the paths as given.
        """
        wanted = _wanted(models)
        given: dict[str, PathLike] = {}
        current: dict[str, tuple[int, int]] = {}
        for path in paths:
            key = _norm(path)
            st = (stats or {}).get(key) or _stat(key)
            if st is not None:
                given[key] = path
                current[key] = (st.st_size, st.st_mtime_ns)
        found: dict[PathLike, TrackResult] = {}
        stmt = _by_path_select(wanted, many=True)
        with self._connect() as conn:
            for chunk in _chunks(list(current)):
                hits = _load(conn, stmt, {"paths": chunk}, wanted, current)
                found.update((given[key], result) for key, result in hits.items())
        return found

    def lookup_fingerprint(self, fingerprint: str, models: Models,
                           path: PathLike | None = None) -> TrackResult | None:
        """A cached result by content fingerprint: finds a moved or renamed file.

        A stored file is taken for this one only when its duration agrees with the one the
        fingerprint records and, when ``path`` is given, its size is in the same size class
        (:func:`tagger.fingerprint.same_size_class`): a partial download is not the song.
        Fingerprints of older genreml versions never match (their version differs).

        Parameters
        ----------
        fingerprint : str
        models : dict[str, ModelIdentity] or list[ModelIdentity]
        path : path-like, optional
            Where the file is now. If given, the cache is updated so that the next
            :meth:`lookup` of ``path`` hits: a row whose file is gone is moved there
            (:meth:`relocate`); if the old file still exists (a copy), the result is copied.

        Returns
        -------
        TrackResult or None
            ``path`` is the new location when given.

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        """
        wanted = _wanted(models)
        stmt = _track_select(TrackRow.fingerprint == fingerprint, wanted)
        new = _norm(path) if path is not None else None
        size = os.stat(new).st_size if new is not None else None
        with self._connect(write=path is not None) as conn:
            sizes = dict(conn.execute(select(TrackRow.path, TrackRow.size)
                                      .where(TrackRow.fingerprint == fingerprint)).all())
            hits = {p: r for p, r in _load(conn, stmt, wanted=wanted).items()
                    if same_duration(r.duration, fingerprint)
                    and (size is None or same_size_class(sizes[p], size))}
            if not hits:
                return None
            # The file itself if stored (its tags changed, not its audio), else preferably a
            # row whose file is gone: that is the move we are looking for.
            old = new if new in hits else min(hits, key=lambda p: os.path.exists(p))
            result = hits[old]
            if new is None:
                return result
            st = os.stat(new)
            result.path = new
            if old != new and os.path.exists(old):  # a copy: both files keep a row
                _store(conn, result, fingerprint, st, _utcnow())
            else:
                _relocate(conn, old, new, st)
            return result

    def embedding(self, path: PathLike, backbone: str, stat: os.stat_result | None = None
                  ) -> StoredEmbedding | None:
        """The stored clip embeddings of a file, if they are ``backbone``'s and the file's
        size and mtime_ns are the stored ones (the audio is never read).

        Parameters
        ----------
        path : path-like
        backbone : str
            The current backbone's sha256: another backbone's embeddings are stale.
        stat : os.stat_result, optional
            The file's stat if the caller has it.
        """
        key = _norm(path)
        st = stat if stat is not None else _stat(key)
        if st is None:
            return None
        # one SELECT, run on the driver as lookup() is: a re-heading asks once per file
        params = (os.fsencode(key), st.st_size, st.st_mtime_ns, backbone)
        with translate_errors(self.path):
            conn = self._engine.raw_connection()
            try:
                row = conn.driver_connection.execute(_EMBEDDING_SQL, params).fetchone()
            finally:
                conn.close()
        if row is None:
            return None
        duration, fingerprint, n_clips, dim, starts, blob = row
        clips = np.frombuffer(blob, "<f2").astype(np.float16).reshape(n_clips, dim)
        return StoredEmbedding(duration, np.frombuffer(starts, "<f4").astype(np.float64),
                               ClipEmbeddings(backbone, clips), fingerprint)

    def get(self, path: PathLike) -> TrackResult | None:
        """Everything stored for a file, whatever its stat or models (``genreml show``)."""
        key = _norm(path)
        with self._connect() as conn:
            return _load(conn, _track_select(TrackRow.path == key, None)).get(key)

    def tagged_result(self, path: PathLike) -> TrackResult | None:
        """What is stored for a file whose tags genreml wrote (its track is ``tagged``),
        whatever its stat, models or staleness; None for a file genreml never tagged.

        Read before :meth:`store` replaces it (a new analysis resets ``tagged``): its decision
        says which of the file's values are genreml's own (:func:`tagger.tags.plan_tags`).
        """
        key = _norm(path)
        where = and_(TrackRow.path == key, TrackRow.tagged.is_(True))
        with self._connect() as conn:
            return _load(conn, _track_select(where, None)).get(key)

    def info(self, path: PathLike) -> dict[str, Any] | None:
        """The bookkeeping of a stored file: stat, fingerprint, dates and per-task models.

        Returns
        -------
        dict or None
            Keys ``path, size, mtime_ns, fingerprint, duration, analysed_at, results``;
            ``results`` maps task to ``model`` (its id), ``name, version, sha256, threshold,
            stale, n_clips, analysed_at``.
        """
        with self._session() as session:
            track = session.scalar(select(TrackRow).where(TrackRow.path == _norm(path)))
            if track is None:
                return None
            return {
                "path": track.path,
                "size": track.size,
                "mtime_ns": track.mtime_ns,
                "fingerprint": track.fingerprint,
                "duration": track.duration,
                "analysed_at": track.analysed_at,
                "results": {r.task: _result_info(r) for r in track.results},
            }

    # -- writes

    def store(self, result: TrackResult, fingerprint: str | None,
              stat: os.stat_result | None = None) -> None:
        """Insert or update a file and replace its results for the tasks in ``result``.

        Results of other tasks already stored for the file are kept.

        Parameters
        ----------
        result : TrackResult
        fingerprint : str or None
            The content fingerprint (see :meth:`lookup_fingerprint`).
        stat : os.stat_result, optional
            The file's stat when analysed; else ``os.stat(result.path)`` now. Pass the stat
            taken before analysis so a file changed meanwhile is analysed again next time.
        """
        self.store_many([(result, fingerprint, stat)])

    def store_many(self, items: Iterable[tuple[TrackResult, str | None, os.stat_result | None]]
                   ) -> None:
        """:meth:`store` for many ``(result, fingerprint, stat)`` in one transaction."""
        now = _utcnow()
        with self._connect(write=True) as conn:
            for result, fingerprint, stat in items:
                st = stat if stat is not None else os.stat(_norm(result.path))
                _store(conn, result, fingerprint, st, now)

    def update_stat(self, path: PathLike, stat: os.stat_result | None = None, *,
                    tagged: bool = False, settled: str | None = None,
                    written: Mapping[str, Any] | None = None) -> bool:
        """Record a file's current size and mtime after genreml rewrote its tags, so the next
        run sees it unchanged (and with ``tagged``, that its tags hold the result; with
        ``settled``, the key of the tag settings it now satisfies; with ``written``, the
        ``{"genres": [...], "mood": ...}`` genreml's writes left in it, see :meth:`written`).
        Returns whether the file is in the cache."""
        key = _norm(path)
        st = stat if stat is not None else os.stat(key)
        values: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if tagged:
            values["tagged"] = True
        if settled is not None:
            values["settled"] = settled
        if written is not None:
            values["written"] = json.dumps({"genres": list(written.get("genres") or []),
                                            "mood": written.get("mood")})
        with self._connect(write=True) as conn:
            done = conn.execute(update(TrackRow).where(TrackRow.path == key).values(**values))
            return done.rowcount > 0

    def relocate(self, old: PathLike | TrackResult, new_path: PathLike,
                 stat: os.stat_result | None = None) -> bool:
        """Move a stored file to a new path (and its new stat), keeping its results.

        Parameters
        ----------
        old : path-like or TrackResult
            The stored file (a TrackResult stands for its ``path``).
        new_path : path-like
            Where it is now. A row already stored there is replaced.
        stat : os.stat_result, optional
            Its stat; else ``os.stat(new_path)``.

        Returns
        -------
        bool
            Whether ``old`` was in the cache.
        """
        old_path = old.path if isinstance(old, TrackResult) else old
        new = _norm(new_path)
        st = stat if stat is not None else os.stat(new)
        with self._connect(write=True) as conn:
            return _relocate(conn, _norm(old_path), new, st)

    def remove(self, path: PathLike) -> bool:
        """Forget a file and its results (it was deleted). Returns whether it was stored."""
        with self._connect(write=True) as conn:
            return conn.execute(delete(TrackRow).where(TrackRow.path == _norm(path))).rowcount > 0

    # -- staleness

    def mark_stale(self, models: Models) -> int:
        """Flag results made by another version of the current models.

        A result is stale when it fills the role of one of ``models`` (same task for a mapping;
        same model name for a list: pass the mapping so a renamed model also counts) but has
        another version or sha256. Results that match a current model again (a model rolled
        back) lose the flag.

        Returns
        -------
        int
            How many results became stale.
        """
        count = 0
        with self._connect(write=True) as conn:
            for task, model in _wanted(models):
                slot = _same_slot(task, model)
                same = _model_matches(None, model)
                count += conn.execute(
                    update(ResultRow).where(slot, ~same, ResultRow.stale.is_(False))
                    .values(stale=True)
                ).rowcount
                conn.execute(
                    update(ResultRow).where(slot, same, ResultRow.stale.is_(True))
                    .values(stale=False)
                )
        if count:
            logger.info("%d cached results are stale", count)
        return count
