"""Fetch the freely licensed Debian game soundtracks used as real full-length recordings.

``python bench/soundtracks.py DEST`` downloads the packages with ``apt-get download`` (no
install, no root needed beyond apt's cache), unpacks them with ``dpkg -x`` and links the music
into one folder per soundtrack, named after its kind::

    DEST/wesnoth-orchestral/*.ogg        41 tracks, 128 min
    DEST/warzone2100-electronic/*.opus   30 tracks, 243 min
    DEST/nexuiz-industrial/*.ogg         18 tracks, 84 min (from music.pk3, a zip)
    DEST/singularity-ambient/*.ogg       16 tracks, 64 min

The model card's plausibility table (``make models`` with ``--soundtracks DEST``) and the
speed benchmarks read this layout. Nothing from here is committed.
"""

from __future__ import annotations

import argparse
import subprocess
import zipfile
from pathlib import Path

SOUNDTRACKS = {  # folder -> (package, glob of its music inside the unpacked tree)
    "wesnoth-orchestral": ("wesnoth-1.16-music", "usr/share/games/wesnoth/*/data/core/music/*.ogg"),
    "warzone2100-electronic": ("warzone2100-music", "usr/share/games/warzone2100/music/**/*.opus"),
    "nexuiz-industrial": ("nexuiz-music", "usr/share/games/nexuiz/data/*.pk3"),
    "singularity-ambient": ("singularity-music", "usr/share/games/singularity/music/**/*.ogg"),
}


def fetch(dest: Path) -> dict[str, list[Path]]:
    """Download, unpack and link every soundtrack under ``dest``; returns the files per folder."""
    debs, tree = dest / "debs", dest / "unpacked"
    debs.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Path]] = {}
    for folder, (package, pattern) in SOUNDTRACKS.items():
        if not list(debs.glob(f"{package}_*.deb")):
            subprocess.run(["apt-get", "download", package], cwd=debs, check=True)
        deb = sorted(debs.glob(f"{package}_*.deb"))[-1]  # the newest when several
        subprocess.run(["dpkg", "-x", str(deb), str(tree)], check=True)
        target = dest / folder
        target.mkdir(exist_ok=True)
        for source in sorted(tree.glob(pattern)):
            if source.suffix == ".pk3":  # a zip holding sound/cdtracks/*.ogg
                with zipfile.ZipFile(source) as pk3:
                    for name in pk3.namelist():
                        if name.startswith("sound/cdtracks/") and name.endswith(".ogg"):
                            (target / Path(name).name).write_bytes(pk3.read(name))
                continue
            link = target / f"{source.parent.name}-{source.name}"
            if not link.exists():
                link.symlink_to(source.resolve())
        out[folder] = sorted(target.iterdir())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path)
    for folder, files in fetch(ap.parse_args().dest).items():
        print(f"{folder}: {len(files)} files")


if __name__ == "__main__":
    main()
