"""Property test: random existing tags meet random predictions under random policies, on
real files of every container.

Under ``fill`` and ``merge`` no value already in the file is ever lost; under ``force`` the
file ends up holding exactly the (cleaned) prediction; whatever is not ours is untouched (an
ID3v1 block byte for byte); what :func:`write_tags` reports is what the file holds
afterwards; and every policy is idempotent: a second run with the same prediction plans no
change and leaves the file's bytes and mtime as they were (``merge`` does not grow the field).
Genre names include the characters separators are made of (``/``, ``;``, ``,``) and
non-ASCII text.

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
from test_tags import FORMATS, Fmt, make_raw, not_ours, seed_tags, snapshot, tag_dump

from tagger.tags import MODES, V23_SEP, Policy, read_tags, write_tags

# Any printable text: no control characters (NUL separates ID3 values; none belongs in a
# genre name) and no lone surrogates (not encodable in any tag format); and often text made
# of separator characters, spaces and non-ASCII letters.
TEXT = (st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12)
        | st.text("ab/;, éß♫", min_size=1, max_size=8))
# An mp3 whose ID3v2.4 tag is followed by an ID3v1 block (Latin-1 text, genre 17).
MP3_V1 = Fmt("mp3-v1", "mp3", "id3", 4)
V1_BLOCK = (b"TAG" + "Café".encode("latin-1").ljust(30, b"\0") + b"\0" * 94 + bytes([17]))
ALL_FORMATS = [*FORMATS, MP3_V1]


def text() -> st.SearchStrategy[str]:
    return TEXT


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
    for fmt in ALL_FORMATS:
        path = make_raw(folder, fmt, seconds=0.5)
        seed_tags(path, fmt, [], None)
        if fmt is MP3_V1:
            with open(path, "ab") as f:
                f.write(V1_BLOCK)
        out[fmt.name] = (path, not_ours(tag_dump(path, fmt), fmt))
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("examples")


_names = itertools.count()


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=str)
@settings(settings.get_profile("genreml"))
@given(data=st.data())
def test_policies_on_real_files(fmt: Fmt, bases, workdir: Path, data: st.DataObject) -> None:
    existing = data.draw(st.lists(text(), max_size=4), label="existing genres")
    existing_mood = data.draw(st.none() | text(), label="existing mood")
    reusable = existing or ["x"]  # overlaps, case games
    genres = data.draw(st.lists(text() | st.sampled_from(reusable).map(_recase), max_size=4),
                       label="predicted genres")
    mood = data.draw(st.none() | text(), label="predicted mood")
    policy = Policy(data.draw(st.sampled_from(MODES)), data.draw(st.sampled_from(MODES)))

    base, base_others = bases[fmt.name]
    path = workdir / f"{next(_names)}.{fmt.ext}"
    shutil.copyfile(base, path)
    try:
        seed_tags(path, fmt, existing, existing_mood, extra=False)
        if fmt is MP3_V1:  # mutagen's save in seed_tags rewrote the v1 block from v2
            with open(path, "r+b") as f:
                f.seek(-128, 2)
                f.write(V1_BLOCK)
        before = read_tags(path)

        plan = write_tags(path, genres, mood, policy)

        after = read_tags(path)
        assert plan.before == before
        assert plan.after == after
        assert not_ours(tag_dump(path, fmt), fmt) == base_others
        if fmt is MP3_V1:
            assert path.read_bytes()[-128:] == V1_BLOCK
        # A v2.3 tag holds one string: a predicted genre holding its separator is two genres.
        stored = [p for g in genres for p in g.split(V23_SEP)] if fmt.id3_version == 3 else genres
        check_genres(before.genres, clean(stored), after.genres, policy.genre)
        check_mood(before.mood, next(iter(clean([mood] if mood else [])), None), after.mood,
                   policy.mood)

        once = snapshot(path)
        again = write_tags(path, genres, mood, policy)
        assert not again.changed and again.after == after
        assert snapshot(path) == once
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

