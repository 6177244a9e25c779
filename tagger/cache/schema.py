"""The cache's tables, their column types, and the schema version with its migrations.

Schema versioning
-----------------
The schema version lives in SQLite's ``PRAGMA user_version`` (0 in a new file).
``SCHEMA_VERSION`` is the version this code writes. On open, inside one ``BEGIN IMMEDIATE``
transaction:

* ``0``: a new database; every table is created and ``user_version`` set to ``SCHEMA_VERSION``.
* lower than ``SCHEMA_VERSION``: ``MIGRATIONS[v]`` (which turns schema ``v`` into ``v + 1``) runs
  for every ``v`` from the stored version up, then ``user_version`` is set. A change to the
  ORM classes below therefore comes with ``SCHEMA_VERSION += 1`` and a new ``MIGRATIONS`` entry.
* higher: the file was written by a newer genreml; :class:`CacheVersionError` is raised and
  nothing is touched.

Tables
------
``tracks``        one row per audio file: path (unique, as OS bytes), size, mtime_ns,
                  fingerprint (indexed), duration, analysed_at, tagged (genreml wrote the
                  result into the file's tags; reset when the file is analysed again), settled
                  (the tag settings under which genreml last left the file holding what they
                  ask, with this size and mtime: a re-run with the same settings need not
                  open it; reset with tagged), written (JSON: the genres and mood genreml's
                  own tag writes left in the file; kept across analyses: what learning from
                  the library must not take for the user's labels).
``results``       one row per track and task: model name/version/sha256, threshold, stale flag,
                  labels (JSON), probs (float32 blob), clip starts (float32 blob) and timeline
                  (float16 blob, ``[n_clips, n_labels]``).
``probabilities`` one row per result and label, the clip-mean probability: playlists are SQL
                  range queries on ``(label, prob)``. The same values as ``results.probs``,
                  both written by one function in one transaction; lookups read the blob.
``embeddings``    one row per track: the backbone's sha256, the clip starts (float32) and the
                  clip embeddings (float16 ``[n_clips, dim]``, exactly what the heads saw) and
                  their mean (float16 ``[dim]``, for learning personal heads). A new head
                  re-tags from them without decoding; another backbone's row is not used.
``jobs``          the watch daemon's queue, at most one pending job per path.

Timestamps are UTC. Paths are stored absolute (not symlink-resolved).

The database file itself (opening it, WAL, the one-line errors) is :mod:`tagger.cache.engine`'s.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from .engine import CacheError

__all__ = [
    "Base",
    "CacheVersionError",
    "EmbeddingRow",
    "FsPath",
    "JOB_STATES",
    "JobRow",
    "MIGRATIONS",
    "Migration",
    "ProbabilityRow",
    "ResultRow",
    "SCHEMA_VERSION",
    "TrackRow",
    "UTCDateTime",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 4
JOB_STATES = ("pending", "running", "done", "failed")


class CacheVersionError(CacheError):
    """The cache file has a schema this genreml cannot read or upgrade."""


# --------------------------------------------------------------------------- column types


class FsPath(TypeDecorator[str]):
    """A filesystem path stored as its OS bytes (as beets does).

    SQLite text must be valid UTF-8, but a Linux file name need not be: ``os.fsdecode`` turns
    such bytes into lone surrogates that the sqlite3 module refuses to bind. Bytes round-trip,
    compare with ``memcmp`` (so prefix ranges still work) and are still indexable.
    """

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> bytes | None:
        return None if value is None else os.fsencode(value)

    def process_result_value(self, value: bytes | None, dialect: Any) -> str | None:
        return None if value is None else os.fsdecode(value)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as naive UTC text, so values sort and compare in SQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one (e.g. datetime.now(timezone.utc))")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------- schema


class Base(DeclarativeBase):
    pass


class TrackRow(Base):
    """One audio file."""

    __tablename__ = "tracks"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    size: Mapped[int]
    mtime_ns: Mapped[int]
    # Content fingerprint (computed by the caller): finds a file again after a move or rename.
    fingerprint: Mapped[str | None] = mapped_column(index=True)
    duration: Mapped[float]
    analysed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # genreml wrote this result into the file's tags (``genreml status``: tagged)
    tagged: Mapped[bool] = mapped_column(default=False, server_default=text("0"))
    # the key of the tag settings (models, policy, threshold, ...) the file last settled under
    settled: Mapped[str | None]
    # JSON {"genres": [...], "mood": ...}: the values genreml's own tag writes left in the
    # file; kept across new analyses, so they are never mistaken for the user's labels
    written: Mapped[str | None]

    results: Mapped[list[ResultRow]] = relationship(
        back_populates="track", cascade="all, delete-orphan", passive_deletes=True
    )


class ResultRow(Base):
    """One model head's output for one track (a task: genre, emotion)."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("track_id", "task"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"))
    task: Mapped[str]
    model_name: Mapped[str]
    model_version: Mapped[str]
    model_sha256: Mapped[str]
    threshold: Mapped[float | None]
    stale: Mapped[bool] = mapped_column(default=False)
    n_clips: Mapped[int]
    n_labels: Mapped[int]
    # The labels (a JSON list) and their clip-mean probabilities (float32 little-endian) as in
    # the probabilities rows, written from the same array in the same transaction: a lookup
    # reads one row per head instead of one per label (~2 us each: 2 s per 10,000 tracks).
    labels: Mapped[str]
    probs: Mapped[bytes]
    # float32 little-endian: float16 cannot hold clip starts past ~30 minutes to the second.
    clip_starts: Mapped[bytes]
    # float16 little-endian [n_clips, n_labels], C order: probabilities need no more precision.
    timeline: Mapped[bytes]
    analysed_at: Mapped[datetime] = mapped_column(UTCDateTime)

    track: Mapped[TrackRow] = relationship(back_populates="results")


