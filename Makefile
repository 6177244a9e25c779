# Reproducible chores. `make test` runs the suite (after the install line of README.md).
PYTHON ?= python

.PHONY: test models bench

test:
	$(PYTHON) -m pytest -q

# Rebuild the bundled models from ../shared/data (train extra + musicnn needed). With
# SOUNDTRACKS=DIR (made by `python bench/soundtracks.py DIR`) the card gets the table of
# what the model writes on real soundtracks.
SOUNDTRACKS ?=
models:
	$(PYTHON) scripts/build_default_models.py $(if $(SOUNDTRACKS),--soundtracks $(SOUNDTRACKS))

# Benchmarks, pinned to 2 cores like CI; figures go into README.md by hand.
bench:
	taskset -c 0,1 $(PYTHON) bench/bench_pipeline.py --model musicnn-sized
	taskset -c 0,1 $(PYTHON) bench/bench_pipeline.py
	taskset -c 0,1 $(PYTHON) bench/bench_cache.py
	taskset -c 0,1 $(PYTHON) bench/bench_daemon.py --model musicnn-sized
	$(PYTHON) bench/bench_default_models.py
