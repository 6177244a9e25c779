"""Tag writing (``tagger.tags``) on real files of every supported container.

Pre-existing tags are written here with mutagen's raw containers, independently of the code
under test, and compared through an independent full dump, so a writer that loses or alters
anything it should not touch fails these tests. The helpers at the top are shared with
``test_tags_property.py`` and ``test_tags_crash.py``.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import stat
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audiogen import make_audio
from mutagen.aiff import AIFF
from mutagen.flac import FLAC, Picture
from mutagen.id3 import APIC, COMM, ID3, TALB, TCON, TIT2, TMOO, TPE1, TRCK, TXXX, PictureType
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, AtomDataType, MP4Cover, MP4FreeForm, MP4Tags
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from tagger.tags import (
    TEMP_GLOB,
    FileTags,
    Policy,
    TagError,
    cleanup_stale_temp,
    is_temp_file,
    plan_tags,
    read_tags,
    write_tags,
)

# --- shared helpers --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fmt:
    """One container flavour under test."""

    name: str
    ext: str
    family: str  # "id3" | "vorbis" | "mp4"
    id3_version: int | None = None
    sr: int = 22050

    def __str__(self) -> str:
        return self.name


FORMATS = [
    Fmt("mp3-v24", "mp3", "id3", 4),
    Fmt("mp3-v23", "mp3", "id3", 3),
    Fmt("flac", "flac", "vorbis"),
    Fmt("ogg", "ogg", "vorbis"),
    Fmt("opus", "opus", "vorbis", sr=48000),
    Fmt("m4a", "m4a", "mp4"),
    Fmt("wav", "wav", "id3", 4),
    Fmt("aiff", "aiff", "id3", 4),
]
BY_NAME = {f.name: f for f in FORMATS}
_KINDS = {"mp3": MP3, "wav": WAVE, "aiff": AIFF, "flac": FLAC, "ogg": OggVorbis,
          "opus": OggOpus, "m4a": MP4}
MP4_MOOD = "----:com.apple.iTunes:MOOD"
OURS = {"id3": {"TCON", "TMOO", "TXXX:MOOD"}, "vorbis": {"GENRE", "MOOD"},
        "mp4": {"\xa9gen", MP4_MOOD}}


def tiny_png() -> bytes:
    """A valid 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x80\x00")) + chunk(b"IEND", b""))


PNG = tiny_png()


def make_raw(folder: Path, fmt: Fmt, seconds: float = 1.0) -> Path:
    """A freshly encoded file without tags (except what the encoder adds itself)."""
    return make_audio(folder / f"raw-{fmt.name}.{fmt.ext}", seconds, fmt.sr, 2, "chirp")


