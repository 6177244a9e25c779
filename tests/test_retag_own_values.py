"""Tagging again after a model change: the values genreml wrote itself are genreml's, not the
user's, so a new model version replaces them under every policy, while values the user added
or changed stay. Real encoded files, real tiny ONNX models (v1 spelled like AllMusic, v2 with
renamed labels), the real cache, ``genreml tag`` run in-process and :class:`Tagger`."""

from __future__ import annotations

from pathlib import Path

import pytest

import onnx_models as om
from audiogen import make_audio
from cli_library import summary, tag
from tagger.beetsfields import apply_result
from tagger.cache import Cache
from tagger.model import load_models
from tagger.predict import Analyzer
from tagger.tagging import Tagger
from tagger.tags import FileTags, Policy, plan_tags, read_tags, write_tags

pytestmark = pytest.mark.timeout(120)

# Constant models: every file gets the same probabilities, so the decisions are exact.
V1_GENRES = {"Pop/Rock": 0.9, "Jazz": 0.6, "Rap": 0.05, "Stage & Screen": 0.1}
V2_GENRES = {"Pop Rock": 0.9, "Classical": 0.6, "Hip Hop": 0.05}
V1 = (["Pop/Rock", "Jazz"], "happy")   # what v1 decides
V2 = (["Pop Rock", "Classical"], "sad")  # what v2 decides


def _model(folder: Path, version: str, genres: dict[str, float],
           emotions: dict[str, float]) -> Path:
    """The one model in ``folder`` (same name and task slots, another version)."""
    return om.constant_model(folder / "genreml.onnx", genre_probs=genres,
                             emotion_probs=emotions, name="genreml", version=version)


def v1_model(folder: Path) -> Path:
    return _model(folder, "1", V1_GENRES, {"happy": 0.7, "sad": 0.3})


def v2_model(folder: Path, happy: bool = False) -> Path:
    """v2; with ``happy`` its mood decision is v1's (``happy``), its genres still v2's."""
    emotions = {"happy": 0.8, "sad": 0.2} if happy else {"happy": 0.2, "sad": 0.8}
    return _model(folder, "2", V2_GENRES, emotions)


def v3_model(folder: Path) -> Path:
    return _model(folder, "3", V2_GENRES, {"happy": 0.1, "sad": 0.9})


@pytest.fixture()
def lib(tmp_path):
    """``(music, models, cache)``: three real files (flac, mp3, m4a), model v1 in place."""
    music = tmp_path / "music"
    music.mkdir()
    make_audio(music / "ours.flac", seconds=3.0, freq=200.0)
    make_audio(music / "edited.mp3", seconds=3.0, sr=44100, freq=1500.0)
    make_audio(music / "foreign.m4a", seconds=3.0, sr=44100, freq=6000.0)
    models = tmp_path / "models"
    models.mkdir()
    v1_model(models)
    return music, models, tmp_path / "cache.db"


def _tags(path: Path) -> tuple[list[str], str | None]:
    got = read_tags(path)
    return got.genres, got.mood


def _snapshot(music: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(music.iterdir())}


def _tagged(cache: Path) -> int:
    with Cache(cache) as c:
        return c.summary()["tagged"]


def test_fill_replaces_genremls_own_values_and_keeps_the_users(lib, capsys):
    music, models, cache = lib
    # foreign.m4a holds v1's very values, but the user put them there: genreml never did
    write_tags(music / "foreign.m4a", ["Pop/Rock", "Jazz"], "happy", "force")
    rc, out, _ = tag(capsys, music, models, cache)
    assert rc == 0 and summary(out)["tagged"] == 2
    assert _tags(music / "ours.flac") == V1 and _tags(music / "edited.mp3") == V1
    assert _tagged(cache) == 2
    # the user replaces genreml's genres (the mood genreml wrote stays in the file)
    write_tags(music / "edited.mp3", ["Shoegaze"], None, "force")

    v2_model(models)
    rc, out, _ = tag(capsys, music, models, cache, "--stale-only")
    assert rc == 0
    # the file the user edited is decoded again; the others get v2 from their embeddings
    assert summary(out)["analysed"] == 1 and summary(out)["reheaded"] == 2
    assert summary(out)["tagged"] == 2
    assert _tags(music / "ours.flac") == V2
    assert _tags(music / "edited.mp3") == (["Shoegaze"], "sad")
    assert _tags(music / "foreign.m4a") == (["Pop/Rock", "Jazz"], "happy")

    # nothing new: no file is written again, whether stale-only, cached or re-analysed
    before = _snapshot(music)
    for extra in (["--stale-only"], [], ["--force"]):
        rc, out, _ = tag(capsys, music, models, cache, *extra)
        assert rc == 0 and summary(out)["tagged"] == 0, extra
    assert _snapshot(music) == before


