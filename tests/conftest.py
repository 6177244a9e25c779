"""Shared test setup: test helpers importable from ``tests/``, one hypothesis profile, and
the ``decodes`` fixture (every file a decoder opens)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """Every audio file a decoder opens from now on."""
    import av
    import soundfile

    opened: list[str] = []
    real_sf, real_av = soundfile.SoundFile, av.open

    class CountingSoundFile(real_sf):  # type: ignore[misc, valid-type]
        def __init__(self, file, *args, **kwargs):
            opened.append(os.fsdecode(file) if isinstance(file, bytes) else str(file))
            super().__init__(file, *args, **kwargs)

    def counting_av(file, *args, **kwargs):
        opened.append(os.fsdecode(file) if isinstance(file, bytes) else str(file))
        return real_av(file, *args, **kwargs)

    monkeypatch.setattr(soundfile, "SoundFile", CountingSoundFile)
    monkeypatch.setattr(av, "open", counting_av)
    return opened
