"""ONNX model loading, metadata validation and providers."""

from __future__ import annotations

import json

import numpy as np
import pytest

import onnx_models as om
from tagger.features import MUSICNN_FEATURES
from tagger.model import (HeadSpec, ModelError, ModelSet, choose_providers, load_model,
                          load_models, metadata_for)


def _meta(**changes):
    heads = [HeadSpec("genre", "genre", tuple(om.GENRES), 0.2),
             HeadSpec("emotion", "emotion", tuple(om.EMOTIONS))]
    meta = metadata_for("t", "1", om.SR, 1.0, om.FEATURES, heads)
    for key, value in changes.items():
        key = "genreml." + key
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    return meta


def _build(tmp_path, **changes):
    return om.band_model(tmp_path / "m.onnx", metadata=_meta(**changes))


def test_valid_model_loads_with_its_metadata(tmp_path):
    model = load_model(om.band_model(tmp_path / "m.onnx"), device="cpu")
    assert model.sample_rate == om.SR and model.clip_seconds == 1.0
    assert model.features == om.FEATURES
    assert [h.task for h in model.heads] == ["genre", "emotion"]
    assert model.heads[0].labels == tuple(om.GENRES) and model.heads[0].threshold == 0.2
    assert len(model.identity.sha256) == 64
    out = model.run(np.zeros((70, om.FEATURES.n_frames, om.FEATURES.n_mels), np.float32))
    assert out["genre"].shape == (70, 3) and out["emotion"].shape == (70, 2)


@pytest.mark.parametrize("changes,message", [
    ({"heads": None}, "metadata missing genreml.heads"),
    ({"sample_rate": None}, "metadata missing genreml.sample_rate"),
    ({"format": "9"}, "format"),
    ({"sample_rate": "-1"}, "positive"),
    ({"features": json.dumps({"n_fft": 512, "hop": 3})}, "unknown feature settings"),
    ({"heads": "[]"}, "non-empty"),
    ({"heads": json.dumps([{"output": "genre", "task": "style", "labels": ["a"]}])}, "task"),
    ({"heads": json.dumps([{"output": "genre", "task": "genre", "labels": ["a", "b", "c"],
                            "threshold": 1.5}])}, "threshold"),
    ({"heads": json.dumps([{"output": "genre", "task": "genre", "labels": ["a", "b"],
                            "threshold": 0.2}])}, "3 values but 2 labels"),
    ({"heads": json.dumps([{"output": "genre", "task": "genre", "labels": ["a", "a", "b"],
                            "threshold": 0.2}])}, "not unique"),
    ({"heads": json.dumps([{"output": "nope", "task": "emotion", "labels": ["a", "b"]}])},
     "no output named"),
    ({"features": MUSICNN_FEATURES.to_json()}, "frames"),
])
def test_inconsistent_metadata_is_refused(tmp_path, changes, message):
    path = _build(tmp_path, **changes)
    with pytest.raises(ModelError, match=message):
        load_model(path, device="cpu")


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00junk" * 100)
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_model(path)


def test_folder_loading_and_conflicts(tmp_path):
    with pytest.raises(ModelError, match="no .onnx models"):
        load_models(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    om.band_model(tmp_path / "a" / "m1.onnx")
    om.band_model(tmp_path / "a" / "m2.onnx")
    with pytest.raises(ModelError, match="two genre models"):
        load_models(tmp_path / "a")
    om.constant_model(tmp_path / "b" / "g.onnx", genre_probs={"x": 0.5})
    om.constant_model(tmp_path / "b" / "e.onnx", emotion_probs={"calm": 0.7, "sad": 0.3},
                      sample_rate=22050, features=om.FEATURES)
    with pytest.raises(ModelError, match="22050 Hz"):
        load_models(tmp_path / "b")


def test_separate_genre_and_emotion_files_form_one_set(tmp_path):
    om.constant_model(tmp_path / "g.onnx", genre_probs={"x": 0.5})
    om.constant_model(tmp_path / "e.onnx", emotion_probs={"calm": 0.7, "sad": 0.3})
    models = load_models(tmp_path, device="cpu")
    assert isinstance(models, ModelSet)
    assert set(models.identities) == {"genre", "emotion"}


def test_providers():
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(ModelError, match="unknown device"):
        choose_providers("tpu")
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert choose_providers("cuda")[0] == "CUDAExecutionProvider"
    else:
        with pytest.raises(ModelError, match="no CUDA provider"):
            choose_providers("cuda")
