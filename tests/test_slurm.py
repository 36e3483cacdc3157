"""The SLURM profile on a real single-node SLURM cluster (started by tests/support/slurm_cluster.py).

The cluster has accounting (slurmdbd + MariaDB) and one GPU declared as a gres (no real GPU).
(a) the cluster runs batch jobs, schedules and accounts the GPU; (b) a two-rule workflow runs
through `snakemake --executor slurm` with the executor's default status check (sacct);
(b') the project's workflow on a synthetic session with the stand-in model: the cluster
jobs read the plan their run started with, whatever is listed meanwhile;
(c) the demo's STIR sessions through the project's workflow with profiles/slurm: every job
through sbatch, the segmentations as GPU batches, results equal to the local executor's;
(d) a segmentation job cancelled mid-run (the stand-in model, held) leaves no half-written output
and the rerun completes.
The test profile is profiles/slurm with what a 2-CPU test node cannot give fitted to it (threads,
memory, cores) and the executor settings of SNAKEMAKE_SLURM_SETTINGS; its `gres` is kept.
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from support.cohorts import write_synthetic_site
from support.data import needs_models
from support.fake_model import HOLD_ENV
from support.paths import PROJECT_ROOT, SHARED
from support.results import SessionDesign
from support.slurm_cluster import (
    FOLDER_PREFIX,
    NODE_CPUS,
    SNAKEMAKE_SLURM_SETTINGS,
    SlurmCluster,
    _left_by_a_killed_test_cluster,
    slurm_cluster_fixture,  # noqa: F401 - the session fixture `slurm_cluster`
)
from support.workflow import PROFILE as LOCAL_PROFILE
from support.workflow import half_written, workflow_env

pytestmark = pytest.mark.slurm

PROFILE = PROJECT_ROOT / "profiles" / "slurm" / "config.yaml"
SNAKEMAKE_TIMEOUT_S = 120  # the two-rule workflow; the project's runs get longer
#: Demo STIR sessions (session: subject) the cluster runs: two (one GPU batch of both), the
#: first with a manual reference.
SESSIONS = {"1003": "09", "1007": "11"}


@pytest.fixture(scope="module")
def test_profile(tmp_path_factory, slurm_cluster: SlurmCluster) -> Path:
    """profiles/slurm, fitted to the test node; returns the profile folder."""
    if slurm_cluster.nested_srun_reason:
        pytest.skip(f"workflow jobs cannot run on the test cluster: {slurm_cluster.nested_srun_reason}")
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["set-resources"]["segment_disease_region"]["gres"] == "gpu:1"  # kept as it is
    for resources in profile.get("set-resources", {}).values():
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


def wait_for_log(proc: subprocess.Popen, log: Path, text: str, run_log: Path, timeout: float = 300) -> None:
    """Wait until the step's ``log`` exists and holds ``text`` while the run ``proc`` goes on."""
    deadline = time.monotonic() + timeout
    while not (log.is_file() and text in log.read_text()):
        assert proc.poll() is None, run_log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{log.name} does not say {text!r} after {timeout:.0f} s"
        time.sleep(0.3)


def submitted_jobs(log_text: str) -> dict[str, str]:
    """Snakemake job (or group job) id -> SLURM job id, from the plugin's 'has been submitted' lines."""
    return dict(re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+)", log_text))


