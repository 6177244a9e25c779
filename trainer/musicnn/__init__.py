"""Convert the pre-trained musicnn backbones (TF-1 checkpoints) to ONNX, with a parity check.

``musicnn==0.1.0`` (ISC licence; Pons & Serra 2019) ships TF-1.12 checkpoints whose
``.meta`` file holds the *training* graph: optimizer slots, gradients, and a TF-1 ``tf.cond``
(Switch/Merge) on an ``is_training`` placeholder around every batch norm and dropout.
``import_meta_graph`` does not load it under TF 2.x, and the layer code in
``musicnn/models.py`` (``tf.compat.v1.layers``) no longer exists with Keras 3, so we work on
the protobuf directly:

1. parse the MetaGraphDef and drop the ``_output_shapes``/``_class`` attributes;
2. replace the ``is_training`` placeholder with the constant ``False`` and resolve the
   Switch/Merge pairs statically (the inference branch is kept, dropout and batch statistics
   disappear);
3. turn variables into constants read with ``NewCheckpointReader``;
4. keep only the subgraph from the log-mel placeholder (renamed ``mel``) to the outputs;
5. convert with tf2onnx (opset 17), then max-pool the front-end conv maps before their ReLU
   and batch norm (an exact rewrite, see :func:`~.rewrite.pool_before_batchnorm`; ~25% less
   CPU time);
6. check the result against TensorFlow running the very same frozen graph, and write the
   file only when they agree.

One module per job: :mod:`.checkpoint` (which checkpoints, where, the graph's names),
:mod:`.freeze` (steps 1-4, and running the frozen graph in TensorFlow), :mod:`.rewrite` (the
ONNX graph rewrites of step 5), :mod:`.parity_audio` (the clips of step 6), :mod:`.convert`
(tf2onnx, the parity check, stacking and timing backbones) and :mod:`.cli`
(``python -m trainer.musicnn``). This package keeps the names callers import.

The ONNX input is a log-mel patch ``[batch, 187, 96]`` as computed by
:func:`tagger.features.log_mel` with :data:`tagger.features.MUSICNN_FEATURES` (float32
throughout, unlike musicnn's own float16 mel which overflows on loud bins), not audio.

TensorFlow and tf2onnx are imported lazily: this package needs the ``train`` extra to do
anything, but importing it (or ``--help``) stays cheap.
"""

from __future__ import annotations

from ..export import PARITY_TOLERANCE
from .checkpoint import (
    BACKBONE_SOURCE,
    CLIP_SECONDS,
    INPUT_NAME,
    MODELS,
    OUTPUT_DIMS,
    SAMPLE_RATE,
    checkpoint_dir,
    musicnn_tags,
)
from .cli import main
from .convert import convert_backbone, stack_backbones, time_per_clip
from .freeze import frozen_graph_def, run_frozen_graph
from .parity_audio import parity_features, synthetic_clips

__all__ = [
    "BACKBONE_SOURCE",
    "CLIP_SECONDS",
    "INPUT_NAME",
    "MODELS",
    "OUTPUT_DIMS",
    "PARITY_TOLERANCE",
    "SAMPLE_RATE",
    "checkpoint_dir",
    "convert_backbone",
    "frozen_graph_def",
    "main",
    "musicnn_tags",
    "parity_features",
    "run_frozen_graph",
    "stack_backbones",
    "synthetic_clips",
    "time_per_clip",
]
