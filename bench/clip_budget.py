"""Issue 15: how many clips per track (the clip budget K) keep the full analysis' decisions.

Every track of the Debian game soundtracks (``bench/soundtracks.py DIR``) is analysed once in
full with the bundled models (every 3-s clip of the grid 0, 3, 6, ... s; cached as one ``.npz``
per track under ``--cache``). Then, for each K and placement, K grid clips are picked, their
probabilities averaged (:func:`tagger.predict.aggregate`) and decided (genres >= the model's
threshold, mood = argmax) and compared with the full analysis' decisions.

Placements (all clips when a track has n <= K grid clips):

* ``centres``: :func:`grid_indices`, the centres of K equal parts of the track;
* ``inner``: the same over the grid clips from 10% to 90% of the track (intros/outros skipped);
* ``first``: the first K clips (naive baseline);
* ``auto/K1+K2@D`` (:class:`tagger.budget.ClipBudget`): ``centres`` with K1 clips, widened by
  the centres of K2 parts where a decision is within D of flipping (the default ``auto`` and
  its neighbours, to show the choice is not a lucky point).

Silent clips are not analysed, so a picked grid clip may have no probabilities; it is then left
out (the pick is never empty: the analysed clip nearest the first pick stands in). A track
with no usable clip at all (wesnoth's ``music-silence.ogg``) is skipped.

Usage::

    PYTHONPATH=. nice python bench/clip_budget.py /tmp/soundtracks --cache /tmp/budget \\
        --out /tmp/budget/results.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tagger.budget import ClipBudget, decision_margin, grid_indices
from tagger.result import HeadResult, TrackResult

BUDGETS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 28, 32, 36, 40, 48, 56, 64)
EXPLAIN = (16, 32, 40)  # budgets whose differing tracks (centres) are listed with reasons
AUDIO = {".ogg", ".opus", ".mp3", ".flac", ".wav"}
TASKS = ("genre", "emotion")
SKIP = {"debs", "unpacked"}  # bench/soundtracks.py's downloads, not soundtracks


def inner_indices(n_clips: int, k: int | None) -> np.ndarray:
    """:func:`grid_indices` over grid clips ``floor(0.1 n) .. ceil(0.9 n) - 1`` only."""
    if k is None or k >= n_clips:
        return np.arange(n_clips, dtype=np.int64)
    lo, hi = math.floor(0.1 * n_clips), math.ceil(0.9 * n_clips)
    return lo + grid_indices(hi - lo, k)


def first_indices(n_clips: int, k: int | None) -> np.ndarray:
    """The first ``k`` grid clips."""
    return np.arange(n_clips if k is None else min(k, n_clips), dtype=np.int64)


PLACEMENTS: dict[str, Callable[[int, int | None], np.ndarray]] = {
    "centres": grid_indices, "inner": inner_indices, "first": first_indices}


def analyse_all(root: Path, cache: Path) -> tuple[list[dict], dict]:
    """Full analysis of every track under ``root/<soundtrack>/``, cached per track.

    Returns
    -------
    tracks : list of dict
        ``soundtrack``, ``name``, ``grid`` (grid index per analysed clip), ``n`` (grid clips),
        ``duration``, ``seconds`` (analysis time) and one timeline ``[clips, labels]`` per task.
    heads : dict
        Per task: ``labels`` and ``threshold``.
    """
    from tagger.audio import SilentAudio
    from tagger.model import load_models
    from tagger.predict import Analyzer

    models = load_models(device="cpu")
    clip = models.clip_seconds
    heads = {h.task: {"labels": list(h.labels), "threshold": h.threshold}
             for h, _ in models.specs}
    analyzer, tracks = Analyzer(models, budget=ClipBudget.parse("all")), []
    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name not in SKIP]
    for folder in folders:
        for path in sorted(p for p in folder.iterdir() if p.suffix in AUDIO):
            file = cache / folder.name / f"{path.name}.npz"
            if not file.exists():
                t0 = time.perf_counter()
                try:
                    res = analyzer.analyze(path)
                except SilentAudio:  # e.g. wesnoth's music-silence.ogg: nothing to decide
                    print(f"skipped {folder.name}/{path.name}: silent", flush=True)
                    continue
                file.parent.mkdir(parents=True, exist_ok=True)
                np.savez(file, starts=res.clip_starts, duration=res.duration,
                         seconds=time.perf_counter() - t0,
                         **{t: h.timeline for t, h in res.heads.items()})
                print(f"analysed {folder.name}/{path.name}: {res.clips} clips", flush=True)
            data = np.load(file)
            grid = np.rint(data["starts"] / clip).astype(np.int64)
            n = max(int(grid[-1]) + 1, int(float(data["duration"]) / clip + 1e-6))
            tracks.append({"soundtrack": folder.name, "name": path.name, "grid": grid, "n": n,
                           "duration": float(data["duration"]), "seconds": float(data["seconds"]),
                           **{t: data[t] for t in TASKS}})
    return tracks, heads


def decisions(track: dict, heads: dict, rows: np.ndarray | None) -> tuple[dict, frozenset, int]:
    """Track-level probabilities per task, the genre set and the mood index from ``rows``."""
    from tagger.predict import aggregate
    from tagger.result import DEFAULT_GENRE_THRESHOLD, decide_genres

    probs = {t: aggregate(track[t] if rows is None else track[t][rows]) for t in TASKS}
    threshold = heads["genre"]["threshold"] or DEFAULT_GENRE_THRESHOLD
    genres = frozenset(g for g, _ in decide_genres(heads["genre"]["labels"], probs["genre"],
                                                   threshold))
    return probs, genres, int(np.argmax(probs["emotion"]))


def pick_rows(track: dict, indices: np.ndarray) -> np.ndarray:
    """Timeline rows of the picked grid ``indices`` that were analysed (not silent)."""
    rows = np.flatnonzero(np.isin(track["grid"], indices))
    return rows if len(rows) else np.array([np.abs(track["grid"] - indices[0]).argmin()])


def auto_indices(track: dict, heads: dict, budget: ClipBudget) -> np.ndarray:
    """The grid clips a two-stage :class:`ClipBudget` analyses: its first clips, and the
    widening ones where :func:`tagger.budget.decision_margin` asks (as the Analyzer does)."""
    first = grid_indices(track["n"], budget.clips)
    if not budget.widen or len(first) >= track["n"]:
        return first
    probs, _, _ = decisions(track, heads, pick_rows(track, first))
    result = TrackResult(track["name"], track["duration"], np.zeros(0), {
        t: HeadResult(t, heads[t]["labels"], probs[t], np.zeros((0, len(probs[t]))),
                      heads[t]["threshold"], None) for t in TASKS})
    if decision_margin(result) >= budget.margin:
        return first
    return np.union1d(first, grid_indices(track["n"], budget.widen))


# the default auto budget and its neighbours
AUTO_BUDGETS = [ClipBudget(k1, k2, d) for k1 in (8, 12, 16) for k2 in (32, 48)
                for d in (0.05, 0.08, 0.1)]


def compare(tracks: list[dict], heads: dict) -> dict:
    """Agreement with the full analysis per placement, K and soundtrack (plus ``all``)."""
    full = [decisions(t, heads, None) for t in tracks]
    groups = ["all"] + sorted({t["soundtrack"] for t in tracks})
    picks: dict[str, Callable[[dict], np.ndarray]] = {
        f"{place}/{k}": (lambda t, pick=pick, k=k: pick(t["n"], k))
        for place, pick in PLACEMENTS.items() for k in BUDGETS}
    picks.update({f"auto/{b.clips}+{b.widen}@{b.margin}": (lambda t, b=b: auto_indices(t, heads, b))
                  for b in AUTO_BUDGETS})
    out: dict = {}
    for key, pick in picks.items():
        rows = []
        for track, (p0, g0, m0) in zip(tracks, full):
            indices = pick(track)
            p, g, m = decisions(track, heads, pick_rows(track, indices))
            delta = max(float(np.abs(p[t] - p0[t]).max()) for t in TASKS)
            rows.append((track, g == g0, m == m0, delta, len(indices)))
        out[key] = {grp: summarise([r for r in rows if grp in ("all", r[0]["soundtrack"])])
                    for grp in groups}
        out[key]["differing"] = [
            f"{r[0]['soundtrack']}/{r[0]['name']}" for r in rows if not (r[1] and r[2])]
    return out


def summarise(rows: list[tuple]) -> dict:
    """Shares of identical genre sets / moods / both, the largest probability change, and the
    share of grid clips analysed."""
    return {"tracks": len(rows),
            "genre": float(np.mean([r[1] for r in rows])),
            "mood": float(np.mean([r[2] for r in rows])),
            "both": float(np.mean([r[1] and r[2] for r in rows])),
            "max_delta": max(r[3] for r in rows),
            "clips_share": sum(r[4] for r in rows) / sum(r[0]["n"] for r in rows),
            "clips_per_track": float(np.mean([r[4] for r in rows]))}


def explain(track: dict, heads: dict, place: str, k: int) -> dict:
    """What a budget changes for one track: each flipped genre with its full and budgeted
    probability, and the mood (full -> budgeted) with the full analysis' top-2 gap."""
    p0, g0, m0 = decisions(track, heads, None)
    p, g, m = decisions(track, heads, pick_rows(track, PLACEMENTS[place](track["n"], k)))
    labels, moods = heads["genre"]["labels"], heads["emotion"]["labels"]
    top = np.sort(p0["emotion"])[::-1]
    out: dict = {"n": track["n"]}
    for label in sorted(g0 ^ g):
        i = labels.index(label)
        out[label] = f"{p0['genre'][i]:.3f} -> {p['genre'][i]:.3f}"
    if m != m0:
        out["mood"] = f"{moods[m0]} -> {moods[m]} (full top-2 gap {top[0] - top[1]:.3f})"
    return out