def test_only_a_dangling_link_into_a_gone_test_cluster_is_replaced(tmp_path: Path):
    """/run/slurm/conf left by a killed session is replaced; a live or foreign one is not."""
    gone = Path(tempfile.gettempdir()) / f"{FOLDER_PREFIX}gone-{tmp_path.name}" / "etc"
    cases = {"gone": (gone, True), "live": (tmp_path, False),
             "foreign": (Path("/nonexistent") / f"{FOLDER_PREFIX}x" / "etc", False)}
    for name, (target, replaced) in cases.items():
        (tmp_path / name).symlink_to(target, target_is_directory=True)
        assert _left_by_a_killed_test_cluster(tmp_path / name) is replaced, name
    (tmp_path / "plain").mkdir()
    assert not _left_by_a_killed_test_cluster(tmp_path / "plain")


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
    # The GPU (a gres without a device) is scheduled: the job gets it, SLURM tells CUDA so.
    gpu = slurm_cluster.sbatch("-p", "gpu", "--gres=gpu:1", "-o", str(tmp_path / "gres.out"),
                               "--wrap", "echo $CUDA_VISIBLE_DEVICES")
    assert slurm_cluster.wait_job(gpu) == "COMPLETED"
    assert (tmp_path / "gres.out").read_text().split() == ["0"]
    shown = slurm_cluster.run(["scontrol", "show", "job", gpu]).stdout
    assert "TresPerNode=gres:gpu:1" in shown and "gres/gpu=1" in shown
    two = slurm_cluster.run(["sbatch", "-p", "gpu", "--gres=gpu:2", "--wrap", "true"], check=False)
    assert two.returncode != 0  # the node has one
    # Accounting: every job is in the database, the GPU in its allocated TRES.
    accounted = {row["JobIDRaw"]: row for row in slurm_cluster.accounting(
        "-j", ",".join([*jobs.values(), failing, gpu]))}
    assert {j: accounted[j]["State"] for j in (*jobs.values(), failing, gpu)} == {
        jobs["cpu"]: "COMPLETED", jobs["gpu"]: "COMPLETED", failing: "FAILED", gpu: "COMPLETED"}
    assert accounted[failing]["ExitCode"] == "3:0"
    assert "gres/gpu=1" in accounted[gpu]["AllocTRES"]
    assert "gres/gpu" not in accounted[jobs["gpu"]]["AllocTRES"]


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
    # The plugin's default status check, sacct, is what told snakemake the jobs ended.
    assert "slurm-status-command" not in yaml.safe_load((test_profile / "config.yaml").read_text())
    assert {(r["JobIDRaw"], r["State"]) for r in slurm_cluster.accounting("--name", run_id)} == {
        (job_a, "COMPLETED"), (job_b, "COMPLETED")}
    assert elapsed < SNAKEMAKE_TIMEOUT_S


# ---------------------------------------------------------------------------------------- (b')
def test_cluster_jobs_read_the_plan_their_run_started_with(
        slurm_cluster: SlurmCluster, test_profile: Path, tmp_path: Path, monkeypatch, stand_in_model):
    """A synthetic session through the project's workflow on the cluster, with the stand-in
    model: while its segmentation is held, the session leaves the sheet (another takes its
    place) and the sites are listed again (`vhi plan --refresh` replaces the saved listing).
    The run's later jobs, each a `snakemake` process reading the Snakefile again, still
    read the plan the run started with (named by its run marker) and the run completes."""
    hold = tmp_path / "segmentation may finish"
    monkeypatch.setenv(HOLD_ENV, str(hold))
    site = write_synthetic_site(tmp_path / "cohort", {"s1": "01"})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"sites": [site]}))
    run = tmp_path / "run"
    args = ["--profile", str(test_profile), "--snakefile", str(PROJECT_ROOT / "Snakefile"),
            "--configfile", str(config)]
    segment_log = run / "logs" / "a" / "01" / "s1" / "segment_disease_region.log"
    with (tmp_path / "run.log").open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--directory", str(run), *args],
                                env=workflow_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_log(proc, segment_log, "", tmp_path / "run.log")
            sheet = Path(site["source"]["sheet"])  # s1 leaves the sheet, s2 takes its place
            sheet.write_text(sheet.read_text().replace(",s1,", ",s2,"))
            relisted = subprocess.run(["vhi", "plan", "--config", str(config), "--refresh"], cwd=run,
                                      env=workflow_env(), capture_output=True, text=True, timeout=120,
                                      check=False)
            assert relisted.returncode == 0, relisted.stderr
            saved = json.loads(next((run / "work" / ".vhi" / "plans").glob("*.json")).read_text())
            assert [s["session"] for s in saved["sessions"]] == ["s2"]
            hold.touch()
            assert proc.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()[-5000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    output = (tmp_path / "run.log").read_text()
    assert {"propose_lesions", "collect_cleaned"} <= {rule for rule in re.findall(r"rule (\w+):", output)}
    assert len(submitted_jobs(output)) >= 3  # pull, segmentation, the jobs after it: all sbatch
    vhi_json = json.loads((run / "work" / "a" / "01" / "s1" / "vhi.json").read_text())
    assert vhi_json["voxels"] == int(SessionDesign(cleaned=True).cleaned_mask().sum())
    assert not (run / "work" / ".vhi" / "run.json").exists()  # given back at the end


# ---------------------------------------------------------------------------------------- (c)
def published(session: str) -> dict[str, str]:
    with (SHARED / "data" / "bone_mri" / "reference_values.csv").open() as fh:
        return next(row for row in csv.DictReader(fh) if row["scan_id"] == session)


def demo_config(folder: Path, data_dir: Path, sessions: dict[str, str]) -> Path:
    """The demo site with only ``sessions`` (STIR + T1W + manual reference) and reader R11."""
    folder.mkdir(parents=True, exist_ok=True)
    sheet = folder / "sessions.csv"
    rows = [f"{subject},{session},pre,stir/{session}_STIR.nii.gz,t1w/{session}_T1W.nii.gz,"
            + (f"normal_marrow/{session}_normal_marrow.nii.gz"
               if (data_dir / "normal_marrow" / f"{session}_normal_marrow.nii.gz").is_file() else "")
            for session, subject in sessions.items()]
    sheet.write_text("subject,session,timepoint,stir,t1w,normal_marrow\n" + "\n".join(rows) + "\n")
    site = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())["sites"][0]
    site["source"].update(root=str(data_dir), sheet=str(sheet),
                          reader_masks={"R11": site["source"]["reader_masks"]["R11"]})
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"sites": [site]}))
    return config


