"""genreml's own analysis on a Ray cluster, through Ray Data.

The pipeline, per file sent to the cluster:

1. CPU tasks decode the clips the budget picks into log-mel patches
   (:func:`tagger.patches.decode_track`, the very code a local analysis decodes with), with
   the file's fingerprint, size and mtime;
2. an actor pool runs the backbone and the heads: each actor loads the models once (on a GPU
   where the cluster has them) and decides which clips count exactly as a local analysis does
   (:meth:`tagger.predict.Analyzer.decide`), returning the clip embeddings;
3. the results stream back to the driver, which turns them into track results with the same
   heads (:func:`tagger.predict.track_result`) and hands each to the same
   :class:`tagger.tagging.Tagger` a local run uses: the cache, the tag policy and every safety
   check are the local ones. A file changed since a worker read it is analysed again locally.

A file that fails comes back as its one-line reason. Files the cache answers (same size and
mtime, current models, or cached embeddings a new head can re-tag) never leave the driver.

Asked to (``tag --ray-write``), the actors write the tags themselves, next to the files on a
shared filesystem, with the same writer, policy and checks (:class:`tagger.tagging.
WriteSettings`, genreml's earlier values sent along); the driver then fills the cache from
their results and plans (:meth:`tagger.tagging.Tagger.written_elsewhere`). A file that
changed, or that a worker could not write, is tagged by the driver instead.

Workers need genreml installed (with the same models at the same paths) and the files at the
same paths. Ray's usage statistics are switched off before Ray is imported, and no dashboard
is started: nothing goes to a third party.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .patches import ClipGrid, Patches, decode_track

log = logging.getLogger(__name__)

__all__ = ["INSTALL", "RayUnavailable", "RemoteModels", "analyse_on_ray", "connect",
           "require_ray"]

INSTALL = "pip install '.[ray]' in a genreml clone, on the driver and on every worker"


class RayUnavailable(Exception):
    """Ray is not installed."""


def require_ray() -> None:
    """Raise :class:`RayUnavailable` (with how to install it) unless Ray can be imported."""
    if importlib.util.find_spec("ray") is None:
        raise RayUnavailable(f"--ray needs Ray: {INSTALL}")


def connect(address: str | None = None) -> Any:
    """The ``ray`` module, connected to the cluster at ``address`` (None: the instance this
    process started already, else a new local one)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before the import: it is read there
    import ray

    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    return ray


@dataclasses.dataclass(frozen=True)
class RemoteModels:
    """What an actor loads: :func:`tagger.personal.load_run_models`'s arguments, resolved on
    the driver (``heads`` never ``auto``; paths absolute), and the analysis settings."""

    models: str | None
    heads: str
    personal: str | None
    threshold: float | None
    max_genres: int | None
    grid: ClipGrid
    writing: Any = None  # tagger.tagging.WriteSettings: the workers write the tags

    def analyzer(self, device: str = "auto", threads: int | None = None) -> Any:
        from .personal import load_run_models
        from .predict import Analyzer

        models = load_run_models(self.models, self.heads, device=device, threads=threads,
                                 personal=Path(self.personal) if self.personal else None)
        return Analyzer(models, self.grid.hop_seconds, self.threshold, self.max_genres,
                        self.grid.budget)


