"""``genreml analyze --ray`` and ``genreml tag --ray``: the files the cache cannot answer go
through the Ray pipeline (:mod:`tagger.raydata`); every result then takes the local road
(:meth:`tagger.tagging.Tagger.tag`), in this process."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .console import Console, UsageError
from .report import RunCounts

log = logging.getLogger("genreml")

__all__ = ["add_ray_options", "add_ray_write_option", "run_with_ray"]


def add_ray_options(p: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]`` and ``--ray-actors``."""
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="analyse on a Ray cluster (ADDRESS as `ray start` printed it, or "
                   "'auto'; none: a local Ray instance); files the cache answers stay here")
    p.add_argument("--ray-actors", type=int, default=None, metavar="N",
                   help="model actors on the cluster (default: one per GPU, else one per "
                   "two CPUs)")


def add_ray_write_option(p: argparse.ArgumentParser) -> None:
    """``--ray-write`` (``tag`` only)."""
    p.add_argument("--ray-write", action="store_true",
                   help="with --ray: the workers write the tags next to the files (a shared "
                   "filesystem), with the same policy and checks; the cache is filled here")


def _remote(args: argparse.Namespace, tagger: Any) -> Any:
    from .personal import personal_dir
    from .raydata import RemoteModels

    models = str(Path(args.models).resolve()) if args.models else None
    asked = getattr(args, "ray_write", False) and tagger.write and not tagger.dry_run
    writing = tagger.writing if asked else None
    return RemoteModels(models, tagger.models.choice, str(personal_dir()), args.threshold,
                        args.max_genres, tagger.analyzer.grid, writing)


def _own(tagger: Any, paths: Sequence[Path]) -> dict[Path, str]:
    """What genreml wrote into each file before, for the workers' plans (JSON)."""
    tasks = [spec.task for spec, _ in tagger.models.specs]
    out = {}
    for path in paths:
        own = tagger.own_values(path, tasks)
        if own is not None:
            out[path] = json.dumps([own.genres, own.mood])
    return out


def run_with_ray(args: argparse.Namespace, tagger: Any, files: Sequence[Path],
                 console: Console, counts: RunCounts, done: Callable[[Path, Any], None]
                 ) -> RunCounts:
    """Tag (or, with a tagger that does not write, analyse) ``files``: those the cache
    answers here, the others on Ray, each result through ``tagger.tag`` and ``done``.

    Raises
    ------
    UsageError
        Ray is not installed, or the cluster cannot be reached.
    """
    from .raydata import RayUnavailable, analyse_on_ray, connect, require_ray

    try:
        require_ray()
    except RayUnavailable as err:
        raise UsageError(str(err)) from err
    def answered(path: Path) -> bool:
        try:
            return not getattr(args, "force", False) and tagger.answers(path)
        except OSError:  # the cluster's worker says what is wrong with it
            return False

    here, sent = [], []
    for path in files:
        (here if answered(path) else sent).append(path)
    console.for_each_file(here, lambda p: tagger.tag(p), "cache", counts, done=done)
    console.info(f"genreml: {len(sent)} of {len(files)} files sent to Ray")
    if not sent:
        return counts
    try:
        ray = connect(args.ray or None)
    except Exception as err:  # ConnectionError, a version mismatch, a bad address ...
        raise UsageError(f"--ray: cannot reach the cluster: {err}") from err
    arrived: dict[Path, Any] = {}
    remote = _remote(args, tagger)
    own = _own(tagger, sent) if remote.writing is not None else None

    def arrivals() -> Iterator[Path]:
        for path, got in analyse_on_ray(ray, sent, remote, tagger.analyzer, args.ray_actors,
                                        own):
            arrived[path] = got
            yield path

    def work(path: Path) -> Any:
        got = arrived.pop(path)
        if isinstance(got, Exception):
            raise got
        if isinstance(got, tuple):  # the worker wrote the tags
            return tagger.written_elsewhere(path, *got)
        return tagger.tag(path, analysed=got)

    return console.for_each_file(arrivals(), work, "ray", counts, done=done, total=len(sent))
