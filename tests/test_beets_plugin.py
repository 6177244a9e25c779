"""The beets plugin end to end: a real temporary beets library, real encoded audio, a real
tiny ONNX model (``band_model``: a 200 Hz tone is Low / calm, a 6 kHz tone High / tense) and a
real genreml cache. beets' own test helpers isolate its global configuration and plugins."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import ClassVar

import pytest
from audiogen import make_audio
from beets_helper import GenremlBeetsHelper
from mediafile import MediaFile
from mutagen.id3 import ID3
from onnx_models import band_model, constant_model

from beets.dbcore import types
from beets.library import Item
from beets.ui import UserError
from beets.util import cached_classproperty
from tagger.tags import read_tags

pytestmark = pytest.mark.timeout(120)

TRACKS = {  # title -> (tone Hz, extension)
    "low": (200.0, "mp3"),
    "high": (6000.0, "flac"),
}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Models folders and tagged source files, made once per module (tests copy them)."""
    root = tmp_path_factory.mktemp("genreml-beets")
    out: dict[str, Path] = {}
    band = root / "band"
    band.mkdir()
    band_model(band / "band.onnx")
    out["band"] = band
    odd = root / "odd"
    odd.mkdir()
    constant_model(odd / "odd.onnx", genre_probs={"Pop/Rock": 0.9, "R&B": 0.3},
                   emotion_probs={"Happy Hour": 0.8, "sad": 0.2})
    out["odd"] = odd
    (root / "empty").mkdir()
    out["empty"] = root / "empty"
    for title, (freq, ext) in TRACKS.items():
        path = make_audio(root / f"{title}.{ext}", seconds=3.0, sr=44100, freq=freq)
        _set_tags(path, title)
        out[title] = path
    out["silent"] = make_audio(root / "silent.mp3", seconds=3.0, sr=44100, kind="silence")
    _set_tags(out["silent"], "silent")
    return out


def _set_tags(path: Path, title: str, artist: str = "Band") -> None:
    media = MediaFile(path)
    media.update({"title": title, "artist": artist, "album": "Tones"})
    media.save()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class GenremlHelper(GenremlBeetsHelper):
    @pytest.fixture(autouse=True)
    def _genreml(self, _beets: None, assets: dict[str, Path]) -> None:
        self.assets = assets
        self.configure(models=str(assets["band"]))

    def add(self, title: str, **fields: object) -> Item:
        """A library item for a copy of the ``title`` source file."""
        src = self.assets[title]
        dst = self.lib_path / f"{title}-{len(list(self.lib.items()))}{src.suffix}"
        shutil.copy(src, dst)
        item = Item.from_path(dst)
        item.update(fields)
        item.add(self.lib)
        return item


