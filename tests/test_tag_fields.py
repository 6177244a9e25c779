"""Reading any named field, and what genreml's own writes left in a file.

Real files encoded by real codecs, tagged with mutagen the way other taggers tag them.
"""

from __future__ import annotations

import pytest
from mutagen.flac import FLAC
from mutagen.id3 import ID3, TCON, TPE1, TXXX
from mutagen.mp4 import MP4, MP4FreeForm

from audiogen import make_audio
from cli_library import make_library, tag
from tagger.cache import Cache
from tagger.cli_options import HEAD_CHOICES as CLI_HEAD_CHOICES
from tagger.personal import HEAD_CHOICES
from tagger.tags import FileTags, TagError, plan_tags
from tagger.tags.fields import read_fields


def test_fields_by_name_in_every_container(tmp_path):
    flac = make_audio(tmp_path / "a.flac", seconds=1.0)
    f = FLAC(flac)
    f["style"] = ["Dub Techno", "Ambient"]
    f["ARTIST"] = "Someone"
    f.save()
    mp3 = make_audio(tmp_path / "b.mp3", seconds=1.0, sr=44100)
    tags = ID3()
    tags.add(TXXX(encoding=3, desc="Style", text=["Post-Rock"]))
    tags.add(TCON(encoding=3, text=["(17)", "Shoegaze"]))
    tags.add(TPE1(encoding=3, text=["Band"]))
    tags.save(mp3)
    m4a = make_audio(tmp_path / "c.m4a", seconds=1.0, sr=44100)
    m = MP4(m4a)
    m["----:com.apple.iTunes:STYLE"] = [MP4FreeForm(b"Baroque")]
    m["\xa9ART"] = ["Composer"]
    m.save()
    assert read_fields(flac, ["STYLE", "artist", "album"]) == {
        "STYLE": ["Dub Techno", "Ambient"], "artist": ["Someone"], "album": []}
    assert read_fields(mp3, ["TXXX:STYLE", "style", "genre", "artist"]) == {
        "TXXX:STYLE": ["Post-Rock"], "style": ["Post-Rock"], "genre": ["Rock", "Shoegaze"],
        "artist": ["Band"]}
    assert read_fields(m4a, ["STYLE", "artist"]) == {"STYLE": ["Baroque"],
                                                     "artist": ["Composer"]}
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\0" * 10)
    with pytest.raises(TagError, match="bad.mp3"):
        read_fields(bad, ["genre"])


def test_plan_knows_which_values_are_genremls():
    user = FileTags(["Shoegaze"], None)
    plan = plan_tags(user, ["Rock", "Shoegaze"], "calm", "merge")
    assert plan.ours == FileTags(["Rock"], "calm")  # the user's Shoegaze stays the user's
    plan = plan_tags(FileTags(["Rock"], "calm"), ["Jazz"], "sad", "fill",
                     own=FileTags(["Rock"], "calm"))
    assert plan.after == FileTags(["Jazz"], "sad") and plan.ours == FileTags(["Jazz"], "sad")
    assert plan_tags(user, ["Jazz"], None, "fill").ours == FileTags([], None)


def test_the_cache_keeps_what_genreml_wrote_through_retagging(tmp_path, capsys):
    music, models, cache = make_library(tmp_path, m4a=False)
    low = music / "low.flac"
    f = FLAC(low)
    f["GENRE"] = ["My Own"]
    f.save()
    assert tag(capsys, music, models, cache, "--policy", "merge")[0] == 0
    with Cache(cache) as c:
        first = c.written([low, music / "high.mp3"])
    assert "My Own" not in first[str(low)]["genres"] and first[str(low)]["genres"]
    assert first[str(low)]["mood"]
    # a second run with other settings (results from the cache, no "own" to plan with)
    assert tag(capsys, music, models, cache, "--policy", "merge", "--max-genres", "1")[0] == 0
    with Cache(cache) as c:
        assert c.written([low]) == {str(low): first[str(low)]}


def test_head_choices_are_the_same_in_the_cli():
    assert CLI_HEAD_CHOICES == HEAD_CHOICES
