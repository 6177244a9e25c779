"""genreml trainer: labelled audio to ONNX models (needs the train extra)."""

# Before any trainer module imports onnxruntime: tagger switches its telemetry off (see there).
import tagger  # noqa: F401