def seed_tags(path: Path, fmt: Fmt, genres: list[str], mood: str | None,
              extra: bool = True) -> None:
    """Write a realistic tag with mutagen: title, artist, album, track, cover art, replaygain,
    a custom field, and the given genres and mood (``extra=False``: only those two)."""
    kind = _KINDS[fmt.ext]
    f = kind(path, translate=False) if fmt.family == "id3" else kind(path)
    if f.tags is None:
        f.add_tags()
    t = f.tags
    if fmt.family == "id3":
        if extra:
            t.add(TIT2(encoding=3, text=["Tïtle"]))
            t.add(TPE1(encoding=3, text=["Artist A", "Artist B"]))
            t.add(TALB(encoding=3, text=["Album"]))
            t.add(TRCK(encoding=3, text=["3/12"]))
            t.add(COMM(encoding=3, lang="eng", desc="", text=["a comment"]))
            t.add(APIC(encoding=3, mime="image/png", type=PictureType.COVER_FRONT, desc="cover",
                       data=PNG))
            t.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_GAIN", text=["-6.50 dB"]))
            t.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_PEAK", text=["0.988"]))
            t.add(TXXX(encoding=3, desc="GENREML_TEST_CUSTOM", text=["keep me"]))
        if genres:
            t.add(TCON(encoding=3, text=genres))
        if mood and fmt.id3_version == 3:
            t.add(TXXX(encoding=3, desc="MOOD", text=[mood]))
        elif mood:
            t.add(TMOO(encoding=3, text=[mood]))
        if fmt.id3_version == 3:
            t.update_to_v23()
            f.save(v2_version=3, v23_sep="; ")  # Picard's v2.3 joining: "Rock; Jazz"
        else:
            f.save(v2_version=4)
        return
    if fmt.family == "vorbis":
        if extra:
            t["TITLE"] = "Tïtle"
            t["ARTIST"] = ["Artist A", "Artist B"]
            t["ALBUM"] = "Album"
            t["TRACKNUMBER"] = "3"
            t["REPLAYGAIN_TRACK_GAIN"] = "-6.50 dB"
            t["REPLAYGAIN_TRACK_PEAK"] = "0.988"
            t["GENREML_TEST_CUSTOM"] = "keep me"
            pic = Picture()
            pic.type, pic.mime, pic.desc, pic.data = 3, "image/png", "cover", PNG
            if isinstance(f, FLAC):
                f.add_picture(pic)
            else:
                t["METADATA_BLOCK_PICTURE"] = base64.b64encode(pic.write()).decode("ascii")
        if genres:
            t["GENRE"] = genres
        if mood:
            t["MOOD"] = mood
        f.save()
        return
    if extra:
        t["\xa9nam"] = ["Tïtle"]
        t["\xa9ART"] = ["Artist A", "Artist B"]
        t["\xa9alb"] = ["Album"]
        t["trkn"] = [(3, 12)]
        t["covr"] = [MP4Cover(PNG, imageformat=MP4Cover.FORMAT_PNG)]
        t["----:com.apple.iTunes:replaygain_track_gain"] = [MP4FreeForm(b"-6.50 dB")]
        t["----:com.apple.iTunes:GENREML_TEST_CUSTOM"] = [MP4FreeForm(b"keep me")]
    if genres:
        t["\xa9gen"] = genres
    if mood:
        t[MP4_MOOD] = [MP4FreeForm(mood.encode(), dataformat=AtomDataType.UTF8)]
    f.save()


def tag_dump(path: Path, fmt: Fmt) -> dict[str, object]:
    """Every tag field in ``path`` by key, as mutagen's raw containers read it, including
    pictures' bytes, the vendor string and the stream's identity."""
    kind = _KINDS[fmt.ext]
    if fmt.family == "id3":
        f = kind(path, translate=False)
        t = f.tags
        out: dict[str, object] = {k: repr(v) for k, v in t.items()}
        out["<unknown frames>"] = list(t.unknown_frames)
        out["<version>"] = t.version
    elif fmt.family == "vorbis":
        f = kind(path)
        out = {"<vendor>": f.tags.vendor}
        for key, value in f.tags:
            out.setdefault(key.upper(), []).append(value)
        # the relative order of all comments that are not ours
        out["<order>"] = [k.upper() for k, _ in f.tags if k.upper() not in OURS["vorbis"]]
        if isinstance(f, FLAC):
            out["<pictures>"] = [(p.type, p.mime, p.desc, p.data) for p in f.pictures]
            out["<md5>"] = f.info.md5_signature
    else:
        f = kind(path)
        out = {k: repr(v) for k, v in f.tags.items()}
    out["<stream>"] = (type(f.info).__name__, getattr(f.info, "sample_rate", None), f.info.channels)
    return out


def not_ours(dump: dict[str, object], fmt: Fmt) -> dict[str, object]:
    return {k: v for k, v in dump.items() if k not in OURS[fmt.family]}


def audio(path: Path) -> np.ndarray:
    """The decoded audio stream."""
    if path.suffix == ".m4a":
        pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-"],
                             check=True, capture_output=True).stdout
        return np.frombuffer(pcm, dtype=np.int16)
    return sf.read(path, dtype="float32")[0]


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if "genreml-" in p.name)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("raw")
    return {fmt.name: make_raw(folder, fmt) for fmt in FORMATS}


@pytest.fixture
def fresh(raw_files: dict[str, Path], tmp_path: Path):
    """A copy of the raw file of a format, in its own folder."""

    def copy(fmt: Fmt) -> Path:
        dst = tmp_path / f"song.{fmt.ext}"
        shutil.copyfile(raw_files[fmt.name], dst)
        return dst

    return copy


# --- round trips -----------------------------------------------------------------------------

