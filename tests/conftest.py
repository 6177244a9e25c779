"""Shared test setup: test helpers importable from ``tests/``, one hypothesis profile."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Test modules import onnxruntime (tests/onnx_models.py) before tagger can switch its
# telemetry off: do it here, first, as tagger/__init__.py does for genreml itself.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # `from audiogen import make_audio` from any test module
    sys.path.insert(0, str(TESTS_DIR))

try:
    from hypothesis import settings
except ImportError:  # hypothesis is a test extra; modules that need it import it themselves
    pass
else:
    # Property tests use ``@settings(settings.get_profile("genreml"))``: 50 examples by
    # default (CI), GENREML_HYPOTHESIS_EXAMPLES=1000 for the benchmark run. No deadline:
    # examples do real file I/O, whose timing varies with the machine.
    settings.register_profile(
        "genreml",
        max_examples=int(os.environ.get("GENREML_HYPOTHESIS_EXAMPLES", "50")),
        deadline=None,
    )
