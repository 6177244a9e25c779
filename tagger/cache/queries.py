"""Questions about the whole cache: tracks by the probability of a label (playlists), the
labels known, the files to analyse again, and what ``genreml status`` counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import ColumnElement, Select, case, exists, func, select
from sqlalchemy.orm import aliased

from ..result import DEFAULT_GENRE_THRESHOLD
from .database import Database
from .match import Models, PathLike, _fresh, _under, _wanted
from .schema import JobRow, ProbabilityRow, ResultRow, TrackRow

GENRE_TASK = "genre"


class Hit(NamedTuple):
    """One track of a cache query."""

    path: str
    prob: float
    duration: float


def _has_genre(genre: str, min_prob: float | None, include_stale: bool) -> ColumnElement[bool]:
    """SQL: the track's genre result gives ``genre`` at least ``min_prob`` (else the result's
    own threshold)."""
    result, prob = aliased(ResultRow), aliased(ProbabilityRow)
    threshold = (min_prob if min_prob is not None
                 else func.coalesce(result.threshold, DEFAULT_GENRE_THRESHOLD))
    conditions = [
        result.track_id == TrackRow.id, result.task == GENRE_TASK,
        prob.result_id == result.id, prob.label == genre, prob.prob >= threshold,
    ]
    if not include_stale:
        conditions.append(result.stale.is_(False))
    return exists().where(*conditions)


class Queries(Database):
    """The playlist and summary part of :class:`~tagger.cache.Cache`."""

    # -- what the cache holds

    def summary(self) -> dict[str, int]:
        """What the cache holds (``genreml status``).

        Returns
        -------
        dict
            ``tracks`` (files known), ``tagged`` (files whose tags genreml wrote),
            ``stale`` (files with a result of an outdated model) and ``failed`` (jobs given
            up on).
        """
        has_stale = exists().where(ResultRow.track_id == TrackRow.id, ResultRow.stale.is_(True))
        with self._connect() as conn:
            tracks, tagged, stale = conn.execute(select(
                func.count(),
                func.coalesce(func.sum(case((TrackRow.tagged.is_(True), 1), else_=0)), 0),
                func.coalesce(func.sum(case((has_stale, 1), else_=0)), 0),
            ).select_from(TrackRow)).one()
            failed = conn.scalar(select(func.count()).select_from(JobRow)
                                 .where(JobRow.state == "failed"))
        return {"tracks": int(tracks), "tagged": int(tagged), "stale": int(stale),
                "failed": int(failed or 0)}

    # -- files to analyse again

    def stale_paths(self, roots: Sequence[PathLike] | None = None) -> list[str]:
        """Files with at least one stale result (``genreml tag --stale-only``), sorted."""
        stmt = (select(TrackRow.path).join(ResultRow).where(ResultRow.stale.is_(True))
                .distinct().order_by(TrackRow.path))
        return self._paths(stmt, roots)

    def paths_needing_analysis(self, models: Models,
                               roots: Sequence[PathLike] | None = None) -> list[str]:
        """Stored files lacking a fresh result of some model in ``models`` (stale, another
        model, or none), sorted. Files that changed on disk or are not stored at all are the
        caller's to find (:meth:`lookup_many` misses)."""
        wanted = _wanted(models)
        n_fresh = (select(func.count()).select_from(ResultRow)
                   .where(ResultRow.track_id == TrackRow.id, _fresh(wanted)).scalar_subquery())
        stmt = select(TrackRow.path).where(n_fresh < len(wanted)).order_by(TrackRow.path)
        return self._paths(stmt, roots)

    def _paths(self, stmt: Select[tuple[str]], roots: Sequence[PathLike] | None) -> list[str]:
        if roots is not None:
            stmt = stmt.where(_under(TrackRow.path, roots))
        with self._connect() as conn:
            return list(conn.scalars(stmt))

    # -- playlists

    def query(self, task: str, label: str, min_prob: float = 0.0,
              roots: Sequence[PathLike] | None = None, genre: str | None = None,
              min_genre_prob: float | None = None, limit: int | None = None,
              include_stale: bool = False) -> list[Hit]:
        """Tracks by the probability of one label, from the cache alone (mood playlists).

        Parameters
        ----------
        task : str
            ``"emotion"`` or ``"genre"``.
        label : str
            E.g. ``"calm"``.
        min_prob : float
            Lowest clip-mean probability of ``label``.
        roots : list of path-like, optional
            Only files at or below these paths.
        genre : str, optional
            Only tracks whose genre result gives this label at least ``min_genre_prob``.
        min_genre_prob : float, optional
            Default: the genre model's own threshold (what tagging would use), else 0.2.
        limit : int, optional
        include_stale : bool
            Also use results of outdated models.

        Returns
        -------
        list[Hit]
            ``(path, prob, duration)``, most probable first.
        """
        stmt = (
            select(TrackRow.path, ProbabilityRow.prob, TrackRow.duration)
            .join(ResultRow, ResultRow.track_id == TrackRow.id)
            .join(ProbabilityRow, ProbabilityRow.result_id == ResultRow.id)
            .where(ResultRow.task == task, ProbabilityRow.label == label,
                   ProbabilityRow.prob >= min_prob)
            .order_by(ProbabilityRow.prob.desc(), TrackRow.path)
            .limit(limit)
        )
        if not include_stale:
            stmt = stmt.where(ResultRow.stale.is_(False))
        if roots is not None:
            stmt = stmt.where(_under(TrackRow.path, roots))
        if genre is not None:
            stmt = stmt.where(_has_genre(genre, min_genre_prob, include_stale))
        with self._connect() as conn:
            return [Hit(*row) for row in conn.execute(stmt)]

    def labels(self, task: str, include_stale: bool = False) -> list[str]:
        """The labels that cached results of ``task`` know, sorted (a playlist's label is
        matched against them)."""
        stmt = (select(ProbabilityRow.label).distinct()
                .join(ResultRow, ProbabilityRow.result_id == ResultRow.id)
                .where(ResultRow.task == task).order_by(ProbabilityRow.label))
        if not include_stale:
            stmt = stmt.where(ResultRow.stale.is_(False))
        with self._connect() as conn:
            return list(conn.scalars(stmt))
