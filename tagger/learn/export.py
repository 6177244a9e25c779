"""A learned head as a genreml head file (skl2onnx), and the personal folder it is kept in."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..model import ModelSet
from ..modelmeta import HeadSpec, head_metadata
from .crossfit import Learned
from .report import TASK_NAMES

__all__ = ["OUTPUT", "head_path", "save_head", "to_onnx", "write_atomically"]

OUTPUT = "probabilities"  # skl2onnx's name for the classifier's probability output
OPSET = {"": 17, "ai.onnx.ml": 3}


def head_path(folder: Path, name: str, task: str) -> Path:
    """``FOLDER/NAME-genre.onnx`` or ``FOLDER/NAME-mood.onnx``."""
    return folder / f"{name}-{TASK_NAMES[task]}.onnx"


def to_onnx(learned: Learned, dim: int, name: str, version: str, models: ModelSet,
            report: dict[str, Any]) -> Any:
    """The head's ONNX model (embeddings ``[n, dim]`` in, ``probabilities`` out) with its
    genreml metadata; the report rides along as ``genreml.learned``."""
    import onnx
    from skl2onnx import to_onnx as convert
    from skl2onnx.common.data_types import FloatTensorType

    assert learned.estimator is not None
    classifier = learned.estimator[-1]
    model = convert(learned.estimator, initial_types=[("embedding", FloatTensorType([None, dim]))],
                    options={id(classifier): {"zipmap": False}}, target_opset=OPSET)
    spec = HeadSpec(OUTPUT, learned.task, tuple(learned.labels), learned.threshold)
    backbone = models.backbone
    meta = head_metadata(name, version, [spec], backbone.identity.sha256, backbone.embedding,
                         learned=json.dumps(report))
    onnx.helper.set_model_props(model, meta)
    return model


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename: a run that
    loads the folder meanwhile sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def save_head(learned: Learned, models: ModelSet, folder: Path, name: str, version: str,
              report: dict[str, Any]) -> Path:
    """Write the head file into ``folder``; returns its path."""
    model = to_onnx(learned, models.backbone.embedding.dim, name, version, models, report)
    path = head_path(folder, name, learned.task)
    write_atomically(path, model.SerializeToString())
    return path
