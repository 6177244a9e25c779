"""``python -m trainer.musicnn``: convert one musicnn checkpoint, optionally time it."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..export import PARITY_TOLERANCE
from .checkpoint import MODELS
from .convert import convert_backbone, time_per_clip

__all__ = ["main"]

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """``python -m trainer.musicnn --model MSD_musicnn --out PATH [--benchmark]``."""
    package_doc = sys.modules[__package__].__doc__ or ""
    parser = argparse.ArgumentParser(prog="python -m trainer.musicnn",
                                     description=package_doc.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="MSD_musicnn")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE,
                        help="largest allowed check_parity figure (default %(default)g)")
    parser.add_argument("--benchmark", action="store_true",
                        help="also time onnxruntime per clip (batch 32, 2 threads)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose:  # ours only (the trainer's, parity included): third-party loggers flood DEBUG
        logging.getLogger("trainer").setLevel(logging.DEBUG)
    path = convert_backbone(args.model, args.out, tolerance=args.tolerance)
    if args.benchmark:
        logger.info("%s: %.2f ms per 3-s clip (onnxruntime CPU, batch 32, 2 threads)",
                    args.model, time_per_clip(path))
    return 0