class TestTagCommand(GenremlHelper):
    def test_stores_fields_typed_and_prints_a_line_per_item(self) -> None:
        low, high = self.add("low"), self.add("high")
        out = self.run_genreml("genreml")
        assert "Band - Tones - low: Low 1.00 | calm 1.00 (analysed)" in out
        assert "Band - Tones - high: High 0." in out and "| tense 1.00 (analysed)" in out

        low, high = self.fresh(low), self.fresh(high)
        assert low.genres == ["Low"] and low["mood"] == "calm"
        assert high.genres == ["High"] and high["mood"] == "tense"
        assert low["genreml_genres"] == ["Low"] and high["genreml_genres"] == ["High"]
        assert low["genreml_mood"] == "calm" and high["genreml_mood"] == "tense"
        assert low["genreml_model"].startswith("test@1:")
        for item in (low, high):
            for field in ("genre_low", "genre_mid", "genre_high", "mood_calm", "mood_tense"):
                assert isinstance(item[field], float), field
                assert 0.0 <= item[field] <= 1.0
        assert low["genre_low"] > 0.9 and low["mood_calm"] > 0.9
        assert high["genre_high"] > 0.3 > high["genre_low"] and high["mood_tense"] > 0.9
        assert Item._types["mood_calm"] is Item._types["genre_high"]
        assert isinstance(Item._types["mood_calm"], types.Float)

    def test_range_queries(self) -> None:
        low, high = self.add("low"), self.add("high")
        self.run_genreml("genreml")
        ids = lambda query: {i.id for i in self.lib.items(query)}  # noqa: E731
        assert ids("mood_calm:0.7..") == {low.id}
        assert ids("mood_tense:0.7..") == {high.id}
        assert ids("genre_high:0.3..") == {high.id}
        assert ids("genre_low:0.5.. mood:calm") == {low.id}
        assert ids("genre_low:0.5.. mood:tense") == set()
        assert ids("genreml_genres:High") == {high.id}
        out = self.run_genreml("ls", "-f", "$title $mood_calm", "mood_calm:0.7..")
        assert out.splitlines() == ["low 1.000"]

    def test_cache_first_force_reanalyses_and_writes_keep_the_cache_valid(self) -> None:
        self.add("low")
        assert "(analysed)" in self.run_genreml("genreml")
        assert "(cache)" in self.run_genreml("genreml")
        assert "(analysed)" in self.run_genreml("genreml", "--reanalyse")
        assert "(cache)" in self.run_genreml("genreml", "--policy", "force", "-w")
        assert "(cache)" in self.run_genreml("genreml")  # our own write is not a new file

    def test_force_overwrites_existing_values_as_in_lastgenre(self) -> None:
        item = self.add("low", genres=["Jazz"], mood="happy")
        self.run_genreml("genreml")
        assert (self.fresh(item).genres, self.fresh(item)["mood"]) == (["Jazz"], "happy")
        out = self.run_genreml("genreml", "-f")
        assert "(cache)" in out  # overwriting needs no new analysis
        assert (self.fresh(item).genres, self.fresh(item)["mood"]) == (["Low"], "calm")
        with pytest.raises(UserError, match="--force"):
            self.run_command("genreml", "-f", "--policy", "merge")

    def test_pretend_changes_neither_library_nor_file(self) -> None:
        item = self.add("low")
        before = _digest(item.filepath)
        out = self.run_genreml("genreml", "-p", "-w")
        assert "Band - Tones - low: Low 1.00 | calm 1.00" in out
        assert "genres" in out and "mood" in out and "calm" in out  # the would-be changes
        item = self.fresh(item)
        assert item.genres == []
        assert not {"mood", "genreml_genres", "genreml_model", "mood_calm"} & set(item.keys())
        assert _digest(item.filepath) == before

    @pytest.mark.parametrize(("config", "args", "genres", "mood"), [
        (None, (), ["Jazz"], "happy"),  # default: fill keeps curated values
        ("merge", (), ["Jazz", "Low"], "happy"),
        (None, ("--policy", "merge"), ["Jazz", "Low"], "happy"),
        ("fill", ("--policy", "force"), ["Low"], "calm"),
    ])
    def test_policy_on_curated_genres_and_mood(self, config: str | None, args: tuple[str, ...],
                                               genres: list[str], mood: str) -> None:
        if config:
            self.configure(models=str(self.assets["band"]), policy=config)
        item = self.add("low", genres=["Jazz"], mood="happy")
        self.run_genreml("genreml", *args)
        item = self.fresh(item)
        assert item.genres == genres
        assert item["mood"] == mood
        assert item["genreml_genres"] == ["Low"]  # always the model's
        assert item["genreml_mood"] == "calm"

    def test_bad_file_is_logged_and_the_others_are_tagged(self, caplog: pytest.LogCaptureFixture
                                                          ) -> None:
        low = self.add("low")
        junk = self.lib_path / "junk.mp3"
        junk.write_bytes(b"ID3 this is not audio" * 50)
        bad = Item(path=junk, title="junk", artist="Band")
        bad.add(self.lib)
        gone = Item(path=self.lib_path / "gone.flac", title="gone", artist="Band")
        gone.add(self.lib)
        high = self.add("high")
        with caplog.at_level(logging.ERROR, logger="beets"):
            out = self.run_genreml("genreml")
        assert "junk.mp3" in caplog.text and "gone.flac" in caplog.text
        assert "low: Low" in out and "high: High" in out
        assert self.fresh(low).genres == ["Low"] and self.fresh(high).genres == ["High"]
        assert "genreml_genres" not in self.fresh(bad)
        assert "genreml_genres" not in self.fresh(gone)


