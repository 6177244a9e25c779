"""The errors tag reading and writing raise, and the one place that turns a library's or the
operating system's exception into one of them (:func:`errors`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import mutagen

__all__ = ["FileBusy", "FileChanged", "TagError", "errors"]


class TagError(Exception):
    """Reading or writing a file's tags failed; the file is unchanged.

    Parameters
    ----------
    path : str
        The file.
    reason : str
        One line saying what went wrong.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = " ".join(reason.split())  # one line, whatever the cause's text
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self) -> tuple[type[TagError], tuple[str, str]]:
        return type(self), (self.path, self.reason)  # picklable across worker processes


class FileChanged(TagError):
    """The file is not the one that was analysed, or it changed while it was being tagged
    (its inode, size or modification time moved); it was not written."""


class FileBusy(TagError):
    """Another process holds the file open for writing (a download, a copy, a ripper); it
    was not written."""


@contextlib.contextmanager
def errors(path: str, doing: str) -> Iterator[None]:
    """Turn whatever a step raises into a :class:`TagError` naming ``path``."""
    try:
        yield
    except TagError:
        raise
    except OSError as e:
        raise TagError(path, f"{doing}: {e.strerror or e}") from e
    except mutagen.MutagenError as e:
        cause = e.args[0] if e.args else None
        if isinstance(cause, OSError):  # mutagen wraps I/O errors: not the file's fault
            raise TagError(path, f"{doing}: {cause.strerror or cause}") from e
        raise TagError(path, f"corrupt file ({doing}: {str(e) or type(e).__name__})") from e
    except Exception as e:  # mutagen's parsers can trip over junk in many ways
        raise TagError(path, f"corrupt file ({doing}: {type(e).__name__}: {e})") from e
