"""DAG construction + dry run of the workflow for generated cohorts (printed, not a test).

    .venv/bin/python benchmarks/bench_dag.py [--sessions 200 2000 10000] [--profile local]

For each size: a sheet of N sessions (two per subject, 10 % T1W only, half of the STIR
sessions with a cleaned mask and a reader mask; the files themselves need not exist for
a dry run, cleaned and reader masks are empty files because they are found by a stat),
then dry runs timed from the outside (Python start, parsing, the cohort plan, DAG), with
the profile a user runs (``profiles/local`` unless ``--profile`` says otherwise):

* ``full``: ``snakemake -n --quiet rules`` — DAG plus the dry-run pass over every job
  (Snakemake formats each job, its resources and shell command, even when it does not
  print it);
* ``stats``: ``snakemake -n --quiet rules progress`` — DAG and the job counts only, what
  a data manager runs to see what would happen;
* ``floor``: the baseline, measured in the same run: Snakemake's own cost per job, the
  full dry run of a trivial workflow (N sessions, a chain of six one-file rules each,
  no profile, no input functions). ``vs floor`` is the workflow's time per job over it.

Prints seconds, jobs, the cost per job, and the per-session cost relative to the
smallest cohort (1.0 = linear).
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

QUIET = {"full": ["rules"], "stats": ["rules", "progress"], "floor": ["rules"]}
#: Seconds the full dry run should take (issue 13: 10,000 sessions under 60 s).
TARGETS = {2000: 30, 10000: 60}
#: The baseline: one file per step, six steps per session, nothing else.
FLOOR_STEPS = 6
def floor_snakefile(n: int) -> str:
    """The baseline workflow: ``n`` sessions, a chain of FLOOR_STEPS one-file rules each."""
    last = FLOOR_STEPS - 1
    rules = [f'rule all:\n    input: expand("w/{{session}}/step{last}.txt", session=SESSIONS)\n',
             'rule step0:\n    output: "w/{session}/step0.txt"\n    shell: "touch {output:q}"\n']
    rules += [f'rule step{i}:\n    input: "w/{{session}}/step{i - 1}.txt"\n'
              f'    output: "w/{{session}}/step{i}.txt"\n    shell: "cp {{input:q}} {{output:q}}"\n'
              for i in range(1, FLOOR_STEPS)]
    return (f'SESSIONS = [f"S{{i:05d}}" for i in range({n})]\n'
            'wildcard_constraints:\n    session="S[0-9]+"\n' + "".join(rules))


def dry_run(args: list[str], mode: str) -> tuple[float, str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--quiet", *QUIET[mode],
                             *args], capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return seconds, result.stdout + result.stderr


def workflow_args(folder: Path, config: Path, profile: str, cores: int) -> list[str]:
    profile_args = [] if profile == "none" else ["--profile", str(ROOT / "profiles" / profile)]
    return ["-s", str(ROOT / "Snakefile"), *profile_args, "--cores", str(cores),
            "--directory", str(folder / "run"), "--configfile", str(config)]


def floor_args(folder: Path, n: int, cores: int) -> list[str]:
    snakefile = folder / "floor" / "Snakefile"
    snakefile.parent.mkdir(exist_ok=True)
    snakefile.write_text(floor_snakefile(n))
    return ["-s", str(snakefile), "--cores", str(cores), "--directory", str(snakefile.parent)]


def total_jobs(output: str) -> int:
    for line in output.splitlines():
        if line.startswith("total"):
            return int(line.split()[-1])
    return 0  # not printed in the stats-only mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--profile", default="local", choices=["local", "slurm", "none"],
                        help="the profile of the workflow's dry runs (default: local)")
    parser.add_argument("--modes", nargs="+", default=["floor", "full", "stats"],
                        choices=list(QUIET))
    args = parser.parse_args()
    print(f"{'mode':>6} {'sessions':>8} {'jobs':>7} {'seconds':>8} {'ms/job':>7} "
          f"{'ms/session':>10} {'ratio':>6} {'vs floor':>8}")
    floor_ms: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="vhi_bench_dag_") as tmp:
        runs = {}
        for n in args.sessions:
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            config = write_cohort(folder, n, cleaned=n // 2, t1w_only=n // 10, reader_masks=True,
                                  site="bench")
            runs[n] = {"floor": floor_args(folder, n, args.cores),
                       "full": workflow_args(folder, config, args.profile, args.cores)}
            runs[n]["stats"] = runs[n]["full"]
        for mode in args.modes:
            rows = []
            for n, mode_args in runs.items():
                seconds, output = dry_run(mode_args[mode], mode)
                rows.append((n, seconds, total_jobs(output)))
            base_n, base_s, _ = rows[0]
            for n, seconds, jobs in rows:
                ratio = (seconds / n) / (base_s / base_n)
                per_job = 1000 * seconds / jobs if jobs else float("nan")
                if mode == "floor":
                    floor_ms[n] = per_job
                vs_floor = per_job / floor_ms[n] if n in floor_ms and jobs else float("nan")
                print(f"{mode:>6} {n:>8} {jobs:>7} {seconds:>8.1f} {per_job:>7.2f} "
                      f"{1000 * seconds / n:>10.1f} {ratio:>6.2f} {vs_floor:>8.2f}")
            for n, seconds, jobs in rows:
                if n in TARGETS and mode != "floor":
                    print(f"{mode:>6} target {n} sessions < {TARGETS[n]} s: "
                          f"{'met' if seconds < TARGETS[n] else 'NOT met'} ({jobs / n:.2f} jobs "
                          "per session)")
                if n in floor_ms and mode == "full" and jobs:
                    print(f"{mode:>6} {n} sessions: Snakemake's floor alone for {jobs} jobs "
                          f"would take {floor_ms[n] * jobs / 1000:.1f} s")


if __name__ == "__main__":
    main()
