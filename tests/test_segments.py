"""Clips decoded after a seek (tagger.segments) against the same clips from a full decode,
on files encoded by real codecs; and the fingerprint from an open reader.

Tolerances, from the largest differences measured on these files (stereo tone + chirp + a
little noise, 44.1 kHz, 48 kHz for opus, 16 kHz clips):

* libsndfile formats (wav, aiff, flac, ogg vorbis, opus, mp3): the native frames a read gives
  equal a full decode's bit for bit (lossy ones are read from a pre-roll, Vorbis never from
  its last page); clips differ by at most 1.8e-7 here (2.7e-7 over native rates of 8 to
  192 kHz): float32 rounding in soxr, whose FFT stages round differently when a segment
  starts elsewhere. Tolerance 1e-6.
* m4a (FFmpeg's AAC): native frames differ by at most 3.3e-5 (about one 16-bit step), clips
  by 1.8e-5: the AAC decoder keeps state across a seek (its noise generator for PNS bands).
  The content is tonal here because a noise-like band coded as PNS is drawn anew on each
  decode and differs by its own amplitude (0.1 measured on white noise). Tolerance 1e-4.
* raw ADTS .aac (not seekable: cut in one sequential pass, the same decode as ClipStream):
  equal. Tolerance 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiogen import signal, write_audio
from tagger.audio import AudioError, ClipStream, decode_blocks, load
from tagger.fingerprint import (
    FINGERPRINT_VERSION,
    SEEK_VERSION,
    fingerprint,
    fingerprint_duration,
    fingerprint_of,
    same_duration,
)
from tagger.segments import SegmentReader, clip_count, read_clips

SR = 16000
CLIP = 3.0
SECONDS = 24.02  # clips at 0..21 s; the last ends 20 ms before the end, inside the margin
EXACT_FORMATS = ["wav", "aiff", "flac", "ogg", "opus", "mp3"]  # read by libsndfile
TOLERANCE = {**{ext: 1e-6 for ext in EXACT_FORMATS}, "m4a": 1e-4, "aac": 0.0}


def _rate(ext: str) -> int:
    return 48000 if ext == "opus" else 44100


def content(seconds: float, sr: int, noise: bool = True) -> np.ndarray:
    """Stereo tone and chirp, with a little noise unless the codec is AAC (see the module
    doc)."""
    y = 0.5 * signal(seconds, sr, 2, "tone", freq=330.0) + 0.3 * signal(seconds, sr, 2, "chirp")
    if noise:
        y += 0.1 * signal(seconds, sr, 2, "noise", seed=7)
    return y.astype(np.float32)


def encode(path: Path, seconds: float = SECONDS) -> Path:
    """``content`` encoded by the codec of ``path``'s extension (``.aac``: raw ADTS)."""
    ext = path.suffix.lstrip(".")
    if ext == "aac":  # encoded as m4a, then copied into an ADTS stream (no index)
        m4a = encode(path.with_suffix(".tmp.m4a"), seconds)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(m4a), "-c:a", "copy",
                        "-f", "adts", str(path)], check=True)
        m4a.unlink()
        return path
    return write_audio(path, content(seconds, _rate(ext), noise=ext != "m4a"), _rate(ext))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("encoded")
    return {ext: encode(folder / f"a.{ext}") for ext in [*EXACT_FORMATS, "m4a", "aac"]}


def stream_clips(path: Path) -> dict[float, np.ndarray]:
    """Every clip ClipStream cuts, by start."""
    batches = list(ClipStream(path, SR, CLIP))
    starts = np.concatenate([b.starts for b in batches])
    return dict(zip(starts.tolist(), np.concatenate([b.clips for b in batches])))


# --------------------------------------------------------------------------- clips


@pytest.mark.parametrize("ext", [*EXACT_FORMATS, "m4a", "aac"])
def test_seek_clips_equal_the_full_decode(files, ext):
    want = stream_clips(files[ext])
    assert sorted(want) == [3.0 * k for k in range(8)]  # 24.02 s: clips at 0 ... 21 s
    asked = [21.0, 0.0, 9.0, 24.0, 3.0, 9.0]  # any order, a repeat, one past the end
    with SegmentReader(files[ext]) as reader:
        assert reader.seekable == (ext != "aac")
        if ext != "aac":  # raw ADTS announces a length estimated from its bit rate
            assert clip_count(reader, SR, CLIP) == 8
        batch = read_clips(reader, SR, CLIP, asked)
    assert batch.starts.tolist() == [21.0, 0.0, 9.0, 3.0, 9.0]
    assert batch.clips.shape == (5, int(CLIP * SR)) and batch.clips.dtype == np.float32
    diff = max(float(np.abs(clip - want[s]).max()) for s, clip in zip(batch.starts, batch.clips))
    assert diff <= TOLERANCE[ext], diff


