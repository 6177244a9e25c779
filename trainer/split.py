"""Cut a model into the files genreml loads: a backbone and one head file per task.

A graph from :func:`trainer.export.join` is cut at its ``embedding`` junction; a model trained
whole (the ``cnn``) before its last dense layer. The backbone file holds nothing
model-specific, so every head trained on one backbone names the same sha256
(:mod:`tagger.modelmeta`). ``python -m trainer.split OLD.onnx FOLDER`` converts a format 1
file (backbone and heads in one graph, genreml before format 2).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tagger.features import FeatureSettings
from tagger.modelmeta import (PREFIX, EmbeddingLayout, HeadSpec, backbone_metadata,
                              head_metadata, parse_heads)

from .export import (EMBEDDING, INPUT, PARITY_TOLERANCE, ExportError, _clean, _metadata,
                     _rename, _width, run_onnx, save_model, set_metadata)
from .optimize import optimize_backbone

__all__ = ["main", "save_split", "split"]


def _dense_input(model: onnx.ModelProto, output: str) -> str:
    """The tensor feeding the last dense layer before ``output`` (a model trained whole, such
    as the ``cnn``, has no ``embedding`` junction: its backbone is everything before that)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    weights = {i.name for i in model.graph.initializer}
    name = output
    for _ in range(16):  # activation, bias, reshapes: a few steps back at most
        node = producers.get(name)
        if node is None:
            break
        if node.op_type in ("MatMul", "Gemm"):
            return next(x for x in node.input if x not in weights)
        name = next((x for x in node.input if x not in weights), "")
    raise ExportError(f"no dense layer before {output!r} to cut the model at")


def _describe(model: onnx.ModelProto, tensor: str) -> None:
    """Give ``tensor`` a value info (the extractor needs one): shape inference's, or where it
    finds no width (tf2onnx graphs), ``[batch, width]`` measured by running the graph once."""
    graph = model.graph
    if tensor in {v.name for v in (*graph.value_info, *graph.input, *graph.output)}:
        return
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    if tensor in inferred and _width(inferred[tensor]) is not None:
        graph.value_info.append(inferred[tensor])
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.ValueInfoProto(name=tensor))
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    value = run_onnx(probe, {INPUT: np.zeros(dims, np.float32)}, [tensor])[tensor]
    model.graph.value_info.append(helper.make_tensor_value_info(
        tensor, TensorProto.FLOAT, ["batch", int(np.prod(value.shape[1:]))]))


