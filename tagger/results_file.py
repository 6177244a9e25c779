"""``genreml analyze --out FILE.parquet``: results as a table, one row per track."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["write_results"]


def write_results(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write :meth:`tagger.result.TrackResult.to_dict` rows to a Parquet file (pyarrow):
    ``path``, ``genres`` (a list), ``mood``, ``clips``, ``duration``, and the per-label
    probabilities and models as JSON text (their keys differ between models).

    Raises
    ------
    tagger.console.UsageError
        pyarrow is missing, or the file cannot be written.
    """
    from .console import UsageError

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise UsageError("--out needs pyarrow (pip install '.[ray]' in a genreml clone)") \
            from err
    table = pa.table({
        "path": [r["path"] for r in rows],
        "genres": [[g["label"] for g in r["genres"]] for r in rows],
        "mood": [r["emotion"]["label"] if r["emotion"] else None for r in rows],
        "clips": pa.array([r["clips"] for r in rows], pa.int32()),
        "duration": pa.array([r["duration"] for r in rows], pa.float64()),
        "genre_probs": [json.dumps(r["genre_probs"]) for r in rows],
        "emotion_probs": [json.dumps(r["emotion_probs"]) for r in rows],
        "models": [json.dumps(r["models"]) for r in rows],
    })
    try:
        pq.write_table(table, path)
    except OSError as err:
        raise UsageError(f"--out {path}: {err}") from err