@pytest.mark.parametrize("ext", [*EXACT_FORMATS, "m4a"])
def test_read_gives_the_frames_of_a_full_decode(files, ext):
    """200 reads at random frames: a lossy libsndfile format without its pre-roll gets a few
    hundred wrong frames after about one seek in 40."""
    rate, blocks = decode_blocks(files[ext])
    full = np.concatenate(list(blocks))
    with SegmentReader(files[ext]) as reader:
        assert (reader.native_rate, reader.channels) == (rate, 2)
        if ext == "m4a":  # the container's length leaves out AAC's final padding
            assert 0 <= len(full) - reader.frames < 2048
        else:
            assert reader.frames == len(full)
        rng = np.random.default_rng(3)
        starts = [0, 1, 1023, 1024, 2048, *rng.integers(0, len(full) - 3000, 195).tolist()]
        for start in starts:
            block = reader.read(start, 3000)
            assert block.shape == (3000, 2) and block.dtype == np.float32
            diff = float(np.abs(block - full[start:start + 3000]).max())
            assert diff <= TOLERANCE[ext], (start, diff)
        tail = reader.read(len(full) - 500, None)
        np.testing.assert_allclose(tail, full[-500:], atol=TOLERANCE[ext])
        assert len(reader.read(len(full) + 10, 100)) == 0


@pytest.mark.parametrize("ext", ["wav", "mp3", "m4a", "aac"])
def test_track_shorter_than_a_clip_is_repeated_like_clipstream(tmp_path, ext):
    path = encode(tmp_path / f"short.{ext}", seconds=1.2)
    want = stream_clips(path)
    assert list(want) == [0.0]
    with SegmentReader(path) as reader:
        assert clip_count(reader, SR, CLIP) == 1
        batch = read_clips(reader, SR, CLIP, [0.0, 3.0])
    assert batch.starts.tolist() == [0.0]
    assert float(np.abs(batch.clips[0] - want[0.0]).max()) <= TOLERANCE[ext]
    one = len(load(path, SR))  # it repeats: the second pass starts where the track ended
    assert 2 * one <= int(CLIP * SR)
    np.testing.assert_array_equal(batch.clips[0, one:2 * one], batch.clips[0, :one])


@pytest.mark.parametrize("seconds", [24.0, 24.02, 23.999])
def test_clip_that_ends_at_or_near_the_end(tmp_path, seconds):
    path = encode(tmp_path / "a.flac", seconds=seconds)
    want = stream_clips(path)
    last = 21.0 if seconds >= 24.0 else 18.0
    assert max(want) == last
    with SegmentReader(path) as reader:
        assert clip_count(reader, SR, CLIP) == len(want)
        batch = read_clips(reader, SR, CLIP, [last, last + 3.0])
    assert batch.starts.tolist() == [last]
    assert float(np.abs(batch.clips[0] - want[last]).max()) <= TOLERANCE["flac"]


def test_sequential_pass_stops_after_the_last_clip(tmp_path):
    """A file that cannot seek exactly is decoded up to its last asked clip only, block by
    block."""
    path = encode(tmp_path / "long.aac", seconds=75.0)
    with SegmentReader(path) as reader:
        assert not reader.seekable
        seen = []
        blocks = reader.blocks

        def counted(block_seconds=30.0):
            for block in blocks(block_seconds):
                seen.append(len(block))
                yield block

        reader.blocks = counted
        batch = read_clips(reader, SR, CLIP, [3.0, 0.0])
    assert batch.starts.tolist() == [3.0, 0.0]
    assert len(seen) == 1  # 30 s of 75 decoded
    full = load(path, SR, max_seconds=10.0)
    np.testing.assert_array_equal(batch.clips[1], full[:int(CLIP * SR)])


def test_nan_in_a_read_clip_is_invalid_samples(tmp_path):
    data = content(12.0, SR)
    data[int(4.5 * SR), 1] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, data, SR, subtype="FLOAT")
    with SegmentReader(path) as reader:
        assert len(read_clips(reader, SR, CLIP, [6.0]).clips) == 1  # the NaN is elsewhere
        with pytest.raises(AudioError, match=r"^invalid samples \(NaN or infinity\)$"):
            read_clips(reader, SR, CLIP, [3.0])


