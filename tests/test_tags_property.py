"""Property test: random existing tags meet random predictions under random policies, on
real files of every container.

Under ``fill`` and ``merge`` no value already in the file is ever lost; under ``force`` the
file ends up holding exactly the (cleaned) prediction; whatever is not ours is untouched; and
what :func:`write_tags` reports is what the file holds afterwards.

Examples per format: ``GENREML_HYPOTHESIS_EXAMPLES`` (default 50, the benchmark uses 1000;
see ``bench/bench_tags_property.py``). One base file per format is made once and copied per
example.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tags import FORMATS, Fmt, make_raw, not_ours, seed_tags, tag_dump

from tagger.tags import MODES, Policy, read_tags, write_tags

# Any printable text: no control characters (NUL separates ID3 values; none belongs in a
# genre name) and no lone surrogates (not encodable in any tag format).
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12)


def text(exclude: str = "") -> st.SearchStrategy[str]:
    return TEXT.filter(lambda s: not any(c in s for c in exclude)) if exclude else TEXT


def _recase(value: str) -> str:
    return value.swapcase() if len(value) % 2 else value


def clean(values: list[str]) -> list[str]:
    """The spec of prediction cleaning: stripped, blanks dropped, case-insensitive repeats
    dropped (the first spelling wins)."""
    out: list[str] = []
    for v in (v.strip() for v in values):
        if v and v.casefold() not in {o.casefold() for o in out}:
            out.append(v)
    return out


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, object]]]:
    """Per format: a file with realistic other tags (cover, replaygain, ...) and their dump."""
    folder = tmp_path_factory.mktemp("bases")
    out = {}
    for fmt in FORMATS:
        path = make_raw(folder, fmt, seconds=0.5)
        seed_tags(path, fmt, [], None)
        out[fmt.name] = (path, not_ours(tag_dump(path, fmt), fmt))
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("examples")


_names = itertools.count()


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@settings(settings.get_profile("genreml"))
@given(data=st.data())
def test_policies_on_real_files(fmt: Fmt, bases, workdir: Path, data: st.DataObject) -> None:
    # ID3v2.3 stores genres "/"-joined, so a predicted "/" would (by design) split a value.
    sep = "/" if fmt.id3_version == 3 else ""
    existing = data.draw(st.lists(text(), max_size=4), label="existing genres")
    existing_mood = data.draw(st.none() | text(), label="existing mood")
    reusable = [g for g in existing if not sep or sep not in g] or ["x"]  # overlaps, case games
    genres = data.draw(st.lists(text(sep) | st.sampled_from(reusable).map(_recase), max_size=4),
                       label="predicted genres")
    mood = data.draw(st.none() | text(sep), label="predicted mood")
    policy = Policy(data.draw(st.sampled_from(MODES)), data.draw(st.sampled_from(MODES)))

    base, base_others = bases[fmt.name]
    path = workdir / f"{next(_names)}.{fmt.ext}"
    shutil.copyfile(base, path)
    try:
        seed_tags(path, fmt, existing, existing_mood, extra=False)
        before = read_tags(path)

        plan = write_tags(path, genres, mood, policy)

        after = read_tags(path)
        assert plan.before == before
        assert plan.after == after
        assert not_ours(tag_dump(path, fmt), fmt) == base_others
        check_genres(before.genres, clean(genres), after.genres, policy.genre)
        check_mood(before.mood, next(iter(clean([mood] if mood else [])), None), after.mood,
                   policy.mood)
    finally:
        path.unlink()


def check_genres(old: list[str], predicted: list[str], new: list[str], mode: str) -> None:
    if mode == "force" and predicted:
        assert new == predicted
        return
    assert new[: len(old)] == old  # nothing that was there is lost, nor reordered
    added = new[len(old):]
    if mode == "fill" or not predicted:
        assert added == ([] if old else predicted)
    else:  # merge
        have = {g.casefold() for g in old}
        assert added == [g for g in predicted if g.casefold() not in have]


def check_mood(old: str | None, predicted: str | None, new: str | None, mode: str) -> None:
    if predicted is None:
        assert new == old
    elif mode == "force" or old is None:
        assert new == predicted
    else:
        assert new == old

