"""The SQLite results cache: the single source of truth for analysis results, and the watch
daemon's job queue, in one file.

File tags and beets fields are projections of what is stored here. Callers use :class:`Cache`;
each of its jobs has its own module:

``engine``    the file: default path, WAL and busy timeout, read-only opening, fork guard, and
              :class:`CacheError`, the one line a front door prints for a file it cannot use
``schema``    tables, column types, ``SCHEMA_VERSION`` and the migrations
``database``  the open file: schema checked on open, transactions, reopened when replaced
``match``     what a path, a folder or a set of models selects
``rows``      a TrackResult written as rows and read back
``results``   lookup (by path or fingerprint), store, relocate, stale marking
``written``   what genreml's own tag writes left in each file (left out of learning)
``queries``   playlists, labels, files to analyse again, the summary
``jobs``      the daemon's queue
"""

from __future__ import annotations

from .engine import CacheError, default_cache_path
from .jobs import Job, JobQueue
from .queries import Hit, Queries
from .results import Results, StoredEmbedding
from .schema import JOB_STATES, MIGRATIONS, SCHEMA_VERSION, CacheVersionError
from .written import Written

__all__ = [
    "Cache",
    "CacheError",
    "CacheVersionError",
    "Hit",
    "Job",
    "JOB_STATES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "StoredEmbedding",
    "default_cache_path",
]


class Cache(Results, Written, Queries, JobQueue):
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