PREDICTED = (["jazz", "Ambient"], "calm")
EXPECTED = {  # seeded genres ["Rock", "Jazz"], no mood
    "fill": FileTags(["Rock", "Jazz"], "calm"),
    "merge": FileTags(["Rock", "Jazz", "Ambient"], "calm"),
    "force": FileTags(["jazz", "Ambient"], "calm"),
}


@pytest.mark.parametrize("policy", ["fill", "merge", "force"])
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_round_trip_keeps_everything_else(fmt: Fmt, policy: str, fresh) -> None:
    path = fresh(fmt)
    seed_tags(path, fmt, ["Rock", "Jazz"], None)
    before, sound = tag_dump(path, fmt), audio(path)
    assert read_tags(path) == FileTags(["Rock", "Jazz"], None)

    plan = write_tags(path, *PREDICTED, policy=policy)

    assert plan.after == EXPECTED[policy]
    assert plan.before == FileTags(["Rock", "Jazz"], None)
    assert read_tags(path) == EXPECTED[policy]
    after = tag_dump(path, fmt)
    assert not_ours(after, fmt) == not_ours(before, fmt)
    np.testing.assert_array_equal(audio(path), sound)
    assert temp_files(path.parent) == []


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_existing_mood_per_field_policies(fmt: Fmt, fresh) -> None:
    path = fresh(fmt)
    seed_tags(path, fmt, ["Rock"], "happy")
    before = tag_dump(path, fmt)

    assert write_tags(path, ["Jazz"], "calm", "fill").changed is False
    assert tag_dump(path, fmt) == before  # nothing to do: not even rewritten
    write_tags(path, ["Jazz"], "calm", "merge")
    assert read_tags(path) == FileTags(["Rock", "Jazz"], "happy")  # one mood: merge keeps it
    write_tags(path, ["Blues"], "calm", Policy(genre="fill", mood="force"))
    assert read_tags(path) == FileTags(["Rock", "Jazz"], "calm")
    write_tags(path, ["Blues"], None, "force")  # no mood predicted: the mood stays
    assert read_tags(path) == FileTags(["Blues"], "calm")
    assert not_ours(tag_dump(path, fmt), fmt) == not_ours(before, fmt)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_untagged_file_gets_a_tag(fmt: Fmt, fresh) -> None:
    path = fresh(fmt)
    sound = audio(path)
    assert read_tags(path) == FileTags([], None)

    write_tags(path, ["Rock", "Jazz"], "calm")

    assert read_tags(path) == FileTags(["Rock", "Jazz"], "calm")
    np.testing.assert_array_equal(audio(path), sound)
    if fmt.family == "id3":
        assert _KINDS[fmt.ext](path).tags.version == (2, 4, 0)  # new ID3 tags are v2.4


def test_flac_without_comment_block(fresh) -> None:
    path = fresh(BY_NAME["flac"])
    f = FLAC(path)
    f.metadata_blocks = [b for b in f.metadata_blocks if b.code != 4]
    f.tags = None
    f.save()
    assert FLAC(path).tags is None

    write_tags(path, ["Rock"], "calm")

    assert read_tags(path) == FileTags(["Rock"], "calm")


# --- container specifics ---------------------------------------------------------------------


def test_id3v24_frames(fresh) -> None:
    path = fresh(BY_NAME["mp3-v24"])
    write_tags(path, ["Rock", "Jazz"], "calm")
    tags = ID3(path, translate=False)
    assert tags.version == (2, 4, 0)
    assert tags["TCON"].text == ["Rock", "Jazz"]  # one frame, one value each
    assert tags["TMOO"].text == ["calm"]
    assert not tags.getall("TXXX")


def test_id3v23_stays_v23_with_joined_genres(fresh) -> None:
    fmt = BY_NAME["mp3-v23"]
    path = fresh(fmt)
    seed_tags(path, fmt, ["Rock"], None)

    write_tags(path, ["Jazz", "Ambient"], "calm", "merge")

    tags = ID3(path, translate=False)
    assert tags.version == (2, 3, 0)
    assert tags["TCON"].text == ["Rock; Jazz; Ambient"]  # Picard's v2.3 separator
    assert tags["TXXX:MOOD"].text == ["calm"]
    assert "TMOO" not in tags  # not a v2.3 frame
    assert read_tags(path) == FileTags(["Rock", "Jazz", "Ambient"], "calm")


