"""``genreml learn``: a personal head from the labels a library already holds.

Thin: reading labels (:func:`tagger.learn.examples.read_truth`), finding or analysing each
labelled track's embeddings (:func:`tagger.learn.examples.embedding_of`) and the learning run
(:func:`tagger.learn.run.learn`) are the library's.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from .console import EXIT_FAILED_FILES, EXIT_OK, Console, UsageError
from .report import printable

log = logging.getLogger("genreml")

__all__ = ["add_learn_parser", "cmd_learn"]


def _aliases(path: Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, yaml.YAMLError) as err:
        raise UsageError(f"--aliases {printable(path)}: {err}") from err
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, type(None))) for k, v in data.items()):
        raise UsageError(f"--aliases {printable(path)}: expected a mapping of label: label")
    return {k: v or "" for k, v in data.items()}


def _source(args: argparse.Namespace):
    from .labels import load_tree
    from .learn import TASKS
    from .learn.examples import LabelSource

    tree = None
    if args.tree is not None or args.depth is not None:
        try:
            tree = load_tree(args.tree or None)
        except (OSError, ValueError) as err:
            raise UsageError(f"--tree: {err}") from err
    if args.depth is not None and args.depth < 1:
        raise UsageError("--depth must be 1 or more")
    return LabelSource(TASKS[args.task], args.field, tuple(args.split or (";",)),
                       _aliases(args.aliases), tree, args.depth)


def cmd_learn(args: argparse.Namespace) -> int:
    from .cli import _files
    from .cli_cache import open_cache
    from .learn import LearnUnavailable, require

    try:
        require()
    except LearnUnavailable as err:
        raise UsageError(str(err)) from err
    from .learn.crossfit import LearnError
    from .learn.examples import embedding_of, labelled, read_truth, without_own
    from .learn.run import learn, settings_for
    from .model import load_models
    from .personal import personal_dir
    from .tagging import Tagger

    source = _source(args)
    console = Console(args.quiet)
    files = _files(args.paths)
    models = load_models(args.models, device=args.device, threads=args.threads)
    try:
        settings = settings_for(models, args.min_tracks, args.min_precision)
    except ValueError as err:
        raise UsageError(str(err)) from err
    truths, embeddings = [], {}
    with open_cache(args) as cache:
        written = cache.written(files)
        read = console.for_each_file(
            files, lambda p: read_truth(p, source), "reading labels",
            done=lambda p, t: truths.append(without_own(t, source.task,
                                                        written.get(os.path.abspath(p)))))
        tagger = Tagger(models, cache, write=False, budget=args.clips)
        wanted = [Path(t.path) for t in labelled(truths)]
        analysed = console.for_each_file(
            wanted, lambda p: embedding_of(tagger, p), "learn", jobs=args.workers,
            done=lambda p, e: embeddings.__setitem__(str(p), e))
    try:
        outcome = learn(truths, embeddings, source, settings, models, personal_dir(),
                        args.out)
    except LearnError as err:
        raise UsageError(str(err)) from err
    if not args.quiet:
        for line in [*outcome.lines, outcome.where]:
            console.result(line)
    return EXIT_FAILED_FILES if read.failed or analysed.failed else EXIT_OK


def add_learn_parser(sub, cache_help: str, workers: int) -> None:
    """The ``learn`` command's options (``sub``: :class:`tagger.cli_options.WithCommon`)."""
    from .cli_options import add_workers_option, clip_budget_arg

    p = sub.add_parser(
        "learn", help="learn your own genres (or moods) from the tracks that carry them",
        description="Learn a personal head from the labels your files already hold (genreml's "
        "own writes left out), judged by cross-validation grouped by artist; labels that "
        "do not reach the precision floor are reported and not written. The head is kept "
        "in $XDG_DATA_HOME/genreml/personal and used by analyze, tag, watch and beets.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--task", choices=("genre", "mood"), default="genre",
                   help="learn genres (default; several per track) or the mood (one)")
    p.add_argument("--field", metavar="NAME",
                   help="read the labels from this tag instead (STYLE, TXXX:STYLE, ...)")
    p.add_argument("--split", action="append", metavar="SEP",
                   help="split a value holding several labels on SEP (repeatable; "
                   "default ';')")
    p.add_argument("--aliases", type=Path, metavar="YAML",
                   help="a YAML mapping of label: canonical label ('' drops a label)")
    p.add_argument("--tree", nargs="?", const="", default=None, metavar="YAML",
                   help="roll genres up a genre tree (default file: beets' genres-tree.yaml)")
    p.add_argument("--depth", type=int, default=None, metavar="N",
                   help="with --tree: the depth labels are rolled up to (1: top level)")
    p.add_argument("--min-tracks", type=int, default=10, metavar="N",
                   help="tracks a label needs to be learned (default: 10)")
    p.add_argument("--min-precision", type=float, default=0.7, metavar="P",
                   help="cross-validated precision a label needs to be written (default: 0.7)")
    p.add_argument("--out", default="personal", metavar="NAME",
                   help="the head's name (default: personal)")
    p.add_argument("--cache", type=Path, default=None, help=cache_help)
    p.add_argument("--models", type=Path, default=None,
                   help="the backbone's model folder (default: the bundled models)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clips", type=clip_budget_arg, default="auto", metavar="auto|all|N",
                   help="clips analysed per track not yet in the cache (default: auto)")
    add_workers_option(p, workers)
    p.set_defaults(func=cmd_learn)