class ProbabilityRow(Base):
    """The clip-mean probability of one label in one result."""

    __tablename__ = "probabilities"
    __table_args__ = (
        # Playlist queries: WHERE label = ? AND prob >= ? ORDER BY prob DESC walks this index.
        Index("ix_probabilities_label_prob", "label", "prob"),
        {"sqlite_with_rowid": False},
    )

    result_id: Mapped[int] = mapped_column(
        ForeignKey("results.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(primary_key=True)  # the label's column in the timeline
    label: Mapped[str]
    prob: Mapped[float]


class EmbeddingRow(Base):
    """The clip embeddings of one track, from one backbone."""

    __tablename__ = "embeddings"

    track_id: Mapped[int] = mapped_column(
        ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True)
    backbone_sha256: Mapped[str]
    n_clips: Mapped[int]
    dim: Mapped[int]
    clip_starts: Mapped[bytes]  # float32 little-endian [n_clips]
    clips: Mapped[bytes]  # float16 little-endian [n_clips, dim], C order
    pooled: Mapped[bytes]  # float16 little-endian [dim]: the clips' mean


class JobRow(Base):
    """One unit of work for the watch daemon: (re)analyse a path."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in JOB_STATES) + ")", name="ck_jobs_state"
        ),
        # A second event for a file already waiting must not queue it twice.
        Index("uq_jobs_pending_path", "path", unique=True, sqlite_where=text("state = 'pending'")),
        Index("ix_jobs_state_not_before", "state", "not_before"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(FsPath)
    state: Mapped[str] = mapped_column(default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None]
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)  # back-off: not claimed before
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


Migration = Callable[[Connection], None]
# from_version -> function upgrading schema from_version to from_version + 1 (see module doc).
def _add_tagged(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE tracks ADD COLUMN tagged BOOLEAN NOT NULL DEFAULT 0")


def _add_embeddings(conn: Connection) -> None:
    EmbeddingRow.__table__.create(conn)
    conn.exec_driver_sql("ALTER TABLE tracks ADD COLUMN settled VARCHAR")


def _add_written(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE tracks ADD COLUMN written VARCHAR")


MIGRATIONS: dict[int, Migration] = {1: _add_tagged, 2: _add_embeddings, 3: _add_written}


def _user_version(conn: Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())


def _check_version(conn: Connection, path: Path, readonly: bool = False) -> int:
    """The stored schema version, after refusing one this code cannot use."""
    current = _user_version(conn)
    if current > SCHEMA_VERSION:
        raise CacheVersionError(
            f"cache {path} was written by a newer genreml (schema {current}, this version "
            f"reads up to {SCHEMA_VERSION}): upgrade genreml or use another cache file"
        )
    tables = {name for (name,) in conn.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if current == 0 and tables:  # someone else's database: never add our tables to it
        raise CacheError(f"cache {path} is not a genreml cache (it holds other tables): "
                         f"move it away or pass --cache")
    if readonly and current < SCHEMA_VERSION:
        raise CacheError(f"cache {path} has schema {current}, older than this genreml's "
                         f"{SCHEMA_VERSION}: run a writing command (genreml tag) once to "
                         f"upgrade it")
    return current


def _ensure_schema(conn: Connection, path: Path) -> None:
    """Create or upgrade the schema in ``conn``'s (immediate) transaction; see module doc."""
    current = _check_version(conn, path)
    if current == SCHEMA_VERSION:
        return
    if current == 0:
        logger.info("creating cache schema version %d", SCHEMA_VERSION)
        Base.metadata.create_all(conn)
    else:
        for version in range(current, SCHEMA_VERSION):
            step = MIGRATIONS.get(version)
            if step is None:
                raise CacheVersionError(f"no migration from cache schema {version}")
            logger.info("migrating cache schema %d -> %d", version, version + 1)
            step(conn)
    conn.exec_driver_sql(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)
