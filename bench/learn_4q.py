"""``genreml learn`` on a simulated library made of 4Q: a personal head vs the bundled one.

    PYTHONPATH=. nice -n 10 python bench/learn_4q.py [--data ../shared/data/4q]
        [--work DIR] [--keep] [--seed 0] [--workers 2]

Run by hand (never by the test suite); needs the ``learn`` extra (scikit-learn, skl2onnx) and
the ``train`` code in ``trainer/`` (for the bundled model's split, no TensorFlow). About ten
minutes on 2 cores: the backbone analyses every clip of the tagged two thirds once (learn)
and every clip of the untagged third three times (one ``analyze`` per variant).

Protocol (fixed before the first run; not changed after seeing results)
------------------------------------------------------------------------
1. **Library.** Every clip of ``--data`` (``Q1..Q4/<song>.opus`` + ``metadata.csv``) is copied
   into a temporary library, one folder per artist. The split unit is the artist, compared
   folded (:func:`tagger.labels.fold`); the 3 clips without an artist are each their own
   unit (own folder, no ARTIST tag). The sorted units are permuted with
   ``numpy.random.default_rng(SEED)``; the first ``round(2/3 * n)`` are *tagged*, the rest
   *untagged*. Every file with an artist gets ARTIST (and every file TITLE); a tagged file
   also gets GENRE, one Vorbis comment per AllMusic genre (``metadata.csv`` split on
   ``"; "``, so ``Pop/Rock`` stays whole), and MOOD, its quadrant as the bundled emotion
   head's label (Q1..Q4 = the head's labels in order: happy, tense, sad, calm). Written with
   mutagen. Untagged files carry neither GENRE nor MOOD.
2. **Learn.** ``XDG_DATA_HOME``/``XDG_CACHE_HOME``/``XDG_CONFIG_HOME`` and ``--cache`` point
   inside the work folder. ``genreml learn --task genre LIB`` then ``genreml learn --task mood
   LIB`` with the defaults (``--min-tracks 10``, ``--min-precision 0.7``, ``--split ";"``),
   as subprocesses; their printed cross-validation reports are shown verbatim.
3. **What gets written.** On the untagged files only: ``genreml analyze --json --heads H``
   for H = ``personal``, ``default`` (the bundled model) and ``both`` (personal mood; union of
   genres, personal first). The JSON ``genres`` and ``emotion`` fields are what ``genreml tag``
   writes under the default fill policy on a file without genre and mood. The personal
   variant is also derived from the ``both`` run (its genres restricted to the personal
   head's labels, its mood; exact, as the union head keeps each head's probabilities and
   decides every label at the same threshold): the two are compared as a check, and the
   derived one stands in if ``--heads personal`` fails (said in the output).
4. **Measures**, on the untagged tracks against ``metadata.csv``:
   * genre: micro precision, recall and F1 over *every* AllMusic genre the tracks carry
     (labels no variant can write count as misses: that is what the user is left without);
     the share of tracks that get at least one genre; per label precision, recall, support,
     with Wilson 95% intervals on precision. Labels are compared by
     :func:`tagger.labels.fold` after turning the bundled model's display names back into
     AllMusic names with the inverse of ``trainer.vocabulary.ALLMUSIC_NAMES`` (the map the
     bundle was built with: Hip Hop -> Rap, Pop Rock -> Pop/Rock, World Music ->
     International, Soundtrack -> Stage & Screen, Christmas Music -> Holiday, Spoken Word ->
     Comedy/Spoken). A track given one genre under two names (``both``: personal ``Rap`` and
     bundled ``Hip Hop``) counts once; how many tracks that happens to is reported.
   * mood: accuracy over all untagged tracks (a track without a mood counts as wrong; a
     variant that writes no mood at all, e.g. when learn wrote no mood head, is shown as
     such).
   * 95% intervals on micro-F1 and accuracy: 1000 bootstrap resamples of the tracks,
     ``default_rng(SEED)``.
5. **Fairness.** The bundled model was trained on 4Q (train + validation of its own
   artist-disjoint split, seed 0, :func:`trainer.bundle.corpus.corpus_index`), so on the whole
   untagged third its figures are partly on its training tracks and flatter it. Every figure
   is therefore also given on the untagged tracks in the bundled model's *test* split, which
   neither model saw.
6. Timings: each learn run and each analyze run, wall seconds.

Output: markdown (the learn reports, a block ready for README, per-label tables, timings).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from tagger.learn.crossfit import wilson  # the intervals learn reports

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
VARIANTS = ("personal", "default", "both")
QUADRANTS = ("Q1", "Q2", "Q3", "Q4")
EXPECTED_MOODS = ("happy", "tense", "sad", "calm")  # README: Q1 happy .. Q4 calm
BOOT = 1000


# -- the library


def read_metadata(data: Path) -> list[dict[str, str]]:
    with open(data / "metadata.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def split_units(rows: list[dict[str, str]], seed: int) -> tuple[set[str], dict[str, str]]:
    """The tagged units and each song's unit (folded artist, else the song itself)."""
    from tagger.labels import fold

    unit = {r["song"]: (f"artist:{fold(r['artist'])}" if r["artist"].strip()
                        else f"song:{r['song']}") for r in rows}
    units = sorted(set(unit.values()))
    order = np.random.default_rng(seed).permutation(len(units))
    n_tagged = round(2 * len(units) / 3)
    return {units[i] for i in order[:n_tagged]}, unit