def session_results(run: Path, sessions: dict[str, str]) -> dict[str, tuple]:
    """What must not depend on the executor: disease-region and proposal voxels, thresholds, VHI."""
    out = {}
    for session, subject in sessions.items():
        folder = run / "work" / "demo" / subject / session
        region = np.asanyarray(nib.load(folder / "disease_region.nii.gz").dataobj)
        proposal = json.loads((folder / "proposal.json").read_text())
        vhi = json.loads((folder / "vhi.json").read_text())
        out[session] = (int(region.sum()), proposal["voxels"]["label_ge1"], proposal["lower"],
                        proposal["upper"], vhi["voxels"], vhi["vhi_ml"])
    return out


def segmentation_jobs(logs: Path) -> list[str]:
    return sorted(p.stem for p in logs.glob("group_segment_*/**/*.log"))


@needs_models
def test_demo_sessions_on_the_cluster_equal_the_local_run(
        slurm_cluster: SlurmCluster, test_profile: Path, data_dir: Path, tmp_path: Path):
    """Two demo STIR sessions through every stage on the cluster: pulls (grouped jobs), the
    U-Net as GPU batches on the `gpu` partition with one worker per batch, the per-session
    group after it, the cohort tables on the submitting host; then the same with the local
    executor: the same numbers."""
    config = demo_config(tmp_path, data_dir, SESSIONS)
    run = tmp_path / "cluster"
    started = time.monotonic()
    proc = run_snakemake(["--profile", str(test_profile), "--snakefile", str(PROJECT_ROOT / "Snakefile"),
                          "--configfile", str(config)], run, timeout=600)
    cluster_s = time.monotonic() - started
    output = proc.stdout + proc.stderr

    # Every job went through sbatch and is in the accounting database, none failed.
    run_id = re.search(r"SLURM run ID: (\S+)", proc.stderr).group(1)
    accounted = {r["JobIDRaw"]: r for r in slurm_cluster.accounting("--name", run_id)}
    submitted = submitted_jobs(output)
    assert sorted(accounted) == sorted(submitted.values()), output[-3000:]
    assert {r["State"] for r in accounted.values()} == {"COMPLETED"}

    # The segmentations ran as batches: fewer GPU jobs than sessions, each with the GPU.
    logs = run / ".snakemake" / "slurm_logs"
    batch = yaml.safe_load(PROFILE.read_text())["group-components"]["segment"]
    segment_jobs = segmentation_jobs(logs)
    assert len(segment_jobs) == math.ceil(len(SESSIONS) / batch) < len(SESSIONS)
    for job in segment_jobs:
        assert accounted[job]["Partition"] == "gpu"
        assert "gres/gpu=1" in accounted[job]["AllocTRES"]
    assert all("gres/gpu" not in r["AllocTRES"] for j, r in accounted.items() if j not in segment_jobs)
    # One ensemble load per batch, every session its own log; no GPU: the CPU, said so.
    workers = set()
    for session, subject in SESSIONS.items():
        text = (run / "logs" / "demo" / subject / session / "segment_disease_region.log").read_text()
        workers.add(re.search(r"served by segmentation worker pid (\d+) on cpu", text).group(1))
        assert "device auto: no usable CUDA device, fell back to the CPU although a GPU was " \
               "reserved" in text, text
    assert len(workers) == len(segment_jobs)

    # The same sessions with the local executor give the same numbers.
    local = tmp_path / "local"
    started = time.monotonic()
    run_snakemake(["--profile", str(LOCAL_PROFILE), "--snakefile", str(PROJECT_ROOT / "Snakefile"),
                   "--configfile", str(config)], local, timeout=600)
    local_s = time.monotonic() - started
    assert session_results(run, SESSIONS) == session_results(local, SESSIONS)
    read = {name: pd.read_csv(folder / "results" / "cohort_vhi.csv", dtype={"session": str})
            .set_index("session")[["vhi_voxels", "vhi_ml", "proposal_voxels"]].sort_index()
            for name, folder in (("cluster", run), ("local", local))}
    pd.testing.assert_frame_equal(read["cluster"], read["local"])
    # Published thresholds where the reference is the manual one (session 1003).
    proposal = json.loads((run / "work/demo/09/1003/proposal.json").read_text())
    assert proposal["reference"]["mode"] == "manual"
    assert proposal["lower"] == pytest.approx(float(published("1003")["lower"]), abs=1e-6)
    assert proposal["upper"] == pytest.approx(float(published("1003")["upper"]), abs=1e-6)
    print(f"demo ({len(SESSIONS)} sessions): cluster {cluster_s:.1f} s, local {local_s:.1f} s")


