"""genreml trainer: labelled audio to ONNX models (needs the train extra)."""