def build_library(rows, data: Path, lib: Path, tagged_units: set[str], unit: dict[str, str],
                  moods: tuple[str, ...]) -> dict[str, Path]:
    """Copy and tag every clip; returns song -> its path in the library."""
    from mutagen.oggopus import OggOpus

    folders = {u: f"{i:04d}" for i, u in enumerate(sorted(set(unit.values())))}
    paths = {}
    for r in rows:
        song = r["song"]
        dest = lib / folders[unit[song]] / f"{song}.opus"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / r["quadrant"] / f"{song}.opus", dest)
        f = OggOpus(dest)
        if r["artist"].strip():
            f.tags["ARTIST"] = [r["artist"].strip()]
        f.tags["TITLE"] = [r["title"]]
        if unit[song] in tagged_units:
            f.tags["GENRE"] = [g.strip() for g in r["genres"].split("; ") if g.strip()]
            f.tags["MOOD"] = [moods[QUADRANTS.index(r["quadrant"])]]
        f.save()
        paths[song] = dest
    return paths


# -- running genreml


class Failed(Exception):
    """A genreml run exited non-zero (its stderr's last line is the message)."""


def genreml(argv: list[str], env: dict[str, str]) -> tuple[str, float]:
    """Run ``genreml ARGV`` (this checkout's) and return its stdout and wall seconds.

    Raises
    ------
    Failed
        It exited non-zero (its stderr is shown).
    """
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tagger.cli", *argv], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    noise = [line for line in proc.stderr.splitlines()
             if any(w in line.lower() for w in ("warn", "error", "fail", "traceback"))]
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        last = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise Failed(f"genreml {' '.join(argv[:4])} ... exited {proc.returncode}: {last}")
    for line in noise[:20]:
        print(f"    stderr of genreml {argv[0]}: {line}", file=sys.stderr)
    return proc.stdout, seconds


def analyze(variant: str, paths: list[Path], env: dict[str, str], workers: int
            ) -> tuple[dict[str, dict], float]:
    out, seconds = genreml(["analyze", "--json", "--heads", variant, "--workers",
                            str(workers), *map(str, paths)], env)
    results = {}
    for line in out.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            results[Path(d["path"]).stem] = d
    return results, seconds


# -- measures


