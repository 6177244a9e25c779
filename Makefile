# Reproducible chores. `make test` runs the suite (after the install line of README.md).
PYTHON ?= python

.PHONY: test models bench

test:
	$(PYTHON) -m pytest -q

# Rebuild the bundled models from ../shared/data (train extra + musicnn needed). The Debian
# game soundtracks (fetched into SOUNDTRACKS by bench/soundtracks.py) are the real-recording
# check every shipped genre must pass.
# SOUNDTRACKS= (empty) skips the check (and the download).
SOUNDTRACKS ?= runs/soundtracks
models:
	$(if $(SOUNDTRACKS),$(PYTHON) bench/soundtracks.py $(SOUNDTRACKS))
	$(PYTHON) scripts/build_default_models.py $(if $(SOUNDTRACKS),--soundtracks $(SOUNDTRACKS))

# Benchmarks, pinned to 2 cores like CI; figures go into README.md by hand.
bench:
	$(PYTHON) bench/soundtracks.py $(SOUNDTRACKS)
	taskset -c 0,1 $(PYTHON) bench/bench_engine.py $(SOUNDTRACKS)
	taskset -c 0,1 $(PYTHON) bench/clip_budget.py $(SOUNDTRACKS)
	taskset -c 0,1 $(PYTHON) bench/bench_rerun.py
	taskset -c 0,1 $(PYTHON) bench/bench_pipeline.py --model musicnn-sized
	taskset -c 0,1 $(PYTHON) bench/bench_pipeline.py
	taskset -c 0,1 $(PYTHON) bench/bench_cache.py
	taskset -c 0,1 $(PYTHON) bench/bench_daemon.py --model musicnn-sized
	$(PYTHON) bench/bench_default_models.py
