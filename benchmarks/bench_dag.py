"""DAG construction + dry run of the workflow for generated cohorts (printed, not a test).

    .venv/bin/python benchmarks/bench_dag.py [--sessions 200 2000 10000] [--cores 2]

For each size: a sheet of N sessions (two per subject, 10 % T1W only, half of the STIR
sessions with a cleaned mask and a reader mask; the files themselves need not exist for
a dry run, cleaned and reader masks are empty files because they are found by a stat),
then two dry runs timed from the outside (Python start, parsing, the cohort plan, DAG):

* ``full``: ``snakemake -n --quiet rules`` — DAG plus the dry-run pass over every job
  (Snakemake formats each job even when it does not print it);
* ``stats``: ``snakemake -n --quiet rules progress`` — DAG and the job counts only, what
  a data manager runs to see what would happen.

Prints seconds, jobs, and the per-session cost relative to the smallest cohort
(1.0 = linear).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.cohorts import write_cohort  # noqa: E402  (the cohorts the dry-run tests use)

QUIET = {"full": ["rules"], "stats": ["rules", "progress"]}
#: Seconds the full dry run should take (issue 13: 10,000 sessions under 60 s).
TARGETS = {2000: 30, 10000: 60}


def dry_run(folder: Path, config: Path, cores: int, mode: str) -> tuple[float, str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "--quiet",
         *QUIET[mode], "--cores", str(cores), "--directory", str(folder / "run"),
         "--configfile", str(config)],
        capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return seconds, result.stdout + result.stderr


def total_jobs(output: str) -> int:
    for line in output.splitlines():
        if line.startswith("total"):
            return int(line.split()[-1])
    return 0  # not printed in the stats-only mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["full", "stats"], choices=list(QUIET))
    args = parser.parse_args()
    print(f"{'mode':>6} {'sessions':>8} {'jobs':>7} {'seconds':>8} {'ms/session':>10} {'ratio':>6}")
    with tempfile.TemporaryDirectory(prefix="vhi_bench_dag_") as tmp:
        configs = {}
        for n in args.sessions:
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            config = write_cohort(folder, n, cleaned=n // 2, t1w_only=n // 10, readers=True,
                                  site="bench")
            configs[n] = (folder, config)
        for mode in args.modes:
            rows = []
            for n, (folder, config) in configs.items():
                seconds, output = dry_run(folder, config, args.cores, mode)
                rows.append((n, seconds, total_jobs(output)))
            base_n, base_s, _ = rows[0]
            for n, seconds, jobs in rows:
                ratio = (seconds / n) / (base_s / base_n)
                print(f"{mode:>6} {n:>8} {jobs:>7} {seconds:>8.1f} {1000 * seconds / n:>10.1f} "
                      f"{ratio:>6.2f}")
            for n, seconds, jobs in rows:
                if n in TARGETS:
                    print(f"{mode:>6} target {n} sessions < {TARGETS[n]} s: "
                          f"{'met' if seconds < TARGETS[n] else 'NOT met'} ({jobs / n:.2f} jobs "
                          "per session)")


if __name__ == "__main__":
    main()
