"""The genre vocabulary users see: AllMusic's names respelled, and the rule a label must pass.

AllMusic joins some genres with "/" ("Pop/Rock"), which ID3v2.3 and many players split into
two genres, and calls hip hop "Rap". Shipped names follow beets' lastgenre tree
(``genres-tree.yaml``) in title case, so a library tagged by lastgenre and by genreml speaks
one language. The card keeps the AllMusic name next to each.
"""

from __future__ import annotations

import dataclasses
import re

from tagger.labels import ALLMUSIC_SYNONYMS

__all__ = ["ALLMUSIC_NAMES", "SEPARATORS", "ShipRule", "display_name", "has_separator"]

# AllMusic genre -> shipped name (lastgenre's spelling): the runtime's table, which also tells
# a personal head's AllMusic-spelled labels from the bundled ones (tagger.personal.UnionHead).
ALLMUSIC_NAMES = ALLMUSIC_SYNONYMS

# Characters that tag formats or players split one genre string on.
SEPARATORS = re.compile(r"[/;,\\|\x00]")


def has_separator(name: str) -> bool:
    """Whether ``name`` would be split into several genres by a tag format or a player."""
    return bool(SEPARATORS.search(name))


def display_name(allmusic: str) -> str:
    """The shipped spelling of an AllMusic genre."""
    name = ALLMUSIC_NAMES.get(allmusic, allmusic)
    if has_separator(name):
        raise ValueError(f"genre name {name!r} contains a separator")
    return name


@dataclasses.dataclass(frozen=True)
class ShipRule:
    """When a label has earned its place (measured on the test split, once).

    A label ships when its ROC-AUC is at least ``min_auc``, its precision at the written
    threshold at least ``min_precision``, and the test split holds at least ``min_positives``
    tracks of it and the head writes it on at least ``min_written`` (fewer cannot say either).
    """

    min_auc: float = 0.85
    min_precision: float = 0.5
    min_positives: int = 5
    min_written: int = 3

    def verdict(self, auc: float | None, precision: float, positives: int,
                written: int) -> str | None:
        """``None`` when the label ships, else the reason it does not."""
        if positives < self.min_positives:
            return f"{positives} test positives (< {self.min_positives})"
        if auc is None or auc < self.min_auc:
            return f"ROC-AUC {auc if auc is not None else float('nan'):.2f} < {self.min_auc}"
        if written < self.min_written:
            return f"written on {written} test tracks (< {self.min_written})"
        if precision < self.min_precision:
            return f"precision {precision:.2f} < {self.min_precision}"
        return None
