"""Decoding, resampling and clip slicing on real encoded files."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import soundfile as sf

from audiogen import FORMATS, make_audio, signal, write_audio
from tagger.audio import AudioError, ClipStream, SilentAudio, find_audio, frame_clips, load

SR = 16000


def _rate(ext: str) -> int:
    return 48000 if ext == "opus" else 44100


@pytest.mark.parametrize("ext", sorted(FORMATS))
@pytest.mark.parametrize("channels", [1, 2])
def test_every_format_decodes_to_mono_clips(tmp_path, ext, channels):
    path = make_audio(tmp_path / f"a.{ext}", seconds=7.0, sr=_rate(ext), channels=channels,
                      freq=1000.0)
    stream = ClipStream(path, SR, clip_seconds=3.0)
    batches = list(stream)
    clips = np.concatenate([b.clips for b in batches])
    starts = np.concatenate([b.starts for b in batches])
    assert clips.shape == (2, 3 * SR)
    assert starts.tolist() == [0.0, 3.0]
    assert stream.duration == pytest.approx(7.0, abs=0.06)  # aac/mp3 priming may add frames
    # the tone survives decoding and resampling: its spectrum peaks at 1 kHz
    spectrum = np.abs(np.fft.rfft(clips[0, SR // 2:SR // 2 + SR]))
    assert abs(np.argmax(spectrum) - 1000) <= 2


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_sample_rates_are_resampled_to_the_model_rate(tmp_path, rate):
    path = make_audio(tmp_path / "a.flac", seconds=3.5, sr=rate, freq=440.0)
    y = load(path, SR)
    assert len(y) == pytest.approx(3.5 * SR, abs=2)
    spectrum = np.abs(np.fft.rfft(y[:SR]))
    assert abs(np.argmax(spectrum) - 440) <= 2


def test_hop_makes_overlapping_clips(tmp_path):
    path = make_audio(tmp_path / "a.wav", seconds=6.0, sr=SR)
    starts = np.concatenate([b.starts for b in ClipStream(path, SR, 3.0, hop_seconds=1.0)])
    assert starts.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_exactly_one_clip(tmp_path):
    path = make_audio(tmp_path / "a.wav", seconds=3.0, sr=SR)
    batches = list(ClipStream(path, SR, 3.0))
    assert sum(len(b.clips) for b in batches) == 1


def test_short_track_is_repeated_to_one_clip(tmp_path):
    sig = signal(1.0, SR, kind="chirp")
    path = write_audio(tmp_path / "short.wav", sig, SR)
    (batch,) = list(ClipStream(path, SR, 3.0))
    assert batch.clips.shape == (1, 3 * SR)
    decoded = sf.read(path, dtype="float32")[0]
    np.testing.assert_allclose(batch.clips[0, SR:2 * SR], decoded, atol=1e-4)


def test_silent_clips_are_skipped(tmp_path):
    sig = np.concatenate([signal(3.0, SR, kind="silence"), signal(6.0, SR, kind="noise")])
    path = write_audio(tmp_path / "a.flac", sig, SR)
    stream = ClipStream(path, SR, 3.0)
    starts = np.concatenate([b.starts for b in stream])
    assert starts.tolist() == [3.0, 6.0]
    assert stream.skipped_silent == 1


def test_batches_cover_a_long_file_in_order(tmp_path):
    path = make_audio(tmp_path / "long.flac", seconds=75.0, sr=22050, kind="noise")
    stream = ClipStream(path, SR, 1.0, batch_size=16)
    batches = list(stream)
    assert [len(b.clips) for b in batches] == [16, 16, 16, 16, 11]
    starts = np.concatenate([b.starts for b in batches])
    np.testing.assert_allclose(starts, np.arange(75.0))


@pytest.mark.parametrize("content,reason", [
    (b"", "^empty file$"),
    (b"this is not audio at all " * 200, "^not decodable audio"),
])
@pytest.mark.parametrize("name", ["bad.mp3", "bad.m4a"])
@pytest.mark.parametrize("reader", ["stream", "segments"])
def test_bad_files_raise_audio_error(tmp_path, content, reason, name, reader):
    from tagger.segments import SegmentReader

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioError, match=reason):
        if reader == "stream":
            list(ClipStream(path, SR, 3.0))
        else:
            SegmentReader(path)


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3"])
def test_silence_only_is_silent_audio(tmp_path, ext):
    path = make_audio(tmp_path / f"silent.{ext}", seconds=5.0, sr=SR, kind="silence")
    with pytest.raises(SilentAudio) as caught:
        list(ClipStream(path, SR, 3.0))
    assert str(caught.value) == "silent" and isinstance(caught.value, AudioError)


@pytest.mark.parametrize("ext", ["wav", "aiff"])
def test_float_file_with_nan_or_inf_is_invalid_samples(tmp_path, ext):
    for bad in (np.nan, np.inf, -np.inf):
        data = signal(6.0, SR, kind="noise")
        data[SR * 4, 0] = bad  # in the second clip: no clip may be analysed from it
        path = tmp_path / f"bad.{ext}"
        sf.write(path, data, SR, format=ext.upper(), subtype="FLOAT")
        with pytest.raises(AudioError, match=r"^invalid samples \(NaN or infinity\)$"):
            list(ClipStream(path, SR, 3.0))


@pytest.mark.parametrize("ext", ["wav", "aiff"])
def test_truncated_wav_or_aiff_cannot_be_decoded(tmp_path, ext):
    path = make_audio(tmp_path / f"a.{ext}", seconds=10.0, sr=22050, kind="noise")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])  # a download cut off at 60%
    done = threading.Event()
    errors: list[BaseException] = []

    def decode() -> None:
        try:
            list(ClipStream(path, SR, 3.0))
        except BaseException as err:  # handed to the test thread
            errors.append(err)
        done.set()

    threading.Thread(target=decode, daemon=True).start()
    assert done.wait(60), "decoding a truncated file hangs"
    assert len(errors) == 1 and isinstance(errors[0], AudioError), errors
    assert str(errors[0]).startswith("cannot decode: truncated") and "\n" not in str(errors[0])


def test_fifo_is_not_a_regular_file_and_does_not_block(tmp_path):
    fifo = tmp_path / "pipe.mp3"
    os.mkfifo(fifo)
    done = threading.Event()
    errors: list[BaseException] = []

    def decode() -> None:
        try:
            list(ClipStream(fifo, SR, 3.0))
        except BaseException as err:
            errors.append(err)
        done.set()

    threading.Thread(target=decode, daemon=True).start()
    if not done.wait(30):
        with open(fifo, "wb"):  # release the blocked open so the thread can end
            pass
        pytest.fail("opening a FIFO blocked")
    assert [str(e) for e in errors] == ["not a regular file"]
    with pytest.raises(AudioError, match="not a regular file"):
        list(ClipStream(tmp_path, SR, 3.0))  # a folder neither


@pytest.mark.parametrize("ext", ["flac", "m4a"])  # libsndfile and FFmpeg
@pytest.mark.parametrize("as_bytes", [False, True])
def test_file_name_that_is_not_utf8_decodes(tmp_path, ext, as_bytes):
    source = make_audio(tmp_path / f"src.{ext}", seconds=4.0, sr=22050, freq=1000.0)
    raw = os.fsencode(tmp_path) + b"/caf\xe9 \xff." + ext.encode()
    os.rename(source, raw)
    path = raw if as_bytes else os.fsdecode(raw)  # bytes, or a surrogate-escaped str
    clips = np.concatenate([b.clips for b in ClipStream(path, SR, 3.0)])
    assert clips.shape == (1, 3 * SR)
    spectrum = np.abs(np.fft.rfft(clips[0, :SR]))
    assert abs(np.argmax(spectrum) - 1000) <= 2


@pytest.mark.parametrize("ext", ["flac", "mp3", "wav"])
def test_truncated_file_gives_what_decodes_or_a_clear_error(tmp_path, ext):
    path = make_audio(tmp_path / f"a.{ext}", seconds=10.0, sr=22050, kind="noise")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    try:
        clips = sum(len(b.clips) for b in ClipStream(path, SR, 3.0))
    except AudioError as err:
        assert "\n" not in str(err)
    else:
        assert 1 <= clips <= 2


def test_corrupt_middle_is_an_audio_error_or_decodes(tmp_path):
    path = make_audio(tmp_path / "a.flac", seconds=10.0, sr=22050, kind="noise")
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    data[2000:20000] = rng.integers(0, 256, 18000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    try:
        list(ClipStream(path, SR, 3.0))
    except AudioError as err:
        assert "\n" not in str(err)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        list(ClipStream(tmp_path / "nope.flac", SR, 3.0))


def test_frame_clips_is_exact():
    y = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(frame_clips(y, 4, 3), [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
    assert frame_clips(y, 4, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert frame_clips(y, 11, 1).shape == (0, 11)


def test_find_audio_walks_folders_and_skips_hidden(tmp_path):
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    for name in ("a/x.flac", "a/y.MP3", "a/notes.txt", "a/.partial.mp3", "a/.hidden/z.flac"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_audio([tmp_path])]
    assert found == ["a/x.flac", "a/y.MP3"]
