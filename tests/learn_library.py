"""A generated library whose genres are audible, half of it tagged, for ``genreml learn``.

Three genres with distinct synthetic timbres (a low drone, a high chime, broadband hiss),
several artists each, a few tracks per artist with its own variations. The artists of the
first two thirds carry their genre (and a mood) as tags; the rest carry only the artist.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from mutagen.flac import FLAC

from audiogen import write_audio

SR = 16000
GENRES = {"Drone": ("tone", 150.0, 300.0), "Chime": ("tone", 2500.0, 4000.0),
          "Hiss": ("noise", 0.0, 0.0)}
MOODS = {"Drone": "calm", "Chime": "calm", "Hiss": "tense"}


@dataclasses.dataclass
class Track:
    path: Path
    artist: str
    genre: str
    tagged: bool


def _signal(kind: str, lo: float, hi: float, seconds: float, rng: np.random.Generator
            ) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    if kind == "noise":
        y = rng.uniform(-0.4, 0.4, n) * (0.5 + 0.5 * rng.random())
    else:
        f = rng.uniform(lo, hi)
        y = 0.35 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(2 * np.pi * 2.01 * f * t)
        y += rng.normal(0, 0.01, n)  # a little room noise
    return y.astype(np.float32).reshape(-1, 1)


def tag_file(path: Path, **fields: list[str] | str) -> None:
    """Set Vorbis comments (upper-cased names) on a FLAC file."""
    f = FLAC(path)
    for key, value in fields.items():
        f[key.upper()] = value if isinstance(value, list) else [value]
    f.save()


def make_learn_library(root: Path, artists: int = 6, per_artist: int = 3,
                       tagged_artists: int = 4, seconds: float = 3.0, seed: int = 0,
                       moods: bool = False) -> list[Track]:
    """``artists`` per genre, ``per_artist`` FLAC tracks each; the first ``tagged_artists``
    of each genre carry GENRE (and with ``moods`` MOOD) tags, every track an ARTIST tag."""
    rng = np.random.default_rng(seed)
    tracks = []
    for genre, (kind, lo, hi) in GENRES.items():
        for a in range(artists):
            artist = f"{genre} Artist {a}"
            folder = root / artist
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_artist):
                path = write_audio(folder / f"track {k}.flac",
                                   _signal(kind, lo, hi, seconds, rng), SR)
                tagged = a < tagged_artists
                fields: dict = {"artist": artist}
                if tagged:
                    fields["genre"] = genre
                    if moods:
                        fields["mood"] = MOODS[genre]
                tag_file(path, **fields)
                tracks.append(Track(path, artist, genre, tagged))
    return tracks