class TestWrite(GenremlHelper):
    def test_write_puts_genres_and_mood_into_the_files(self) -> None:
        low, high = self.add("low"), self.add("high")
        self.run_genreml("genreml", "-w")
        low_tags, high_tags = read_tags(low.filepath), read_tags(high.filepath)
        assert (low_tags.genres, low_tags.mood) == (["Low"], "calm")
        assert (high_tags.genres, high_tags.mood) == (["High"], "tense")
        frames = ID3(low.filepath)
        assert frames.getall("TMOO")[0].text == ["calm"] and not frames.getall("TXXX:MOOD")
        assert MediaFile(high.filepath).title == "high"  # beets wrote its fields too
        # the library and the files agree: beets reads back what it wrote
        assert Item.from_path(low.filepath)["mood"] == "calm"
        from tagger.cache import Cache

        with Cache(self.cache_path()) as cache:  # genreml's own values: never learned from
            assert cache.written([low.filepath]) == {
                str(low.filepath): {"genres": ["Low"], "mood": "calm"}}
        assert self.fresh(low)["genreml_written_genres"] == ["Low"]

    def test_id3v23_gets_txxx_mood(self) -> None:
        self.config["id3v23"] = True
        item = self.add("low")
        self.run_genreml("genreml", "-w")
        frames = ID3(item.filepath)
        assert frames.version[:2] == (2, 3)
        assert not frames.getall("TMOO")
        assert frames.getall("TXXX:MOOD")[0].text == ["calm"]
        assert read_tags(item.filepath).mood == "calm"

    @pytest.mark.parametrize(("import_write", "plugin_write", "args", "written"), [
        (False, None, (), False),
        (True, None, (), True),
        (False, None, ("-w",), True),
        (True, None, ("-W",), False),
        (False, True, (), True),
    ])
    def test_write_follows_import_write_unless_told(
            self, import_write: bool, plugin_write: bool | None, args: tuple[str, ...],
            written: bool) -> None:
        self.config["import"]["write"] = import_write
        self.configure(models=str(self.assets["band"]), write=plugin_write)
        item = self.add("high")
        before = _digest(item.filepath)
        self.run_genreml("genreml", *args)
        assert self.fresh(item).genres == ["High"]  # the library is updated either way
        assert (_digest(item.filepath) != before) is written
        assert read_tags(item.filepath).genres == (["High"] if written else [])


class TestImport(GenremlHelper):
    def _import(self) -> list[Item]:
        folder = self.import_path / "album"
        folder.mkdir()
        for title in ("low", "high", "silent"):
            shutil.copy(self.assets[title], folder / self.assets[title].name)
        self.setup_importer(autotag=False)
        self.importer.run()
        return list(self.lib.items())

    def test_import_stage_tags_new_items_and_survives_a_bad_file(
            self, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.INFO, logger="beets"):
            items = {i.title: i for i in self._import()}
        assert set(items) == {"low", "high", "silent"}  # the silent file was imported too
        assert items["low"].genres == ["Low"] and items["low"]["mood"] == "calm"
        assert items["high"].genres == ["High"] and items["high"]["mood_tense"] > 0.9
        assert "genreml_genres" not in items["silent"]
        assert "silent.mp3: skipped: silent" in caplog.text
        assert {i.title for i in self.lib.items("mood_calm:0.7..")} == {"low"}

    def test_import_analyses_the_copy_in_the_library_not_the_source(self) -> None:
        from tagger.cache import Cache

        self.config["import"]["copy"] = True
        self.config["import"]["write"] = True
        items = {i.title: i for i in self._import()}
        low = items["low"]
        source = self.import_path / "album" / self.assets["low"].name
        assert low.filepath != source and str(self.lib_path) in str(low.filepath)
        with Cache(self.temp_path / "cache.db") as cache:
            assert cache.info(low.filepath) is not None  # cached where the file stays
            assert cache.info(source) is None
        assert read_tags(low.filepath).genres == ["Low"]  # import.write: the copy is tagged
        assert read_tags(source).genres == []  # the source is left alone
        assert low["mood"] == "calm"

    def test_auto_off_leaves_imports_alone(self) -> None:
        self.configure(models=str(self.assets["band"]), auto=False)
        items = self._import()
        assert len(items) == 3
        assert not any("genreml_genres" in i for i in items)

    def test_broken_models_never_block_an_import(self, caplog: pytest.LogCaptureFixture) -> None:
        self.configure(models=str(self.assets["empty"]))
        with caplog.at_level(logging.ERROR, logger="beets"):
            items = self._import()
        assert len(items) == 3
        assert "no .onnx models" in caplog.text