# ---------------------------------------------------------------------------------------- (d)
@pytest.mark.usefixtures("stand_in_model")
def test_cancelled_segmentation_leaves_nothing_half_written_and_the_rerun_completes(
        slurm_cluster: SlurmCluster, test_profile: Path, data_dir: Path, tmp_path: Path, monkeypatch):
    """A demo session with the stand-in model (the U-Net's output is not the point), its
    segmentation held until the job is cancelled; the rerun measures the reader's mask."""
    monkeypatch.setenv(HOLD_ENV, str(tmp_path / "segmentation may finish"))
    sessions = {"1003": "09"}
    config = demo_config(tmp_path, data_dir, sessions)
    run = tmp_path / "run"
    # snakemake-executor-plugin-slurm 2.8.0 reads sacct's state of a cancelled job, "CANCELLED by
    # <uid>", as still running, and waits forever; squeue says "CANCELLED" (docs/usage.md).
    profile = tmp_path / "profile"
    profile.mkdir()
    settings = yaml.safe_load((test_profile / "config.yaml").read_text())
    (profile / "config.yaml").write_text(yaml.safe_dump({**settings, "slurm-status-command": "squeue"}))
    args = ["--profile", str(profile), "--snakefile", str(PROJECT_ROOT / "Snakefile"),
            "--configfile", str(config)]
    segment_log = run / "logs" / "demo" / "09" / "1003" / "segment_disease_region.log"
    with (tmp_path / "first.log").open("w") as out:
        first = subprocess.Popen([sys.executable, "-m", "snakemake", "--directory", str(run), *args],
                                 env=workflow_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            # Mid-run: the segmentation job has asked its worker for the scan.
            wait_for_log(first, segment_log, "segmentation worker", tmp_path / "first.log")
            running = slurm_cluster.run(["squeue", "--noheader", "-p", "gpu", "-t", "R", "-o", "%i"])
            (job,) = running.stdout.split()
            slurm_cluster.run(["scancel", job])
            # The plugin notices at its next status check: its interval grows by 10 s per
            # check while nothing ends, up to 180 s.
            assert first.wait(timeout=300) != 0
        finally:
            if first.poll() is None:
                first.kill()
    assert slurm_cluster.wait_job(job) == "CANCELLED" or \
        slurm_cluster.accounting("-j", job)[0]["State"].startswith("CANCELLED")
    session = run / "work" / "demo" / "09" / "1003"
    assert not half_written(run / "work")
    assert not (session / "proposal.nii.gz").exists()

    # The same command run again completes the session: the failed run wrote only
    # results/partial/, never the targets of `rule all`.
    assert not (run / "results" / "cohort_vhi.csv").exists()
    (tmp_path / "segmentation may finish").touch()
    proc = run_snakemake(args, run, timeout=400)
    assert "segment_disease_region" in proc.stdout + proc.stderr
    proposal = json.loads((session / "proposal.json").read_text())
    assert proposal["reference"]["mode"] == "manual"
    assert proposal["lower"] == pytest.approx(float(published("1003")["lower"]), abs=1e-6)
    vhi = json.loads((session / "vhi.json").read_text())
    r11 = np.asanyarray(nib.load(data_dir / "inflammation" / "R11" / "1003_inflammation_R11.nii.gz").dataobj)
    assert vhi["voxels"] == int(np.count_nonzero(r11))
    assert not half_written(run / "work", run / "results")
