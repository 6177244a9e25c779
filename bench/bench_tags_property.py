"""How long the tag-writing property test takes with many examples.

Runs ``tests/test_tags_property.py`` with ``GENREML_HYPOTHESIS_EXAMPLES`` examples per
container format (9 formats, each example a real copy-seed-write-verify-read cycle on a
real file) and prints the wall time. Equivalent to

    GENREML_HYPOTHESIS_EXAMPLES=1000 pytest -q tests/test_tags_property.py

    python bench/bench_tags_property.py [--examples 1000] [-- extra pytest args]

Exits with pytest's status, so a property violation found at scale fails the run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000, help="examples per format")
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args(argv)

    env = {**os.environ, "GENREML_HYPOTHESIS_EXAMPLES": str(args.examples)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "tests/test_tags_property.py", *args.pytest_args]
    start = time.perf_counter()
    status = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    elapsed = time.perf_counter() - start
    print(f"tags property test: {args.examples} examples x 9 formats in {elapsed:.1f} s "
          f"(pytest exit status {status})")
    return status


if __name__ == "__main__":
    sys.exit(main())
