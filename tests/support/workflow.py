"""Running the project's workflow in a temporary folder, and reading what a run leaves.

Shared by the dry-run, end-to-end and XNAT workflow tests.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

from support.paths import PROJECT_ROOT, SHARED

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
PROFILE = PROJECT_ROOT / "profiles" / "local"


def workflow_env() -> dict[str, str]:
    """A copy of this process's environment for a run: the venv's ``vhi`` on PATH, the
    shared folder, no progress bars."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if env.get("VHI_TEST_BIN"):  # a test's stand-ins (support.fake_model) come first
        env["PATH"] = f"{env['VHI_TEST_BIN']}{os.pathsep}{env['PATH']}"
    env.setdefault("VHI_SHARED", str(SHARED))
    env["VHI_NO_PROGRESS"] = "1"
    return env


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The documented command (``snakemake --profile profiles/local``) run in ``workdir``."""
    return [*SNAKEMAKE, "--snakefile", str(PROJECT_ROOT / "Snakefile"), "--profile", str(PROFILE),
            "--directory", str(workdir), *args]


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run the project's workflow in ``workdir`` (nothing is written into the repository)."""
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True,
                          timeout=timeout, env=workflow_env(), check=False)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake run or dry run."""
    counts: dict[str, int] = {}
    block = output.split("Job stats:", 1)[-1] if "Job stats:" in output else ""
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def pull_jobs(counts: dict[str, int]) -> int:
    """Pull jobs in :func:`job_counts` (one per session, by the rule for its set of scans)."""
    from vhi.cohort.layout import PULL_RULES

    return sum(counts.get(rule, 0) for rule in PULL_RULES)


def status_of(run: Path, *, by: tuple[str, ...] = ("session",),
              partial: bool = False) -> dict[str, dict[str, str]]:
    """The rows of a run's results/status.csv (``partial``: results/partial/status.csv,
    written by a run that failed), keyed by the ``by`` columns joined with '/'."""
    results = run / "results" / "partial" if partial else run / "results"
    with (results / "status.csv").open() as fh:
        return {"/".join(row[c] for c in by): row for row in csv.DictReader(fh)}


def half_written(*folders: Path) -> list[Path]:
    """Files under ``folders`` still carrying the temporary name of an atomic write."""
    return [p for folder in folders for p in folder.rglob("*") if ".part" in p.name]