@pytest.mark.parametrize("ext", ["flac", "m4a"])  # libsndfile and FFmpeg
def test_file_name_that_is_not_utf8(files, tmp_path, ext):
    raw = os.fsencode(tmp_path) + b"/caf\xe9 \xff." + ext.encode()
    with open(raw, "wb") as out:
        out.write(files[ext].read_bytes())
    with SegmentReader(raw) as reader:
        batch = read_clips(reader, SR, CLIP, [6.0])
        assert fingerprint_of(reader) == fingerprint(os.fsdecode(raw)) == fingerprint(files[ext])
    assert float(np.abs(batch.clips[0] - stream_clips(files[ext])[6.0]).max()) <= TOLERANCE[ext]


def test_truncated_wav_is_an_audio_error(files, tmp_path):
    path = tmp_path / "cut.wav"
    path.write_bytes(files["wav"].read_bytes()[:1_000_000])
    with pytest.raises(AudioError, match=r"^cannot decode: truncated \(\d+ bytes") as caught:
        SegmentReader(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("ext", ["flac", "mp3", "ogg", "m4a", "m4a-faststart"])
def test_truncated_file_gives_fewer_clips_or_a_one_line_error(files, tmp_path, ext):
    source = files[ext.split("-")[0]]
    if ext == "m4a-faststart":  # the index first: a cut file still announces every sample
        source = tmp_path / "fast.m4a"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(files["m4a"]), "-c", "copy",
                        "-movflags", "+faststart", str(source)], check=True)
    path = tmp_path / f"cut{source.suffix}"
    path.write_bytes(source.read_bytes()[: source.stat().st_size * 6 // 10])
    try:
        with SegmentReader(path) as reader:
            batch = read_clips(reader, SR, CLIP, [3.0 * k for k in range(8)])
            fp = fingerprint_of(reader)
    except AudioError as err:
        assert "\n" not in str(err) and str(err)
    else:
        assert 1 <= len(batch.clips) < 8  # what is there, never the missing end
        assert fp != fingerprint(source)


# --------------------------------------------------------------------------- fingerprint


@pytest.mark.parametrize("ext", [*EXACT_FORMATS, "m4a", "aac"])
def test_fingerprint_of_an_open_reader_is_the_fingerprint(files, ext):
    want = fingerprint(files[ext])
    version = SEEK_VERSION if ext == "m4a" else FINGERPRINT_VERSION
    assert want.startswith(version + ":")
    with SegmentReader(files[ext]) as reader:
        assert fingerprint_of(reader) == want  # as opened
        read_clips(reader, SR, CLIP, [12.0, 3.0])  # decoder state and position moved on
        reader.read(100_000, 5000)
        assert fingerprint_of(reader) == want
        assert fingerprint_of(reader) == want
    with SegmentReader(files[ext]) as reader:
        read_clips(reader, SR, CLIP, [18.0])  # first something else, then the fingerprint
        assert fingerprint_of(reader) == want


def test_ffmpeg_fingerprint_is_the_same_in_every_run(files):
    """Two interpreters: nothing (the decoder's noise generator, a seek's landing) carries
    over from one run to the next."""
    code = "import sys; from tagger.fingerprint import fingerprint; print(fingerprint(sys.argv[1]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))}
    runs = {subprocess.run([sys.executable, "-c", code, str(files["m4a"])], env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
            for _ in range(2)}
    assert runs == {fingerprint(files["m4a"])}


def test_ffmpeg_fingerprint_records_the_decoded_length(files):
    rate, blocks = decode_blocks(files["m4a"])
    decoded = sum(len(b) for b in blocks)
    fp = fingerprint(files["m4a"])
    assert fp.split(":")[:4] == [SEEK_VERSION, str(rate), "2", str(decoded)]
    stream = ClipStream(files["m4a"], SR, CLIP)
    list(stream)
    assert same_duration(stream.duration, fp)
    assert fingerprint_duration(fp) == pytest.approx(SECONDS, abs=0.05)


def test_ffmpeg_fingerprint_tells_songs_apart(tmp_path):
    a = write_audio(tmp_path / "a.m4a", content(20.0, 44100, noise=False), 44100)
    other = content(20.0, 44100, noise=False)
    other[int(9.5 * 44100):int(9.6 * 44100)] *= 0.5  # 100 ms in the middle, quieter
    b = write_audio(tmp_path / "b.m4a", other, 44100)
    assert fingerprint(a).split(":")[:4] == fingerprint(b).split(":")[:4]
    assert fingerprint(a) != fingerprint(b)


def test_file_without_frames_is_no_audio_frames(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 2), np.float32), 44100)  # a header and no audio
    with SegmentReader(path) as reader:
        assert reader.frames == 0 and clip_count(reader, SR, CLIP) == 0
        with pytest.raises(AudioError, match="^no audio frames$"):
            read_clips(reader, SR, CLIP, [0.0])
