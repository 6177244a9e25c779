"""The CLI's terminal: result lines on stdout, one line per problem on stderr, a progress bar
on a terminal only, and the per-file loop that keeps going when one file fails.

Result lines and the progress bar never mix: the bar is drawn only when stderr is a terminal,
and while it is shown every line (results, problems, log records) goes through
:meth:`tqdm.tqdm.write`, which clears the bar first and draws it again after.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

from .report import RunCounts, failure_reason, printable, skip_reason

log = logging.getLogger("genreml")

__all__ = ["Console", "EXIT_BROKEN_PIPE", "EXIT_FAILED_FILES", "EXIT_OK", "EXIT_USAGE",
           "UsageError", "quiet_stdout"]

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")

# 128 + SIGPIPE: what a shell reports for `cat`, `grep` ... cut off by `| head`, so a
# `set -o pipefail` script sees genreml as it sees them. 0 would claim every line was read.
EXIT_BROKEN_PIPE = 128 + 13


class UsageError(Exception):
    """A problem with the command line or its configuration (exit status 2)."""


def quiet_stdout() -> None:
    """After a ``BrokenPipeError`` on stdout (``genreml status | head -1``): point stdout at
    /dev/null so the interpreter's final flush cannot raise again (the Python documentation's
    recipe, see the ``signal`` module: "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class Console:
    """Where a command's lines go.

    Parameters
    ----------
    quiet : bool
        No progress bar and no per-file lines; problems (failures) are still printed.

    Lines go to the process's stdout and stderr, looked up at call time so tests can capture
    them.
    """

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._bar: Any = None

    @property
    def stdout(self) -> TextIO:
        return sys.stdout

    @property
    def stderr(self) -> TextIO:
        return sys.stderr

    def result(self, line: str) -> None:
        """A result line on stdout (flushed: a pipe reader sees each file as it is done)."""
        self._write(line, self.stdout)

    def info(self, line: str) -> None:
        """A per-file note on stderr (``skipped: silent``); dropped by ``-q``."""
        if not self.quiet:
            self._write(line, self.stderr)

    def problem(self, path: str | os.PathLike[str], reason: str) -> None:
        """``genreml: PATH: reason`` on stderr, whatever ``-q`` says."""
        self._write(f"genreml: {printable(path)}: {reason}", self.stderr)

    def _write(self, line: str, stream: TextIO) -> None:
        if self._bar is not None:
            self._bar.write(line, file=stream)
        else:
            print(line, file=stream)
        stream.flush()

    @contextlib.contextmanager
    def progress(self, total: int, desc: str) -> Iterator[Callable[[], None]]:
        """A progress bar on stderr when it is a terminal (and more than one file, and not
        ``-q``); yields the function that advances it. Log records go through the bar."""
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        shown = total > 1 and not self.quiet and self.stderr.isatty()
        if not shown:
            yield lambda: None
            return
        with tqdm(total=total, desc=desc, unit="file", file=self.stderr, dynamic_ncols=True,
                  leave=False) as bar, logging_redirect_tqdm():
            self._bar = bar
            try:
                yield bar.update
            finally:
                self._bar = None

    def for_each_file(self, files: Iterable[Path], work: Callable[[Path], T], desc: str,
                      counts: RunCounts | None = None,
                      done: Callable[[Path, T], None] | None = None,
                      jobs: int = 1, total: int | None = None) -> RunCounts:
        """Run ``work`` on every file, ``jobs`` files at a time (in threads), and ``done`` on
        each file's result in this thread, in the files' order: a failing file prints one
        line on stderr and the run goes on; a silent file is skipped (``skipped: silent``),
        which is not a failure.

        With two jobs on two cores one file decodes while the other runs the backbone, so
        neither core waits for the other's stage.

        ``files`` may be an iterator (files as they arrive) with their number as ``total``.

        Returns
        -------
        RunCounts
            ``counts`` (or a new one) with ``failed`` and ``skipped`` added.
        """
        counts = counts if counts is not None else RunCounts(write=False)
        total = total if total is not None else len(files)  # type: ignore[arg-type]
        with self.progress(total, desc) as advance, _pool(jobs) as submit:
            pending: collections.deque = collections.deque()
            ahead = max(1, 2 * jobs)  # results held waiting for an earlier file
            for path in [*files, None]:
                if path is not None:
                    pending.append((path, submit(work, path)))
                while pending and (path is None or len(pending) > ahead
                                   or pending[0][1].done()):
                    first, future = pending.popleft()
                    self._finish(first, future, done, counts)
                    advance()
        return counts

    def _finish(self, path: Path, future: concurrent.futures.Future, done: Callable | None,
                counts: RunCounts) -> None:
        try:
            value = future.result()
            if done is not None:
                done(path, value)
        except BrokenPipeError:
            raise  # stdout is gone: stop, as `cat` would (see main)
        except Exception as err:  # one file must not end the run
            skipped = skip_reason(err)
            if skipped:
                counts.skipped += 1
                self.info(f"genreml: {printable(path)}: skipped: {skipped}")
            else:
                counts.failed += 1
                log.debug("traceback for %s", printable(path), exc_info=err)
                self.problem(path, failure_reason(err))


@contextlib.contextmanager
def _pool(jobs: int) -> Iterator[Callable[..., concurrent.futures.Future]]:
    """``submit(fn, arg)``: in ``jobs`` threads, or at once in this one for a single job (a
    finished future, so tracebacks and debugging stay simple)."""
    if jobs <= 1:
        def now(fn: Callable, arg: object) -> concurrent.futures.Future:
            future: concurrent.futures.Future = concurrent.futures.Future()
            try:
                future.set_result(fn(arg))
            except BrokenPipeError:
                raise
            except Exception as err:
                future.set_exception(err)
            return future

        yield now
        return
    with concurrent.futures.ThreadPoolExecutor(jobs, thread_name_prefix="genreml-file") as pool:
        yield pool.submit
