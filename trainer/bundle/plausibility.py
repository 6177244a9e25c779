"""Does a model write what a listener would, on real full-length recordings of known kinds?

Each sub-folder of the soundtracks folder (``bench/soundtracks.py``) is one soundtrack of one
kind (orchestral, electronic, industrial, ambient). Every track goes through the tagger's own
:class:`~tagger.predict.Analyzer`; the table is the share of tracks per written genre and mood.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["KIND_LABELS", "misfires", "soundtrack_shares"]

# What each kind of soundtrack may be called (shipped names); a folder is named NAME-KIND.
KIND_LABELS = {
    "orchestral": {"Classical", "Soundtrack"},
    "electronic": {"Electronic"},
    "industrial": {"Electronic"},
    "ambient": {"Electronic", "New Age"},
}
MOST = 0.5

AUDIO = {".ogg", ".opus", ".mp3", ".flac", ".wav", ".m4a"}


def soundtrack_shares(model: Path, root: Path) -> dict[str, dict]:
    """Per soundtrack folder: tracks analysed, skipped (with reasons), the share of tracks that
    get each genre, the share per mood, and the share that get no genre at all."""
    from tagger.audio import AudioError
    from tagger.model import load_models
    from tagger.predict import Analyzer

    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no soundtracks folder (python bench/soundtracks.py)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.rsplit("-", 1)[-1]
                     in KIND_LABELS)
    if not folders:
        raise ValueError(f"{root}: no NAME-KIND soundtrack folders ({', '.join(KIND_LABELS)})")
    analyzer = Analyzer(load_models(model, device="cpu"))
    out: dict[str, dict] = {}
    for folder in folders:
        genres: collections.Counter[str] = collections.Counter()
        moods: collections.Counter[str] = collections.Counter()
        analysed, skipped, none = 0, [], 0
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO):
            try:
                result = analyzer.analyze(path)
            except (AudioError, OSError) as err:
                skipped.append(f"{path.name}: {err}")
                continue
            analysed += 1
            written = [g for g, _ in result.genres]
            genres.update(written)
            none += not written
            if result.emotion:
                moods[result.emotion[0]] += 1
        log.info("%s: %d tracks, genres %s, moods %s", folder.name, analysed, dict(genres),
                 dict(moods))
        out[folder.name] = {
            "tracks": analysed, "skipped": skipped,
            "genres": {g: n / analysed for g, n in genres.most_common()} if analysed else {},
            "moods": {m: n / analysed for m, n in moods.most_common()} if analysed else {},
            "no_genre": none / analysed if analysed else None,
        }
    return out


def misfires(shares: dict[str, dict], most: float = MOST) -> dict[str, str]:
    """Labels written on more than ``most`` of the tracks of a soundtrack whose kind they do
    not describe (:data:`KIND_LABELS`), with the reason; such a label is not shipped."""
    out: dict[str, str] = {}
    for folder, s in shares.items():
        kind = folder.rsplit("-", 1)[-1]
        if kind not in KIND_LABELS:
            continue
        for label, share in s["genres"].items():
            if share > most and label not in KIND_LABELS[kind]:
                out.setdefault(label, f"written on {100 * share:.0f}% of {folder}")
    return out
