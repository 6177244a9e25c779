"""``genreml`` command line: thin commands over the tagger library.

Exit status: 0 when every file went through, 1 when at least one file failed (each failure is
one line on stderr and the run goes on), 2 for a usage, model or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__

log = logging.getLogger("genreml")

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE = 0, 1, 2
MODES = ("fill", "merge", "force")


class UsageError(Exception):
    """A problem with the command line or its configuration (exit status 2)."""


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", type=Path, default=None,
                   help="folder (or file) of genreml ONNX models; default: the bundled models")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="onnxruntime device (default: auto, CUDA when available)")
    p.add_argument("--threshold", type=float, default=None,
                   help="genre probability threshold (default: the model's own, usually 0.2)")
    p.add_argument("--max-genres", type=int, default=None, help="keep at most N genres")
    p.add_argument("--hop", type=float, default=None,
                   help="seconds between clip starts (default: the clip length)")
    p.add_argument("--threads", type=int, default=None,
                   help="inference threads (default: the cores this process may use)")


def _add_policy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", choices=MODES, default="fill",
                   help="fill: only empty fields (default); merge: add to existing; "
                   "force: replace")
    p.add_argument("--genre-policy", choices=MODES, help="policy for the genre field only")
    p.add_argument("--mood-policy", choices=MODES, help="policy for the mood field only")


def _policy(args: argparse.Namespace):
    from .tags import Policy

    return Policy(args.genre_policy or args.policy, args.mood_policy or args.policy)


def _analyzer(args: argparse.Namespace):
    from .model import load_models
    from .predict import Analyzer

    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise UsageError("--threshold must be between 0 and 1")
    models = load_models(args.models, device=args.device, threads=args.threads)
    log.debug("models: %s on %s", {t: i.id for t, i in models.identities.items()},
              models.providers)
    return Analyzer(models, hop_seconds=args.hop, threshold=args.threshold,
                    max_genres=args.max_genres)


def format_result(result) -> str:
    """One human line: ``path: Genre 0.81, Genre 0.33 | mood 0.72``."""
    genres = ", ".join(f"{label} {prob:.2f}" for label, prob in result.genres) or "-"
    text = f"{result.path}: {genres}"
    if result.emotion is not None:
        text += f" | {result.emotion[0]} {result.emotion[1]:.2f}"
    return text


def for_each_file(paths: Sequence[Path], work: Callable[[Path], None], desc: str,
                  files: Sequence[Path] | None = None) -> int:
    """Run ``work`` on every audio file under ``paths`` (or on ``files``) with a progress bar;
    a failing file prints one line on stderr and the run goes on. Returns the number of
    failures."""
    from tqdm import tqdm

    from .audio import AudioError, find_audio
    from .tags import TagError

    if files is None:
        files = list(find_audio(paths))
        if not files:
            raise UsageError("no audio files found in " + ", ".join(map(str, paths)))
    failures = 0
    bar = tqdm(files, desc=desc, unit="file", file=sys.stderr, disable=len(files) <= 1,
               dynamic_ncols=True)
    for path in bar:
        try:
            work(path)
        except (AudioError, TagError, OSError) as err:
            failures += 1
            reason = getattr(err, "reason", None) or (
                err.strerror if isinstance(err, OSError) and err.strerror else err)
            bar.write(f"genreml: {path}: {reason}", file=sys.stderr)
        except Exception as err:  # an unexpected bug in one file must not end the run
            failures += 1
            log.debug("traceback for %s", path, exc_info=True)
            bar.write(f"genreml: {path}: {type(err).__name__}: {err}", file=sys.stderr)
    return failures


def cmd_analyze(args: argparse.Namespace) -> int:
    analyzer = _analyzer(args)

    def work(path: Path) -> None:
        result = analyzer.analyze(path)
        line = json.dumps(result.to_dict(args.timeline)) if args.json else format_result(result)
        print(line, flush=True)

    return EXIT_FAILED_FILES if for_each_file(args.paths, work, "analyze") else EXIT_OK


def _cache(args: argparse.Namespace, path: Path | None = None):
    from .cache import Cache, CacheVersionError

    try:
        return Cache(path or args.cache)
    except CacheVersionError as err:
        raise UsageError(str(err)) from err


def cmd_tag(args: argparse.Namespace) -> int:
    from .tagging import Tagger

    analyzer = _analyzer(args)
    policy = _policy(args)
    with _cache(args) as cache:
        tagger = Tagger(analyzer.models, cache, policy, write=not args.no_write,
                        dry_run=args.dry_run, hop_seconds=args.hop, threshold=args.threshold,
                        max_genres=args.max_genres)
        tagger.mark_stale()
        files = None
        if args.stale_only:
            files = [Path(p) for p in cache.stale_paths(roots=[p.resolve() for p in args.paths])]

        def work(path: Path) -> None:
            outcome = tagger.tag(path, reanalyse=args.force or args.stale_only)
            if args.dry_run and outcome.plan is not None and outcome.plan.changed:
                print(f"{path}:")
                for line in outcome.plan.describe():
                    print(f"  {line}")
            elif args.verbose:
                print(f"{path}: {outcome.status} ({outcome.source})")

        failures = for_each_file(args.paths, work, "tag", files)
        c = tagger.counts
        tagged = "would tag" if args.dry_run else "tagged"
        print(f"{tagged} {c['tagged']}, unchanged {c['unchanged']}, analysed {c['analysed']}, "
              f"cached {c['cache'] + c['moved']}, failed {failures}")
    return EXIT_FAILED_FILES if failures else EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with _cache(args) as cache:
        info = cache.info(args.path.resolve())
        result = cache.get(args.path.resolve())
    if info is None or result is None:
        print(f"genreml: {args.path}: not in the cache ({args.cache or 'default cache'})",
              file=sys.stderr)
        return EXIT_FAILED_FILES
    if args.json:
        data = result.to_dict(timeline=True)
        data.update(analysed_at=info["analysed_at"].isoformat(),
                    results={t: {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                                 for k, v in r.items()} for t, r in info["results"].items()})
        print(json.dumps(data))
    else:
        print(f"{info['path']}")
        print(f"  duration {info['duration']:.1f} s, {result.clips} clips, "
              f"analysed {info['analysed_at']:%Y-%m-%d %H:%M:%S} UTC")
        for task, head in result.heads.items():
            r = info["results"][task]
            stale = " (stale)" if r["stale"] else ""
            print(f"  {task}: model {r['model']}{stale}")
            for label, prob in sorted(head.prob_dict().items(), key=lambda kv: -kv[1]):
                print(f"    {prob:6.3f}  {label}")
        print(f"  genres: {', '.join(g for g, _ in result.genres) or '-'}")
        if result.emotion:
            print(f"  mood: {result.emotion[0]}")
    if args.plot:
        from .plot import plot_timeline

        plot_timeline(result, args.plot)
        print(f"timeline written to {args.plot}")
    return EXIT_OK


def cmd_playlist(args: argparse.Namespace) -> int:
    from .playlist import PlaylistEntry, display_title, format_m3u

    if not 0.0 <= args.min_prob <= 1.0:
        raise UsageError("--min-prob must be between 0 and 1")
    roots = [p.resolve() for p in args.roots] or None
    with _cache(args) as cache:
        hits = cache.query("emotion", args.mood, args.min_prob, roots=roots, genre=args.genre,
                           limit=args.limit)
    entries = [PlaylistEntry(h.path, h.duration, display_title(h.path))
               for h in hits if os.path.exists(h.path)]
    if not entries:
        print(f"genreml: no cached track with mood {args.mood!r} >= {args.min_prob}"
              + (f" and genre {args.genre!r}" if args.genre else ""), file=sys.stderr)
        return EXIT_FAILED_FILES
    text = format_m3u(entries)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"{len(entries)} tracks written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


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

    from .daemon import BeetsLibrary, Daemon, DaemonError, WatchSettings, configure_logging
    from .tagging import Tagger

    configure_logging(args.verbose)
    dirs = _watch_dirs(args)
    try:
        settings = WatchSettings(settle=args.settle, poll=args.poll,
                                 poll_interval=args.poll_interval, workers=args.workers,
                                 max_attempts=args.max_attempts, retry_delay=args.retry_delay,
                                 stop_grace=args.stop_grace)
    except ValueError as err:
        raise UsageError(str(err)) from err
    policy = _policy(args)
    analyzer = _analyzer(args)
    with _cache(args) as cache:
        try:
            beets = BeetsLibrary(args.models, args.device, args.threshold, args.max_genres,
                                 args.policy) if args.beets else None
            make_tagger = functools.partial(
                Tagger, analyzer.models, cache, policy, hop_seconds=args.hop,
                threshold=args.threshold, max_genres=args.max_genres)
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


def cmd_status(args: argparse.Namespace) -> int:
    from .cache import default_cache_path
    from .daemon import lock_owner

    path = (args.cache or default_cache_path()).expanduser()
    if not path.exists():
        print(f"genreml: no cache at {path} (nothing tagged or watched yet)", file=sys.stderr)
        return EXIT_FAILED_FILES
    pid = lock_owner(path)
    with _cache(args, path) as cache:
        counts = cache.counts()
        failed = cache.failed_jobs()
        done = cache.recent_jobs("done", limit=1)
    print(f"cache:  {path}")
    print(f"daemon: {'running (pid %d)' % pid if pid else 'not running'}")
    print("queue:  " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    if done:
        print(f"last done: {done[0].path} ({done[0].updated_at:%Y-%m-%d %H:%M:%S} UTC)")
    if failed:
        print(f"failed ({len(failed)}):")
        for job in failed[: args.limit]:
            print(f"  {job.path}")
            print(f"    {job.last_error} ({job.attempts} attempts, "
                  f"last {job.updated_at:%Y-%m-%d %H:%M:%S} UTC)")
        if len(failed) > args.limit:
            print(f"  ... and {len(failed) - args.limit} more")
    return EXIT_FAILED_FILES if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genreml", description="Tag music with genres and mood, locally.")
    parser.add_argument("--version", action="version", version=f"genreml {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more output and logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)  # -v also after the command's name
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more output and logging (-vv for debug)")
    sub = _WithCommon(sub, common)

    p = sub.add_parser("analyze", help="print genres and mood of audio files",
                       description="Analyse files or folders (recursively) and print results.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--json", action="store_true", help="one JSON object per line per track")
    p.add_argument("--timeline", action="store_true", help="with --json: per-clip probabilities")
    _add_model_options(p)
    p.set_defaults(func=cmd_analyze)

    cache_help = "results cache (default: $XDG_DATA_HOME/genreml/cache.db)"
    p = sub.add_parser("tag", help="analyse (through the cache) and write genre and mood tags",
                       description="Analyse files or folders and write genre and mood tags; "
                       "results are cached, so unchanged files are not analysed again.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    _add_policy_options(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print what would change, field by field; write no file")
    p.add_argument("--no-write", action="store_true", help="analyse and cache, write no tags")
    p.add_argument("--force", action="store_true", help="analyse again even if cached")
    p.add_argument("--stale-only", action="store_true",
                   help="only files whose cached results came from older models")
    p.add_argument("--cache", type=Path, default=None, help=cache_help)
    _add_model_options(p)
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
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="files analysed at once, threads sharing the loaded models (default: 1)")
    p.add_argument("--max-attempts", type=int, default=5, metavar="N",
                   help="tries per file before it is given up on (default: 5)")
    p.add_argument("--retry-delay", type=float, default=30.0, metavar="SECONDS",
                   help="wait before the first retry, doubled for each next one (default: 30)")
    p.add_argument("--stop-grace", type=float, default=3.0, metavar="SECONDS",
                   help="on SIGTERM, let a file in progress finish for this long, then leave it "
                   "queued for the next start (default: 3)")
    p.add_argument("--beets", action="store_true",
                   help="also update the file's item in the beets library (beets' own config)")
    _add_policy_options(p)
    p.add_argument("--cache", type=Path, default=None, help=cache_help)
    _add_model_options(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("status", help="the watch queue: counts, failed files, last done",
                       description="Show the watch daemon's queue in the cache. Exit status 1 "
                       "when some files failed for good.")
    p.add_argument("--cache", type=Path, default=None, help=cache_help)
    p.add_argument("--limit", type=int, default=20, metavar="N",
                   help="list at most N failed files (default: 20)")
    p.set_defaults(func=cmd_status)

    _add_plugin_commands(sub)
    return parser


class _WithCommon:
    """Sub-parser factory that gives every command the common options."""

    def __init__(self, sub: argparse._SubParsersAction, common: argparse.ArgumentParser):
        self._sub, self._common = sub, common

    def add_parser(self, name: str, **kw) -> argparse.ArgumentParser:
        return self._sub.add_parser(name, parents=[self._common, *kw.pop("parents", [])], **kw)


def _add_plugin_commands(sub: _WithCommon) -> None:
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
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from .model import ModelError

    try:
        return args.func(args)
    except (UsageError, ModelError) as err:
        print(f"genreml: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("genreml: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
