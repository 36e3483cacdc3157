#!/usr/bin/env bash
# GPU check, ready to run where a GPU is lent: builds and installs nothing, runs the batch
# inference on the demo scans on cuda (benchmarks/bench_gpu.py), prints scans/min with the
# ensemble loaded once and the time to first scan, and fails unless every mask matches the
# CPU's (Dice >= 0.9999). Without CUDA it exits with status 2 and says so.
# Use: benchmarks/bench_gpu.sh [--repeat N] [--batch-size S]   (PYTHON= to pick the interpreter)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || { echo "bench_gpu: $python not found: run 'make setup' or set PYTHON" >&2; exit 2; }
export VHI_SHARED="${VHI_SHARED:-$root/../shared}"
exec "$python" "$root/benchmarks/bench_gpu.py" "$@"
