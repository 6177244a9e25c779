"""What to write: a :class:`Policy` meets the values a file holds and a prediction.

Pure functions and plain data, no file access: :func:`plan_tags` decides per field, and a
:class:`TagPlan` says what changes (the CLI's ``--dry-run`` lines, the beets plugin's rule).

Values genreml wrote itself are genreml's, not the user's: when a track is tagged again (a new
model version, a new analysis), the caller passes what genreml's previous result decided as
``own`` and :func:`own_values_removed` takes those values out of the file's values before the
policy looks at them. A policy protects the user's values, never genreml's old ones.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

__all__ = ["MODES", "FieldPlan", "FileTags", "Policy", "TagPlan", "own_values_removed",
           "plan_tags"]

MODES = ("fill", "merge", "force")

T = TypeVar("T")


@dataclasses.dataclass
class FileTags:
    """The genres and the mood a file holds (or will hold)."""

    genres: list[str] = dataclasses.field(default_factory=list)
    mood: str | None = None


@dataclasses.dataclass(frozen=True)
class Policy:
    """How a prediction meets a value already in the file, per field.

    Parameters
    ----------
    genre, mood : {"fill", "merge", "force"}
        ``fill``: write only if the file has no value. ``merge``: keep the existing genres
        and append the predicted ones not among them (case-insensitively); a file holds one
        mood, so for the mood ``merge`` keeps an existing one like ``fill``. ``force``:
        replace.
    """

    genre: str = "fill"
    mood: str = "fill"

    def __post_init__(self) -> None:
        for name in ("genre", "mood"):
            if getattr(self, name) not in MODES:
                raise ValueError(
                    f"{name} policy must be one of {MODES}, not {getattr(self, name)!r}")

    @classmethod
    def of(cls, policy: str | Policy) -> Policy:
        """A :class:`Policy` from itself or from one mode name for both fields."""
        return policy if isinstance(policy, Policy) else cls(genre=policy, mood=policy)


@dataclasses.dataclass(frozen=True)
class FieldPlan(Generic[T]):
    """One field's value before and after a write."""

    name: str
    old: T
    new: T

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def describe(self) -> str:
        if self.changed:
            return f"{self.name}: {self.old!r} -> {self.new!r}"
        return f"{self.name}: {self.old!r} (unchanged)"


@dataclasses.dataclass(frozen=True)
class TagPlan:
    """What :func:`write_tags` does (or, in a dry run, would do) to a file.

    ``own`` is what the plan took for genreml's own earlier values (None: nothing was).
    """

    genre: FieldPlan[list[str]]
    mood: FieldPlan[str | None]
    own: FileTags | None = None

    @property
    def fields(self) -> tuple[FieldPlan[Any], ...]:
        return (self.genre, self.mood)

    @property
    def changed(self) -> bool:
        """Whether the file needs writing at all."""
        return any(f.changed for f in self.fields)

    @property
    def holds_own(self) -> bool:
        """Whether the file keeps, after the plan, values genreml wrote there earlier (planned
        again, or in a field the prediction leaves alone): genreml's tags are still in it."""
        after = self.after
        return self.own is not None and own_values_removed(after, self.own) != after

    @property
    def ours(self) -> FileTags:
        """The values genreml put (or keeps) in the file with this plan: those of
        :attr:`after` that are not the user's (the user's: :attr:`before` without ``own``).

        What the cache records as genreml's (:meth:`tagger.cache.Cache.update_stat`), so that
        learning from a library never takes genreml's own output for the user's truth.
        """
        users = own_values_removed(self.before, self.own) if self.own else self.before
        theirs = {_key(g) for g in users.genres}
        mood = self.mood.new
        if mood is not None and users.mood is not None and _key(mood) == _key(users.mood):
            mood = None
        return FileTags([g for g in self.genre.new if _key(g) not in theirs], mood)

    def ours_with(self, earlier: FileTags | None) -> FileTags:
        """What genreml's writes leave in the file after this plan: :attr:`ours`, and the
        values of :attr:`after` that an earlier record (``earlier``: what genreml's writes had
        left there before) says are genreml's; a plan made without ``own`` cannot tell those
        from the user's.

        The one rule for every record of genreml's own values (the cache's
        ``tracks.written``, the beets fields ``genreml_written_*``).

        Parameters
        ----------
        earlier : FileTags or None
            What the record said before this plan (None: no record).

        Returns
        -------
        FileTags
            genreml's values among :attr:`after`, in its order.

        Examples
        --------
        >>> plan = plan_tags(FileTags(["Jazz", "Low"], None), ["Low"], None, "fill")
        >>> plan.ours, plan.ours_with(FileTags(["Low"], None))
        (FileTags(genres=[], mood=None), FileTags(genres=['Low'], mood=None))
        """
        ours = self.ours
        kept = own_values_removed(self.after, ours)
        users = own_values_removed(kept, earlier) if earlier is not None else kept
        genres = ours.genres + [g for g in kept.genres if g not in users.genres]
        mood = ours.mood or (kept.mood if kept.mood is not None and users.mood is None
                             else None)
        return FileTags(genres, mood)

    @property
    def before(self) -> FileTags:
        return FileTags(list(self.genre.old), self.mood.old)

    @property
    def after(self) -> FileTags:
        return FileTags(list(self.genre.new), self.mood.new)

    def to_json(self) -> str:
        """The plan as JSON (it travels back from a Ray worker that carried it out)."""
        own = None if self.own is None else [self.own.genres, self.own.mood]
        return json.dumps({"genre": [self.genre.old, self.genre.new],
                           "mood": [self.mood.old, self.mood.new], "own": own})

    @classmethod
    def from_json(cls, text: str) -> TagPlan:
        data = json.loads(text)
        own = None if data["own"] is None else FileTags(list(data["own"][0]), data["own"][1])
        return cls(FieldPlan("genre", list(data["genre"][0]), list(data["genre"][1])),
                   FieldPlan("mood", *data["mood"]), own)

    def describe(self) -> list[str]:
        """Human lines, one per field, e.g. ``"genre: ['Rock'] -> ['Rock', 'Jazz']"``."""
        return [f.describe() for f in self.fields]


