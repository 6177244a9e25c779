"""``beet genreml-learn``: a personal head from a beets library's own labels, end to end.

A real temporary beets library over a generated library whose genres are audible
(tests/learn_library.py: a low drone, a high chime, broadband hiss; six artists each, the first
four tagged), a small real ONNX model (``band_model``), scikit-learn, skl2onnx and the real
genreml cache. What is checked: the learned genres tag the untagged items well above chance
while curated ``genres`` stay; values genreml wrote itself (``genreml_written_*``, or for an
item tagged before that record ``genreml_genres``) are never learned from; the same process
picks the new head up; mistakes are one-line errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from beets_helper import GenremlBeetsHelper
from learn_library import Track, make_learn_library
from onnx_models import band_model, constant_model

from beets.library import Item
from beets.ui import UserError
from tagger.learn.examples import LabelSource, truth_of_item

pytestmark = pytest.mark.timeout(180)

GENRES = ("Chime", "Drone", "Hiss")


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The generated tracks (never written to: ``import.write`` is off), the models and a
    results cache shared by the module's tests (what one analysed, the next finds)."""
    root = tmp_path_factory.mktemp("genreml-beets-learn")
    band, const = root / "band", root / "const"
    band_model(band / "band.onnx")
    # genreml's own output on the untagged items: a genre no sound predicts
    constant_model(const / "const.onnx", genre_probs={"Bogus": 0.9})
    return {"tracks": make_learn_library(root / "music", moods=True), "band": band,
            "const": const, "cache": root / "cache.db"}


def head_labels(path: Path) -> list[str]:
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    (spec,) = json.loads(meta["genreml.heads"])
    return sorted(spec["labels"])


class LearnHelper(GenremlBeetsHelper):
    @pytest.fixture(autouse=True)
    def _genreml(self, _beets: None, assets: dict[str, object],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("XDG_DATA_HOME", str(self.temp_path / "xdg"))
        self.assets = assets
        self.personal = self.temp_path / "xdg" / "genreml" / "personal"
        self.configure(models=str(assets["band"]))

    def cache_path(self) -> Path:
        return self.assets["cache"]  # type: ignore[return-value]

    def add_tracks(self, tracks: list[Track]) -> dict[int, Track]:
        """Library items for the tracks (read from their tags); item id -> track."""
        out = {}
        for track in tracks:
            item = Item.from_path(track.path)
            item.add(self.lib)
            out[item.id] = track
        return out


class TestLearn(LearnHelper):
    def test_learned_genres_tag_the_untagged_items_never_from_genremls_own(self) -> None:
        library = self.add_tracks(self.assets["tracks"])  # type: ignore[arg-type]
        untagged = [i for i, t in library.items() if not t.tagged]
        curated = {i: self.fresh(i).genres for i, t in library.items() if t.tagged}
        assert len(untagged) == 18 and all(curated.values())
        # genreml's own values: "Bogus" on every untagged item
        self.configure(models=str(self.assets["const"]))
        self.run_genreml("genreml")
        for i in untagged:
            assert self.fresh(i).genres == ["Bogus"]
            assert self.fresh(i)["genreml_written_genres"] == ["Bogus"]
        assert all(self.fresh(i)["genreml_written_genres"] == [] for i in curated)
        # items tagged by a genreml that kept no record: their genreml_genres count as its own
        for i in untagged[::2]:
            item = self.fresh(i)
            del item["genreml_written_genres"], item["genreml_written_mood"]
            item.store()

        # no personal head yet: `heads: both` still learns (with the default heads)
        self.configure(models=str(self.assets["band"]), heads="both")
        out = self.run_genreml("genreml-learn", "--min-tracks", "6")
        rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
        for genre in GENRES:
            assert rows[genre].rstrip().endswith("learned"), out
        assert "Bogus" not in out and "18 tracks without a label" in out
        assert "18 labels genreml wrote left out" in out
        head = self.personal / "personal-genre.onnx"
        assert f"head: {head}" in out
        assert head_labels(head) == list(GENRES)

        # the same process tags with the new head: no reconfiguration
        self.run_genreml("genreml")
        right = 0
        for i in untagged:
            genres = self.fresh(i).genres
            assert "Bogus" not in genres  # genreml's own old value is taken back
            assert genres and genres[0] in GENRES, genres
            right += genres[0] == library[i].genre
        assert right >= 15, f"{right} of 18 untagged items right (chance: 6)"
        assert {i: self.fresh(i).genres for i in curated} == curated
        assert isinstance(self.fresh(untagged[0])["genre_drone"], float)  # a typed field now

    def test_mood_head_from_the_mood_field(self) -> None:
        library = self.add_tracks(self.assets["tracks"])  # type: ignore[arg-type]
        out = self.run_genreml("genreml-learn", "--task", "mood", "--min-tracks", "6",
                               "--out", "moods")
        assert "accuracy" in out, out
        assert head_labels(self.personal / "moods-mood.onnx") == ["calm", "tense"]
        assert not (self.personal / "personal-genre.onnx").exists()
        self.configure(models=str(self.assets["band"]), heads="personal")
        self.run_genreml("genreml")
        untagged = [i for i, t in library.items() if not t.tagged]
        want = {i: "tense" if library[i].genre == "Hiss" else "calm" for i in untagged}
        right = sum(self.fresh(i)["mood"] == want[i] for i in untagged)
        assert right >= 15, f"{right} of 18 untagged items' moods right"

    def test_mistakes_are_one_line_errors(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.add_tracks(self.assets["tracks"][:3])  # type: ignore[index]
        with pytest.raises(UserError, match="all by one artist"):
            self.run_command("genreml-learn")
        with pytest.raises(UserError, match="--min-precision"):
            self.run_command("genreml-learn", "--min-precision", "0")
        self.configure(models=str(self.assets["band"]), heads="personal")
        with pytest.raises(UserError, match="no personal head"):
            self.run_command("genreml")
        import importlib.util

        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "skl2onnx" else real(name, *a))
        with pytest.raises(UserError, match=r"pip install '\.\[learn\]'"):
            self.run_command("genreml-learn")


@pytest.mark.parametrize(("fields", "task", "values", "group"), [
    ({"genres": ["Jazz", "Low"], "genreml_written_genres": ["Low"], "genreml_model": "m",
      "genreml_genres": ["Low"], "artist": "A", "album": "X"}, "genre", ["Jazz"], "artist:a"),
    # tagged before the record was kept: genreml_genres count as written
    ({"genres": ["Jazz", "Low"], "genreml_model": "m", "genreml_genres": ["Low"],
      "albumartist": "B"}, "genre", ["Jazz"], "albumartist:b"),
    ({"genres": ["Rock; Pop"], "album": "X"}, "genre", ["Rock", "Pop"], "album:x"),
    ({"mood": "calm", "genreml_written_mood": "calm", "genreml_written_genres": []},
     "emotion", [], "folder:/music"),
    ({"mood": "calm", "genreml_written_mood": "", "genreml_model": "m",
      "genreml_mood": "calm"}, "emotion", ["calm"], "folder:/music"),
])
def test_truth_of_an_item(fields: dict[str, object], task: str, values: list[str],
                          group: str) -> None:
    item = {"path": b"/music/a.flac", **fields}
    truth = truth_of_item(item, LabelSource(task))
    assert (truth.path, truth.values, truth.group) == ("/music/a.flac", values, group)
