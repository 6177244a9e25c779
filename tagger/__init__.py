"""genreml runtime: audio to genres and mood.

Nothing leaves the machine. onnxruntime's telemetry (a device id and queued events under
``~/.cache/Microsoft``, and DNS lookups of a Microsoft events host from its own threads about
ten seconds after the first session) is switched off here, before any genreml module imports
onnxruntime: the library reads ``ORT_DISABLE_TELEMETRY`` once, when it is imported, and
``onnxruntime.disable_telemetry_events()`` stops neither the files nor the lookups. Every front
door (CLI, daemon, beets plugin, trainer) imports this package first.
"""

import os
import sys

__version__ = "0.1.0"

# True when something imported onnxruntime with telemetry on before genreml could switch it off
# (a host process, another beets plugin); tagger.onnxsession warns about it once.
ORT_TELEMETRY_ON = ("onnxruntime" in sys.modules
                    and os.environ.get("ORT_DISABLE_TELEMETRY") != "1")
# Set unconditionally: a value of 0 inherited from the environment must not turn it back on.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
