# One entry point for people and CI. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
# The workflow's rules call `vhi`, and the tests call `snakemake`, from the venv.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup demo test lint bench clean-demo

# Python environment from the pinned requirements (torch 2.13.0 CPU build).
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)
	@bash scripts/install-system-packages.sh
	@$(BIN)/vhi -q viewer --fetch-only || echo "setup: the OHIF viewer was not fetched (npm or the registry unavailable); the viewer tests skip" >&2

# The main job on the embedded default config: the demo cohort, CPU, local executor.
demo: setup
	$(BIN)/snakemake --profile profiles/local --cores $(CORES)

# The whole test suite (unit, workflow dry runs and lint, end-to-end on the CPU, XNAT emulator, SLURM).
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

bench: setup
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_proposal.py
	$(BIN)/python benchmarks/validate_reference.py
	$(BIN)/python benchmarks/bench_dag.py
	$(BIN)/python benchmarks/bench_batch_segment.py
	$(BIN)/python benchmarks/bench_results.py
	$(BIN)/python benchmarks/bench_report.py
	$(BIN)/python benchmarks/bench_local_station.py
