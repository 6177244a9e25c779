"""The ``genreml`` commands that only read the cache: ``show``, ``playlist``, ``status``.

They open the cache read-only, so they work on a cache the user cannot write (a system
service's, say).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .console import EXIT_FAILED_FILES, EXIT_OK, UsageError
from .report import printable

__all__ = ["cmd_playlist", "cmd_show", "cmd_status", "open_cache"]


def open_cache(args: argparse.Namespace, path: Path | None = None, readonly: bool = False):
    """The cache the command names; ``readonly`` for commands that only read it (they then
    work on a cache they cannot write). A cache that cannot be used raises
    :class:`tagger.cache.CacheError` (one line naming the file; exit status 2, see main)."""
    from .cache import Cache

    path = path or args.cache
    return Cache(path, readonly=True) if readonly else Cache(path)


def cmd_show(args: argparse.Namespace) -> int:
    if args.plot:
        from .plot import PlotUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlotUnavailable as err:
            raise UsageError(str(err)) from err
    with open_cache(args, readonly=True) as cache:
        info = cache.info(args.path.resolve())
        result = cache.get(args.path.resolve())
    if info is None or result is None:
        print(f"genreml: {printable(args.path)}: not in the cache "
              f"({printable(args.cache) if args.cache else 'default cache'})", file=sys.stderr)
        return EXIT_FAILED_FILES
    if args.json:
        data = result.to_dict(timeline=True)
        data.update(analysed_at=info["analysed_at"].isoformat(),
                    results={t: {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                                 for k, v in r.items()} for t, r in info["results"].items()})
        print(json.dumps(data))
    else:
        print(printable(info["path"]))
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
        print(f"timeline written to {printable(args.plot)}")
    return EXIT_OK


def _write_stdout(text: str) -> None:
    """``text`` on stdout as UTF-8, file-name bytes that are not UTF-8 kept as they are."""
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stream (tests)
        sys.stdout.write(text)
    else:
        buffer.write(text.encode("utf-8", "surrogateescape"))
        buffer.flush()


def cmd_playlist(args: argparse.Namespace) -> int:
    from .playlist import (PlaylistEntry, UnknownLabel, display_title, format_m3u, match_label,
                           regular_file, write_text_atomically)

    if not 0.0 <= args.min_prob <= 1.0:
        raise UsageError("--min-prob must be between 0 and 1")
    roots = [p.resolve() for p in args.roots] or None
    with open_cache(args, readonly=True) as cache:
        try:
            mood = match_label(args.mood, cache.labels("emotion"), "mood")
            genre = args.genre and match_label(args.genre, cache.labels("genre"), "genre")
        except UnknownLabel as err:
            raise UsageError(str(err)) from err
        hits = cache.query("emotion", mood, args.min_prob, roots=roots, genre=genre,
                           limit=args.limit)
    # stat only: a cached path that is now a FIFO must not be opened (it would block)
    entries = [PlaylistEntry(h.path, h.duration, display_title(h.path))
               for h in hits if regular_file(h.path)]
    if not entries:
        print(f"genreml: no cached track with mood {mood!r} >= {args.min_prob}"
              + (f" and genre {genre!r}" if genre else ""), file=sys.stderr)
        return EXIT_FAILED_FILES
    text = format_m3u(entries)
    if args.output:
        try:
            write_text_atomically(args.output, text)
        except OSError as err:
            raise UsageError(f"{printable(args.output)}: {err.strerror or err}") from err
        if not args.quiet:
            print(f"{len(entries)} tracks written to {printable(args.output)}", file=sys.stderr)
    else:
        _write_stdout(text)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from .cache import default_cache_path
    from .watch import lock_owner

    path = (args.cache or default_cache_path()).expanduser()
    if not path.exists():
        print(f"genreml: no cache at {printable(path)} (nothing tagged or watched yet)",
              file=sys.stderr)
        return EXIT_FAILED_FILES
    pid = lock_owner(path)
    with open_cache(args, path, readonly=True) as cache:
        summary = cache.summary()
        counts = cache.counts()
        failed = cache.failed_jobs()
        done = cache.recent_jobs("done", limit=1)
    print(f"cache:  {printable(path)}")
    print(f"tracks: {summary['tracks']} ("
          + ", ".join(f"{k} {summary[k]}" for k in ("tagged", "stale", "failed")) + ")")
    print(f"daemon: {'running (pid %d)' % pid if pid else 'not running'}")
    print("queue:  " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    if done:
        print(f"last done: {printable(done[0].path)} "
              f"({done[0].updated_at:%Y-%m-%d %H:%M:%S} UTC)")
    if failed:
        print(f"failed ({len(failed)}):")
        for job in failed[: args.limit]:
            print(f"  {printable(job.path)}")
            print(f"    {printable(job.last_error or '')} ({job.attempts} attempts, "
                  f"last {job.updated_at:%Y-%m-%d %H:%M:%S} UTC)")
        if len(failed) > args.limit:
            print(f"  ... and {len(failed) - args.limit} more")
    return EXIT_FAILED_FILES if failed else EXIT_OK