def test_id3v23_separator(fresh) -> None:
    """v2.3 genres join and split on "; ": a "/" stays inside its genre, a predicted "; "
    splits before planning (so the plan is what the file holds), and merge does not grow."""
    path = fresh(BY_NAME["mp3-v23"])
    seed_tags(path, BY_NAME["mp3-v23"], ["Pop/Rock"], None)
    assert read_tags(path).genres == ["Pop/Rock"]

    plan = write_tags(path, ["Stage & Screen; Pop/Rock", "Hip-Hop/Rap"], None, "merge",
                      dry_run=True)
    assert plan.genre.new == ["Pop/Rock", "Stage & Screen", "Hip-Hop/Rap"]
    assert write_tags(path, ["Stage & Screen; Pop/Rock", "Hip-Hop/Rap"], None, "merge") == plan
    assert ID3(path, translate=False)["TCON"].text == ["Pop/Rock; Stage & Screen; Hip-Hop/Rap"]
    before = snapshot(path)
    assert not write_tags(path, ["Stage & Screen; Pop/Rock", "Hip-Hop/Rap"], None,
                          "merge").changed
    assert snapshot(path) == before


def test_id3v23_separator_is_configurable(fresh) -> None:
    path = fresh(BY_NAME["mp3-v23"])
    seed_tags(path, BY_NAME["mp3-v23"], [], None)
    write_tags(path, ["Rock", "Jazz"], None, v23_sep="/")
    assert ID3(path, translate=False)["TCON"].text == ["Rock/Jazz"]
    assert read_tags(path, v23_sep="/").genres == ["Rock", "Jazz"]
    assert read_tags(path).genres == ["Rock/Jazz"]


@pytest.mark.parametrize(("src", "dst"), [("mp3-v23", 4), ("mp3-v24", 3)])
def test_id3_version_conversion(src: str, dst: int, fresh) -> None:
    fmt = BY_NAME[src]
    path = fresh(fmt)
    seed_tags(path, fmt, ["Rock", "Jazz"], "happy")

    write_tags(path, ["Blues"], "calm", Policy(genre="merge", mood="fill"), id3_version=dst)

    tags = ID3(path, translate=False)
    assert tags.version == (2, dst, 0)
    assert read_tags(path) == FileTags(["Rock", "Jazz", "Blues"], "happy")
    assert tags["TIT2"].text == ["Tïtle"]
    assert tags.getall("APIC")[0].data == PNG
    assert tags["TXXX:REPLAYGAIN_TRACK_GAIN"].text == ["-6.50 dB"]
    assert ("TMOO" in tags) == (dst == 4) and ("TXXX:MOOD" in tags) == (dst == 3)


def _edit_title(tags) -> None:
    if isinstance(tags, ID3):
        tags["TIT2"].text = ["Other"]
    elif isinstance(tags, MP4Tags):
        tags["\xa9nam"] = ["Other"]
    else:
        tags["TITLE"] = "Other"


def _edit_picture(f) -> None:
    if isinstance(f.tags, ID3):
        f.tags.getall("APIC")[0].data = PNG + b"x"
    elif isinstance(f, MP4):
        f.tags["covr"] = [MP4Cover(PNG + b"x", imageformat=MP4Cover.FORMAT_PNG)]
    elif isinstance(f, FLAC):
        f.pictures[0].data = PNG + b"x"
    else:
        f.tags["METADATA_BLOCK_PICTURE"] = "AAAA"


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_verification_dump_sees_every_other_field(fmt: Fmt, fresh) -> None:
    """What write_tags compares before replacing a file: blind to our two fields, sensitive
    to any other tag, picture bytes included."""
    from tagger.tags.container import open_tagged as _open  # the verifier's view of a file

    path = fresh(fmt)
    seed_tags(path, fmt, ["Rock"], "happy")
    base = _open(str(path)).others()

    ours = _open(str(path))
    ours.set_genres(["Jazz", "Blues"])
    ours.set_mood("calm")
    assert ours.others() == base
    for edit in (lambda t: _edit_title(t.file.tags), lambda t: _edit_picture(t.file)):
        tagged = _open(str(path))
        edit(tagged)
        assert tagged.others() != base


