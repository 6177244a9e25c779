"""A track's result as beets fields: the one mapping the beets plugin and the watch daemon share.

Fields per item:

``genres``              beets' own list field, under the ``fill`` / ``merge`` / ``force`` policy
                        (:func:`tagger.tags.plan_tags`, the same rule as for file tags: when
                        another model's result replaces genreml's, the values genreml set
                        are its own, not the user's, see :func:`own_values`)
``mood``                the dominant emotion, under the same policy
``genreml_genres``      the model's genres, whatever the policy did to ``genres``
``genreml_mood``        the model's dominant emotion, whatever the policy did to ``mood``
``genreml_model``       the model id(s) the values come from
``genreml_written_genres``, ``genreml_written_mood``
                        the values of ``genres`` and ``mood`` genreml put (or keeps) there,
                        not the user's (:func:`written_record`): learning from the library
                        (``beet genreml-learn``) leaves them out
``genre_<label>``,      one float per model label (slugified), for range queries such as
``mood_<label>``        ``beet ls mood_calm:0.7..``

The mapping lives here, not in the plugin, so that the daemon (a library) never calls up into
a front door. The per-label field names come from the loaded models; a process that loaded its
models already (the watch daemon) shares them with :func:`share_models`, so that the plugin,
loaded by beets in the same process, does not load a second set.

Nothing here imports beets: an item is anything with beets' ``get`` and ``update``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .tags import FileTags, Policy, plan_tags

if TYPE_CHECKING:
    from .model import ModelSet
    from .result import TrackResult

__all__ = ["MEDIA_FIELDS", "PREFIXES", "WRITTEN_GENRES", "WRITTEN_MOOD", "apply_result",
           "field_name", "label_fields", "own_values", "share_models", "shared_models",
           "slugify", "written_record"]

# Field prefix per model task: `genre_jazz`, `mood_calm`.
PREFIXES = {"genre": "genre", "emotion": "mood"}
# The fields the policy decides, both backed by file tags.
MEDIA_FIELDS = ("genres", "mood")
# What genreml itself left in them (a list field, and a string: "" for none).
WRITTEN_GENRES, WRITTEN_MOOD = "genreml_written_genres", "genreml_written_mood"

_shared_lock = threading.Lock()
_shared: ModelSet | None = None  # the models this process loaded already, if it said so


class Item(Protocol):
    """What :func:`apply_result` needs of a beets item."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def update(self, values: dict[str, Any]) -> None: ...


def slugify(label: str) -> str:
    """A label as a field-name part: lower-case, each run of non-alphanumerics one ``_``.

    >>> slugify("Pop/Rock"), slugify("R&B"), slugify("Hip-Hop / Rap")
    ('pop_rock', 'r_b', 'hip_hop_rap')
    """
    return re.sub(r"[\W_]+", "_", label.lower()).strip("_")


def field_name(task: str, label: str) -> str:
    """The beets field holding ``label``'s probability: ``genre_jazz``, ``mood_calm``."""
    return f"{PREFIXES[task]}_{slugify(label)}"


def label_fields(models: ModelSet, warn: Callable[[str], None] | None = None
                 ) -> dict[tuple[str, str], str]:
    """``(task, label) -> field`` for every label of ``models``.

    Parameters
    ----------
    models : ModelSet
        The loaded models whose labels become fields.
    warn : callable, optional
        Told (one message each) about labels that slugify to nothing or to a field another
        label took; those are left out.

    Returns
    -------
    dict
    """
    fields: dict[tuple[str, str], str] = {}
    taken: dict[str, str] = {}
    for head, _ in models.specs:
        for label in head.labels:
            field = field_name(head.task, label)
            if field == f"{PREFIXES[head.task]}_":
                message = f"label {label!r} has no field name; skipped"
            elif field in taken:
                message = (f"labels {taken[field]!r} and {label!r} both map to {field}; "
                           "keeping the first")
            else:
                taken[field] = label
                fields[(head.task, label)] = field
                continue
            if warn is not None:
                warn(message)
    return fields


