"""``python -m trainer.optimize FOLDER``: optimise a model folder's backbone in place."""

from .folder import main

if __name__ == "__main__":
    raise SystemExit(main())
