"""``python -m trainer.optimize FOLDER``: optimise a model folder's backbone in place.

The folder's one backbone file (:mod:`tagger.modelmeta`, format 2) is rewritten by
:func:`trainer.optimize.optimize_backbone`, checked against the original on music-like audio
(:func:`parity_mel`), and replaced atomically; every head file that named the old backbone's
sha256 is re-stamped with the new one, so the folder still loads. Nothing is written when
the parity check fails, and a folder whose backbone is already optimised is left byte for
byte as it was.

Exit status: 0 done (or nothing to do), 1 parity failed (nothing written), 2 refused (no
folder, not exactly one backbone, a file that is not a format 2 genreml model).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from tagger.features import FeatureSettings, log_mel
from tagger.model import file_sha256
from tagger.modelmeta import PREFIX, ModelError, read_metadata
from trainer.export import save_model, set_metadata
from trainer.musicnn import synthetic_clips

from . import optimize_backbone
from .parity import PARITY_TOLERANCE, check_backbone_parity

__all__ = ["FolderResult", "main", "optimize_folder", "parity_mel"]

# Clips the parity check runs on (musicnn's own check: trainer.musicnn.parity_features(16)).
PARITY_CLIPS = 16


class ParityError(ValueError):
    """The optimised backbone's outputs moved by more than the tolerance; nothing written."""


@dataclasses.dataclass(frozen=True)
class FolderResult:
    """What :func:`optimize_folder` did.

    ``changed`` is False when the backbone was already optimised (nothing written);
    ``restamped`` lists the head files given the new sha256.
    """

    backbone: Path
    nodes_before: int
    nodes_after: int
    old_sha256: str
    new_sha256: str
    parity: float
    restamped: tuple[Path, ...] = ()

    @property
    def changed(self) -> bool:
        return self.old_sha256 != self.new_sha256


def parity_mel(meta: dict[str, str], n_clips: int = PARITY_CLIPS) -> np.ndarray:
    """Log-mel patches for a backbone's parity check, from its own metadata.

    :func:`trainer.musicnn.synthetic_clips` (tones, chords, drums, chirps, noise) generated
    at the backbone's sample rate, cut (or cycled) to its clip length and turned into its
    features by :func:`tagger.features.log_mel`. For musicnn's settings (16 kHz, 3-s clips,
    :data:`tagger.features.MUSICNN_FEATURES`) this is exactly
    :func:`trainer.musicnn.parity_features` ``(n_clips)``.

    Parameters
    ----------
    meta : dict of str to str
        The backbone's genreml metadata, without the prefix (:func:`read_metadata`).
    n_clips : int
        Number of patches.

    Returns
    -------
    np.ndarray [shape=(n_clips, n_frames, n_mels), dtype=float32]
    """
    sr = int(meta["sample_rate"])
    features = FeatureSettings.from_dict(json.loads(meta["features"]))
    clips = synthetic_clips(n_clips, seed=0, sr=sr)  # 3 s each, already at the backbone's rate
    length = max(1, int(round(float(meta["clip_seconds"]) * sr)))
    if length > clips.shape[1]:
        clips = np.pad(clips, ((0, 0), (0, length - clips.shape[1])), mode="wrap")
    return log_mel(clips[:, :length], sr, features)


def _genreml_files(folder: Path) -> list[tuple[Path, onnx.ModelProto, dict[str, str]]]:
    """Every ``*.onnx`` file in ``folder`` with its genreml metadata (prefix removed)."""
    if not folder.is_dir():
        raise ModelError(f"{folder}: not a folder")
    files = []
    for path in sorted(folder.glob("*.onnx")):
        try:
            model = onnx.load(str(path))
        except Exception as err:  # a truncated or foreign file: say which
            raise ModelError(f"{path.name}: not a loadable ONNX model ({type(err).__name__})") \
                from err
        meta = {p.key: p.value for p in model.metadata_props}
        files.append((path, model, read_metadata(path.name, meta)))
    return files


def optimize_folder(folder: str | Path, tolerance: float = PARITY_TOLERANCE) -> FolderResult:
    """Optimise the backbone of a format 2 model folder in place; re-stamp its heads.

    Parameters
    ----------
    folder : str or Path
        A genreml model folder: exactly one backbone file and its head files.
    tolerance : float
        Largest max abs embedding difference accepted on :func:`parity_mel`'s patches.

    Returns
    -------
    FolderResult

    Raises
    ------
    ModelError
        No folder, not exactly one backbone, or a file that is not a format 2 genreml model
        (nothing written).
    ParityError
        The optimised outputs differ by more than ``tolerance`` (nothing written).
    """
    folder = Path(folder)
    files = _genreml_files(folder)
    backbones = [f for f in files if f[2]["kind"] == "backbone"]
    if len(backbones) != 1:
        names = ", ".join(p.name for p, _, _ in backbones) or "none"
        raise ModelError(f"{folder}: needs exactly one backbone file, found {len(backbones)} "
                         f"({names})")
    (path, model, meta), = backbones
    original = path.read_bytes()
    old_sha = hashlib.sha256(original).hexdigest()
    optimized = optimize_backbone(model)
    data = optimized.SerializeToString()
    before, after = len(model.graph.node), len(optimized.graph.node)
    if data == original:  # already optimised: leave every byte alone
        return FolderResult(path, before, after, old_sha, old_sha, 0.0)
    try:
        worst = check_backbone_parity(model, data, parity_mel(meta), tolerance)
    except ValueError as err:
        raise ParityError(f"{path.name}: {err}; nothing written") from err
    new_sha = hashlib.sha256(data).hexdigest()
    heads = []
    for head_path, head, head_meta in files:
        if head_meta["kind"] == "head" and head_meta["backbone_sha256"] == old_sha:
            set_metadata(head, {PREFIX + k: v for k, v in head_meta.items()}
                         | {PREFIX + "backbone_sha256": new_sha})
            heads.append((head_path, head))
    # Heads first: should the backbone's write be lost, running again rewrites the same
    # bytes (the rewrites are deterministic), which the heads already name.
    for head_path, head in heads:
        save_model(head, head_path)
    save_model(optimized, path)
    return FolderResult(path, before, after, old_sha, file_sha256(path), worst,
                        tuple(p for p, _ in heads))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainer.optimize FOLDER [--tolerance T]``."""
    ap = argparse.ArgumentParser(prog="python -m trainer.optimize",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a genreml model folder (format 2)")
    ap.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE,
                    help="largest max abs embedding difference accepted (default %(default)g)")
    args = ap.parse_args(argv)
    try:
        result = optimize_folder(args.folder, args.tolerance)
    except ModelError as err:
        print(f"python -m trainer.optimize: {err}", file=sys.stderr)
        return 2
    except ParityError as err:
        print(f"python -m trainer.optimize: {err}", file=sys.stderr)
        return 1
    name = result.backbone.name
    if not result.changed:
        print(f"{name}: already optimised ({result.nodes_after} nodes); nothing written")
        return 0
    restamped = ", ".join(p.name for p in result.restamped) or "no head named it"
    print(f"{name}: {result.nodes_before} -> {result.nodes_after} nodes, parity "
          f"{result.parity:.2g} on {PARITY_CLIPS} clips, sha256 {result.old_sha256[:12]} -> "
          f"{result.new_sha256[:12]}; re-stamped: {restamped}")
    return 0