def micro(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[float, float, float]:
    t, p, n = tp.sum(), fp.sum(), fn.sum()
    precision = t / (t + p) if t + p else 0.0
    recall = t / (t + n) if t + n else 0.0
    f1 = 2 * t / (2 * t + p + n) if 2 * t + p + n else 0.0
    return float(precision), float(recall), float(f1)


def boot_ci(stat, n: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of ``stat(idx)`` over ``BOOT`` resamples of ``n`` tracks."""
    rng = np.random.default_rng(seed)
    values = [stat(rng.integers(0, n, n)) for _ in range(BOOT)]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def evaluate(songs: list[str], truth_g: dict[str, set[str]], truth_m: dict[str, str],
             pred_g: dict[str, set[str]], pred_m: dict[str, str | None], seed: int) -> dict:
    tp = np.array([len(pred_g[s] & truth_g[s]) for s in songs])
    fp = np.array([len(pred_g[s] - truth_g[s]) for s in songs])
    fn = np.array([len(truth_g[s] - pred_g[s]) for s in songs])
    right = np.array([pred_m[s] == truth_m[s] for s in songs], float)
    precision, recall, f1 = micro(tp, fp, fn)
    n = len(songs)
    return {
        "tracks": n,
        "f1": f1, "precision": precision, "recall": recall,
        "f1_ci": boot_ci(lambda i: micro(tp[i], fp[i], fn[i])[2], n, seed),
        "with_genre": float(np.mean([bool(pred_g[s]) for s in songs])),
        "accuracy": float(right.mean()),
        "with_mood": float(np.mean([pred_m[s] is not None for s in songs])),
        "accuracy_ci": boot_ci(lambda i: float(right[i].mean()), n, seed),
    }


def per_label(labels: list[str], songs: list[str], truth_g, pred_g, shown: dict[str, str]
              ) -> list[dict]:
    """Per label (folded key), on ``songs``: written, correct, support."""
    out = []
    for key in labels:
        written = sum(key in pred_g[s] for s in songs)
        correct = sum(key in pred_g[s] and key in truth_g[s] for s in songs)
        support = sum(key in truth_g[s] for s in songs)
        out.append({"label": shown.get(key, key), "written": written, "correct": correct,
                    "support": support,
                    "precision": correct / written if written else None,
                    "precision_ci": wilson(correct, written),
                    "recall": correct / support if support else None})
    return out


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def summary_table(figures: dict[str, dict], names: dict[str, str]) -> list[str]:
    lines = ["| variant | genre micro-F1 [95% CI] | precision | recall | tracks with a genre "
             "| mood accuracy [95% CI] |", "|---|---|---|---|---|---|"]
    for v, m in figures.items():
        lines.append(f"| {names[v]} | {m['f1']:.2f}{_ci(m['f1_ci'])} | {m['precision']:.2f} "
                     f"| {m['recall']:.2f} | {m['with_genre']:.0%} "
                     + (f"| {m['accuracy']:.2f}{_ci(m['accuracy_ci'])} |" if m["with_mood"]
                        else "| no mood written |"))
    return lines


def label_table(rows: list[dict], cv: dict[str, dict] | None = None) -> list[str]:
    head = "| genre | "
    head += "cross-validated precision (learn) | " if cv is not None else ""
    head += "written | precision [95% CI] | recall | support |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r["label"]]
        if cv is not None:
            c = cv.get(r["label"])
            cells.append("-" if c is None else f"{_f(c['precision'])}{_ci(c['precision_ci'])}")
        cells += [str(r["written"]), f"{_f(r['precision'])}{_ci(r['precision_ci'])}",
                  _f(r["recall"]), str(r["support"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def confusion(songs, truth_m, pred_m, moods) -> list[str]:
    lines = ["| truth \\ written | " + " | ".join(moods) + " | none |",
             "|---|" + "---|" * (len(moods) + 1)]
    for t in moods:
        row = Counter(pred_m[s] for s in songs if truth_m[s] == t)
        lines.append(f"| {t} | " + " | ".join(str(row.get(m, 0)) for m in moods)
                     + f" | {row.get(None, 0)} |")
    return lines


# -- the run


def main() -> None:
    from tagger.labels import fold
    from tagger.model import load_models
    from trainer.bundle.corpus import corpus_index
    from trainer.vocabulary import ALLMUSIC_NAMES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "4q")
    ap.add_argument("--bundle-data", type=Path, default=SHARED / "4q",
                    help="the 4Q the bundled model was built from (to redraw its split)")
    ap.add_argument("--gtzan", type=Path, default=SHARED / "gtzan-classical",
                    help="only to redraw the bundled model's split")
    ap.add_argument("--work", type=Path, default=None,
                    help="work folder (default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    started = time.perf_counter()
    bundled = {spec.task: spec.labels for spec, _ in load_models(None).specs}
    moods = bundled["emotion"]
    if tuple(moods) != EXPECTED_MOODS:
        raise SystemExit(f"the bundled emotion head's labels are {moods}, not "
                         f"{EXPECTED_MOODS}: check the quadrant map")
    rows = read_metadata(args.data)
    tagged_units, unit = split_units(rows, args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="learn4q-"))
    work.mkdir(parents=True, exist_ok=True)
    lib, cache = work / "library", work / "cache.db"
    if lib.exists():
        shutil.rmtree(lib)
    env = dict(os.environ, XDG_DATA_HOME=str(work / "xdg-data"),
               XDG_CACHE_HOME=str(work / "xdg-cache"), XDG_CONFIG_HOME=str(work / "xdg-config"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    personal = work / "xdg-data" / "genreml" / "personal"
    if personal.exists():
        shutil.rmtree(personal)
    try:
        paths = build_library(rows, args.data, lib, tagged_units, unit, moods)
        untagged = sorted(r["song"] for r in rows if unit[r["song"]] not in tagged_units)
        n_units = len(set(unit.values()))
        print("# genreml learn on 4Q: a simulated library\n")
        print(f"{len(rows)} clips by {n_units} artists (clips without an artist: one each); "
              f"seed {args.seed}: {len(tagged_units)} artists' {len(rows) - len(untagged)} "
              f"clips tagged (GENRE, MOOD), {n_units - len(tagged_units)} artists' "
              f"{len(untagged)} clips untagged. Work folder: {work}\n")

        timings = {}
        reports = {}
        for task in ("genre", "mood"):
            out, timings[f"learn --task {task}"] = genreml(
                ["learn", "--task", task, "--cache", str(cache), "--workers",
                 str(args.workers), str(lib)], env)
            print(f"## genreml learn --task {task}\n\n```\n{out.rstrip()}\n```\n")
            report = personal / f"personal-{task}.report.json"
            reports[task] = json.loads(report.read_text()) if report.exists() else None

        variants = VARIANTS if any(personal.glob("*.onnx")) else ("default",)
        if variants != VARIANTS:
            print("(no personal head was written: only the bundled model is measured)\n")
        learned_g = (reports["genre"] or {}).get("learned", [])
        learned_m = (reports["mood"] or {}).get("learned", [])
        results = {}
        for variant in ("default", "both", "personal"):
            if variant not in variants:
                continue
            try:
                results[variant], timings[f"analyze --heads {variant}"] = analyze(
                    variant, [paths[s] for s in untagged], env, args.workers)
            except Failed as err:
                print(f"**{err}**\n")
                continue
            missing = set(untagged) - set(results[variant])
            if missing:
                print(f"(analyze --heads {variant}: no result for {len(missing)} tracks)\n")
        derived_personal = False
        if "both" in results:  # the personal variant as the union head sees it
            mine = {fold(g) for g in learned_g}
            derived = {s: {"genres": [g for g in d["genres"] if fold(g["label"]) in mine],
                           "emotion": d["emotion"] if learned_m else None}
                       for s, d in results["both"].items()}
            if "personal" in results:
                differ = sum(
                    [g["label"] for g in results["personal"][s]["genres"]]
                    != [g["label"] for g in derived[s]["genres"]]
                    or (results["personal"][s]["emotion"] or {}).get("label")
                    != (derived[s]["emotion"] or {}).get("label")
                    for s in derived if s in results["personal"])
                print(f"Check: `--heads personal` and the personal part of `--heads both` "
                      f"differ on {differ} of {len(derived)} tracks.\n")
            elif "personal" in variants:
                results["personal"] = derived
                derived_personal = True
                print("`--heads personal` failed: its figures below are the personal part of "
                      "`--heads both` (its genres among the personal head's labels, its "
                      "mood).\n")

        # truth and predictions, as folded AllMusic names
        back = {fold(shown): allmusic for allmusic, shown in ALLMUSIC_NAMES.items()}
        meta = {r["song"]: r for r in rows}
        truth_g = {s: {fold(g) for g in meta[s]["genres"].split("; ") if g.strip()}
                   for s in untagged}
        truth_m = {s: moods[QUADRANTS.index(meta[s]["quadrant"])] for s in untagged}
        shown = {fold(g): g.strip() for r in rows for g in r["genres"].split("; ")}

        def as_allmusic(label: str) -> str:
            return fold(back.get(fold(label), label))

        pred_g, pred_m, twice = {}, {}, {}
        for variant in VARIANTS:
            res = results.get(variant, {})
            pred_g[variant] = {s: {as_allmusic(g["label"]) for g in res[s]["genres"]}
                               if s in res else set() for s in untagged}
            pred_m[variant] = {s: (res[s]["emotion"] or {}).get("label") if s in res else None
                               for s in untagged}
            twice[variant] = sum(len(pred_g[variant][s]) < len(res[s]["genres"])
                                 for s in untagged if s in res)

        index = corpus_index(args.bundle_data, args.gtzan, seed=0)  # the bundle's seed
        bundled_test = {Path(p).stem for p, src in zip(index.parts["test"].paths,
                                                       index.parts["test"].source) if src == "4q"}
        fair = [s for s in untagged if s in bundled_test]
        subsets = {"all": untagged, "fair": fair}
        figures = {k: {v: evaluate(songs, truth_g, truth_m, pred_g[v], pred_m[v], args.seed)
                       for v in variants} for k, songs in subsets.items()}

        names = {"personal": "personal (`--heads personal`)" if not derived_personal
                 else "personal (the personal part of `--heads both`)",
                 "default": "bundled (`--heads default`)",
                 "both": "both (`--heads both`)"}
        print("## For README\n")
        print(f"A simulated library: 4Q's {len(rows)} clips, two thirds of the artists "
              f"({len(rows) - len(untagged)} clips) tagged with their AllMusic genres and "
              f"their quadrant's mood, the other third ({len(untagged)} clips, "
              f"{n_units - len(tagged_units)} artists) untagged. `genreml learn` (defaults: "
              "10 tracks, precision floor 0.7) learned "
              f"{len(learned_g)} genres ({', '.join(learned_g) or 'none'}) and "
              f"{len(learned_m)} moods ({', '.join(learned_m) or 'none: no personal mood head'}"
              "); what each variant "
              "writes on the untagged third, against AllMusic's genres (micro figures over "
              "every genre the tracks carry, so a genre no variant writes is a miss) and the "
              "quadrants. 95% intervals: 1000 bootstrap resamples of the tracks (per-label "
              "precision: Wilson).\n")
        print(f"All {len(untagged)} untagged tracks:\n")
        print("\n".join(summary_table(figures["all"], names)))
        print(f"\nThe {len(fair)} of them in the bundled model's test split (music neither "
              "model learned from):\n")
        print("\n".join(summary_table(figures["fair"], names)))
        print("\nThe bundled model was trained on 4Q itself (its own artist-disjoint split, "
              f"seed 0: {len(untagged) - len(fair)} of the {len(untagged)} untagged tracks "
              "were in its training or validation side), so its figures on all untagged "
              "tracks flatter it; the second table is the fair comparison. Its genre "
              "vocabulary is four labels "
              "(Blues, Hip Hop, Vocal, Classical), so its recall is low by design.\n")
        for v in VARIANTS:
            if twice[v]:
                print(f"`--heads {v}`: {twice[v]} tracks were written one genre under two "
                      "names (e.g. personal `Rap` and bundled `Hip Hop`; counted once "
                      "here).\n")

        cv = {f["label"]: f for f in (reports["genre"] or {}).get("labels", [])}
        for k, title in (("all", f"all {len(untagged)} untagged tracks"),
                         ("fair", f"the {len(fair)} in the bundled test split")):
            songs = subsets[k]
            print(f"## Per label, personal genre head, {title}\n")
            print("\n".join(label_table(per_label([fold(g) for g in learned_g], songs,
                                                  truth_g, pred_g["personal"], shown), cv)))
            print(f"\n## Per label, bundled genre head (AllMusic names), {title}\n")
            default_labels = [as_allmusic(g) for g in bundled["genre"]]
            print("\n".join(label_table(per_label(default_labels, songs, truth_g,
                                                  pred_g["default"], shown))))
            print()

        print("## Mood, all untagged tracks: what each variant writes\n")
        for v in ("personal", "default"):
            print(f"`--heads {v}`:\n")
            print("\n".join(confusion(untagged, truth_m, pred_m[v], moods)))
            print()

        print("## Timings (wall seconds, 2 workers)\n")
        print("| step | seconds |\n|---|---|")
        for step, seconds in timings.items():
            print(f"| genreml {step} | {seconds:.0f} |")
        print(f"| whole bench | {time.perf_counter() - started:.0f} |")
        print(f"\n`learn --task genre` includes analysing the {len(rows) - len(untagged)} "
              "tagged clips (cached); `learn --task mood` reuses the cache. Each `analyze` "
              f"analyses the {len(untagged)} untagged clips again (analyze keeps no cache).")
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
