"""The watch daemon's queue, in the cache file: at most one pending job per path, claimed
atomically across processes, retried with exponential back-off and given up on after a few
attempts; a job left running by a dead daemon is put back."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .database import Database
from .match import PathLike, _norm
from .schema import JOB_STATES, JobRow, _utcnow

logger = logging.getLogger(__name__)


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


class JobQueue(Database):
    """The job queue part of :class:`~tagger.cache.Cache`."""

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