class TestPlaylist(GenremlHelper):
    def _library(self) -> tuple[Item, Item, Item]:
        low, high = self.add("low"), self.add("high")
        other = self.add("low", artist="Other")
        self.run_genreml("genreml")
        return self.fresh(low), self.fresh(high), self.fresh(other)

    @staticmethod
    def _entry(item: Item) -> list[str]:
        return [f"#EXTINF:3,{item.artist} - {item.title}", str(item.filepath)]

    def test_ordered_by_probability_with_filters(self, tmp_path: Path) -> None:
        low, high, other = self._library()
        out = self.run_genreml("genreml-playlist", "--mood", "tense", "--min-prob", "0",
                               "artist:Band")
        assert out.splitlines() == ["#EXTM3U", *self._entry(high), *self._entry(low)]
        out = self.run_genreml("genreml-playlist", "--mood", "calm", "artist:Band")
        assert out.splitlines() == ["#EXTM3U", *self._entry(low)]  # default min-prob 0.5
        out = self.run_genreml("genreml-playlist", "--mood", "tense", "--min-prob", "0",
                               "--genre", "high")
        assert out.splitlines() == ["#EXTM3U", *self._entry(high)]
        out = self.run_genreml("genreml-playlist", "--genre", "Low", "--limit", "1")
        assert len(out.splitlines()) == 3 and out.splitlines()[1].startswith("#EXTINF:3,")

        target = tmp_path / "calm.m3u"
        out = self.run_genreml("genreml-playlist", "--mood", "calm", "-o", str(target))
        assert out == ""
        lines = target.read_text(encoding="utf-8").splitlines()
        assert lines[0] == "#EXTM3U" and len(lines) == 5
        assert {lines[2], lines[4]} == {str(low.filepath), str(other.filepath)}

    def test_labels_match_whatever_the_case(self) -> None:
        low, high, _ = self._library()
        out = self.run_genreml("genreml-playlist", "--mood", "CALM", "artist:Band")
        assert out.splitlines() == ["#EXTM3U", *self._entry(low)]
        out = self.run_genreml("genreml-playlist", "--mood", "Tense", "--min-prob", "0",
                               "--genre", "HIGH")
        assert out.splitlines() == ["#EXTM3U", *self._entry(high)]

    def test_a_line_break_in_a_path_cannot_inject_entries(self) -> None:
        low = self.add("low")
        evil = low.filepath.with_name("calm\n#EXTINF:1,injected\nevil.mp3")
        shutil.copy(low.filepath, evil)
        bad = Item.from_path(evil)
        bad.add(self.lib)
        self.run_genreml("genreml")
        out = self.run_genreml("genreml-playlist", "--mood", "calm")
        assert out.splitlines() == ["#EXTM3U", *self._entry(self.fresh(low))]

    def test_unknown_label_names_the_known_ones(self) -> None:
        self._library()
        with pytest.raises(UserError, match="calm, tense"):
            self.run_command("genreml-playlist", "--mood", "sleepy")
        with pytest.raises(UserError, match="--mood"):
            self.run_command("genreml-playlist")


class TestModels(GenremlHelper):
    def test_labels_are_slugified_into_typed_fields(self) -> None:
        self.configure(models=str(self.assets["odd"]))
        item = self.add("low")
        self.run_genreml("genreml")
        item = self.fresh(item)
        assert item["genre_pop_rock"] == pytest.approx(0.9, abs=1e-3)
        assert item["genre_r_b"] == pytest.approx(0.3, abs=1e-3)
        assert item["mood_happy_hour"] == pytest.approx(0.8, abs=1e-3)
        assert item.genres == ["Pop/Rock", "R&B"] and item["mood"] == "Happy Hour"
        assert {i.id for i in self.lib.items("genre_pop_rock:0.8..")} == {item.id}
        assert not list(self.lib.items("genre_r_b:0.5.."))
        assert {"genre_pop_rock", "genre_r_b", "mood_happy_hour", "mood_sad"} <= set(Item._types)

    def test_without_models_beets_still_runs_and_the_command_says_why(self) -> None:
        self.configure(models=str(self.assets["empty"]))
        item = self.add("low")
        assert list(self.lib.items("title:low")) and "mood_calm" not in Item._types
        with pytest.raises(UserError, match="no .onnx models"):
            self.run_command("genreml")
        assert "genreml_genres" not in self.fresh(item)


