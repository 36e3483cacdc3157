# One entry point for people and CI. `make demo` and `make test` work on a fresh machine.
# Root (or sudo) is needed only by `make setup` (and so `make test`), for the Debian
# packages of the test tiers; `make demo`, `make test-fast` and the workflow need none.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
TEST_WORKERS ?= 3
# Extra arguments for the demo's snakemake, e.g. ARGS="--configfile my_cohort.yaml" or a target file.
ARGS ?=
# The venv is (re)installed when requirements.txt or pyproject.toml change in content
# (not in modification time: a fresh clone is not a change).
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
# The workflow's rules call `vhi`, and the tests call `snakemake`, from the venv; this
# checkout's package comes first whatever the venv's editable install points at.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONPATH := $(CURDIR)/src$(if $(PYTHONPATH),:$(PYTHONPATH))
# The tiers `make test-fast` leaves out (pytest markers, pyproject.toml): it runs the unit
# and synthetic tests, with no server, browser, cluster, image or published weights.
SLOW_TIERS := slow or real_model or slurm or container or browser or orthanc or install or noroot

.PHONY: venv setup demo test test-fast lint docs bench

# Python environment from the pinned requirements (torch 2.13.0 CPU build). No root.
venv: $(STAMP)
$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed*
	touch $(STAMP)

# What the test tiers need beyond the venv: Debian packages (root or sudo) and OHIF.
setup: venv
	@bash scripts/install-system-packages.sh
	@$(BIN)/vhi -q viewer --fetch-only || echo "setup: the OHIF viewer was not fetched (npm or the registry unavailable); the viewer tests skip" >&2

# The main job on the embedded default config: the demo cohort, local executor. No root.
demo: venv
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) $(ARGS)

# Every test tier (unit, synthetic, workflow end to end on the CPU, XNAT emulator,
# Orthanc, Chromium, SLURM, the image): what CI runs (.ci/run). TEST_WORKERS pytest-xdist
# workers, each test module in one of them, the longest first (tests/conftest.py).
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The unit and synthetic tiers only (a few minutes on 2 cores).
test-fast: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not ($(SLOW_TIERS))"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

# The config reference in docs/usage.md, generated from the package's JSON Schemas.
docs: venv
	$(BIN)/python scripts/config_reference.py

bench: setup
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_proposal.py
	$(BIN)/python benchmarks/validate_reference.py
	$(BIN)/python benchmarks/bench_dag.py
	$(BIN)/python benchmarks/bench_batch_segment.py
	$(BIN)/python benchmarks/bench_results.py
	$(BIN)/python benchmarks/bench_report.py
	$(BIN)/python benchmarks/bench_local_station.py