def test_merge_drops_genremls_own_genres_and_keeps_the_users(lib, capsys):
    music, models, cache = lib
    write_tags(music / "ours.flac", ["Shoegaze"], None, "force")
    rc, _, _ = tag(capsys, music, models, cache, "--policy", "merge")
    assert rc == 0
    assert _tags(music / "ours.flac") == (["Shoegaze", "Pop/Rock", "Jazz"], "happy")
    # the user adds a genre after genreml's
    write_tags(music / "edited.mp3", ["Pop/Rock", "Jazz", "Dream Pop"], None, "force")

    v2_model(models)
    rc, _, _ = tag(capsys, music, models, cache, "--policy", "merge", "--stale-only")
    assert rc == 0
    assert _tags(music / "ours.flac") == (["Shoegaze", "Pop Rock", "Classical"], "sad")
    assert _tags(music / "edited.mp3") == (["Dream Pop", "Pop Rock", "Classical"], "sad")
    assert _tags(music / "foreign.m4a") == V2  # tagged by v1 into empty tags: all genreml's

    before = _snapshot(music)
    for extra in (["--stale-only"], ["--force"]):
        rc, out, _ = tag(capsys, music, models, cache, "--policy", "merge", *extra)
        assert rc == 0 and summary(out)["tagged"] == 0, extra
    assert _snapshot(music) == before


def test_a_dry_run_first_does_not_lose_which_values_are_genremls(lib, capsys):
    music, models, cache = lib
    tag(capsys, music, models, cache)
    v2_model(models)
    before = _snapshot(music)
    rc, out, _ = tag(capsys, music, models, cache, "--stale-only", "--dry-run")
    assert rc == 0 and summary(out)["tagged"] == 3
    assert "genre: ['Pop/Rock', 'Jazz'] -> ['Pop Rock', 'Classical']" in out
    assert _snapshot(music) == before
    rc, out, _ = tag(capsys, music, models, cache, "--stale-only")
    assert rc == 0 and summary(out)["tagged"] == 3
    assert all(_tags(p) == V2 for p in music.iterdir())


def test_values_planned_again_stay_genremls_for_the_next_model(lib, capsys):
    """v2 decides v1's mood again: the file is not rewritten, yet that mood is still
    genreml's, and v3 replaces it."""
    music, models, cache = lib
    tag(capsys, music, models, cache)
    write_tags(music / "edited.mp3", ["Shoegaze"], None, "force")
    v2_model(models, happy=True)
    tag(capsys, music, models, cache, "--stale-only")
    assert _tags(music / "edited.mp3") == (["Shoegaze"], "happy")
    assert _tagged(cache) == 3
    v3_model(models)
    rc, _, _ = tag(capsys, music, models, cache, "--stale-only")
    assert rc == 0
    assert _tags(music / "edited.mp3") == (["Shoegaze"], "sad")
    assert _tags(music / "ours.flac") == (["Pop Rock", "Classical"], "sad")


@pytest.mark.parametrize("policy", ["fill", "merge"])
def test_tagger_tag_after_a_model_change(lib, policy):
    music, models, cache = lib
    ours, foreign = music / "ours.flac", music / "foreign.m4a"
    write_tags(foreign, ["Jazz"], "happy", "force")  # the user's, equal to v1's decisions
    with Cache(cache) as db:
        v1 = Tagger(load_models(v1_model(models)), db, "fill")
        assert v1.tag(ours).plan.changed and not v1.tag(foreign).plan.changed
        v2 = Tagger(load_models(v2_model(models)), db, policy)
        assert v2.mark_stale() == 4  # two heads of two files
        outcome = v2.tag(ours)  # same backbone: v2's heads on the cached embeddings
        assert outcome.source == "reheaded" and outcome.plan.changed
        assert _tags(ours) == V2
        v2.tag(foreign)
        # not genreml's: under merge v2's genres join the user's, the mood stays
        assert _tags(foreign) == ((["Jazz"], "happy") if policy == "fill"
                                  else (["Jazz", "Pop Rock", "Classical"], "happy"))
        before = _snapshot(music)
        for reanalyse in (False, True):
            assert v2.tag(ours, reanalyse=reanalyse).status == "unchanged"
            assert v2.tag(foreign, reanalyse=reanalyse).status == "unchanged"
        assert _snapshot(music) == before


def test_files_genreml_never_wrote_keep_their_values(lib, capsys):
    """Values equal to v1's decisions that the user put there (genreml analysed the files
    with ``--no-write``, then left their tags alone under ``fill``) stay; the file genreml
    did write gets v2's."""
    music, models, cache = lib
    for name in ("ours.flac", "edited.mp3"):
        write_tags(music / name, ["Pop/Rock", "Jazz"], "happy", "force")
    rc, out, _ = tag(capsys, music, models, cache, "--no-write")
    assert rc == 0 and summary(out)["analysed"] == 3
    rc, out, _ = tag(capsys, music, models, cache)
    assert rc == 0 and summary(out)["tagged"] == 1  # foreign.m4a had no tags
    assert _tagged(cache) == 1
    v2_model(models)
    rc, out, _ = tag(capsys, music, models, cache, "--stale-only")
    assert rc == 0 and summary(out)["tagged"] == 1
    for name in ("ours.flac", "edited.mp3"):
        assert _tags(music / name) == (["Pop/Rock", "Jazz"], "happy"), name
    assert _tags(music / "foreign.m4a") == V2


