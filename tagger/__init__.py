"""genreml runtime: audio to genres and mood."""

__version__ = "0.1.0"