class TestDefaultCache(GenremlHelper):
    db_on_disk: ClassVar[bool] = True

    def test_the_default_cache_is_the_clis_and_the_daemons(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        from tagger.cache import Cache, default_cache_path

        monkeypatch.setenv("XDG_DATA_HOME", str(self.temp_path / "xdg"))
        self.configure(models=str(self.assets["band"]), cache=None)
        item = self.add("low")
        self.run_genreml("genreml")
        library = Path(self.config["library"].as_filename())
        assert not (library.parent / "genreml.db").exists()
        assert default_cache_path() == self.temp_path / "xdg" / "genreml" / "cache.db"
        with Cache(default_cache_path()) as cache:
            assert cache.info(item.filepath) is not None
        # what the CLI cached is not analysed again by beets
        other = self.add("high")
        from tagger.cli import main

        assert main(["tag", "--no-write", "--models", str(self.assets["band"]),
                     str(other.filepath)]) == 0
        assert "high: High" in self.run_genreml("genreml", "title:high")
        assert "(cache)" in self.run_genreml("genreml", "title:high")


class TestV23Separator(GenremlHelper):
    def test_v23_sep_and_safe_writer_are_used(self) -> None:
        self.config["id3v23"] = True
        self.configure(models=str(self.assets["odd"]), v23_sep=" | ")
        item = self.add("low")
        self.run_genreml("genreml", "-w")
        frames = ID3(item.filepath)
        assert frames.version[:2] == (2, 3)
        assert frames.getall("TCON")[0].text == ["Pop/Rock | R&B"]
        assert read_tags(item.filepath, v23_sep=" | ").genres == ["Pop/Rock", "R&B"]
        assert self.fresh(item).genres == ["Pop/Rock", "R&B"]


class TestWatchDaemonSide(GenremlHelper):
    def test_daemon_maps_results_with_its_own_models_and_loads_no_second_set(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``genreml watch --beets``: the item gets the fields ``beet genreml`` sets, from the
        daemon's models; the plugin beets loads in the daemon's process types the fields
        with those very models and loads none of its own."""
        from beets.plugins import find_plugins
        from tagger import beetsfields, model, personal
        from tagger.cache import Cache
        from tagger.tagging import Tagger
        from tagger.watch import BeetsLibrary

        models = model.load_models(self.assets["band"], device="cpu")
        item = self.add("low", genres=["Ambient"])
        # The daemon's process: beets loads its configured plugins once the models are shared.
        self.unload_plugins()
        self.config["plugins"] = [self.plugin]
        loads: list[object] = []
        real_load = model.load_models
        monkeypatch.setattr(model, "load_models",
                            lambda *a, **k: loads.append(a) or real_load(*a, **k))
        monkeypatch.setattr(personal, "load_run_models",
                            lambda *a, **k: loads.append(a) or real_load(*a[:1], **k))
        try:
            beets = BeetsLibrary(models, "fill", library=self.lib)
            cached_classproperty.cache.clear()  # Item._types: the plugin's fields, asked anew
            with Cache(self.temp_path / "cache.db") as cache:
                outcome = Tagger(models, cache, write=False).tag(item.filepath)
                assert beets.update(outcome)
            assert isinstance(Item._types["mood_calm"], types.Float)
            (plugin,) = [p for p in find_plugins() if p.name == "genreml"]
            assert plugin.state.models() is models
        finally:
            beetsfields.share_models(None)
        assert loads == []  # one model set in the process: the daemon's
        fresh = self.fresh(item)
        assert fresh.genres == ["Ambient"]  # fill: the curated genres stay
        assert fresh["genreml_genres"] == ["Low"] and fresh["mood"] == "calm"
        assert fresh["genreml_mood"] == "calm" and fresh["mood_calm"] > 0.9
        assert fresh["genreml_model"].startswith("test@1:")
