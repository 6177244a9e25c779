"""The musicnn checkpoints we convert, and the interface of the graphs we make of them.

The names here are shared by every step (freezing, rewriting, converting): which checkpoints
exist, where the installed ``musicnn`` package keeps them, their tags, and the input and
output names and sizes of the converted graph. TensorFlow is imported only when a step needs
it (:func:`import_tf`), so that importing the package (or ``--help``) stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from tagger.features import MUSICNN_FEATURES

# No __all__ here: trainer.musicnn (its __init__) lists what the package exports.

MODELS = ("MSD_musicnn", "MTT_musicnn")
BACKBONE_SOURCE = "musicnn 0.1.0 (ISC), Pons & Serra 2019"
SAMPLE_RATE = 16000
CLIP_SECONDS = 3.0

INPUT_NAME = "mel"
# ONNX output name -> size of its last axis (musicnn/models.py: front end 2*204 + 3*51 = 561
# channels, mid end 3*64 more = 753; the dense back end has 200 units; 50 tags).
OUTPUT_DIMS: dict[str, int] = {"taggram": 50, "penultimate": 200, "mean_pool": 753, "max_pool": 753}

PATCH_SHAPE = (MUSICNN_FEATURES.n_frames, MUSICNN_FEATURES.n_mels)  # (187, 96)


def import_tf() -> Any:
    """Import TensorFlow quietly (its C++ start-up banner is noise for a converter)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    return tf


def checkpoint_dir(model: str) -> Path:
    """Folder of a musicnn checkpoint inside the installed ``musicnn`` package.

    Parameters
    ----------
    model : str
        One of :data:`MODELS`.

    Returns
    -------
    Path
        The folder holding ``.meta``, ``.index`` and ``.data-00000-of-00001``.
    """
    if model not in MODELS:
        raise ValueError(f"unknown musicnn backbone {model!r}; expected one of {MODELS}")
    # find_spec, not import: the package is only data plus TF code we cannot run anyway.
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("musicnn is not installed: pip install --no-deps musicnn==0.1.0")
    folder = Path(list(spec.submodule_search_locations)[0]) / model
    if not (folder / ".meta").is_file():
        raise FileNotFoundError(f"no musicnn checkpoint at {folder}")
    return folder


def musicnn_tags(model: str) -> list[str]:
    """The 50 tag names of a musicnn backbone, in output order (``musicnn/configuration.py``)."""
    if model not in MODELS:
        raise ValueError(f"unknown musicnn backbone {model!r}; expected one of {MODELS}")
    config = importlib.import_module("musicnn.configuration")  # plain constants, no TF
    tags = list(config.MSD_LABELS if model.startswith("MSD") else config.MTT_LABELS)
    if len(tags) != OUTPUT_DIMS["taggram"]:
        raise RuntimeError(f"musicnn lists {len(tags)} tags for {model}, expected 50")
    return tags