def plan_tags(
    current: FileTags,
    genres: Iterable[str] | None,
    mood: str | None,
    policy: str | Policy = "fill",
    own: FileTags | None = None,
) -> TagPlan:
    """Decide the new genres and mood from what the file has and what was predicted.

    Parameters
    ----------
    current : FileTags
        What the file holds now (:func:`read_tags`).
    genres : list of str
        Predicted genres, most probable first. Values are stripped; empty ones and
        case-insensitive repeats are dropped. An empty list leaves the user's genres alone
        (genreml's own old ones, with ``own``, are still taken out).
    mood : str or None
        Predicted mood; ``None`` (or blank) leaves the field alone.
    policy : str or Policy
        ``"fill"``, ``"merge"`` or ``"force"`` for both fields, or a :class:`Policy`.
    own : FileTags, optional
        What genreml itself wrote into the file last time (its previous result's decision):
        these genres (and, when a mood is predicted, this mood) are taken out of ``current`` first
        (:func:`own_values_removed`), so the policy weighs only the user's values. None (a
        file genreml never tagged): nothing is taken out.

    Returns
    -------
    TagPlan
        ``old`` is always what the file holds, so a plan that puts genreml's own values back
        as they were is unchanged.
    """
    if isinstance(genres, str):
        raise TypeError("genres must be a list of strings, not a string")
    policy = Policy.of(policy)
    predicted = _clean(genres or [])
    new_mood = next(iter(_clean([mood] if mood is not None else [])), None)
    users = own_values_removed(current, own) if own is not None else current
    # An empty prediction leaves the user's genres alone, but not genreml's own: a new model
    # that decides no genre takes back what the old one wrote (v1's "Pop/Rock" must not stay)
    genre_base = users.genres if predicted or own is not None else current.genres
    mood_base = users.mood if new_mood is not None else current.mood
    return TagPlan(
        FieldPlan("genre", list(current.genres),
                  _plan_genres(genre_base, predicted, policy.genre)),
        FieldPlan("mood", current.mood, _plan_mood(mood_base, new_mood, policy.mood)),
        own,
    )


def own_values_removed(current: FileTags, own: FileTags) -> FileTags:
    """``current`` without the values genreml wrote there itself.

    A genre is genreml's when it equals one of ``own.genres`` and the mood when it equals
    ``own.mood``, case-insensitively after stripping (as :func:`plan_tags` compares genres).
    Everything else is the user's and stays, in its order.

    Parameters
    ----------
    current : FileTags
        What the file holds now.
    own : FileTags
        What genreml's previous result decided (and genreml wrote into the file).

    Returns
    -------
    FileTags
        The user's values: a new object, ``current`` is not changed.

    Examples
    --------
    >>> own_values_removed(FileTags(["Shoegaze", "pop/rock"], "happy"),
    ...                    FileTags(["Pop/Rock", "Jazz"], "Happy"))
    FileTags(genres=['Shoegaze'], mood=None)
    """
    theirs = {_key(g) for g in own.genres}
    genres = [g for g in current.genres if _key(g) not in theirs]
    mood = current.mood
    if mood is not None and own.mood is not None and _key(mood) == _key(own.mood):
        mood = None
    return FileTags(genres, mood)


def _key(value: str) -> str:
    return value.strip().casefold()


def _clean(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        value = value.strip()
        if value and value.casefold() not in seen:
            seen.add(value.casefold())
            out.append(value)
    return out


def _plan_genres(old: list[str], predicted: list[str], mode: str) -> list[str]:
    if not predicted or (old and mode == "fill"):
        return list(old)
    if mode == "merge":
        have = {g.casefold() for g in old}
        return list(old) + [g for g in predicted if g.casefold() not in have]
    return predicted


def _plan_mood(old: str | None, predicted: str | None, mode: str) -> str | None:
    if predicted is None or (old is not None and mode != "force"):
        return old
    return predicted
