"""Draw a track's clip timeline (needs matplotlib: the ``plot`` extra, ``pip install '.[plot]'``
in a clone, or ``pip install matplotlib`` into genreml's environment)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .result import TrackResult

__all__ = ["PlotUnavailable", "plot_timeline", "require_matplotlib"]

NEEDS = ("drawing a timeline needs matplotlib, the 'plot' extra: pip install '.[plot]' in a "
         "genreml clone (or pip install matplotlib into genreml's environment)")


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed; the message says how to get it."""


def require_matplotlib() -> None:
    """Check, without importing it, that matplotlib can be imported.

    Raises
    ------
    PlotUnavailable
    """
    try:
        found = importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # a broken or blocked installation
        found = False
    if not found:
        raise PlotUnavailable(NEEDS)


def plot_timeline(result: TrackResult, out: str | Path) -> Path:
    """One heat map per task: labels down, clips across (seconds), colour = probability.

    Raises
    ------
    PlotUnavailable
        matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError as err:
        raise PlotUnavailable(NEEDS) from err

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    heads = list(result.heads.values())
    heights = [max(1.5, 0.3 * len(h.labels)) for h in heads]
    fig, axes = plt.subplots(len(heads), 1, figsize=(10, sum(heights) + 1), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    starts = np.asarray(result.clip_starts, dtype=float)
    step = float(np.median(np.diff(starts))) if len(starts) > 1 else 1.0
    for ax, head in zip(axes[:, 0], heads):
        image = ax.imshow(head.timeline.T, aspect="auto", origin="lower", vmin=0.0, vmax=1.0,
                          cmap="magma", interpolation="nearest",
                          extent=(starts[0], starts[-1] + step, -0.5, len(head.labels) - 0.5))
        ax.set_yticks(range(len(head.labels)), head.labels, fontsize=8)
        ax.set_title(f"{head.task} ({head.model.id})", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.02)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(Path(result.path).name, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
