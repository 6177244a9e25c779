"""The option groups several ``genreml`` commands share, and the ``-q``/``-v`` every command
takes: one definition each, so ``tag`` and ``watch`` cannot drift apart.

Nothing here imports the runtime (mutagen, onnxruntime): ``genreml --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["BUNDLED_THRESHOLD", "HEAD_CHOICES", "MODES", "V23_SEP", "clip_budget_arg", "WithCommon", "add_model_options",
           "add_policy_options", "add_workers_option", "add_verbosity", "add_write_options"]

MODES = ("fill", "merge", "force")  # = tagger.tags.MODES (not imported: as V23_SEP below)
# The bundled model's genre threshold, for --help only: reading it from the model's metadata
# means importing onnxruntime (~0.4 s) on every `genreml --help`; a test keeps the two equal.
BUNDLED_THRESHOLD = 0.25
HEAD_CHOICES = ("auto", "default", "personal", "both")  # = tagger.personal.HEAD_CHOICES
V23_SEP = "; "  # = tagger.tags.V23_SEP (not imported here: mutagen is not needed for --help)


def clip_budget_arg(text: str):
    """``--clips``: a :class:`tagger.budget.ClipBudget` (argparse type)."""
    from .budget import ClipBudget

    try:
        return ClipBudget.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Which models, on which device, and how their output is decided and sampled."""
    p.add_argument("--models", type=Path, default=None,
                   help="folder (or file) of genreml ONNX models; default: the bundled models")
    p.add_argument("--heads", choices=HEAD_CHOICES, default="auto",
                   help="which heads: default (bundled or --models), personal (learned by "
                   "`genreml learn`), both (personal mood, union of genres, personal first), "
                   "auto (default): both when a personal head exists and no --models")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="onnxruntime device (default: auto, CUDA when available)")
    p.add_argument("--threshold", type=float, default=None,
                   help="genre probability threshold (default: the model's own threshold, "
                   f"{BUNDLED_THRESHOLD} for the bundled model)")
    p.add_argument("--max-genres", type=int, default=None, help="keep at most N genres")
    p.add_argument("--hop", type=float, default=None,
                   help="seconds between clip starts (default: the clip length)")
    p.add_argument("--clips", type=clip_budget_arg, default="auto", metavar="auto|all|N",
                   help="clips analysed per track, spread evenly over it: auto (default: 12, "
                   "and 32 more where a decision is close), all (every clip), or N; files "
                   "already in the cache keep their analysis (--force analyses them again)")
    p.add_argument("--threads", type=int, default=None,
                   help="inference threads (default: the cores this process may use)")


def add_workers_option(p: argparse.ArgumentParser, default: int = 1) -> None:
    """``--workers``: files analysed at once, in threads sharing the loaded models."""
    p.add_argument("--workers", type=int, default=default, metavar="N",
                   help="files analysed at once, threads sharing the loaded models (default: "
                   f"{default}); while one file decodes, another runs the backbone")


def add_policy_options(p: argparse.ArgumentParser) -> None:
    """``--policy`` for both fields, and one per field."""
    p.add_argument("--policy", choices=MODES, default="fill",
                   help="fill: only empty fields (default); merge: add to existing; "
                   "force: replace")
    p.add_argument("--genre-policy", choices=MODES, help="policy for the genre field only")
    p.add_argument("--mood-policy", choices=MODES, help="policy for the mood field only")


def add_write_options(p: argparse.ArgumentParser) -> None:
    """How a file's tags are written."""
    p.add_argument("--v23-sep", default=V23_SEP, metavar="SEP",
                   help="separator joining several genres in an ID3v2.3 tag (default: "
                   f"{V23_SEP!r}, as Picard's v23_sep; v2.4 tags hold a real list)")
    p.add_argument("--safe-only", action="store_true",
                   help="refuse to tag a file (one line saying why) when its owner, group, "
                   "mode, extended attributes or ACLs could not be kept exactly")


def add_verbosity(p: argparse.ArgumentParser, default: bool) -> None:
    """-q/-v; given before the command they set the defaults, after it they win."""
    extra = {} if default else {"default": argparse.SUPPRESS}
    p.add_argument("-q", "--quiet", action="store_true", **({"default": False} | extra),
                   help="only errors: no progress bar, no per-file or summary lines")
    p.add_argument("-v", "--verbose", action="count", **({"default": 0} | extra),
                   help="more output and logging (-vv for debug)")


class WithCommon:
    """Sub-parser factory that gives every command the common options."""

    def __init__(self, sub: argparse._SubParsersAction, common: argparse.ArgumentParser):
        self._sub, self._common = sub, common

    def add_parser(self, name: str, **kw: Any) -> argparse.ArgumentParser:
        """``sub.add_parser(name, **kw)`` with the common options among its parents."""
        return self._sub.add_parser(name, parents=[self._common, *kw.pop("parents", [])], **kw)
