"""Dataset readers on generated fixtures in the public layouts, group splits, the feature cache,
and the real 4Q set (read-only)."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from audiogen import make_audio
from tagger.audio import ClipStream
from tagger.features import FeatureSettings, log_mel
from trainer.datasets import (
    GEMS9,
    Dataset,
    DatasetError,
    Example,
    drop_rare_labels,
    load_dataset,
    read_4q,
    read_csv_manifest,
    read_emotify,
    read_folders,
)
from trainer.features_cache import ClipSpec, FeatureCache
from trainer.splits import leaked_groups, read_splits, recorded_split, split_by_group, write_splits

REPO = Path(__file__).resolve().parents[1]
REAL_4Q = REPO.parent / "shared" / "data" / "4q"


def _audio(path: Path, ext_sr: int = 16000, seconds: float = 0.3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_audio(path, seconds=seconds, sr=ext_sr)


# --------------------------------------------------------------------------- GTZAN


def test_gtzan_folders(tmp_path):
    for genre in ("blues", "classical"):
        for i in range(3):
            _audio(tmp_path / genre / f"{genre}.{i:05d}.wav")
    (tmp_path / "blues" / "notes.txt").write_text("not audio")
    ds = read_folders(tmp_path)
    assert ds.labels == ("blues", "classical")
    assert len(ds) == 6 and not ds.multi_label
    assert {e.labels for e in ds.examples} == {("blues",), ("classical",)}
    assert len({e.group for e in ds.examples}) == 6  # group = track
    assert ds.targets().sum(axis=1).tolist() == [1.0] * 6


# --------------------------------------------------------------------------- Emotify

# per track: genre and the emotions each of two listeners ticked
EMOTIFY_VOTES = {
    1: ("classical", [{"calmness", "tension"}, {"calmness"}]),
    2: ("classical", [{"solemnity"}, {"solemnity", "calmness"}]),
    101: ("rock", [{"power", "tension"}, {"power", "tension"}]),
    102: ("rock", [{"tension"}, {"power"}]),
    201: ("electronic", [{"joyful_activation"}, {"joyful_activation", "tension"}]),
    202: ("electronic", [{"tension"}, {"tension"}]),
    301: ("pop", [{"joyful_activation"}, {"nostalgia"}]),
    302: ("pop", [{"sadness"}, {"sadness", "nostalgia"}]),
    303: ("pop", [{"amazement"}, {"amazement"}]),  # annotated, but its audio is missing
}


def _emotify(root: Path) -> Path:
    header = ["track id", " genre", " amazement", " solemnity", " tenderness", " nostalgia",
              " calmness", " power", " joyful_activation", " tension", " sadness", " mood",
              " liked", " disliked", " age", " gender", " mother tongue"]
    root.mkdir(parents=True)
    with open(root / "data.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for track, (genre, listeners) in EMOTIFY_VOTES.items():
            for ticked in listeners:
                flags = [f" {int(e in ticked)}" for e in GEMS9]
                writer.writerow([track, f" {genre}", *flags, " 3", " 1", " 0", " 30", " 1",
                                 " English"])
    # three ways the audio is found: the id in its genre folder, the number within the genre
    # folder (rock/1.mp3 is track 101), the id anywhere
    for rel in ("classical/1.mp3", "classical/2.mp3", "rock/1.mp3", "rock/102.mp3",
                "electronic/201.mp3", "electronic/2.mp3", "pop/301.mp3", "misc/302.mp3"):
        _audio(root / rel, 22050)
    return root


def test_emotify_dominant_and_file_lookup(tmp_path, caplog):
    root = _emotify(tmp_path / "emotify")
    with caplog.at_level(logging.WARNING):
        ds = read_emotify(root, "emotion", "dominant")
    assert "303" in caplog.text  # no audio: logged and skipped
    by_track = {int(e.group.split(":")[1]): e for e in ds.examples}
    assert sorted(by_track) == [1, 2, 101, 102, 201, 202, 301, 302]
    assert by_track[101].path == root / "rock" / "1.mp3"
    assert by_track[202].path == root / "electronic" / "2.mp3"
    assert by_track[302].path == root / "misc" / "302.mp3"
    dominant = {t: e.labels[0] for t, e in by_track.items()}
    # ties go to the first emotion in GEMS-9 order (power before tension, nostalgia before joy)
    assert dominant == {1: "calmness", 2: "solemnity", 101: "power", 102: "power",
                        201: "joyful_activation", 202: "tension", 301: "nostalgia",
                        302: "sadness"}
    assert not ds.multi_label
    assert ds.labels == tuple(e for e in GEMS9 if e in dominant.values())


def test_emotify_binary_is_above_median_share(tmp_path):
    ds = read_emotify(_emotify(tmp_path / "emotify"), "emotion", "binary")
    assert ds.multi_label
    labels = {int(e.group.split(":")[1]): set(e.labels) for e in ds.examples}
    # tension shares over the 9 annotated tracks: median 0.5, so only shares of 1 count
    assert {t for t, ls in labels.items() if "tension" in ls} == {101, 202}
    # calmness: median 0, any share counts
    assert {t for t, ls in labels.items() if "calmness" in ls} == {1, 2}
    assert labels[101] == {"power", "tension"}
    assert labels[2] == {"solemnity", "calmness"}


def test_emotify_genre_task(tmp_path):
    ds = read_emotify(_emotify(tmp_path / "emotify"), "genre")
    assert ds.labels == ("classical", "electronic", "pop", "rock")
    assert sum(e.labels == ("rock",) for e in ds.examples) == 2


# --------------------------------------------------------------------------- 4Q

FOURQ_ROWS = [  # song, artist, quadrant, genres
    ("MT0000000001", "Ann", "Q1", "Pop/Rock"),
    ("MT0000000002", "Ann", "Q2", "Pop/Rock; Electronic"),
    ("MT0000000003", "Bob", "Q3", "Jazz"),
    ("MT0000000004", "Cid", "Q4", "Jazz; Vocal"),
    ("MT0000000005", "Dee", "Q1", "Pop/Rock; Rap"),
    ("MT0000000006", "Eve", "Q2", "Electronic"),
    ("MT0000000007", "Fay", "Q3", "Vocal"),
    ("MT0000000008", "Gus", "Q4", "Classical"),  # audio missing
]


def _fourq(root: Path) -> Path:
    root.mkdir(parents=True)
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["song", "artist", "title", "quadrant", "genres", "moods"])
        for song, artist, quadrant, genres in FOURQ_ROWS:
            writer.writerow([song, artist, f"Title {song[-1]}", quadrant, genres, "Calm; Warm"])
    for song, _, quadrant, _ in FOURQ_ROWS[:-1]:
        folder = "Q1" if song.endswith("7") else quadrant  # one file in the wrong folder
        _audio(root / folder / f"{song}.opus", 48000)
    return root


def test_4q_emotion_words_and_artist_groups(tmp_path):
    ds = read_4q(_fourq(tmp_path / "4q"), "emotion")
    assert len(ds) == 7 and not ds.multi_label
    assert ds.labels == ("happy", "tense", "sad", "calm")
    by_song = {e.path.stem: e for e in ds.examples}
    assert by_song["MT0000000002"].labels == ("tense",)
    assert by_song["MT0000000007"].labels == ("sad",)  # quadrant from the CSV, not the folder
    assert by_song["MT0000000001"].group == by_song["MT0000000002"].group  # same artist
    assert by_song["MT0000000001"].group != by_song["MT0000000003"].group


def test_4q_genres_and_min_count(tmp_path):
    ds = read_4q(_fourq(tmp_path / "4q"), "genre")
    assert ds.multi_label
    assert ds.labels == ("Electronic", "Jazz", "Pop/Rock", "Rap", "Vocal")
    by_song = {e.path.stem: e.labels for e in ds.examples}
    assert by_song["MT0000000002"] == ("Pop/Rock", "Electronic")
    kept = drop_rare_labels(ds, 2)  # Rap has one clip
    assert kept.labels == ("Electronic", "Jazz", "Pop/Rock", "Vocal")
    assert len(kept) == len(ds)
    assert dict(zip((e.path.stem for e in kept.examples), kept.targets().sum(axis=1))) \
        ["MT0000000005"] == 1.0  # Rap dropped, Pop/Rock stays
    strict = load_dataset("4q", tmp_path / "4q", "genre", min_count=3)
    assert strict.labels == ("Pop/Rock",)
    assert sum(not e.labels for e in strict.examples) == 4  # kept as all-negative examples


@pytest.mark.skipif(not REAL_4Q.is_dir(),
                    reason=f"no 4Q data set at {REAL_4Q} (the project's shared data, next to "
                           "its working tree; a clone elsewhere has none)")
def test_real_4q_read_only():
    emotion = read_4q(REAL_4Q, "emotion")
    assert 700 <= len(emotion) <= 720
    assert emotion.labels == ("happy", "tense", "sad", "calm")
    assert min(emotion.label_counts().values()) >= 170
    artists = {e.group for e in emotion.examples}
    assert 300 < len(artists) < len(emotion)
    genre = read_4q(REAL_4Q, "genre")
    assert {"Pop/Rock", "Jazz", "Electronic"} <= set(genre.labels)
    splits = split_by_group(emotion, seed=1)
    assert not leaked_groups(emotion, splits)
    for _, idx in splits.items():  # quadrants stay balanced
        share = emotion.targets(idx).mean(axis=0)
        assert np.abs(share - 0.25).max() < 0.05


# --------------------------------------------------------------------------- CSV manifest


def test_csv_manifest(tmp_path):
    for name in ("a.flac", "b.flac", "sub/c.wav"):
        _audio(tmp_path / "music" / name)
    manifest = tmp_path / "music" / "list.csv"
    manifest.write_text("path,labels,group\n"
                        "a.flac,Rock; Pop,artist1\n"
                        "b.flac,Jazz,artist1\n"
                        "sub/c.wav,Jazz,\n"
                        "missing.wav,Rock,artist2\n")
    ds = read_csv_manifest(manifest)
    assert ds.multi_label and ds.labels == ("Jazz", "Pop", "Rock")
    assert [e.path.name for e in ds.examples] == ["a.flac", "b.flac", "c.wav"]
    assert ds.examples[0].labels == ("Rock", "Pop")
    assert ds.examples[0].group == ds.examples[1].group == "artist1"
    assert ds.examples[2].group != "artist1"
    with pytest.raises(DatasetError):
        load_dataset("nope", manifest, "genre")


def test_cli_knows_every_dataset_kind():
    import trainer.cli
    import trainer.datasets

    assert trainer.cli.DATASET_KINDS == trainer.datasets.DATASET_KINDS


# --------------------------------------------------------------------------- splits


def _synthetic(n_artists: int = 30, tracks: int = 3, multi: bool = False) -> Dataset:
    rng = np.random.default_rng(0)
    labels = ("a", "b", "c", "d")
    examples = []
    for artist in range(n_artists):
        main = labels[artist % 4]
        for t in range(tracks):
            extra = (labels[rng.integers(4)],) if multi and rng.random() < 0.5 else ()
            examples.append(Example(Path(f"/x/{artist}/{t}.mp3"),
                                    tuple(dict.fromkeys((main, *extra))), f"artist:{artist}"))
    return Dataset("synthetic", "genre", labels, examples, multi)


@pytest.mark.parametrize("multi", [False, True])
def test_split_by_group_no_leak_balanced_seeded(multi):
    ds = _synthetic(multi=multi)
    splits = split_by_group(ds, (0.7, 0.15, 0.15), seed=3)
    assert not leaked_groups(ds, splits)
    assert sorted(splits.train + splits.validation + splits.test) == list(range(len(ds)))
    assert abs(len(splits.train) / len(ds) - 0.7) < 0.1
    for _, idx in splits.items():  # every label on every side
        assert (ds.targets(idx).sum(axis=0) > 0).all()
    again = split_by_group(ds, (0.7, 0.15, 0.15), seed=3)
    assert again.test == splits.test and again.train == splits.train
    other = split_by_group(ds, (0.7, 0.15, 0.15), seed=4)
    assert other.test != splits.test


def test_leaked_groups_detects_a_shared_artist():
    ds = _synthetic()
    splits = split_by_group(ds, seed=0)
    splits.test.append(splits.train[0])  # one track of a training artist also in test
    assert leaked_groups(ds, splits) == {ds.examples[splits.train[0]].group}


def test_splits_json_round_trip(tmp_path):
    ds = _synthetic(multi=True)
    splits = split_by_group(ds, seed=0)
    record = read_splits(write_splits(tmp_path / "splits.json", ds, splits))
    assert record["test"] == [str(ds.examples[i].path) for i in splits.test]
    test = recorded_split(record, "test")
    assert test.labels == ds.labels
    np.testing.assert_array_equal(test.targets(), ds.targets(splits.test))


# --------------------------------------------------------------------------- feature cache

SMALL = FeatureSettings(n_mels=32, n_frames=62)


def test_feature_cache_matches_log_mel_and_is_reused(tmp_path):
    audio = make_audio(tmp_path / "song.flac", seconds=3.0, sr=22050, freq=330.0)
    spec = ClipSpec(16000, 1.0, 0.5, SMALL)  # overlapping clips
    cache = FeatureCache(tmp_path / "cache")
    x = cache.features(audio, spec)
    clips = np.concatenate([b.clips for b in ClipStream(audio, 16000, 1.0, 0.5)])
    np.testing.assert_array_equal(x, log_mel(clips, 16000, SMALL))
    assert x.shape == (5, 62, 32)
    (entry,) = (tmp_path / "cache").rglob("*.npz")
    np.savez(entry, mel=np.zeros_like(x))  # a run that reads the cache gets this back
    assert not cache.features(audio, spec).any()
    assert cache.features(audio, spec.with_hop(1.0)).shape == (3, 62, 32)  # another key
    stat = audio.stat()
    os.utime(audio, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "edited" file
    np.testing.assert_array_equal(cache.features(audio, spec), x)


def test_feature_cache_skips_bad_files(tmp_path, caplog):
    good = make_audio(tmp_path / "good.wav", seconds=1.5, sr=16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    cache = FeatureCache(tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        arrays, kept = cache.extract([bad, good], ClipSpec(16000, 1.0, 1.0, SMALL),
                                     progress=False)
    assert kept == [1] and arrays[0].shape == (1, 62, 32)
    assert "bad.wav" in caplog.text and len(caplog.records) == 1