def table(results: dict, groups: list[str]) -> str:
    """Markdown: one row per placement and K; cells ``both% (genre% / mood%) max|dp|``."""
    head = ["placement", "K", "clips %", "clips/track"] + groups
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, res in results.items():
        place, k = key.split("/")
        cells = [f"{100 * res[g]['both']:.1f} ({100 * res[g]['genre']:.1f} / "
                 f"{100 * res[g]['mood']:.1f}) {res[g]['max_delta']:.3f}" for g in groups]
        lines.append(f"| {place} | {k} | {100 * res['all']['clips_share']:.1f} | "
                     f"{res['all']['clips_per_track']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("soundtracks", type=Path, help="folder made by bench/soundtracks.py")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/budget"),
                    help="full-analysis cache (default: /tmp/budget)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    tracks, heads = analyse_all(args.soundtracks, args.cache)
    results = compare(tracks, heads)
    groups = ["all"] + sorted({t["soundtrack"] for t in tracks})
    n_clips = sum(len(t["grid"]) for t in tracks)
    minutes = sum(t["duration"] for t in tracks) / 60
    seconds = sum(t["seconds"] for t in tracks)
    print(f"{len(tracks)} tracks, {minutes:.1f} min, {sum(t['n'] for t in tracks)} grid clips "
          f"({n_clips} analysed, the rest silent); full analysis {seconds:.0f} s "
          f"({1000 * seconds / n_clips:.1f} ms/clip)\n")
    print("cells: identical both % (genres % / mood %) largest |track probability change|\n")
    print(table(results, groups))
    near = {}
    for k in EXPLAIN:
        print(f"\ntracks differing with centres, K={k} (genre: full -> budgeted probability, "
              f"threshold {heads['genre']['threshold']}):")
        for name in results[f"centres/{k}"]["differing"]:
            track = next(t for t in tracks if f"{t['soundtrack']}/{t['name']}" == name)
            near[f"{k}/{name}"] = explain(track, heads, "centres", k)
            print(f"  {name}: {near[f'{k}/{name}']}")
    if args.out:
        args.out.write_text(json.dumps({
            "tracks": len(tracks), "minutes": minutes, "clips": n_clips, "heads": heads,
            "analysis_seconds": seconds, "results": results, "differing_centres": near},
            indent=1))


if __name__ == "__main__":
    main()