def test_plan_tags_takes_out_only_genremls_own_values():
    own = FileTags(["Pop/Rock", "Jazz"], "happy")
    current = FileTags(["Shoegaze", " pop/rock "], "HAPPY")
    plan = plan_tags(current, ["Pop Rock"], "sad", "merge", own)
    assert plan.genre.old == ["Shoegaze", " pop/rock "]
    assert plan.after == FileTags(["Shoegaze", "Pop Rock"], "sad")
    # no genre decided: genreml's old genres go, the user's stay; no mood decided: the
    # mood (one value, always there once written) is left alone
    plan = plan_tags(FileTags(["Pop/Rock", "Dub"], "happy"), [], None, "force", own)
    assert plan.after == FileTags(["Dub"], "happy") and plan.holds_own
    for policy in ("fill", "merge"):
        plan = plan_tags(FileTags(["Pop/Rock"], "happy"), [], None, policy, own)
        assert plan.after == FileTags([], "happy")
    # without own values nothing is taken out
    assert not plan_tags(FileTags(["Pop/Rock"], "happy"), ["Pop Rock"], "sad", "fill").changed


@pytest.mark.parametrize("policy,genres", [
    ("fill", ["Shoegaze"]),
    ("merge", ["Shoegaze", "Pop Rock", "Classical"]),
])
def test_beets_fields_follow_the_same_rule(lib, policy, genres):
    from beets.library import Item

    music, models, _ = lib
    path = music / "ours.flac"
    ours, edited = Item(), Item(genres=["Shoegaze"])
    v1 = Analyzer(load_models(v1_model(models))).analyze(path)
    for item in (ours, edited):
        apply_result(item, v1, Policy.of(policy), {})
    assert (ours.get("genres"), ours.get("mood")) == V1
    v2 = Analyzer(load_models(v2_model(models))).analyze(path)
    for item in (ours, edited):
        apply_result(item, v2, Policy.of(policy), {})
    assert (ours.get("genres"), ours.get("mood")) == V2
    assert (edited.get("genres"), edited.get("mood")) == (genres, "sad")
    assert edited.get("genreml_genres") == V2[0]
    # the same model again: nothing changes
    assert apply_result(edited, v2, Policy.of(policy), {}) == []
    assert apply_result(ours, v2, Policy.of(policy), {}) == []


def test_a_failed_write_does_not_lose_which_values_are_genremls(lib, capsys):
    """A read-only file is not tagged by v2; once it may be written, a plain run still
    knows v1's values are genreml's (the v1 result stays until the file holds v2's)."""
    music, models, cache = lib
    tag(capsys, music, models, cache)
    v2_model(models)
    ours = music / "ours.flac"
    ours.chmod(0o444)
    rc, out, err = tag(capsys, music, models, cache, "--stale-only")
    assert rc == 1 and "read-only" in err and summary(out)["tagged"] == 2
    assert _tags(ours) == V1
    ours.chmod(0o644)
    rc, out, _ = tag(capsys, music, models, cache)
    assert rc == 0 and summary(out) == {"tagged": 1, "unchanged": 2, "analysed": 0,
                                        "reheaded": 1, "cached": 2, "skipped": 0, "failed": 0}
    assert _tags(ours) == V2


def test_a_new_model_that_decides_no_genre_takes_back_the_old_ones(lib, capsys):
    """v2 ships fewer labels: where it decides none, v1's genres (``Pop/Rock``, a separator
    name) must not stay in the file, under any policy; the user's genres do."""
    music, models, cache = lib
    rc, _, _ = tag(capsys, music, models, cache)
    assert rc == 0 and _tags(music / "ours.flac") == V1
    write_tags(music / "edited.mp3", ["Pop/Rock", "Jazz", "Dream Pop"], None, "force")
    # every v2 genre below the threshold: no genre decided
    _model(models, "2", {"Blues": 0.05, "Classical": 0.1}, {"happy": 0.2, "sad": 0.8})
    rc, out, _ = tag(capsys, music, models, cache, "--stale-only")
    assert rc == 0 and summary(out)["tagged"] == 3
    assert _tags(music / "ours.flac") == ([], "sad")
    assert _tags(music / "foreign.m4a") == ([], "sad")
    assert _tags(music / "edited.mp3") == (["Dream Pop"], "sad")
    before = _snapshot(music)
    for extra in (["--stale-only"], [], ["--force"]):
        rc, out, _ = tag(capsys, music, models, cache, *extra)
        assert rc == 0 and summary(out)["tagged"] == 0, extra
    assert _snapshot(music) == before
