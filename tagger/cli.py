"""``genreml`` command line: thin commands over the tagger library.

Exit status: 0 when every file went through, 1 when at least one file failed (each failure is
one line on stderr and the run goes on), 2 for a usage, model or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__

log = logging.getLogger("genreml")

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE = 0, 1, 2


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
                   help="inference threads (default: the CPU count)")


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


def for_each_file(paths: Sequence[Path], work: Callable[[Path], None], desc: str) -> int:
    """Run ``work`` on every audio file under ``paths`` with a progress bar; a failing file
    prints one line on stderr and the run goes on. Returns the number of failures."""
    from tqdm import tqdm

    from .audio import AudioError, find_audio

    files = list(find_audio(paths))
    failures = 0
    bar = tqdm(files, desc=desc, unit="file", file=sys.stderr, disable=len(files) <= 1,
               dynamic_ncols=True)
    for path in bar:
        try:
            work(path)
        except (AudioError, OSError) as err:
            failures += 1
            reason = err.strerror if isinstance(err, OSError) and err.strerror else err
            bar.write(f"genreml: {path}: {reason}", file=sys.stderr)
        except Exception as err:  # an unexpected bug in one file must not end the run
            failures += 1
            log.debug("traceback for %s", path, exc_info=True)
            bar.write(f"genreml: {path}: {type(err).__name__}: {err}", file=sys.stderr)
    if not files:
        raise UsageError("no audio files found in " + ", ".join(map(str, paths)))
    return failures


def cmd_analyze(args: argparse.Namespace) -> int:
    analyzer = _analyzer(args)

    def work(path: Path) -> None:
        result = analyzer.analyze(path)
        line = json.dumps(result.to_dict(args.timeline)) if args.json else format_result(result)
        print(line, flush=True)

    return EXIT_FAILED_FILES if for_each_file(args.paths, work, "analyze") else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genreml", description="Tag music with genres and mood, locally.")
    parser.add_argument("--version", action="version", version=f"genreml {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("analyze", help="print genres and mood of audio files",
                       description="Analyse files or folders (recursively) and print results.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--json", action="store_true", help="one JSON object per line per track")
    p.add_argument("--timeline", action="store_true", help="with --json: per-clip probabilities")
    _add_model_options(p)
    p.set_defaults(func=cmd_analyze)
    return parser


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
