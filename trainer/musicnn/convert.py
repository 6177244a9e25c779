"""Convert a musicnn checkpoint to ONNX, check it against TensorFlow, stack and time backbones.

The conversion writes its file only when the ONNX outputs match TensorFlow running the very
same frozen graph (:func:`trainer.export.check_parity`, the check every trainer export passes).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from tagger.features import MUSICNN_FEATURES
from tagger.onnxsession import open_session

from ..export import OPSET, PARITY_TOLERANCE, check_parity
from .checkpoint import (
    BACKBONE_SOURCE,
    CLIP_SECONDS,
    INPUT_NAME,
    OUTPUT_DIMS,
    PATCH_SHAPE,
    SAMPLE_RATE,
    import_tf,
    musicnn_tags,
)
from .freeze import frozen_graph_def, run_frozen_graph
from .parity_audio import parity_features
from .rewrite import pool_before_batchnorm, set_batch_dims, strip_model

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    from tensorflow.core.framework.graph_pb2 import GraphDef

__all__ = ["convert_backbone", "stack_backbones", "time_per_clip"]

logger = logging.getLogger(__name__)


def _metadata(model: str) -> dict[str, str]:
    """The ``genreml.*`` metadata_props of a converted backbone."""
    return {
        "genreml.backbone": model,
        "genreml.backbone_source": BACKBONE_SOURCE,
        "genreml.tags": json.dumps(musicnn_tags(model)),
        "genreml.features": MUSICNN_FEATURES.to_json(),
        "genreml.sample_rate": str(SAMPLE_RATE),
        "genreml.clip_seconds": str(CLIP_SECONDS),
    }


def _to_onnx(graph_def: "GraphDef", model: str) -> "onnx.ModelProto":
    """tf2onnx conversion of a frozen graph, with our names, dims and metadata."""
    import onnx
    import tf2onnx

    import_tf()
    renames = {f"{INPUT_NAME}:0": INPUT_NAME, **{f"{k}:0": k for k in OUTPUT_DIMS}}
    proto, _ = tf2onnx.convert.from_graph_def(
        graph_def,
        name=f"genreml_{model}",
        input_names=[f"{INPUT_NAME}:0"],
        output_names=[f"{k}:0" for k in OUTPUT_DIMS],
        opset=OPSET,
        tensors_to_rename=renames,
    )
    set_batch_dims(proto)
    n_pools = pool_before_batchnorm(proto)
    logger.debug("%s: moved %d front-end max pools before their ReLU and batch norm",
                 model, n_pools)
    strip_model(proto)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, _metadata(model))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def convert_backbone(
    model: str = "MSD_musicnn",
    out_path: Path | str | None = None,
    *,
    mel_batch: np.ndarray | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> Path:
    """Convert a musicnn checkpoint to ONNX and check it against TensorFlow.

    Parameters
    ----------
    model : str
        One of :data:`MODELS`.
    out_path : Path or str, optional
        Where to write the ONNX file (default ``runs/<model>.onnx`` under the working
        directory). Nothing is written there unless the parity check passes.
    mel_batch : np.ndarray [shape=(n, 187, 96)], optional
        Patches for the parity check (default :func:`parity_features`).
    tolerance : float
        Largest allowed :func:`trainer.export.check_parity` figure: max abs diff for the
        taggram, scaled by the output's magnitude for the larger features.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    trainer.export.ExportError
        (a ``RuntimeError``) When the ONNX outputs differ from TensorFlow's by more than
        ``tolerance``.
    """
    import onnx

    start = time.perf_counter()
    out_path = Path(out_path) if out_path is not None else Path("runs") / f"{model}.onnx"
    graph_def = frozen_graph_def(model)
    proto = _to_onnx(graph_def, model)

    # Write next to the target and move into place only once parity holds.
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    onnx.save(proto, tmp)
    try:
        mel = parity_features() if mel_batch is None else np.asarray(mel_batch, np.float32)
        if mel.ndim != 3 or mel.shape[1:] != PATCH_SHAPE:
            raise ValueError(f"mel_batch must be [n, 187, 96], got {mel.shape}")
        # TensorFlow runs the frozen graph, onnxruntime the ONNX file, both on the CPU.
        diff = check_parity(tmp, {INPUT_NAME: mel}, run_frozen_graph(graph_def, mel), tolerance,
                            reference=f"TensorFlow ({model})")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("%s -> %s (%.2f MB, parity %.2e, %.1f s)", model, out_path,
                out_path.stat().st_size / 1e6, diff, time.perf_counter() - start)
    return out_path


def stack_backbones(paths: Sequence[Path | str], out_path: Path | str) -> Path:
    """Run several converted backbones side by side as one ONNX graph.

    The models share the input ``mel``; each output name of the first model becomes the
    concatenation (last axis) of that output over all models, in the given order. Used to
    train heads on MSD and MTT embeddings together with one backbone file.

    Parameters
    ----------
    paths : sequence of path
        Backbones from :func:`convert_backbone`, with the same input and output names.
    out_path : path
        Where to write the stacked model.

    Returns
    -------
    Path
        ``out_path``.
    """
    import onnx
    from onnx import compose, helper

    models = [onnx.load(str(p)) for p in paths]
    outputs = [o.name for o in models[0].graph.output]
    nodes, inits = [], []
    for i, m in enumerate(models):
        prefix = f"b{i}/"
        m = compose.add_prefix(m, prefix)
        for node in m.graph.node:  # the shared input keeps its name
            node.input[:] = [INPUT_NAME if x == prefix + INPUT_NAME else x for x in node.input]
        nodes += m.graph.node
        inits += m.graph.initializer
    concat_outputs = []
    for name in outputs:
        nodes.append(helper.make_node("Concat", [f"b{i}/{name}" for i in range(len(models))],
                                      [name], axis=-1))
        width = OUTPUT_DIMS[name] * len(models)
        concat_outputs.append(helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, ["batch", width]))
    graph = helper.make_graph(nodes, "genreml_stacked_backbones",
                              [models[0].graph.input[0]], concat_outputs, inits)
    stacked = helper.make_model(graph, opset_imports=models[0].opset_import)
    stacked.ir_version = models[0].ir_version
    meta = {e.key: e.value for e in models[0].metadata_props}
    meta["genreml.backbone"] = "+".join(
        {e.key: e.value for e in m.metadata_props}.get("genreml.backbone", f"b{i}")
        for i, m in enumerate(models))
    meta.pop("genreml.tags", None)
    onnx.helper.set_model_props(stacked, meta)
    onnx.checker.check_model(stacked)
    out_path = Path(out_path)
    onnx.save(stacked, out_path)
    return out_path


def time_per_clip(onnx_path: Path | str, batch: int = 32, threads: int = 2,
                  repeats: int = 10) -> float:
    """Median onnxruntime CPU time per 3-s clip, in milliseconds (genreml's session options).

    Parameters
    ----------
    onnx_path : Path or str
        A converted backbone.
    batch : int
        Patches per ``run`` call.
    threads : int
        ``intra_op_num_threads``.
    repeats : int
        Timed runs (after two warm-up runs).

    Returns
    -------
    float
        Median wall-clock milliseconds of one ``run`` divided by ``batch``.
    """
    sess = open_session(Path(onnx_path), threads)
    mel = np.resize(parity_features(), (batch, *PATCH_SHAPE))
    for _ in range(2):
        sess.run(None, {INPUT_NAME: mel})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {INPUT_NAME: mel})
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000.0 / batch
