"""Write predicted genres and mood into audio files' own tags, safely.

Fields, per container (the names Picard, beets and Navidrome use):

============================  ===================================  ================================
container                     genres (several)                     mood (one)
============================  ===================================  ================================
ID3v2.4 (mp3, WAV, AIFF)      ``TCON``, one value each             ``TMOO``
ID3v2.3                       ``TCON``, joined with ``"; "``       ``TXXX:MOOD``
Vorbis (FLAC, Ogg, Opus)      ``GENRE``, one field each            ``MOOD``
MP4 (m4a)                     ``©gen``                             ``----:com.apple.iTunes:MOOD``
============================  ===================================  ================================

A file keeps its ID3 version unless ``id3_version`` says otherwise (:func:`write_tags`), and
an ID3v1 block is left byte for byte as it was (:mod:`.id3`).

What to write is decided per field by a :class:`Policy` (:mod:`.plan`): ``fill`` (the
default) writes only where the file has no value, so curated tags are never replaced;
``merge`` appends new genres after the existing ones; ``force`` replaces. An empty prediction
(no genres, no mood) never touches its field, and a second run with the same prediction
changes nothing. Values genreml wrote itself are not curated: a caller that knows them passes
them as ``own`` and they are taken out first (:func:`own_values_removed`).

How a file is written without harm (a verified copy renamed over it, keeping owner, group,
mode, xattrs and ACLs, or else an in-place write after a verified backup; never while it
changed or is open for writing) is described in :mod:`.writer`; what is left behind by a
killed writer and how :func:`cleanup_stale_temp` deals with it, in :mod:`.tempfiles`.

Modules: :mod:`.plan` (policy, pure), :mod:`.contract` (what a container module offers),
:mod:`.container` (open, verify), :mod:`.id3`, :mod:`.vorbis`, :mod:`.mp4` (the containers),
:mod:`.common` (what they share), :mod:`.iff` (truncated WAV/AIFF), :mod:`.writer` (read and
write), :mod:`.inplace` (the in-place fallback), :mod:`.fsmeta` (owner, mode, xattrs),
:mod:`.guards` (changed or busy file), :mod:`.tempfiles` (our hidden files), :mod:`.errors`.
"""

from __future__ import annotations

from .errors import FileBusy, FileChanged, TagError
from .contract import V23_SEP
from .plan import MODES, FieldPlan, FileTags, Policy, TagPlan, own_values_removed, plan_tags
from .tempfiles import BACKUP_GLOB, TEMP_GLOB, cleanup_stale_temp, is_temp_file
from .writer import read_tags, write_tags

__all__ = [
    "BACKUP_GLOB",
    "MODES",
    "TEMP_GLOB",
    "V23_SEP",
    "FieldPlan",
    "FileBusy",
    "FileChanged",
    "FileTags",
    "Policy",
    "TagError",
    "TagPlan",
    "cleanup_stale_temp",
    "is_temp_file",
    "own_values_removed",
    "plan_tags",
    "read_tags",
    "write_tags",
]