def _array(data: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(data, dtype).reshape(shape)


def _packed(prefix: str, patches: Patches | None) -> dict[str, Any]:
    if patches is None:
        return {f"{prefix}_n": 0, f"{prefix}_starts": b"", f"{prefix}_mel": b""}
    return {f"{prefix}_n": len(patches.starts),
            f"{prefix}_starts": np.asarray(patches.starts, "<f8").tobytes(),
            f"{prefix}_mel": np.ascontiguousarray(patches.mel, "<f4").tobytes()}


def _unpacked(row: dict[str, Any], prefix: str, grid: ClipGrid) -> Patches:
    n = int(row[f"{prefix}_n"])
    shape = (n, grid.features.n_frames, grid.features.n_mels)
    return Patches(_array(row[f"{prefix}_starts"], "<f8", (n,)),
                   _array(row[f"{prefix}_mel"], "<f4", shape))


def _failed(path: str, err: BaseException) -> dict[str, Any]:
    from .report import failure_reason, skip_reason

    skipped = skip_reason(err)
    return {"path": path, "error": skipped or failure_reason(err), "skipped": bool(skipped)}


def decode_row(row: dict[str, Any], grid: ClipGrid) -> dict[str, Any]:
    """Ray task: a file's patches (or why it has none), packed for Arrow."""
    path = row["path"]
    try:
        track = decode_track(path, grid)
    except Exception as err:  # one file must not end the run: its reason travels instead
        return {**_failed(path, err), **_packed("first", None), **_packed("more", None),
                "own": "", "duration": 0.0, "fingerprint": "", "size": -1, "mtime_ns": -1}
    assert track.stat is not None
    return {"path": path, "own": row.get("own", ""), "error": "", "skipped": False,
            "duration": track.duration,
            "fingerprint": track.fingerprint or "", "size": track.stat.st_size,
            "mtime_ns": track.stat.st_mtime_ns, **_packed("first", track.first),
            **_packed("more", track.more)}


class EmbedActor:
    """Ray actor: the models, loaded once; patches in, the clip embeddings that count out."""

    def __init__(self, remote: RemoteModels, device: str = "auto", threads: int = 1) -> None:
        self.remote = remote
        self.analyzer = remote.analyzer(device, threads)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {k: row[k] for k in ("path", "error", "skipped", "duration", "fingerprint",
                                   "size", "mtime_ns")}
        out.update(starts=b"", embeddings=b"", n=0, plan="")
        if row["error"]:
            return out
        try:
            grid, analyzer = self.remote.grid, self.analyzer
            first = _unpacked(row, "first", grid)
            more = _unpacked(row, "more", grid) if row["more_n"] else None
            extra = (lambda: (more.starts, analyzer.embed_patches(more.mel))) if more else None
            result = analyzer.decide(row["path"], row["duration"], first.starts,
                                     analyzer.embed_patches(first.mel), extra)
        except Exception as err:
            return {**out, **_failed(row["path"], err)}
        assert result.embedding is not None
        out.update(n=result.clips, starts=np.asarray(result.clip_starts, "<f8").tobytes(),
                   embeddings=np.ascontiguousarray(result.embedding.clips, "<f2").tobytes())
        if self.remote.writing is not None:
            out["plan"] = self._write(row, result)
        return out

    def _write(self, row: dict[str, Any], result: Any) -> str:
        """Write the tags here, into the file as it was decoded; the plan as JSON, or ""
        when the driver must tag it itself (the file changed, or the write failed: the
        driver then says why)."""
        from .tags import FileTags, TagError

        try:
            st = os.stat(row["path"])
            if (st.st_size, st.st_mtime_ns) != (row["size"], row["mtime_ns"]):
                return ""
            own = json.loads(row["own"]) if row["own"] else None
            own_tags = FileTags(own[0], own[1]) if own else None
            return self.remote.writing.write(row["path"], result, st, own_tags).to_json()
        except (TagError, OSError):
            return ""


def _result(row: dict[str, Any], analyzer: Any) -> Any:
    """The driver's :class:`tagger.tagging.Analysed` of an actor's row (the heads run here
    again on the embeddings: the same function a local analysis ends in)."""
    from .tagging import Analysed

    from .tags import TagPlan

    n, dim = int(row["n"]), analyzer.models.backbone.embedding.dim
    result = analyzer.decide(row["path"], row["duration"], _array(row["starts"], "<f8", (n,)),
                             _array(row["embeddings"], "<f2", (n, dim)).copy())
    analysed = Analysed(result, row["fingerprint"] or None, int(row["size"]),
                        int(row["mtime_ns"]))
    return (analysed, TagPlan.from_json(row["plan"])) if row["plan"] else analysed


def _raised(row: dict[str, Any]) -> Exception:
    from .audio import AudioError, SilentAudio

    return SilentAudio(row["error"]) if row["skipped"] else AudioError(row["error"])


def analyse_on_ray(ray: Any, paths: Sequence[Path], remote: RemoteModels, analyzer: Any,
                   actors: int | None = None, own: dict[Path, str] | None = None
                   ) -> Iterator[tuple[Path, Any]]:
    """Send ``paths`` through the Ray Data pipeline; yield ``(path, Analysed)``,
    ``(path, (Analysed, TagPlan))`` when the worker wrote the tags (``remote.writing``), or
    ``(path, exception)``, as results arrive (in any order).

    Parameters
    ----------
    ray : module
        From :func:`connect`.
    paths : sequence of Path
        Files the workers can read at these paths.
    remote : RemoteModels
        What each actor loads.
    analyzer : tagger.predict.Analyzer
        The driver's, on the same models: it turns embeddings into results.
    actors : int, optional
        Actors running the models; default: one per GPU, else one per two CPUs.
    own : dict, optional
        With ``remote.writing``: per path, the JSON ``[genres, mood]`` genreml wrote there
        before (:meth:`tagger.tagging.Tagger.own_values`), which the worker's plan takes out.
    """
    own = own or {}
    import ray.data

    if not paths:
        return
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its progress and notes
    ray.data.DataContext.get_current().enable_progress_bars = False  # genreml draws its own
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    actors = actors or gpus or max(1, int(resources.get("CPU", 1)) // 2)
    ds = ray.data.from_items([{"path": str(p), "own": own.get(p, "")} for p in paths],
                             override_num_blocks=min(len(paths), 64 * max(actors, 1)))
    # decoding in plain tasks, not fused into the actors: fractional CPUs keep Ray from
    # fusing the two stages, so decoding scales with the cluster's CPUs, not its actors
    ds = ds.map(decode_row, fn_kwargs={"grid": remote.grid}, num_cpus=0.99)
    ds = ds.map(EmbedActor, fn_constructor_kwargs={
        "remote": remote, "device": "cuda" if gpus else "cpu", "threads": 1},
        compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1)
    for row in ds.iter_rows():
        path = Path(row["path"])
        yield path, (_raised(row) if row["error"] else _result(row, analyzer))
