"""The SLURM profile on a real single-node SLURM cluster (started by tests/slurm_cluster.py).

(a) the cluster runs batch jobs; (b) a two-rule workflow runs through `snakemake --executor slurm`
with profiles/slurm; (c) the project's workflow runs one demo session through the same profile.
The test profile is profiles/slurm with what a GPU-less 2-CPU test node cannot give taken out
(gres, more threads than the node has) and the executor settings of SNAKEMAKE_SLURM_SETTINGS.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from support.paths import MODELS, PROJECT_ROOT, SHARED
from support.slurm_cluster import (
    NODE_CPUS,
    SNAKEMAKE_SLURM_SETTINGS,
    SlurmCluster,
    slurm_cluster_fixture,  # noqa: F401 - the session fixture `slurm_cluster`
)
from support.workflow import workflow_env

pytestmark = pytest.mark.slurm

PROFILE = PROJECT_ROOT / "profiles" / "slurm" / "config.yaml"
SNAKEMAKE_TIMEOUT_S = 120  # the two-rule workflow; the project's one session gets 200 s


@pytest.fixture(scope="module")
def test_profile(tmp_path_factory, slurm_cluster: SlurmCluster) -> Path:
    """profiles/slurm, fitted to the test node; returns the profile folder."""
    if slurm_cluster.nested_srun_reason:
        pytest.skip(f"workflow jobs cannot run on the test cluster: {slurm_cluster.nested_srun_reason}")
    profile = yaml.safe_load(PROFILE.read_text())
    for resources in profile.get("set-resources", {}).values():
        resources.pop("gres", None)  # no GPUs on the test node: sbatch refuses a gres it has not
        if isinstance(resources.get("cpus_per_task"), int):
            resources["cpus_per_task"] = min(resources["cpus_per_task"], NODE_CPUS)
        if isinstance(resources.get("mem_mb"), int):
            resources["mem_mb"] = min(resources["mem_mb"], slurm_cluster.real_memory_mb)
    profile["set-threads"] = {rule: min(n, NODE_CPUS) for rule, n in profile.get("set-threads", {}).items()}
    # cores: the CPUs of one group submission; the "after" group's 3 side-by-side jobs would ask
    # for 3 CPUs, which the 2-CPU node cannot give (sbatch refuses it).
    profile.update({"jobs": 4, "cores": NODE_CPUS, "latency-wait": 5, "retries": 0,
                    **SNAKEMAKE_SLURM_SETTINGS})
    folder = tmp_path_factory.mktemp("profile")
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def run_snakemake(args: list[str], workdir: Path, timeout: int = SNAKEMAKE_TIMEOUT_S,
                  ) -> subprocess.CompletedProcess[str]:
    """snakemake from this venv (also on PATH for the jobs: sbatch exports the environment)."""
    env = workflow_env()
    try:
        proc = subprocess.run([sys.executable, "-m", "snakemake", "--directory", str(workdir), *args],
                              env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        jobs = subprocess.run(["squeue", "--states=all", "-o", "%i %P %T %R %C %m"], env=env,
                              capture_output=True, text=True, timeout=10, check=False).stdout
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        pytest.fail(f"snakemake still running after {timeout} s; jobs:\n{jobs}\n{(err or '')[-6000:]}")
    assert proc.returncode == 0, f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc


def submitted_jobs(log_text: str) -> dict[str, str]:
    """Snakemake job (or group job) id -> SLURM job id, from the plugin's 'has been submitted' lines."""
    return dict(re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+)", log_text))


# ---------------------------------------------------------------------------------------- (a)
def test_batch_jobs_run_on_both_partitions(slurm_cluster: SlurmCluster, tmp_path: Path):
    jobs = {part: slurm_cluster.sbatch("-p", part, "-o", str(tmp_path / f"{part}.out"),
                                       "--wrap", "echo $((6 * 7)) $SLURM_JOB_PARTITION $SLURM_JOB_ID")
            for part in ("cpu", "gpu")}
    failing = slurm_cluster.sbatch("-o", "/dev/null", "--wrap", "exit 3")
    for part, job in jobs.items():
        assert slurm_cluster.wait_job(job) == "COMPLETED"
        assert (tmp_path / f"{part}.out").read_text().split() == ["42", part, job]
    assert slurm_cluster.wait_job(failing) == "FAILED"
    # Finished jobs stay in squeue for MinJobAge: what the plugin's squeue status check reads.
    listed = slurm_cluster.run(["squeue", "--noheader", "--states=all", "-o", "%i|%T|%P"]).stdout
    assert {f"{jobs['cpu']}|COMPLETED|cpu", f"{jobs['gpu']}|COMPLETED|gpu", f"{failing}|FAILED|cpu"} \
        <= set(listed.split())
    # What the node can never give is refused at submission, not left pending.
    too_big = slurm_cluster.run(["sbatch", "-c", str(NODE_CPUS + 1), "--wrap", "true"], check=False)
    assert too_big.returncode != 0 and "More processors requested" in too_big.stderr
    gres = slurm_cluster.run(["sbatch", "-p", "gpu", "--gres=gpu:1", "--wrap", "true"], check=False)
    assert gres.returncode != 0 and "gres" in gres.stderr
    # No accounting storage: sacct has nothing, which is why the profile's tests use squeue.
    sacct = slurm_cluster.run(["sacct", "-j", jobs["cpu"]], check=False)
    assert sacct.returncode != 0 and "accounting storage is disabled" in sacct.stderr


