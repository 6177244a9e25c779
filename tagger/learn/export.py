"""A learned head as a genreml head file (skl2onnx), and the personal folder it is kept in."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..model import ModelSet
from ..modelmeta import HeadSpec, head_metadata
from .crossfit import Learned
from .report import TASK_NAMES

__all__ = ["OUTPUT", "convert", "head_path", "save_head", "to_onnx", "write_atomically"]

OUTPUT = "probabilities"  # skl2onnx's name for the classifier's probability output
OPSET = {"": 17, "ai.onnx.ml": 3}


def head_path(folder: Path, name: str, task: str) -> Path:
    """``FOLDER/NAME-genre.onnx`` or ``FOLDER/NAME-mood.onnx``."""
    return folder / f"{name}-{TASK_NAMES[task]}.onnx"


def convert(learned: Learned, dim: int) -> Any:
    """The fitted head as ONNX: embeddings ``[n, dim]`` in, :data:`OUTPUT` ``[n, labels]``
    out (skl2onnx; opsets :data:`OPSET`)."""
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    assert learned.estimator is not None
    classifier = learned.estimator[-1]
    model = skl_to_onnx(learned.estimator,
                        initial_types=[("embedding", FloatTensorType([None, dim]))],
                        options={id(classifier): {"zipmap": False}}, target_opset=OPSET)
    if learned.task == "genre" and len(learned.labels) == 1:
        _keep_positive_column(model)
    return model


def _keep_positive_column(model: Any) -> None:
    """One genre is a binary problem to scikit-learn: ``[not, genre]`` probabilities. Keep
    the genre's column, so the output has one column per label as a genre head must."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    pair = OUTPUT + "_pair"
    for node in graph.node:
        node.output[:] = [pair if name == OUTPUT else name for name in node.output]
    graph.initializer.extend(numpy_helper.from_array(np.array([v], np.int64), name)
                             for v, name in ((1, "col_from"), (2, "col_to"), (1, "col_axis")))
    graph.node.append(helper.make_node("Slice", [pair, "col_from", "col_to", "col_axis"],
                                       [OUTPUT]))
    (old,) = [o for o in graph.output if o.name == OUTPUT]
    graph.output.remove(old)
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None, 1]))


def to_onnx(learned: Learned, dim: int, name: str, version: str, models: ModelSet,
            report: dict[str, Any]) -> Any:
    """The head's ONNX model (:func:`convert`) with its genreml metadata; the report rides
    along as ``genreml.learned``."""
    import onnx

    model = convert(learned, dim)
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
