"""The SQLite results cache: the single source of truth for analysis results.

File tags and beets fields are projections of what is stored here. The CLI, the beets plugin
and the watch daemon may all open the same database at once, so every connection runs in WAL
mode (readers never block the writer) with a generous ``busy_timeout``, and every write
transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up front, so a writer waits
in SQLite's busy handler instead of failing with "database is locked" when it upgrades a read
lock half-way through a transaction.

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
                  result into the file's tags; reset when the file is analysed again).
``results``       one row per track and task: model name/version/sha256, threshold, stale flag,
                  labels (JSON), probs (float32 blob), clip starts (float32 blob) and timeline
                  (float16 blob, ``[n_clips, n_labels]``).
``probabilities`` one row per result and label, the clip-mean probability: playlists are SQL
                  range queries on ``(label, prob)``. The same values as ``results.probs``,
                  both written by one function in one transaction; lookups read the blob.
``jobs``          the watch daemon's queue, at most one pending job per path.

Timestamps are UTC. Paths are stored absolute (not symlink-resolved).

Opening the file, read-only opening and the one-line errors for a file that cannot be used
live in :mod:`tagger.cachefile`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np
from sqlalchemy import (
    CheckConstraint,
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    LargeBinary,
    Select,
    UniqueConstraint,
    and_,
    case,
    bindparam,
    create_engine,
    delete,
    event,
    exc,
    exists,
    false,
    func,
    insert,
    or_,
    pool,
    select,
    text,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    aliased,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.types import TypeDecorator

from .cachefile import CacheError, FileIdentity, connector, file_identity, translate_errors
from .fingerprint import same_duration, same_size_class
from .result import DEFAULT_GENRE_THRESHOLD, HeadResult, ModelIdentity, TrackResult

__all__ = [
    "Cache",
    "CacheError",
    "CacheVersionError",
    "Hit",
    "Job",
    "JOB_STATES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "default_cache_path",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 30_000
JOB_STATES = ("pending", "running", "done", "failed")
GENRE_TASK = "genre"
# Paths / ids per IN (...) query: well under SQLite's bound-parameter limit.
_CHUNK = 500
# Execution option that makes the "begin" listener emit BEGIN IMMEDIATE.
_IMMEDIATE = "genreml_begin_immediate"
_DIALECT = SQLiteDialect_pysqlite()  # compiles the per-file lookup once (_lookup_query)

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
Models = Union[Mapping[str, ModelIdentity], Sequence[ModelIdentity]]
_Wanted = tuple[tuple[Union[str, None], ModelIdentity], ...]  # hashable: statements are cached


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


MIGRATIONS: dict[int, Migration] = {1: _add_tagged}


# --------------------------------------------------------------------------- public records


@dataclasses.dataclass(frozen=True)
class Job:
    """A snapshot of one queued job (changing it changes nothing in the database)."""

    id: int
    path: str
    state: str
    attempts: int
    last_error: str | None
    not_before: datetime
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: JobRow) -> Job:
        return cls(**{f.name: getattr(row, f.name) for f in dataclasses.fields(cls)})


class Hit(NamedTuple):
    """One track of a cache query."""

    path: str
    prob: float
    duration: float


# --------------------------------------------------------------------------- engine setup


def default_cache_path() -> Path:
    """``$XDG_DATA_HOME/genreml/cache.db``, else ``~/.local/share/genreml/cache.db``.

    A relative or empty ``XDG_DATA_HOME`` is ignored, as the XDG spec requires.
    """
    base = os.environ.get("XDG_DATA_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "genreml" / "cache.db"


def _on_connect(dbapi_conn: Any, record: Any, readonly: bool = False) -> None:
    # SQLAlchemy emits BEGIN itself (_on_begin); the sqlite3 module's own transaction
    # handling would otherwise skip BEGIN for SELECTs and could not do BEGIN IMMEDIATE.
    dbapi_conn.isolation_level = None
    record.info["pid"] = os.getpid()
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # first: the rest may wait
        cursor.execute("PRAGMA foreign_keys = ON")
        if readonly:  # setting the journal mode would write the file
            return
        cursor.execute("PRAGMA journal_mode = WAL")
        # Safe in WAL mode (no corruption, at worst the last commits lost on power failure)
        # and commits no longer fsync: storing 10,000 results stays fast.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
    # A pooled connection inherited through fork() must not be used by the child.
    if record.info.get("pid") != os.getpid():
        record.dbapi_connection = proxy.dbapi_connection = None
        raise exc.DisconnectionError("connection belongs to another process")


def _on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_IMMEDIATE, False)
    # Straight to the driver: a full SQLAlchemy execute here is ~10% of a per-file lookup.
    conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _make_engine(path: Path, readonly: bool = False) -> Engine:
    # The pool hands a connection to one thread at a time (check_same_thread=False).
    engine = create_engine("sqlite://", creator=connector(path, readonly),
                           poolclass=pool.QueuePool)
    event.listen(engine, "connect", functools.partial(_on_connect, readonly=readonly))
    event.listen(engine, "checkout", _on_checkout)
    event.listen(engine, "begin", _on_begin)
    return engine


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


# --------------------------------------------------------------------------- helpers


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _norm(path: PathLike) -> str:
    """The key a path is stored under: absolute, normalised, not symlink-resolved (the
    library's own view of its files)."""
    return os.fsdecode(os.path.abspath(os.fsdecode(path)))


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


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


def _identity(row: Any) -> ModelIdentity:
    return _model_identity(row.model_name, row.model_version, row.model_sha256)


# Every result of a model shares its identity and labels: parse and build them once, not
# once per track (keyed by the stored values themselves, so never wrong).
@functools.lru_cache(maxsize=64)
def _model_identity(name: str, version: str, sha256: str) -> ModelIdentity:
    return ModelIdentity(name, version, sha256)


@functools.lru_cache(maxsize=64)
def _parse_labels(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _covers(rows: Iterable[Any], wanted: _Wanted) -> bool:
    """Whether the result rows of one track hold a result of every wanted model."""
    have = {(r.task, _identity(r)) for r in rows}
    models = {m for _, m in have}
    return all((t, m) in have if t is not None else m in models for t, m in wanted)


def _under(column: Any, roots: Sequence[PathLike]) -> ColumnElement[bool]:
    """SQL: the path is one of ``roots`` or lies below one (an index range, no LIKE escaping)."""
    clauses = []
    for root in map(_norm, roots):
        prefix = root if root.endswith(os.sep) else root + os.sep
        upper = prefix[:-1] + chr(ord(os.sep) + 1)  # first string after every "prefix..."
        clauses.append(or_(column == root, and_(column >= prefix, column < upper)))
    return or_(*clauses) if clauses else false()


# --------------------------------------------------------------------------- reading results


def _floats(blob: bytes, dtype: str) -> np.ndarray:
    """A writable float32 array from a little-endian blob."""
    return np.frombuffer(blob, dtype=dtype).astype(np.float32)


def _head(row: Any) -> HeadResult:
    return HeadResult(
        task=row.task,
        labels=list(_parse_labels(row.labels)),
        probs=_floats(row.probs, "<f4"),
        timeline=_floats(row.timeline, "<f2").reshape(row.n_clips, row.n_labels),
        threshold=row.threshold,
        model=_identity(row),
    )


def _track_result(path: str, rows: list[Any]) -> TrackResult:
    results = [r for r in rows if r.result_id is not None]
    clip_starts = _floats(results[0].clip_starts, "<f4") if results else np.zeros(0, np.float32)
    return TrackResult(path=path, duration=rows[0].duration, clip_starts=clip_starts,
                       heads={r.task: _head(r) for r in results})


def _track_select(where: ColumnElement[bool], wanted: _Wanted | None) -> Select[Any]:
    """Tracks joined with their result rows (only the wanted models' fresh ones if given;
    all of them, and tracks without any, if not)."""
    stmt = (
        select(
            TrackRow.path, TrackRow.size, TrackRow.mtime_ns, TrackRow.duration,
            ResultRow.id.label("result_id"), ResultRow.task, ResultRow.model_name,
            ResultRow.model_version, ResultRow.model_sha256, ResultRow.threshold,
            ResultRow.n_clips, ResultRow.n_labels, ResultRow.labels, ResultRow.probs,
            ResultRow.clip_starts, ResultRow.timeline,
        )
        .join(ResultRow, ResultRow.track_id == TrackRow.id, isouter=wanted is None)
        .where(where)
    )
    return stmt if wanted is None else stmt.where(_fresh(wanted))


@functools.lru_cache(maxsize=32)
def _by_path_select(wanted: _Wanted, many: bool) -> Select[Any]:
    """:func:`_track_select` for one ``path`` or a ``paths`` list, built once per model set:
    building a statement (or expanding an IN list) costs more than running it per file."""
    where = (TrackRow.path.in_(bindparam("paths", expanding=True)) if many
             else TrackRow.path == bindparam("path"))
    return _track_select(where, wanted)


def _collect(rows: Iterable[Any], wanted: _Wanted | None = None,
             current: Mapping[str, tuple[int, int]] | None = None) -> dict[str, TrackResult]:
    """Rebuild TrackResults from rows of a :func:`_track_select`.

    With ``wanted``, only tracks holding a fresh result of every wanted model are returned;
    with ``current`` (path -> (size, mtime_ns)), only tracks whose stored stat equals it.
    """
    by_path: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        if current is None or current.get(row.path) == (row.size, row.mtime_ns):
            by_path[row.path].append(row)
    if wanted is not None:
        by_path = {p: rows for p, rows in by_path.items() if _covers(rows, wanted)}
    return {path: _track_result(path, rows) for path, rows in by_path.items()}


def _load(conn: Connection, stmt: Select[Any], params: Mapping[str, Any] | None = None,
          wanted: _Wanted | None = None, current: Mapping[str, tuple[int, int]] | None = None
          ) -> dict[str, TrackResult]:
    """:func:`_collect` the rows of ``stmt`` run on ``conn``."""
    return _collect(conn.execute(stmt, params or {}), wanted, current)


class _DriverQuery(NamedTuple):
    """The one-path lookup statement, compiled once to the driver's SQL.

    A per-file lookup run this way skips SQLAlchemy's per-execution work and the
    BEGIN/COMMIT round trip (one SELECT is atomic on its own): 2-3 times faster (~0.15 ms).
    """

    sql: str
    params: tuple[Any, ...]  # the model identities; the path goes at path_index
    path_index: int
    row: Any  # a namedtuple class named after the selected columns


@functools.lru_cache(maxsize=32)
def _lookup_query(wanted: _Wanted) -> _DriverQuery:
    stmt = _by_path_select(wanted, many=False)
    compiled = stmt.compile(dialect=_DIALECT)
    names = list(compiled.positiontup or ())
    return _DriverQuery(
        sql=compiled.string,
        params=tuple(compiled.params[name] for name in names),
        path_index=names.index("path"),
        row=collections.namedtuple("_LookupRow", list(stmt.selected_columns.keys())),
    )


def _result_info(row: ResultRow) -> dict[str, Any]:
    return {
        "model": _identity(row).id,
        "name": row.model_name,
        "version": row.model_version,
        "sha256": row.model_sha256,
        "threshold": row.threshold,
        "stale": row.stale,
        "n_clips": row.n_clips,
        "analysed_at": row.analysed_at,
    }


# --------------------------------------------------------------------------- writing results


def _blob(array: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _result_values(head: HeadResult, clip_starts: np.ndarray, now: datetime
                   ) -> tuple[dict[str, Any], list[float]]:
    """The ``results`` columns (without track_id) and the probabilities of one head.

    Validates shapes first, so a broken result fails here rather than on the next lookup.
    """
    n_labels = len(head.labels)
    probs = np.asarray(head.probs, dtype=np.float32)  # rows and blob hold the same values
    timeline = np.asarray(head.timeline, dtype=np.float32)
    if probs.shape != (n_labels,):
        raise ValueError(f"{head.task}: probs shape {probs.shape}, expected ({n_labels},)")
    if timeline.shape != (len(clip_starts), n_labels):
        raise ValueError(f"{head.task}: timeline shape {timeline.shape}, "
                         f"expected ({len(clip_starts)}, {n_labels})")
    if not (np.isfinite(probs).all() and np.isfinite(timeline).all()):
        raise ValueError(f"{head.task}: non-finite probabilities")  # SQLite stores NaN as NULL
    values = {
        "task": head.task,
        "model_name": head.model.name,
        "model_version": head.model.version,
        "model_sha256": head.model.sha256,
        "threshold": head.threshold,
        "stale": False,
        "n_clips": len(clip_starts),
        "n_labels": n_labels,
        "labels": json.dumps(list(head.labels)),
        "probs": _blob(probs, "<f4"),
        "clip_starts": _blob(clip_starts, "<f4"),
        "timeline": _blob(timeline, "<f2"),
        "analysed_at": now,
    }
    return values, probs.tolist()


# tagged is reset: a new result is not in the file's tags until the Tagger writes it
_TRACK_COLUMNS = ("size", "mtime_ns", "fingerprint", "duration", "analysed_at", "tagged")


def _track_upsert() -> Any:
    stmt = sqlite_insert(TrackRow.__table__)
    return stmt.on_conflict_do_update(
        index_elements=["path"], set_={c: stmt.excluded[c] for c in _TRACK_COLUMNS}
    ).returning(TrackRow.__table__.c.id)


# Built once: constructing statements costs more than running them (store is per file).
_TRACK_UPSERT = _track_upsert()
_RESULTS_DELETE = delete(ResultRow.__table__).where(
    ResultRow.__table__.c.track_id == bindparam("track_id"),
    ResultRow.__table__.c.task.in_(bindparam("tasks", expanding=True)),
)
_RESULT_INSERT = insert(ResultRow.__table__).returning(ResultRow.__table__.c.id)
_PROBS_INSERT = insert(ProbabilityRow.__table__)


def _store(conn: Connection, result: TrackResult, fingerprint: str | None,
           st: os.stat_result, now: datetime) -> None:
    """Upsert the track row and replace its results for the tasks in ``result``."""
    clip_starts = np.asarray(result.clip_starts, dtype=np.float32).reshape(-1)
    heads = [(head.labels, *_result_values(head, clip_starts, now))
             for head in result.heads.values()]
    track_id = conn.execute(_TRACK_UPSERT, {
        "path": _norm(result.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        "fingerprint": fingerprint, "duration": float(result.duration), "analysed_at": now,
        "tagged": False,
    }).scalar_one()
    # Probabilities of replaced results go with them (ON DELETE CASCADE).
    conn.execute(_RESULTS_DELETE,
                 {"track_id": track_id, "tasks": [values["task"] for _, values, _ in heads]})
    for labels, values, probs in heads:
        result_id = conn.execute(_RESULT_INSERT, {"track_id": track_id, **values}).scalar_one()
        conn.execute(_PROBS_INSERT, [
            {"result_id": result_id, "idx": i, "label": label, "prob": prob}
            for i, (label, prob) in enumerate(zip(labels, probs))
        ])


def _relocate(conn: Connection, old: str, new: str, st: os.stat_result) -> bool:
    """Move the row of ``old`` to ``new`` (replacing any row there) with ``new``'s stat."""
    track_id = conn.scalar(select(TrackRow.id).where(TrackRow.path == old))
    if track_id is None:
        return False
    conn.execute(delete(TrackRow).where(TrackRow.path == new, TrackRow.id != track_id))
    conn.execute(update(TrackRow).where(TrackRow.id == track_id)
                 .values(path=new, size=st.st_size, mtime_ns=st.st_mtime_ns))
    if old != new:
        logger.info("relocated %s -> %s", old, new)
    return True


# --------------------------------------------------------------------------- queries and jobs


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


def _job(session: Session, job_id: int) -> JobRow:
    row = session.get(JobRow, job_id)
    if row is None:
        raise KeyError(f"no job {job_id}")
    return row


def _to_pending(session: Session, row: JobRow, not_before: datetime, now: datetime) -> JobRow:
    """Make ``row`` pending again, unless another job for its path is pending already: then
    that one will do and ``row`` is dropped. Returns the pending job."""
    other = session.scalar(select(JobRow).where(
        JobRow.path == row.path, JobRow.state == "pending", JobRow.id != row.id))
    if other is not None:
        session.delete(row)
        return other
    row.state, row.not_before, row.updated_at = "pending", not_before, now
    return row


# --------------------------------------------------------------------------- the cache


class Cache:
    """The results cache and job queue in one SQLite file.

    Safe to share between threads and to open from several processes at once.

    Parameters
    ----------
    path : str or Path, optional
        The database file; :func:`default_cache_path` if not given. Parent directories are
        created (unless ``readonly``).
    readonly : bool
        Open without ever writing the file (``genreml status``, ``show``, ``playlist`` on a
        cache they cannot write); writes then raise :class:`CacheError`.

    Raises
    ------
    CacheError
        The file cannot be used (not a database, damaged, unreadable, read-only, missing
        when ``readonly``): one line naming it and what to do. Also raised by a later query
        that finds such a file.
    CacheVersionError
        The file was written by a newer genreml (or cannot be migrated).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, readonly: bool = False
                 ) -> None:
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        self.readonly = readonly
        if not readonly:
            with translate_errors(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        self._engine = _make_engine(self.path, self.readonly)
        self._write_engine = self._engine.execution_options(**{_IMMEDIATE: True})
        self._reader = sessionmaker(self._engine, expire_on_commit=False)
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)
        try:
            with self._connect(write=not self.readonly) as conn:
                if self.readonly:
                    _check_version(conn, self.path, readonly=True)
                else:
                    _ensure_schema(conn, self.path)
        except BaseException:
            self._engine.dispose()
            raise
        self._identity: FileIdentity | None = file_identity(self.path)

    def recreate_if_missing(self) -> bool:
        """Start a fresh cache when the file was deleted or replaced under us.

        SQLite keeps writing into the file it opened, even once unlinked: results would go
        nowhere. Compares the open file's ``(st_dev, st_ino)`` with the path's.

        Returns
        -------
        bool
            True when a new cache was created at :attr:`path` (a warning is logged).
        """
        now = file_identity(self.path)
        if now is not None and now == self._identity:
            return False
        logger.warning("cache %s was %s: starting a new one", self.path,
                       "deleted" if now is None else "replaced by another file")
        self._engine.dispose()
        if not self.readonly:
            with translate_errors(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()
        return True

    # -- lifecycle

    def close(self) -> None:
        """Close every pooled connection (the object must not be used afterwards)."""
        self._engine.dispose()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r})"

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[Connection]:
        """A transaction for SQL statements: ``BEGIN IMMEDIATE`` when ``write``, committed on
        success. (Statements run on a Connection skip the ORM's per-call overhead.)"""
        self._check_writable(write)
        with translate_errors(self.path), \
                (self._write_engine if write else self._engine).begin() as conn:
            yield conn

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        """A transaction as :meth:`_connect`, for work on ORM objects."""
        self._check_writable(write)
        with translate_errors(self.path), \
                (self._writer if write else self._reader).begin() as session:
            yield session

    def _check_writable(self, write: bool) -> None:
        if write and self.readonly:
            raise CacheError(f"cache {self.path} was opened read-only: this command cannot "
                             f"change it")

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

    def get(self, path: PathLike) -> TrackResult | None:
        """Everything stored for a file, whatever its stat or models (``genreml show``)."""
        key = _norm(path)
        with self._connect() as conn:
            return _load(conn, _track_select(TrackRow.path == key, None)).get(key)

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
                    tagged: bool = False) -> bool:
        """Record a file's current size and mtime after genreml rewrote its tags, so the next
        run sees it unchanged (and with ``tagged``, that its tags hold the result). Returns
        whether the file is in the cache."""
        key = _norm(path)
        st = stat if stat is not None else os.stat(key)
        values: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if tagged:
            values["tagged"] = True
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

    # -- job queue

    def enqueue(self, path: PathLike, now: datetime | None = None) -> bool:
        """Queue a file for analysis. Returns False if it is already pending."""
        now = now or _utcnow()
        stmt = (
            sqlite_insert(JobRow)
            .values(path=_norm(path), state="pending", attempts=0,
                    not_before=now, created_at=now, updated_at=now)
            .on_conflict_do_nothing()  # the only possible conflict: uq_jobs_pending_path
        )
        with self._connect(write=True) as conn:
            return conn.execute(stmt).rowcount == 1

    def claim(self, now: datetime | None = None) -> Job | None:
        """Take the oldest pending job that is due: it becomes running, attempts + 1.

        Atomic across processes (one write transaction).
        """
        now = now or _utcnow()
        with self._session(write=True) as session:
            row = session.scalars(
                select(JobRow).where(JobRow.state == "pending", JobRow.not_before <= now)
                .order_by(JobRow.not_before, JobRow.id).limit(1)
            ).first()
            if row is None:
                return None
            row.state, row.attempts, row.updated_at = "running", row.attempts + 1, now
            session.flush()
            return Job.from_row(row)

    def complete(self, job_id: int, now: datetime | None = None) -> Job:
        """Mark a job done."""
        with self._session(write=True) as session:
            row = _job(session, job_id)
            row.state, row.last_error, row.updated_at = "done", None, now or _utcnow()
            session.flush()
            return Job.from_row(row)

    def fail(self, job_id: int, error: str, max_attempts: int = 5, backoff_base: float = 30.0,
             now: datetime | None = None) -> Job:
        """Record a failed attempt: retry later, or give up after ``max_attempts``.

        The retry waits ``backoff_base * 2 ** (attempts - 1)`` seconds.

        Returns
        -------
        Job
            The failed job, or the pending job that will retry the path (this one, or one
            queued for the same path meanwhile, which absorbs it).
        """
        now = now or _utcnow()
        with self._session(write=True) as session:
            row = _job(session, job_id)
            row.last_error, row.updated_at = error, now
            if row.attempts >= max_attempts:
                row.state = "failed"
                logger.warning("giving up on %s after %d attempts: %s", row.path, row.attempts,
                               error)
            else:
                delay = backoff_base * 2 ** max(row.attempts - 1, 0)
                row = _to_pending(session, row, now + timedelta(seconds=delay), now)
            session.flush()
            return Job.from_row(row)

    def requeue_running(self, max_attempts: int = 5, now: datetime | None = None) -> int:
        """Put jobs left running by a dead daemon back to pending (call on daemon start).

        A job that already had ``max_attempts`` (it may be what kills the daemon) fails
        instead. Returns how many jobs were running.
        """
        now = now or _utcnow()
        with self._session(write=True) as session:
            rows = list(session.scalars(select(JobRow).where(JobRow.state == "running")))
            for row in rows:
                row.last_error, row.updated_at = "interrupted", now
                if row.attempts >= max_attempts:
                    row.state = "failed"
                else:
                    _to_pending(session, row, now, now)
        if rows:
            logger.info("requeued %d interrupted jobs", len(rows))
        return len(rows)

    def counts(self) -> dict[str, int]:
        """Jobs per state (every state present)."""
        with self._connect() as conn:
            rows = conn.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
            return {**dict.fromkeys(JOB_STATES, 0), **{state: n for state, n in rows}}

    def failed_jobs(self) -> list[Job]:
        """Jobs given up on, most recent first."""
        with self._session() as session:
            rows = session.scalars(select(JobRow).where(JobRow.state == "failed")
                                   .order_by(JobRow.updated_at.desc(), JobRow.id.desc()))
            return [Job.from_row(r) for r in rows]

    def recent_jobs(self, state: str, limit: int | None = None) -> list[Job]:
        """Jobs in ``state``, most recently updated first (``genreml status``: last done)."""
        with self._session() as session:
            rows = session.scalars(select(JobRow).where(JobRow.state == state)
                                   .order_by(JobRow.updated_at.desc(), JobRow.id.desc())
                                   .limit(limit))
            return [Job.from_row(r) for r in rows]

    def prune_jobs(self, older_than: timedelta = timedelta(days=7),
                   now: datetime | None = None) -> int:
        """Delete done jobs last updated before ``now - older_than``; returns how many."""
        cutoff = (now or _utcnow()) - older_than
        with self._connect(write=True) as conn:
            return conn.execute(
                delete(JobRow).where(JobRow.state == "done", JobRow.updated_at < cutoff)
            ).rowcount
