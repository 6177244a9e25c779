"""Model folders: a backbone and its heads, their metadata, the sha256 link, providers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

import onnx_models as om
from tagger.features import MUSICNN_FEATURES
from tagger.model import (EmbeddingLayout, HeadSpec, ModelError, ModelSet, backbone_metadata,
                          choose_providers, default_models_dir, file_sha256, head_metadata,
                          load_models)

HEADS = [HeadSpec("genre", "genre", tuple(om.GENRES), 0.2),
         HeadSpec("emotion", "emotion", tuple(om.EMOTIONS))]
LAYOUT = EmbeddingLayout("embedding", om.FEATURES.n_mels, ("mean",))


def _changed(meta: dict[str, str], changes: dict) -> dict[str, str]:
    meta = dict(meta)
    for key, value in changes.items():
        key = "genreml." + key
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    return meta


def _with_head_meta(tmp_path, **changes):
    backbone = om.mean_backbone(tmp_path)
    meta = _changed(head_metadata("t", "1", HEADS, file_sha256(backbone), LAYOUT), changes)
    return om.band_model(tmp_path / "m.onnx", metadata=meta)


def _with_backbone_meta(tmp_path, **changes):
    meta = _changed(backbone_metadata("mean", "1", om.SR, 1.0, om.FEATURES, LAYOUT), changes)
    backbone = om.mean_backbone(tmp_path, metadata=meta, name="b.onnx")
    heads = [(HEADS[0], om.band_weights(om.FEATURES.n_mels, 3), np.zeros(3))]
    return om.head_file(tmp_path / "m.onnx", backbone, heads)


def test_valid_model_loads_with_its_metadata(tmp_path):
    models = load_models(om.band_model(tmp_path / "m.onnx"), device="cpu")
    backbone = models.backbone
    assert backbone.sample_rate == om.SR and backbone.clip_seconds == 1.0
    assert backbone.features == om.FEATURES
    assert [h.task for h, _ in models.specs] == ["genre", "emotion"]
    head = models.specs[0][0]
    assert head.labels == tuple(om.GENRES) and head.threshold == 0.2
    assert len(models.identities["genre"].sha256) == 64
    emb = backbone.embed(np.zeros((70, om.FEATURES.n_frames, om.FEATURES.n_mels), np.float32))
    assert emb.shape == (70, om.FEATURES.n_mels)
    out = models.apply_heads(emb)
    assert out["genre"].shape == (70, 3) and out["emotion"].shape == (70, 2)


@pytest.mark.parametrize("changes,message", [
    ({"heads": None}, "metadata missing genreml.heads"),
    ({"backbone_sha256": None}, "metadata missing genreml.backbone_sha256"),
    ({"format": "9"}, "format"),
    ({"kind": "tail"}, "genreml.kind"),
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
    ({"embedding": json.dumps({"output": "embedding", "dim": 7})}, "embedding says 7"),
])
def test_inconsistent_head_metadata_is_refused(tmp_path, changes, message):
    path = _with_head_meta(tmp_path, **changes)
    with pytest.raises(ModelError, match=message):
        load_models(path, device="cpu")


@pytest.mark.parametrize("changes,message", [
    ({"sample_rate": None}, "metadata missing genreml.sample_rate"),
    ({"sample_rate": "-1"}, "positive"),
    ({"features": json.dumps({"n_fft": 512, "hop": 3})}, "unknown feature settings"),
    ({"features": MUSICNN_FEATURES.to_json()}, "frames"),
    ({"embedding": json.dumps({"output": "nope", "dim": 48})}, "no output named 'nope'"),
])
def test_inconsistent_backbone_metadata_is_refused(tmp_path, changes, message):
    path = _with_backbone_meta(tmp_path, **changes)
    with pytest.raises(ModelError, match=message):
        load_models(path, device="cpu")


def test_format_1_file_says_how_to_split_it(tmp_path):
    path = om.band_model(tmp_path / "m.onnx")
    model = onnx.load(path)
    for prop in model.metadata_props:
        if prop.key == "genreml.format":
            prop.value = "1"
    onnx.save(model, path)
    with pytest.raises(ModelError, match="format 1 .* `python -m trainer.split"):
        load_models(path, device="cpu")


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00junk" * 100)
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_models(path)


def test_head_without_its_backbone_is_refused(tmp_path):
    head = om.band_model(tmp_path / "a" / "m.onnx")
    (tmp_path / "b").mkdir()
    alone = shutil.copy(head, tmp_path / "b" / "m.onnx")
    with pytest.raises(ModelError, match=r"its backbone \(sha256 [0-9a-f]{12}\) is not in"):
        load_models(alone, device="cpu")
    # another backbone beside it (other features) is not taken for it
    om.mean_backbone(tmp_path / "b", features=om.FEATURES.__class__(
        **{**om.FEATURES.__dict__, "fmax": 7000.0}))
    with pytest.raises(ModelError, match="is not in"):
        load_models(tmp_path / "b", device="cpu")
    # given explicitly with a different backbone: refused, naming both
    other = next((tmp_path / "b").glob("backbone-*.onnx"))
    with pytest.raises(ModelError, match="trained on another backbone"):
        load_models([alone, other], device="cpu")
    # the backbone it names, under any file name, is found beside it
    shutil.copy(next((tmp_path / "a").glob("backbone-*.onnx")), tmp_path / "b" / "renamed.onnx")
    assert load_models(alone, device="cpu").backbone.path.name == "renamed.onnx"


def test_folder_loading_and_conflicts(tmp_path):
    with pytest.raises(ModelError, match="no .onnx models"):
        load_models(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    om.band_model(tmp_path / "a" / "m1.onnx")
    om.band_model(tmp_path / "a" / "m2.onnx")
    with pytest.raises(ModelError, match="two genre heads"):
        load_models(tmp_path / "a")
    om.constant_model(tmp_path / "b" / "g.onnx", genre_probs={"x": 0.5})
    om.constant_model(tmp_path / "b" / "e.onnx", emotion_probs={"calm": 0.7, "sad": 0.3},
                      sample_rate=22050, features=om.FEATURES)
    with pytest.raises(ModelError, match="different backbones"):
        load_models(tmp_path / "b")
    only_backbones = tmp_path / "c"
    om.mean_backbone(only_backbones)
    with pytest.raises(ModelError, match="no head model"):
        load_models(only_backbones)


def test_separate_genre_and_emotion_files_form_one_set(tmp_path):
    om.constant_model(tmp_path / "g.onnx", genre_probs={"x": 0.5})
    om.constant_model(tmp_path / "e.onnx", emotion_probs={"calm": 0.7, "sad": 0.3})
    models = load_models(tmp_path, device="cpu")
    assert isinstance(models, ModelSet)
    assert set(models.identities) == {"genre", "emotion"}
    assert len(list(tmp_path.glob("backbone-*.onnx"))) == 1  # both heads share it


def test_bundled_models_are_one_backbone_and_its_heads():
    models = load_models(default_models_dir(), device="cpu")
    assert models.backbone.path.name == "MSD_musicnn.onnx"
    assert models.backbone.embedding.dim == 200
    assert {h.task for h, _ in models.specs} == {"genre", "emotion"}
    assert len({m.path for m in models.heads}) == 2  # a new mood head leaves genres fresh


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
