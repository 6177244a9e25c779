"""Personal heads next to the default ones: which heads a run uses, and the union of two
genre heads (personal labels first). Real ONNX files run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnx_models as om
from tagger.model import HeadSpec, ModelError
from tagger.personal import UnionHead, load_run_models, personal_dir
from tagger.result import decide_genres


@pytest.fixture
def folders(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """``(default models, personal folder)``: the band model, and a personal genre head
    (``Mid`` and ``Custom``) and mood head on its backbone, in ``$XDG_DATA_HOME``."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    models = tmp_path / "models"
    om.band_model(models / "band.onnx")
    (backbone,) = models.glob("backbone-*.onnx")
    personal = personal_dir()
    personal.mkdir(parents=True)
    n = om.FEATURES.n_mels
    rng = np.random.default_rng(0)
    om.head_file(personal / "personal-genre.onnx", backbone,
                 [(HeadSpec("genre", "genre", ("Mid", "Custom"), 0.2),
                   rng.normal(size=(n, 2)), np.zeros(2))], name="personal")
    om.head_file(personal / "personal-mood.onnx", backbone,
                 [(HeadSpec("mood", "emotion", ("sunny", "stormy", "grey")),
                   rng.normal(size=(n, 3)), np.zeros(3))], name="personal")
    return models, personal


def test_heads_choice(folders):
    models, personal = folders
    labels = lambda ms: {spec.task: spec.labels for spec, _ in ms.specs}  # noqa: E731
    default = load_run_models(models, "default")
    assert labels(default) == {"genre": tuple(om.GENRES), "emotion": tuple(om.EMOTIONS)}
    assert labels(load_run_models(models, "auto")) == labels(default)  # --models given
    mine = load_run_models(models, "personal")
    assert labels(mine) == {"genre": ("Mid", "Custom"), "emotion": ("sunny", "stormy", "grey")}
    both = load_run_models(models, "both")
    assert labels(both) == {"genre": ("Mid", "Custom", "Low", "High"),
                            "emotion": ("sunny", "stormy", "grey")}
    assert both.preferred == ("Mid", "Custom") and default.preferred == ()
    ids = {task: i.name for task, i in both.identities.items()}
    assert ids == {"genre": "personal+test", "emotion": "personal"}
    for f in personal.glob("*.onnx"):
        f.unlink()
    with pytest.raises(ModelError, match="no personal head"):
        load_run_models(models, "both")
    with pytest.raises(ModelError, match="unknown heads"):
        load_run_models(models, "mine")


def test_union_runs_both_heads_and_keeps_the_personal_spelling(folders):
    models, _ = folders
    both = load_run_models(models, "both")
    (union,) = [m for m in both.heads if isinstance(m, UnionHead)]
    x = np.random.default_rng(1).normal(size=(5, om.FEATURES.n_mels)).astype(np.float32)
    got = union.run(x)["genre"]
    mine = union.personal.run(x)["genre"]
    theirs = union.default.run(x)["genre"]
    np.testing.assert_array_equal(got, np.concatenate([mine, theirs[:, [0, 2]]], axis=1))


def test_decisions_put_preferred_labels_first():
    labels = ["Mid", "Custom", "Low", "High"]
    probs = np.array([0.3, 0.25, 0.9, 0.1])
    assert decide_genres(labels, probs, 0.2) == [("Low", 0.9), ("Mid", 0.3), ("Custom", 0.25)]
    assert decide_genres(labels, probs, 0.2, prefer=("Mid", "Custom")) == [
        ("Mid", 0.3), ("Custom", 0.25), ("Low", 0.9)]
    assert decide_genres(labels, probs, 0.2, 2, prefer=("Mid", "Custom")) == [
        ("Mid", 0.3), ("Custom", 0.25)]


def test_a_personal_head_of_another_backbone_is_left_out_under_auto(folders, tmp_path, caplog):
    models, personal = folders
    other = tmp_path / "other"
    om.band_model(other / "band.onnx", clip_seconds=2.0)  # another backbone file
    (backbone,) = other.glob("backbone-*.onnx")
    n = om.FEATURES.n_mels
    for f in personal.glob("*.onnx"):
        f.unlink()
    om.head_file(personal / "personal-genre.onnx", backbone,
                 [(HeadSpec("genre", "genre", ("X",), 0.2), np.zeros((n, 1)), np.zeros(1))])
    with pytest.raises(ModelError, match="another backbone"):
        load_run_models(None, "both")
    ms = load_run_models(None, "auto")  # the bundled models, with a warning
    assert ms.preferred == () and "not used" in caplog.text


def test_an_allmusic_name_in_the_personal_head_covers_its_lastgenre_synonym(folders):
    models, personal = folders
    (backbone,) = models.glob("backbone-*.onnx")
    n = om.FEATURES.n_mels
    default = models.parent / "default"
    default.mkdir()
    om.head_file(default / "genre.onnx", backbone,
                 [(HeadSpec("genre", "genre", ("Hip Hop", "Blues"), 0.2), np.zeros((n, 2)),
                   np.zeros(2))])
    om.head_file(personal / "personal-genre.onnx", backbone,
                 [(HeadSpec("genre", "genre", ("Rap", "Dub Techno"), 0.2), np.zeros((n, 2)),
                   np.zeros(2))], name="personal")
    import shutil

    shutil.copy(backbone, default)
    both = load_run_models(default, "both")
    assert {s.task: s.labels for s, _ in both.specs}["genre"] == ("Rap", "Dub Techno", "Blues")