def split(model: onnx.ModelProto, embedding: str | None = None
          ) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Cut a ``mel -> ... -> task outputs`` graph into a backbone and a head file.

    Parameters
    ----------
    model : onnx.ModelProto
        A graph from :func:`join` (cut at ``embedding``) or a model trained whole (cut before
        its last dense layer).
    embedding : str, optional
        The tensor to cut at.

    Returns
    -------
    tuple of onnx.ModelProto
        ``mel -> embedding`` and ``embedding -> outputs``, both without metadata.
    """
    outputs = [o.name for o in model.graph.output]
    tensors = {o for n in model.graph.node for o in n.output}
    cut = embedding or (EMBEDDING if EMBEDDING in tensors else _dense_input(model, outputs[0]))
    model = _clean(model)
    _describe(model, cut)
    extractor = onnx.utils.Extractor(model)
    backbone = extractor.extract_model([INPUT], [cut])
    head = extractor.extract_model([cut], outputs)
    if cut != EMBEDDING:
        _rename(backbone.graph, cut, EMBEDDING)
        _rename(head.graph, cut, EMBEDDING)
    for part in (backbone, head):
        part.ir_version = model.ir_version
        del part.opset_import[:]
        part.opset_import.extend(model.opset_import)
    return backbone, head


def save_split(model: onnx.ModelProto, folder: str | Path, backbone_name: str,
               backbone_version: str, layers: Sequence[str], name: str, version: str,
               sample_rate: int, clip_seconds: float, features: FeatureSettings,
               heads: Sequence[HeadSpec], embedding: str | None = None,
               optimize: bool = False, **extra: str) -> tuple[Path, list[Path]]:
    """Write ``model`` as ``FOLDER/<backbone_name>.onnx`` and one head file per task:
    ``FOLDER/<name>.onnx``, or ``FOLDER/<name>-<task>.onnx`` when ``model`` has several heads
    (each head has its own identity, so a new mood head leaves genre results fresh).

    The backbone file holds nothing model-specific, so every head trained on the same backbone
    names the same sha256; each head file names it. Backbone + heads must reproduce ``model``'s
    outputs within :data:`PARITY_TOLERANCE` on log-mel-like patches, or nothing is written.
    With ``optimize``, the backbone is rewritten by :func:`trainer.optimize.optimize_backbone`
    first (same outputs, faster graph); that check then covers the rewrite too.

    Returns
    -------
    tuple
        The backbone's path and the head files' paths.
    """
    from tagger.model import file_sha256

    folder = Path(folder)
    backbone, head = split(model, embedding)
    if optimize:
        backbone = optimize_backbone(backbone)
    width = _width(backbone.graph.output[0])
    if width is None:
        raise ExportError("the embedding has no static width")
    layout = EmbeddingLayout(EMBEDDING, width, tuple(layers))
    set_metadata(backbone, backbone_metadata(backbone_name, backbone_version, sample_rate,
                                             clip_seconds, features, layout))
    rng = np.random.default_rng(0)
    mel = rng.uniform(0.0, 3.0, (8, features.n_frames, features.n_mels)).astype(np.float32)
    emb = run_onnx(backbone, {INPUT: mel}, [EMBEDDING])[EMBEDDING]
    expected = run_onnx(model, {INPUT: mel}, [h.output for h in heads])
    parts = [(spec, onnx.utils.Extractor(head).extract_model([EMBEDDING], [spec.output]))
             for spec in heads] if len(heads) > 1 else [(heads[0], head)]
    for spec, part in parts:
        got = run_onnx(part, {EMBEDDING: emb}, [spec.output])[spec.output]
        diff = float(np.abs(got - expected[spec.output]).max())
        if diff > PARITY_TOLERANCE:
            raise ExportError(f"backbone + {spec.task} head disagree with the whole model by "
                              f"{diff:.2e}")
    backbone_path = save_model(backbone, folder / f"{backbone_name}.onnx")
    sha256 = file_sha256(backbone_path)
    paths = []
    for spec, part in parts:
        part.ir_version = model.ir_version
        stem = name if len(parts) == 1 else f"{name}-{spec.task}"
        set_metadata(part, head_metadata(name, version, [spec], sha256, layout, **extra))
        paths.append(save_model(part, folder / f"{stem}.onnx"))
    return backbone_path, paths


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m trainer.split OLD.onnx FOLDER``: a format 1 model (backbone and heads
    in one file) as a format 2 backbone and head file."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m trainer.split", description=main.__doc__)
    ap.add_argument("model", type=Path)
    ap.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    model = onnx.load(args.model)
    meta = {k[len(PREFIX):]: v for k, v in _metadata(model).items() if k.startswith(PREFIX)}
    if meta.get("format") != "1":
        raise SystemExit(f"{args.model}: not a format 1 genreml model")
    heads = parse_heads(meta.pop("heads"))
    layers = [x for x in meta.pop("embedding", "").split(",") if x]
    fixed = {k: meta.pop(k) for k in ("format", "name", "version", "sample_rate",
                                       "clip_seconds", "features")}
    meta.pop("backbone_sha256", None)
    paths = save_split(model, args.folder, meta.pop("backbone", "backbone"), "1", layers,
                       fixed["name"], fixed["version"], int(fixed["sample_rate"]),
                       float(fixed["clip_seconds"]),
                       FeatureSettings.from_dict(json.loads(fixed["features"])), heads, **meta)
    print("\n".join(map(str, [paths[0], *paths[1]])))


if __name__ == "__main__":
    main()