# ---------------------------------------------------------------------------------------- (b)
TINY_SNAKEFILE = """
rule all:
    input: "b.txt"
    localrule: True

rule make_a:
    output: "a.txt"
    shell: "echo $SLURM_JOB_ID $SLURM_JOB_PARTITION $((2 + 3)) > {output}"

rule make_b:
    input: "a.txt"
    output: "b.txt"
    resources: slurm_partition="gpu", mem_mb=200
    shell: "cat {input} > {output}; echo $SLURM_JOB_ID $SLURM_JOB_PARTITION >> {output}"
"""


def test_two_rule_workflow_runs_as_slurm_jobs(slurm_cluster: SlurmCluster, test_profile: Path,
                                              tmp_path: Path):
    (tmp_path / "Snakefile").write_text(TINY_SNAKEFILE)
    started = time.monotonic()
    proc = run_snakemake(["--profile", str(test_profile), "--snakefile", str(tmp_path / "Snakefile")],
                         tmp_path)
    elapsed = time.monotonic() - started
    rows = [line.split() for line in (tmp_path / "b.txt").read_text().splitlines()]
    assert [(row[1], row[2:]) for row in rows] == [("cpu", ["5"]), ("gpu", [])]
    job_a, job_b = rows[0][0], rows[1][0]
    assert job_a != job_b
    submitted = submitted_jobs(proc.stdout + proc.stderr)
    assert sorted(submitted.values()) == sorted([job_a, job_b]), proc.stderr[-3000:]
    logs = tmp_path / ".snakemake" / "slurm_logs"
    assert (logs / "rule_make_a" / f"{job_a}.log").is_file()
    assert (logs / "rule_make_b" / f"{job_b}.log").is_file()
    run_id = re.search(r"SLURM run ID: (\S+)", proc.stderr).group(1)
    named = slurm_cluster.run(["squeue", "--noheader", "--states=all", "--name", run_id, "-o", "%i|%T"])
    assert set(named.stdout.split()) == {f"{job_a}|COMPLETED", f"{job_b}|COMPLETED"}
    assert elapsed < SNAKEMAKE_TIMEOUT_S


# ---------------------------------------------------------------------------------------- (c)
def published_1003() -> dict[str, str]:
    with (SHARED / "data" / "bone_mri" / "reference_values.csv").open() as fh:
        return next(row for row in csv.DictReader(fh) if row["scan_id"] == "1003")


@pytest.mark.skipif(not (MODELS / "sij_disease_region_unet" / "model_1.pt").is_file(),
                    reason=f"published U-Net weights not found under {MODELS}")
def test_project_workflow_on_one_demo_session(slurm_cluster: SlurmCluster, test_profile: Path,
                                              data_dir: Path, tmp_path: Path):
    """Session 1003 (manual normal-marrow reference, R11's mask as the cleaned stand-in) through
    every stage on the cluster: pulls (one grouped job), the U-Net on the `gpu` partition, the
    per-session group after it, and the cohort tables on the submitting host."""
    sheet = tmp_path / "sessions.csv"
    sheet.write_text("subject,session,timepoint,stir,t1w,normal_marrow\n"
                     "09,1003,pre,stir/1003_STIR.nii.gz,t1w/1003_T1W.nii.gz,"
                     "normal_marrow/1003_normal_marrow.nii.gz\n")
    site = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())["sites"][0]
    site["source"].update(root=str(data_dir), sheet=str(sheet),
                          readers={"R11": site["source"]["readers"]["R11"]})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"sites": [site]}))
    run = tmp_path / "run"
    proc = run_snakemake(["--profile", str(test_profile), "--snakefile", str(PROJECT_ROOT / "Snakefile"),
                          "--configfile", str(config)], run, timeout=200)
    output = proc.stdout + proc.stderr

    # Jobs ran on SLURM: the groups and the U-Net as their own SLURM jobs, in their partitions.
    logs = run / ".snakemake" / "slurm_logs"
    submitted = submitted_jobs(output)
    assert len(submitted) == 3, output[-3000:]  # group pull, segment_disease_region, group after
    # group folders are named group_{group}_{rules}: group_pull_pull_scan, group_after_collect_...
    assert sorted(p.name.split("_")[1] if p.name.startswith("group_") else p.name
                  for p in logs.iterdir()) == ["after", "pull", "rule_segment_disease_region"]
    assert sorted(p.stem for p in logs.rglob("*.log")) == sorted(submitted.values())
    segment_job = next(p.stem for p in (logs / "rule_segment_disease_region").rglob("*.log"))
    partition = slurm_cluster.run(["squeue", "--noheader", "--states=all", "-j", segment_job, "-o", "%P|%T"])
    assert partition.stdout.split() == ["gpu|COMPLETED"]

    # The proposal: thresholds from the manual reference are the published ones; its voxels
    # are those of the U-Net's own disease region (the published 6031 is on the published
    # region, which the ensemble reproduces to Dice ~0.98), so within 1 % of it.
    session = run / "work" / "demo" / "09" / "1003"
    proposal = json.loads((session / "proposal.json").read_text())
    published = published_1003()
    assert proposal["reference"]["mode"] == "manual"
    assert proposal["lower"] == pytest.approx(float(published["lower"]), abs=1e-6)
    assert proposal["upper"] == pytest.approx(float(published["upper"]), abs=1e-6)
    labels = np.asanyarray(nib.load(session / "proposal.nii.gz").dataobj)
    assert int(np.count_nonzero(labels >= 1)) == proposal["voxels"]["label_ge1"]
    assert proposal["voxels"]["label_ge1"] == pytest.approx(int(published["proposal_voxels_label_ge1"]),
                                                            rel=0.01)
    vhi = json.loads((session / "vhi.json").read_text())
    r11 = np.asanyarray(nib.load(data_dir / "inflammation" / "R11" / "1003_inflammation_R11.nii.gz").dataobj)
    assert vhi["voxels"] == int(np.count_nonzero(r11))
    assert (run / "results" / "cohort_vhi.csv").is_file()
