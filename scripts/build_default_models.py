"""Rebuild the bundled default models from scratch (``make models``).

1. Convert the musicnn MSD checkpoint to ONNX (parity-checked against TensorFlow): the one
   backbone. Its 200-unit penultimate layer is the clip embedding.
2. Embed 4Q (mood and AllMusic genres) and the GTZAN classical excerpts (Classical), split
   artist-disjoint (GTZAN by blocks of consecutive files): :mod:`trainer.bundle.corpus`.
3. Choose the heads by cross-validation grouped by artist on the training side (logistic
   regressions, small MLPs, calibration), pick the family on validation, cross-fit the written
   threshold: :mod:`trainer.bundle.choose`. Refit on training + validation.
4. Export the backbone and the heads, measure it once on the test split through the
   tagger itself (:mod:`trainer.bundle.report`), keep the genres that earn their place
   (:class:`trainer.vocabulary.ShipRule`), and write ``tagger/models/`` (the backbone
   ``MSD_musicnn.onnx``, the heads ``genreml-4q-genre.onnx`` and ``genreml-4q-emotion.onnx``),
   ``MODEL_CARD.md`` and ``metrics.json``.
5. With ``--soundtracks``, tag real Debian game soundtracks and publish per soundtrack the
   share of tracks per written label (:mod:`trainer.bundle.plausibility`).

Needs the ``train`` extra and ``pip install --no-deps musicnn==0.1.0``. About 40 minutes on
2 cores with ``--soundtracks``, most of it analysing 9 hours of soundtracks twice (the 4Q and
GTZAN embeddings are cached under ``~/.cache/genreml/features``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
NAME, VERSION = "genreml-4q", "2.0.0"
EMBEDDING = ("penultimate",)

log = logging.getLogger("build_default_models")


def export(backbone_path: Path, genre, mood, genres: list[str], moods: list[str],
           threshold: float, out: Path, extra: dict[str, str]) -> Path:
    """The backbone (optimised: :func:`trainer.optimize.optimize_backbone`) and one head
    file per task in folder ``out`` (display names in the metadata); returns ``out``."""
    from tagger.features import MUSICNN_FEATURES
    from tagger.model import HeadSpec
    from trainer.export import join
    from trainer.split import save_split
    from trainer.features_cache import OnnxBackbone
    from trainer.heads import head_to_onnx
    from trainer.musicnn import CLIP_SECONDS, SAMPLE_RATE
    from trainer.vocabulary import display_name

    backbone = OnnxBackbone(backbone_path, EMBEDDING)
    proto = join(onnx.load_from_string(backbone.model_bytes), EMBEDDING,
                 {"genre": head_to_onnx(genre, "genre"), "emotion": head_to_onnx(mood, "emotion")})
    heads = [HeadSpec("genre", "genre", tuple(display_name(g) for g in genres), threshold),
             HeadSpec("emotion", "emotion", tuple(moods))]
    save_split(proto, out, backbone.metadata.get("genreml.backbone", "MSD_musicnn"), "1",
               EMBEDDING, NAME, VERSION, SAMPLE_RATE, CLIP_SECONDS, MUSICNN_FEATURES, heads,
               optimize=True, trainer="genreml scripts/build_default_models.py", **extra)
    return out


def build(args: argparse.Namespace) -> Path:
    from tagger.features import MUSICNN_FEATURES
    from trainer.bundle.card import write_card
    from trainer.bundle.choose import choose
    from trainer.bundle.corpus import load_corpus
    from trainer.bundle.report import test_report
    from trainer.features_cache import ClipSpec, FeatureCache, OnnxBackbone
    from trainer.musicnn import CLIP_SECONDS, SAMPLE_RATE, convert_backbone
    from trainer.vocabulary import ShipRule

    args.work.mkdir(parents=True, exist_ok=True)
    backbone_path = args.backbone or convert_backbone("MSD_musicnn",
                                                      args.work / "MSD_musicnn.onnx")
    backbone = OnnxBackbone(backbone_path, EMBEDDING)
    spec = ClipSpec(SAMPLE_RATE, CLIP_SECONDS, CLIP_SECONDS, MUSICNN_FEATURES)
    corpus = load_corpus(args.data, args.gtzan, spec, backbone, FeatureCache(args.cache),
                         args.min_count, args.seed)
    choice = choose(corpus, args.seed)
    provenance = {"dataset": f"4q + gtzan-classical (seed {args.seed})", "seed": str(args.seed)}
    candidate = export(backbone_path, choice.genre, choice.mood, corpus.genres, corpus.moods,
                       choice.threshold, args.work / "candidate", provenance)
    soundtracks, vetoes = None, {}
    if args.soundtracks:
        from trainer.bundle.plausibility import misfires, soundtrack_shares
        from trainer.vocabulary import display_name

        # every candidate label on real recordings: one that fires on most tracks of a kind
        # it does not describe is not shipped, whatever the test split says
        soundtracks = soundtrack_shares(candidate, args.soundtracks)
        wrong = misfires(soundtracks)
        vetoes = {g: wrong[display_name(g)] for g in corpus.genres if display_name(g) in wrong}
    report = test_report(choice, corpus, candidate, ShipRule(), vetoes)
    if report["onnx_vs_numpy_max_diff"] > 1e-4:
        raise RuntimeError(f"the exported heads disagree with numpy by "
                           f"{report['onnx_vs_numpy_max_diff']:.1e}")
    if not report["shipped"]:
        raise RuntimeError("no genre passed the vocabulary rule; nothing to ship")
    shipped = [corpus.genres.index(g) for g in report["shipped"]]
    args.out.mkdir(parents=True, exist_ok=True)
    model = export(backbone_path, choice.genre.columns(shipped), choice.mood,
                   report["shipped"], corpus.moods, choice.threshold,
                   args.out, provenance)
    record = {"name": NAME, "version": VERSION, "counts": corpus.counts,
              "splits": {k: len(getattr(corpus, k).paths)
                         for k in ("train", "validation", "test")},
              "selection": choice.record, "test": report}
    if soundtracks is not None:
        from trainer.bundle.plausibility import soundtrack_shares

        record["soundtracks"] = soundtracks  # every candidate label
        record["soundtracks_shipped"] = soundtrack_shares(model, args.soundtracks)
    (args.out / "metrics.json").write_text(json.dumps(record, indent=1, default=_plain))
    write_card(record, args.out / "MODEL_CARD.md")
    return model


def _plain(x: object) -> object:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x).__name__)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "4q", help="the 4Q folder")
    ap.add_argument("--gtzan", type=Path, default=SHARED / "gtzan-classical",
                    help="GTZAN layout folder holding classical/")
    ap.add_argument("--soundtracks", type=Path, default=None,
                    help="folder made by bench/soundtracks.py (one sub-folder per soundtrack)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "default",
                    help="where the converted backbone and the candidate model go")
    ap.add_argument("--cache", type=Path, default=None, help="embedding cache folder")
    ap.add_argument("--out", type=Path, default=ROOT / "tagger" / "models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-count", type=int, default=20)
    ap.add_argument("--backbone", type=Path, default=None,
                    help="an MSD backbone already converted (skips the conversion; the "
                    "conversion is not bit-for-bit repeatable, so reusing one file keeps the "
                    "embedding cache valid)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = build(args)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
