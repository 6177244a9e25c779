"""Where genreml keeps its data: the XDG base directory of the user's data."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_home"]


def data_home() -> Path:
    """``$XDG_DATA_HOME/genreml``, else ``~/.local/share/genreml``.

    A relative or empty ``XDG_DATA_HOME`` is ignored, as the XDG spec requires.
    """
    base = os.environ.get("XDG_DATA_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "genreml"
