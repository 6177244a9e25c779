"""``python -m trainer.musicnn --model MSD_musicnn --out PATH [--benchmark]``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