def apply_result(item: Item, result: TrackResult, policy: Policy,
                 fields: dict[tuple[str, str], str]) -> list[str]:
    """Set the item's fields from ``result`` (in memory); return the changed fields.

    Parameters
    ----------
    item : beets.library.Item
        The item to update (not stored: the caller stores it).
    result : TrackResult
        The track's analysis.
    policy : Policy
        How ``genres`` and ``mood`` treat the values the item has already.
    fields : dict
        The per-label fields, from :func:`label_fields`; labels not in it get no field.

    Returns
    -------
    list of str
        The fields whose value changed.
    """
    genres = [label for label, _ in result.genres]
    mood = result.emotion[0] if result.emotion else None
    model = ", ".join(dict.fromkeys(h.model.id for h in result.heads.values()))
    plan = plan_tags(FileTags(list(item.get("genres") or []), item.get("mood") or None),
                     genres, mood, policy, own_values(item, result, model))
    earlier = written_record(item)
    written = plan.ours_with(FileTags(earlier["genres"], earlier["mood"]) if earlier else None)
    values: dict[str, Any] = {
        "genres": plan.genre.new,
        "genreml_genres": genres,
        "genreml_model": model,
        WRITTEN_GENRES: written.genres,
        WRITTEN_MOOD: written.mood or "",
    }
    if plan.mood.new is not None:
        values["mood"] = plan.mood.new
    if mood is not None:
        values["genreml_mood"] = mood
    for task, head in result.heads.items():
        for label, prob in head.prob_dict().items():
            field = fields.get((task, label))
            if field is not None:
                values[field] = round(prob, 4)
    before = {key: item.get(key) for key in values}
    item.update(values)
    return [key for key in values if item.get(key) != before[key]]


def written_record(item: Item) -> dict[str, Any] | None:
    """What genreml's own results left in the item's ``genres`` and ``mood``, in the shape
    :meth:`tagger.cache.Cache.written` gives for a file: ``{"genres": [...], "mood": m}``.

    An item tagged by a genreml that kept no record (it has ``genreml_model`` but no
    ``genreml_written_*``) counts its ``genreml_genres`` and ``genreml_mood`` as written: a
    user's value that equals one is left out of learning rather than genreml's taken in.

    Parameters
    ----------
    item : beets.library.Item
        Anything with beets' ``get``.

    Returns
    -------
    dict or None
        None for an item genreml never tagged.
    """
    if item.get(WRITTEN_GENRES) is not None or item.get(WRITTEN_MOOD) is not None:
        return {"genres": _as_list(item.get(WRITTEN_GENRES)),
                "mood": item.get(WRITTEN_MOOD) or None}
    if item.get("genreml_model"):
        return {"genres": _as_list(item.get("genreml_genres")),
                "mood": item.get("genreml_mood") or None}
    return None


def _as_list(value: Any) -> list[str]:
    """A list field's value; an untyped flexible field (the plugin not loaded) is a string."""
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def own_values(item: Item, result: TrackResult, model: str) -> FileTags | None:
    """What genreml's previous result gave the item, when ``result`` (of ``model``) replaces
    it: the ``genreml_genres`` and ``genreml_mood`` it set, in the tasks ``result`` has.

    These are genreml's values, not the user's (:func:`tagger.tags.own_values_removed`).
    None when the item has no genreml result yet or ``model`` made that one too (a run with
    the same models leaves the item as the last one did).
    """
    previous = item.get("genreml_model")
    if not previous or previous == model:
        return None
    genres = _as_list(item.get("genreml_genres")) if "genre" in result.heads else []
    mood = (item.get("genreml_mood") or None) if "emotion" in result.heads else None
    return FileTags(genres, mood) if genres or mood is not None else None


def share_models(models: ModelSet | None) -> None:
    """Make ``models`` the ones beets' side of this process uses (None: none shared).

    The watch daemon calls this with the models its workers run, before beets loads the
    genreml plugin: the plugin's per-label fields then come from those very models, and the
    process holds one model set, not two.
    """
    global _shared
    with _shared_lock:
        _shared = models


def shared_models() -> ModelSet | None:
    """The models this process shared with :func:`share_models`, or None."""
    with _shared_lock:
        return _shared