def test_unknown_id3_frames_kept_and_lossy_conversion_refused(fresh) -> None:
    """Frames mutagen does not know survive a write; a version change that would drop them
    fails verification, leaving the original and no temporary file behind."""
    path = fresh(BY_NAME["mp3-v24"])
    f = MP3(path)
    f.add_tags()
    f.tags.unknown_frames = [b"ZZZZ\x00\x00\x00\x03\x00\x00abc"]  # a v2.4 frame, 3 data bytes
    f.save()
    assert ID3(path, translate=False).unknown_frames == [b"ZZZZ\x00\x00\x00\x03\x00\x00abc"]

    write_tags(path, ["Rock"], None)
    assert ID3(path, translate=False).unknown_frames == [b"ZZZZ\x00\x00\x00\x03\x00\x00abc"]

    before = snapshot(path)
    with pytest.raises(TagError, match="verification failed: other tags changed"):
        write_tags(path, [], "calm", id3_version=3)  # v2.3 cannot carry a v2.4 unknown frame
    assert snapshot(path) == before
    assert temp_files(path.parent) == []


def test_id3_mood_in_txxx_is_read_and_replaced(fresh) -> None:
    """Some taggers keep the mood in TXXX:MOOD even in v2.4: it counts, and a forced mood
    replaces it rather than leaving a stale second mood behind."""
    path = fresh(BY_NAME["mp3-v24"])
    f = MP3(path)
    f.add_tags()
    f.tags.add(TXXX(encoding=3, desc="mood", text=["happy"]))
    f.save()
    assert read_tags(path).mood == "happy"

    write_tags(path, [], "calm", "force")

    tags = ID3(path)
    assert tags["TMOO"].text == ["calm"]
    assert not tags.getall("TXXX")


def test_id3v1_only_file(fresh) -> None:
    """An mp3 with just an ID3v1 tag: the v1 genre number counts as the file's genre, a v2.4
    tag with only our frames is created, and the v1 block stays byte for byte."""
    path = fresh(BY_NAME["mp3-v24"])
    tags = ID3()
    tags.add(TIT2(encoding=0, text=["Old Song"]))
    tags.add(TCON(encoding=0, text=["Rock"]))
    tags.save(path, v1=2)
    ID3(path).delete(path, delete_v1=False, delete_v2=True)
    v1 = path.read_bytes()[-128:]
    assert v1[:3] == b"TAG"
    assert read_tags(path).genres == ["Rock"]

    write_tags(path, ["Jazz"], "calm", "merge")

    assert read_tags(path) == FileTags(["Rock", "Jazz"], "calm")
    assert sorted(ID3(path, load_v1=False, translate=False).keys()) == ["TCON", "TMOO"]
    assert path.read_bytes()[-128:] == v1


@pytest.mark.parametrize("fmt", [BY_NAME["flac"], BY_NAME["ogg"], BY_NAME["opus"]], ids=str)
def test_vorbis_fields(fmt: Fmt, fresh) -> None:
    path = fresh(fmt)
    seed_tags(path, fmt, ["Rock"], None)
    order = [k for k, _ in _KINDS[fmt.ext](path).tags]

    write_tags(path, ["Jazz", "Ambient"], "calm", "merge")

    comments = list(_KINDS[fmt.ext](path).tags)
    assert [v for k, v in comments if k.upper() == "GENRE"] == ["Rock", "Jazz", "Ambient"]
    assert [v for k, v in comments if k.upper() == "MOOD"] == ["calm"]
    assert [k for k, _ in comments if k.upper() not in OURS["vorbis"]] == [
        k for k in order if k.upper() not in OURS["vorbis"]]


def test_mp4_fields(fresh) -> None:
    path = fresh(BY_NAME["m4a"])
    write_tags(path, ["Rock", "Jazz"], "ruhig ü")
    tags = MP4(path).tags
    assert tags["\xa9gen"] == ["Rock", "Jazz"]
    (mood,) = tags[MP4_MOOD]
    assert bytes(mood) == "ruhig ü".encode() and mood.dataformat == AtomDataType.UTF8


# --- no write when there is nothing to write -------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_dry_run_writes_nothing(fmt: Fmt, fresh) -> None:
    path = fresh(fmt)
    seed_tags(path, fmt, ["Rock"], None)
    before = snapshot(path)

    plan = write_tags(path, ["Jazz"], "calm", "merge", dry_run=True)

    assert plan.changed
    assert plan.describe() == ["genre: ['Rock'] -> ['Rock', 'Jazz']", "mood: None -> 'calm'"]
    assert snapshot(path) == before
    assert temp_files(path.parent) == []


