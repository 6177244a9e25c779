"""``genreml`` command line: thin commands over the tagger library.

Exit status: 0 when every file went through (a silent file is skipped, not failed), 1 when at
least one file failed (each failure is one line on stderr and the run goes on), 2 for a usage,
model, cache or configuration error, 141 when stdout was closed early (``genreml status | head``:
what a shell reports for any command cut off by SIGPIPE).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .cli_cache import cmd_playlist, cmd_show, cmd_status, open_cache
from .cli_ray import add_ray_options, add_ray_write_option
from .cli_options import (V23_SEP, WithCommon, add_model_options, add_policy_options,
                          add_workers_option,
                          add_verbosity, add_write_options)
from .console import (EXIT_BROKEN_PIPE, EXIT_FAILED_FILES, EXIT_OK, EXIT_USAGE, Console,
                      UsageError, quiet_stdout)
from .report import LineFormatter, RunCounts, format_outcome, format_result, printable

log = logging.getLogger("genreml")
# Files analysed at once by analyze and tag: two on two cores were 1.25x faster than one on
# real soundtracks (README, Benchmarks: one file decodes while the other runs the backbone).
FILE_WORKERS = min(2, len(os.sched_getaffinity(0)))


def _tagger_options(args: argparse.Namespace) -> dict:
    """Tagger keywords for the write options, only those the user changed."""
    options = {}
    if args.v23_sep != V23_SEP:
        options["v23_sep"] = args.v23_sep
    if args.safe_only:
        options["safe_only"] = True
    return options


def _policy(args: argparse.Namespace):
    from .tags import Policy

    return Policy(args.genre_policy or args.policy, args.mood_policy or args.policy)


def _analyzer(args: argparse.Namespace):
    from .personal import load_run_models
    from .predict import Analyzer
    from .result import check_threshold

    check_threshold(args.threshold, "--threshold", UsageError)
    from .onnxsession import available_cores

    # the cores shared out between the files analysed at once
    threads = args.threads or max(1, available_cores() // max(1, args.workers))
    models = load_run_models(args.models, args.heads, device=args.device, threads=threads)
    log.debug("models: %s on %s", {t: i.id for t, i in models.identities.items()},
              models.providers)
    return Analyzer(models, hop_seconds=args.hop, threshold=args.threshold,
                    max_genres=args.max_genres, budget=args.clips)


def _files(paths: Sequence[Path]) -> list[Path]:
    from .audio import find_audio

    files = list(find_audio(paths))
    if not files:
        raise UsageError("no audio files found in " + ", ".join(map(printable, paths)))
    return files


def cmd_analyze(args: argparse.Namespace) -> int:
    analyzer = _analyzer(args)
    console = Console(args.quiet)
    rows: list[dict] = []

    def done(path: Path, result) -> None:
        result = getattr(result, "result", result)  # an Outcome, with --ray
        if args.out:
            rows.append(result.to_dict(args.timeline))
        else:
            console.result(json.dumps(result.to_dict(args.timeline)) if args.json
                           else format_result(result))

    files = _files(args.paths)
    if args.ray is not None:  # through the cache, so that a second run sends nothing
        from .cli_ray import run_with_ray
        from .report import RunCounts
        from .tagging import Tagger

        with open_cache(args) as cache:
            tagger = Tagger(analyzer.models, cache, write=False, hop_seconds=args.hop,
                            threshold=args.threshold, max_genres=args.max_genres,
                            budget=args.clips)
            counts = run_with_ray(args, tagger, files, console, RunCounts(write=False), done)
    else:
        counts = console.for_each_file(files, analyzer.analyze, "analyze", done=done,
                                       jobs=args.workers)
    if args.out:
        from .results_file import write_results

        write_results(args.out, rows)
    return EXIT_FAILED_FILES if counts.failed else EXIT_OK


def cmd_tag(args: argparse.Namespace) -> int:
    from .tagging import Tagger

    analyzer = _analyzer(args)
    policy = _policy(args)
    console = Console(args.quiet)
    per_file = (args.print or args.verbose > 0) and not args.quiet
    counts = RunCounts(write=not args.no_write)
    with open_cache(args) as cache:
        tagger = Tagger(analyzer.models, cache, policy, write=not args.no_write,
                        dry_run=args.dry_run, hop_seconds=args.hop, threshold=args.threshold,
                        max_genres=args.max_genres, budget=args.clips, trust_settled=not per_file,
                        **_tagger_options(args))
        tagger.mark_stale()
        if args.stale_only:
            files = [Path(p) for p in cache.stale_paths(roots=[p.resolve() for p in args.paths])]
        else:
            files = _files(args.paths)

        def work(path: Path):
            return tagger.tag(path, reanalyse=args.force)

        def done(path: Path, outcome) -> None:
            counts.add(outcome.changed, outcome.source)
            if per_file:
                console.result(format_outcome(outcome, args.dry_run))
            elif args.dry_run and not args.quiet and outcome.plan and outcome.plan.changed:
                console.result(f"{printable(path)}:")
                for line in outcome.plan.describe():
                    console.result(f"  {line}")

        if args.ray is not None:
            from .cli_ray import run_with_ray

            run_with_ray(args, tagger, files, console, counts, done)
        else:
            console.for_each_file(files, work, "tag", counts, done=done, jobs=args.workers)
    if not args.quiet:
        console.result(counts.line(args.dry_run))
    return EXIT_FAILED_FILES if counts.failed else EXIT_OK


WATCH_DIRS_ENV = "GENREML_WATCH_DIRS"


def _watch_dirs(args: argparse.Namespace) -> list[Path]:
    """The folders to watch: the arguments, else ``$GENREML_WATCH_DIRS`` (``:``-separated,
    as in PATH: the systemd units set it from an EnvironmentFile)."""
    dirs = list(args.dirs) or [Path(p) for p in os.environ.get(WATCH_DIRS_ENV, "").split(
        os.pathsep) if p.strip()]
    if not dirs:
        raise UsageError(f"no folder to watch: give DIR... or set {WATCH_DIRS_ENV}")
    for d in dirs:
        if d.exists() and not d.is_dir():
            raise UsageError(f"{d}: not a folder")
    return dirs


def cmd_watch(args: argparse.Namespace) -> int:
    import functools
    import signal

    from .tagging import Tagger
    from .watch import BeetsLibrary, Daemon, DaemonError, WatchSettings, configure_logging

    configure_logging(args.verbose)
    if args.quiet:  # no line per file; warnings and errors still reach the journal
        logging.getLogger().setLevel(logging.WARNING)
    dirs = _watch_dirs(args)
    try:
        settings = WatchSettings(settle=args.settle, poll=args.poll,
                                 poll_interval=args.poll_interval, workers=args.workers,
                                 max_attempts=args.max_attempts, retry_delay=args.retry_delay,
                                 stop_grace=args.stop_grace,
                                 network_settle=args.network_settle,
                                 follow_links=args.follow_links)
    except ValueError as err:
        raise UsageError(str(err)) from err
    policy = _policy(args)
    analyzer = _analyzer(args)
    with open_cache(args) as cache:
        try:
            beets = BeetsLibrary(analyzer.models, args.policy) if args.beets else None
            make_tagger = functools.partial(
                Tagger, analyzer.models, cache, policy, hop_seconds=args.hop,
                threshold=args.threshold, max_genres=args.max_genres, budget=args.clips,
                **_tagger_options(args))
            daemon = Daemon(dirs, make_tagger, settings, beets=beets)
            previous = {sig: signal.signal(sig, daemon.request_stop)
                        for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                status = daemon.run()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        except DaemonError as err:
            raise UsageError(str(err)) from err
        if daemon.abandoned:
            # A worker is still inside native code (decoding, inference) on a file whose job
            # is back in the queue; exiting now is what a kill would do, minus the surprise.
            logging.shutdown()
            sys.stdout.flush()
            os._exit(status)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genreml", description="Tag music with genres and mood, locally.")
    parser.add_argument("--version", action="version", version=f"genreml {__version__}")
    add_verbosity(parser, default=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)  # -q/-v also after the command's name
    add_verbosity(common, default=False)
    sub = WithCommon(sub, common)

    p = sub.add_parser("analyze", help="print genres and mood of audio files",
                       description="Analyse files or folders (recursively) and print results.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--json", action="store_true", help="one JSON object per line per track")
    p.add_argument("--timeline", action="store_true", help="with --json: per-clip probabilities")
    p.add_argument("--out", type=Path, metavar="FILE.parquet",
                   help="write the results to a Parquet file (pyarrow) instead of stdout")
    add_model_options(p)
    add_workers_option(p, FILE_WORKERS)
    add_ray_options(p)
    p.add_argument("--cache", type=Path, default=None,
                   help="with --ray: the results cache (default: $XDG_DATA_HOME/genreml/"
                   "cache.db); what it answers is not sent to the cluster")
    p.set_defaults(func=cmd_analyze)

    cache_help = "results cache (default: $XDG_DATA_HOME/genreml/cache.db)"
    p = sub.add_parser("tag", help="analyse (through the cache) and write genre and mood tags",
                       description="Analyse files or folders and write genre and mood tags; "
                       "results are cached, so unchanged files are not analysed again.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add_policy_options(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print what would change, field by field; write no file")
    p.add_argument("--no-write", action="store_true", help="analyse and cache, write no tags")
    p.add_argument("--force", action="store_true", help="analyse again even if cached")
    p.add_argument("--print", action="store_true",
                   help="one line per file on stdout: its genres | mood, then [what happened, "
                   "where the result came from] and the fields that changed, e.g. "
                   "\"a.mp3: Rock | calm [tagged, analysed] genre: [] -> ['Rock']\" "
                   "(also with -v)")
    add_write_options(p)
    p.add_argument("--stale-only", action="store_true",
                   help="only files whose cached results came from older models; new heads "
                   "re-tag them from their cached embeddings, without decoding (a new backbone "
                   "decodes again)")
    p.add_argument("--cache", type=Path, default=None, help=cache_help)
    add_model_options(p)
    add_workers_option(p, FILE_WORKERS)
    add_ray_options(p)
    add_ray_write_option(p)
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("show", help="what the cache knows about a file")
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", type=Path, metavar="PNG", help="draw the clip timeline (matplotlib)")
    p.add_argument("--cache", type=Path, default=None, help=cache_help)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("playlist", help="a mood playlist (M3U) from the cache alone")
    p.add_argument("roots", nargs="*", type=Path, metavar="ROOT",
                   help="only tracks under these folders")
    p.add_argument("--mood", required=True, help="e.g. calm")
    p.add_argument("--genre", help="and this genre (above the genre model's threshold)")
    p.add_argument("--min-prob", type=float, default=0.5, help="lowest mood probability")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("-o", "--output", type=Path, help="M3U file (default: stdout)")
    p.add_argument("--cache", type=Path, default=None, help=cache_help)
    p.set_defaults(func=cmd_playlist)

    p = sub.add_parser(
        "watch", help="a service: watch folders and tag music as it arrives",
        description="Watch folders (recursively) and tag each new or changed audio file once "
        "it has settled. Jobs are kept in the cache, so nothing is lost on a restart; "
        "SIGTERM stops within seconds. Under systemd: Type=notify with a watchdog.")
    p.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                   help=f"folders to watch (default: ${WATCH_DIRS_ENV}, ':'-separated)")
    p.add_argument("--settle", type=float, default=5.0, metavar="SECONDS",
                   help="a file is tagged once its size and mtime have not changed for this "
                   "long (default: 5)")
    p.add_argument("--poll", action="store_true",
                   help="poll the folders instead of inotify (automatic on NFS, SMB/CIFS and "
                   "FUSE file systems)")
    p.add_argument("--poll-interval", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between two polls of a folder (default: 10)")
    add_workers_option(p, FILE_WORKERS)
    p.add_argument("--max-attempts", type=int, default=5, metavar="N",
                   help="tries per file before it is given up on (default: 5)")
    p.add_argument("--retry-delay", type=float, default=30.0, metavar="SECONDS",
                   help="wait before the first retry, doubled for each next one (default: 30)")
    p.add_argument("--stop-grace", type=float, default=3.0, metavar="SECONDS",
                   help="on SIGTERM, let a file in progress finish for this long, then leave it "
                   "queued for the next start (default: 3)")
    p.add_argument("--network-settle", type=float, default=60.0, metavar="SECONDS",
                   help="the settle time on NFS, SMB/CIFS and FUSE file systems, where writers "
                   "on other machines cannot be seen (default: 60)")
    p.add_argument("--follow-links", action="store_true",
                   help="follow symbolic links that lead out of the watched folders (default: "
                   "such links are left alone)")
    add_write_options(p)
    p.add_argument("--beets", action="store_true",
                   help="also update the file's item in the beets library (beets' own config)")
    add_policy_options(p)
    p.add_argument("--cache", type=Path, default=None, help=cache_help)
    add_model_options(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("status", help="what the cache holds, and the watch queue",
                       description="Show what the cache holds (tracks, tagged, stale, failed) "
                       "and the watch daemon's queue. Exit status 1 when some files failed for "
                       "good. Works on a cache you cannot write.")
    p.add_argument("--cache", type=Path, default=None, help=cache_help)
    p.add_argument("--limit", type=int, default=20, metavar="N",
                   help="list at most N failed files (default: 20)")
    p.set_defaults(func=cmd_status)

    from .cli_learn import add_learn_parser

    add_learn_parser(sub, cache_help, FILE_WORKERS)
    _add_plugin_commands(sub)
    return parser


def _add_plugin_commands(sub: WithCommon) -> None:
    """Commands other packages register under the ``genreml.commands`` entry point group
    (the trainer's ``train`` and ``evaluate``): the runtime never imports them by name."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="genreml.commands"):
        try:
            ep.load()(sub)
        except Exception as err:  # a broken optional add-on must not break the runtime
            log.debug("genreml command %s not available: %s", ep.name, err)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genreml`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.ERROR if args.quiet
             else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)])
    handler = logging.StreamHandler()
    handler.setFormatter(LineFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    from .cache import CacheError
    from .model import ModelError

    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return status
    except (UsageError, ModelError, CacheError) as err:
        print(f"genreml: {printable(' '.join(str(err).split()))}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("genreml: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
