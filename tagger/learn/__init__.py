"""Learning the user's own labels from the tracks their library already labels.

``genreml learn`` reads the genres (or moods) the files hold, takes out what genreml itself
wrote there (the cache records it), makes the rest canonical (:mod:`tagger.labels`), and
learns a small head on the tracks' cached clip embeddings. Honest figures come first: every
label is judged by cross-validation grouped by artist, at the operating point it will be
written at, and only labels with enough tracks and a cross-validated precision at or above
the floor go into the head.

:mod:`.examples`   the labelled tracks and their embeddings (runtime only)
:mod:`.crossfit`   cross-validation, operating points, the final fit (scikit-learn)
:mod:`.export`     the head as a genreml ONNX head file (skl2onnx) and where it is kept
:mod:`.report`     the report: a table, JSON, a PNG

scikit-learn and skl2onnx are the ``learn`` extra: nothing on the tagging path imports them,
and :func:`require` says how to install them.
"""

from __future__ import annotations

import importlib.util

__all__ = ["TASKS", "LearnUnavailable", "require"]

# a front door's --task choice -> the head's task
TASKS = {"genre": "genre", "mood": "emotion"}
INSTALL = "pip install '.[learn]' in a genreml clone (scikit-learn and skl2onnx)"


class LearnUnavailable(Exception):
    """The learning libraries are not installed."""


def require() -> None:
    """Raise :class:`LearnUnavailable` (with how to install them) unless scikit-learn and
    skl2onnx can be imported."""
    missing = [m for m in ("sklearn", "skl2onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise LearnUnavailable(f"genreml learn needs {' and '.join(missing)}: {INSTALL}")