def test_nothing_to_change_leaves_even_a_read_only_file_alone(fresh) -> None:
    path = fresh(BY_NAME["flac"])
    seed_tags(path, BY_NAME["flac"], ["Rock"], "happy")
    path.chmod(0o444)
    before = snapshot(path)
    plan = write_tags(path, ["Jazz"], "calm")
    assert not plan.changed
    assert plan.describe() == ["genre: ['Rock'] (unchanged)", "mood: 'happy' (unchanged)"]
    assert snapshot(path) == before


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [BY_NAME["mp3-v24"], BY_NAME["flac"], BY_NAME["m4a"]], ids=str)
def test_read_only_file(fmt: Fmt, fresh) -> None:
    path = fresh(fmt)
    path.chmod(0o444)  # root ignores this bit; write_tags must not
    before = snapshot(path)
    with pytest.raises(TagError, match="read-only file") as err:
        write_tags(path, ["Rock"], "calm")
    assert path.name in str(err.value) and "\n" not in str(err.value)
    assert snapshot(path) == before
    assert temp_files(path.parent) == []


def test_read_only_folder(fresh) -> None:
    path = fresh(BY_NAME["flac"])
    before = snapshot(path)
    path.parent.chmod(0o555)
    try:
        with pytest.raises(TagError, match="read-only folder"):
            write_tags(path, ["Rock"], "calm")
    finally:
        path.parent.chmod(0o755)
    assert snapshot(path) == before
    assert temp_files(path.parent) == []


def _junk(folder: Path, name: str) -> Path:
    path = folder / name
    if name.startswith("random"):
        path.write_bytes(np.random.default_rng(len(name)).bytes(64 * 1024))
    elif name.startswith("empty"):
        path.write_bytes(b"")
    elif name.startswith("text"):
        path.write_text("not audio at all\n" * 100)
    elif name.startswith("truncated"):
        src = make_raw(folder, BY_NAME["flac"])
        seed_tags(src, BY_NAME["flac"], ["Rock"], None)
        path.write_bytes(src.read_bytes()[:60])  # cut inside the metadata blocks
        src.unlink()
    elif name.startswith("folder"):
        path.mkdir()
    return path


@pytest.mark.parametrize(("name", "reason"), [
    ("random.mp3", "corrupt"), ("random.flac", "corrupt"), ("random.wav", "corrupt"),
    ("random.ogg", "unsupported"), ("random.m4a", "unsupported"),
    ("empty.mp3", "empty"), ("text.mp3", "corrupt"), ("text.txt", "unsupported"),
    ("truncated.flac", "corrupt"), ("folder.mp3", "not a regular file"),
    ("missing.mp3", "no such file"),
])
def test_bad_files_raise_tag_error(name: str, reason: str, tmp_path: Path) -> None:
    path = _junk(tmp_path, name)
    before = path.read_bytes() if path.is_file() else None
    for call in (lambda: read_tags(path), lambda: write_tags(path, ["Rock"], "calm")):
        with pytest.raises(TagError, match=reason) as err:
            call()
        assert err.value.path == str(path.resolve()) and "\n" not in str(err.value)
    assert (path.read_bytes() if path.is_file() else None) == before
    assert temp_files(tmp_path) == []


def test_unsupported_container(tmp_path: Path) -> None:
    """A real audio file mutagen knows but we do not write (Ogg FLAC)."""
    src = make_raw(tmp_path, BY_NAME["flac"])
    path = tmp_path / "song.oga"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-c:a", "flac", "-f", "ogg",
                    str(path)], check=True)
    with pytest.raises(TagError, match=r"unsupported format \(OggFLAC\)"):
        write_tags(path, ["Rock"], "calm")


# --- file system behaviour -------------------------------------------------------------------


def test_mode_and_owner_are_kept(fresh) -> None:
    path = fresh(BY_NAME["flac"])
    path.chmod(0o640)
    owner = (1234, 1234) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(path, *owner)
    write_tags(path, ["Rock"], "calm")
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == owner
    assert read_tags(path) == FileTags(["Rock"], "calm")


