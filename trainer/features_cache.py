"""Clip features for training, computed with the tagger's own functions and cached on disk.

Clips come from :class:`tagger.audio.ClipStream` and features from
:func:`tagger.features.log_mel`, exactly as the tagger computes them, so a model sees in training
what it sees in use. Each file's clip features (or backbone embeddings) are stored as one ``.npz``
named by a hash of (path, size, mtime_ns, sample rate, clip, hop, feature settings[, backbone
and outputs]): an edited or replaced file gets a new key, and repeated runs never decode again.

A frozen ONNX backbone (:class:`OnnxBackbone`) turns patches into clip embeddings once, with
onnxruntime, so heads train on small vectors. Every backbone output is cached, so trying another
``--embedding`` costs nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tagger.audio import AudioError, ClipStream
from tagger.features import FeatureSettings, log_mel
from tagger.onnxsession import open_session

log = logging.getLogger(__name__)

__all__ = ["ClipSpec", "FeatureCache", "OnnxBackbone", "compute_features", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/genreml/features`` (``~/.cache/genreml/features`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "genreml" / "features"


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """How a file becomes clips and features.

    Parameters
    ----------
    sample_rate : int
        Rate the audio is resampled to.
    clip_seconds : float
        Clip length.
    hop_seconds : float
        Distance between clip starts (below ``clip_seconds``: overlapping clips).
    features : FeatureSettings
        Log-mel settings passed to :func:`tagger.features.log_mel`.
    """

    sample_rate: int
    clip_seconds: float
    hop_seconds: float
    features: FeatureSettings

    def with_hop(self, hop_seconds: float) -> "ClipSpec":
        return dataclasses.replace(self, hop_seconds=hop_seconds)

    def key(self, path: Path, *extra: str) -> str:
        """Cache key of ``path`` under this spec: changes with the file and every setting."""
        stat = path.stat()
        ident = [str(path.resolve()), stat.st_size, stat.st_mtime_ns, self.sample_rate,
                 self.clip_seconds, self.hop_seconds, self.features.to_json(), *extra]
        return hashlib.sha1(json.dumps(ident).encode()).hexdigest()


def compute_features(path: str | Path, spec: ClipSpec) -> np.ndarray:
    """Log-mel patches ``[n_clips, n_frames, n_mels]`` of every usable clip of ``path``.

    Raises
    ------
    tagger.audio.AudioError
        The file cannot be decoded or has no usable clip.
    """
    stream = ClipStream(path, spec.sample_rate, spec.clip_seconds, spec.hop_seconds)
    parts = [log_mel(batch.clips, spec.sample_rate, spec.features) for batch in stream]
    return np.concatenate(parts)


class OnnxBackbone:
    """A frozen feature extractor in ONNX: log-mel patches in (input ``mel``), embeddings out.

    Parameters
    ----------
    path : str or Path
        ONNX file with one input ``[batch, n_frames, n_mels]`` and the named outputs.
    outputs : sequence of str
        Outputs whose (flattened) values are concatenated into the embedding, e.g.
        ``("penultimate",)`` or ``("mean_pool", "max_pool")``.
    """

    def __init__(self, path: str | Path, outputs: Sequence[str] = ("penultimate",)) -> None:
        self.path = Path(path)
        self.outputs = tuple(outputs)
        # read once: the run embeds, exports and fingerprints this very file, even if the one
        # on disk is replaced meanwhile
        self.model_bytes = self.path.read_bytes()
        self.sha256 = hashlib.sha256(self.model_bytes).hexdigest()
        self.session = open_session(self.model_bytes)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path.name}: a backbone has one input, found {len(inputs)}")
        self.input_name = inputs[0].name
        self.input_shape = inputs[0].shape
        available = [o.name for o in self.session.get_outputs()]
        unknown = [o for o in self.outputs if o not in available]
        if unknown or not self.outputs:
            raise ValueError(f"{self.path.name}: no outputs {unknown}; it has {available}")
        self.metadata = self.session.get_modelmeta().custom_metadata_map

    def check_features(self, features: FeatureSettings) -> None:
        """Raise ``ValueError`` when the input shape disagrees with ``features``."""
        for got, want, what in ((self.input_shape[1], features.n_frames, "frames"),
                                (self.input_shape[2], features.n_mels, "mel bands")):
            if isinstance(got, int) and got != want:
                raise ValueError(f"{self.path.name} takes {got} {what}, features give {want}")

    def run_all(self, mel: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Every output of the backbone, flattened to ``[n, width]``, for patches
        ``[n, n_frames, n_mels]``."""
        names = [o.name for o in self.session.get_outputs()]
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for start in range(0, len(mel), batch_size):
            chunk = np.ascontiguousarray(mel[start:start + batch_size], dtype=np.float32)
            for name, out in zip(names, self.session.run(names, {self.input_name: chunk})):
                parts[name].append(out.reshape(len(chunk), -1).astype(np.float32))
        return {name: np.concatenate(p) for name, p in parts.items()}

    def select(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """The embedding ``[n, dim]``: the chosen outputs concatenated, in order."""
        return np.concatenate([outputs[name] for name in self.outputs], axis=1)

    def embed(self, mel: np.ndarray) -> np.ndarray:
        """Embeddings ``[n, dim]`` of patches ``[n, n_frames, n_mels]``."""
        return self.select(self.run_all(mel))

    @functools.cached_property
    def dim(self) -> int:
        """Embedding width (runs one zero patch, once)."""
        shape = [d if isinstance(d, int) else 1 for d in self.input_shape]
        return int(self.embed(np.zeros([1, *shape[1:]], np.float32)).shape[1])


class FeatureCache:
    """Per-file clip features and embeddings, cached as ``.npz`` under ``cache_dir``."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def _cached(self, key: str,
                compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The arrays stored under ``key``, computed and stored first when missing."""
        file = self.cache_dir / key[:2] / f"{key}.npz"
        if file.is_file():
            try:
                with np.load(file) as data:
                    return {name: data[name] for name in data.files}
            except (OSError, ValueError):  # a torn or foreign file: compute again
                log.debug("unreadable cache entry %s", file)
        arrays = compute()
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, file)  # atomic: a parallel run never reads half a file
        return arrays

    def features(self, path: str | Path, spec: ClipSpec) -> np.ndarray:
        """Log-mel patches ``[n_clips, n_frames, n_mels]`` of ``path`` (cached)."""
        path = Path(path)
        return self._cached(spec.key(path), lambda: {"mel": compute_features(path, spec)})["mel"]

    def embeddings(self, path: str | Path, spec: ClipSpec, backbone: OnnxBackbone) -> np.ndarray:
        """Backbone embeddings ``[n_clips, dim]`` of ``path`` (cached with every other backbone
        output; the patches themselves are not stored: cheap next to the backbone, large on
        disk)."""
        path = Path(path)
        outputs = self._cached(spec.key(path, backbone.sha256),
                               lambda: backbone.run_all(compute_features(path, spec)))
        return backbone.select(outputs)

    def extract(self, paths: Sequence[str | Path], spec: ClipSpec,
                backbone: OnnxBackbone | None = None, desc: str = "features",
                progress: bool = True) -> tuple[list[np.ndarray], list[int]]:
        """Features (or embeddings with ``backbone``) of many files.

        A file that cannot be decoded is logged (one line) and skipped.

        Returns
        -------
        arrays : list of np.ndarray
            One array per usable file.
        kept : list of int
            Positions in ``paths`` of those files.
        """
        from tqdm import tqdm

        arrays, kept = [], []
        for i, path in enumerate(tqdm(paths, desc=desc, unit="file", file=sys.stderr,
                                      disable=not progress, dynamic_ncols=True, leave=False)):
            try:
                x = (self.features(path, spec) if backbone is None
                     else self.embeddings(path, spec, backbone))
            except (AudioError, OSError) as err:
                log.warning("skipping %s: %s", path, err)
                continue
            arrays.append(x)
            kept.append(i)
        return arrays, kept