def test_symlink_target_is_tagged_and_link_kept(fresh) -> None:
    target = fresh(BY_NAME["ogg"])
    link = target.parent / "link.ogg"
    link.symlink_to(target.name)
    write_tags(link, ["Rock"], "calm")
    assert link.is_symlink() and os.readlink(link) == target.name
    assert read_tags(target) == FileTags(["Rock"], "calm")


def test_temp_files_are_recognised_and_cleaned(tmp_path: Path) -> None:
    stale = tmp_path / ".song.flac.genreml-abc123_x.tmp"
    young = tmp_path / ".other.mp3.genreml-zzz.tmp"
    keep = [tmp_path / "song.flac", tmp_path / ".hidden.tmp", tmp_path / "x.genreml-1.tmp"]
    for p in (stale, young, *keep):
        p.write_bytes(b"x")
    os.utime(stale, (1_000_000, 1_000_000))
    assert TEMP_GLOB == ".*.genreml-*.tmp"
    assert [is_temp_file(p) for p in (stale, young, *keep)] == [True, True, False, False, False]
    assert is_temp_file(tmp_path / ".song.flac.genreml-i123-abc.bak")  # an in-place backup

    assert cleanup_stale_temp(tmp_path, min_age=60) == [stale]

    assert sorted(tmp_path.iterdir()) == sorted([young, *keep])
    assert cleanup_stale_temp(tmp_path, min_age=0) == [young]


def test_long_file_name(tmp_path: Path, raw_files: dict[str, Path]) -> None:
    path = tmp_path / ("é" * 120 + ".mp3")  # 244 bytes: the temporary name must be shortened
    shutil.copyfile(raw_files["mp3-v24"], path)
    write_tags(path, ["Rock"], "calm")
    assert read_tags(path) == FileTags(["Rock"], "calm")
    assert temp_files(tmp_path) == []


# --- planning (pure) -------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "genres", "mood", "policy", "new"), [
    (FileTags([], None), ["Rock"], "calm", "fill", FileTags(["Rock"], "calm")),
    (FileTags(["Pop"], "sad"), ["Rock"], "calm", "fill", FileTags(["Pop"], "sad")),
    (FileTags(["Pop"], None), ["rock", "POP", "Rock"], "calm", "merge",
     FileTags(["Pop", "rock"], "calm")),
    (FileTags(["Pop"], "sad"), ["Rock"], "calm", "merge", FileTags(["Pop", "Rock"], "sad")),
    (FileTags(["Pop"], "sad"), ["Rock"], "calm", "force", FileTags(["Rock"], "calm")),
    (FileTags(["Pop"], "sad"), [], None, "force", FileTags(["Pop"], "sad")),
    (FileTags(["Pop"], "sad"), ["  ", ""], "  ", "force", FileTags(["Pop"], "sad")),
    (FileTags([], None), [" Rock ", "rock", "Jazz"], " calm ", "fill",
     FileTags(["Rock", "Jazz"], "calm")),
    (FileTags(["Pop"], "sad"), ["Rock"], "calm", Policy(genre="merge", mood="force"),
     FileTags(["Pop", "Rock"], "calm")),
    (FileTags(["Straße"], None), ["STRASSE"], None, "merge", FileTags(["Straße"], None)),
])
def test_plan_tags(old: FileTags, genres: list[str], mood: str | None, policy,
                   new: FileTags) -> None:
    plan = plan_tags(old, genres, mood, policy)
    assert plan.before == old
    assert plan.after == new
    assert plan.changed == (old != new)


def test_plan_describe_and_validation() -> None:
    plan = plan_tags(FileTags(["Rock"], None), ["Rock", "Jazz"], "calm", "merge")
    assert plan.describe() == ["genre: ['Rock'] -> ['Rock', 'Jazz']", "mood: None -> 'calm'"]
    assert plan.genre.changed and plan.mood.changed
    with pytest.raises(ValueError, match="genre policy"):
        Policy(genre="replace")
    with pytest.raises(ValueError, match="mood policy"):
        plan_tags(FileTags(), ["Rock"], None, Policy(genre="force", mood="overwrite"))
    with pytest.raises(TypeError, match="list of strings"):
        plan_tags(FileTags(), "Rock", None)
    assert Policy.of("merge") == Policy("merge", "merge")
