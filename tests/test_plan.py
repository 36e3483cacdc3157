"""The cohort plan as a file, sites that are down, the run marker, and what a run leaves.

Through the documented commands (``vhi plan | status | tables``, ``snakemake --profile
profiles/local``) on synthetic data: an XNAT site served by the emulator (stopped to take
the server down), a local-folder site, and the stand-in model of :mod:`support.fake_model`
for the workflow runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from vhi.cohort.plan import PLAN_FORMAT, PLAN_VERSION, load_plan, saved_plan_path
from vhi.cohort.run import RunMarker, claim, marker_path, read_marker, release
from vhi.config.load import load_config_file
from vhi.errors import EXIT_ENVIRONMENT, EXIT_INPUT, ConfigError, WorkFolderBusyError

from support.cohorts import write_synthetic_site
from support.env import unset_env
from support.fake_model import HOLD_ENV
from support.results import AFFINE, SessionDesign
from support.workflow import job_counts, pull_jobs, snakemake, snakemake_command, workflow_env
from xnat_emulator import XnatEmulator
from xnat_emulator.demo import SITE_PROJECTS, seed_demo
from xnat_emulator.synthetic_demo import write_synthetic_demo

VHI = str(Path(sys.executable).with_name("vhi"))
USER, PASSWORD = "vhi-robot", "robot-pw-7c1a"


# --------------------------------------------------------------------------- helpers
def vhi(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VHI, "--no-progress", *args], capture_output=True, text=True,
                          env=workflow_env(), cwd=cwd, timeout=300, check=False)


def status_json(config: Path, *args: str, cwd: Path) -> dict:
    result = vhi("-q", "status", "--config", str(config), "--json", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _save(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, AFFINE), path)
    return str(path)


def write_config(path: Path, *sites: dict, **keys: object) -> Path:
    path.write_text(yaml.safe_dump({"sites": list(sites), **keys}))
    return path


def xnat_site(url: str) -> dict:
    return {"name": "A", "reference": "auto",
            "source": {"type": "xnat", "server": url, "project": SITE_PROJECTS["A"],
                       "timepoint_pattern": "_(pre|post)$", "retries": 1, "backoff_s": 0.05}}


@pytest.fixture
def xnat_env(monkeypatch):
    unset_env(monkeypatch, "XNATPY_USER", "XNATPY_PASS")
    monkeypatch.setenv("XNAT_USER", USER)
    monkeypatch.setenv("XNAT_PASS", PASSWORD)


# --------------------------------------------------------------------------- a site that is down
def test_a_site_that_is_down_blocks_only_what_needs_it(tmp_path: Path, xnat_env) -> None:
    run = tmp_path / "run"
    run.mkdir()
    local = write_synthetic_site(tmp_path / "local", {"s1": "01"})
    with XnatEmulator(tmp_path / "xnat", users={USER: PASSWORD}) as emu:
        seed_demo(emu, write_synthetic_demo(tmp_path / "demo"), tmp_path / "dicom", {"A": ["1003"]})
        config = write_config(tmp_path / "config.yaml", local, xnat_site(emu.url))
        listed = vhi("plan", "--config", str(config), cwd=run)
        assert listed.returncode == 0, listed.stderr[-3000:]
        assert "site A: 1 sessions" in listed.stdout and "site a: 1 sessions" in listed.stdout
        path = run / saved_plan_path(load_config_file(config))
        written = path.read_bytes()
        saved = json.loads(written)
        assert (saved["format"], saved["version"]) == (PLAN_FORMAT, PLAN_VERSION)
        assert [s["session"] for s in saved["sessions"]] == ["1003_pre", "s1"]
        assert {k: v["origin"] for k, v in saved["sites"].items()} == {"a": "listed", "A": "listed"}
        # --unlock and --lint parse the workflow without asking any server
        before = len(emu.requests)
        for args in (["--unlock"], ["--lint"]):
            result = snakemake(run, "--configfile", str(config), *args)
            assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert len(emu.requests) == before
        assert path.read_bytes() == written
    # the server is down from here on
    status = status_json(config, cwd=run)  # from the saved plan: no server needed
    assert status["total"]["pending"] == 2 and status["plan"]["sites"]["A"]["origin"] == "listed"
    refreshed = vhi("plan", "--config", str(config), "--refresh", cwd=run)
    assert refreshed.returncode == EXIT_ENVIRONMENT
    assert "site A" in refreshed.stderr and "server cannot be reached" in refreshed.stderr
    assert "unreachable_sites: saved" in refreshed.stderr  # ... and what can be done
    assert vhi("status", "--config", str(config), "--refresh", cwd=run).returncode == EXIT_ENVIRONMENT

    dry = snakemake(run, "--configfile", str(config), "-n")
    output = dry.stdout + dry.stderr
    assert dry.returncode != 0 and "site A" in output and "server cannot be reached" in output
    assert "ConnectionError" in output  # the cause
    offline = snakemake(run, "--configfile", str(config), "-n", "--config", "unreachable_sites=saved")
    output = offline.stdout + offline.stderr
    assert offline.returncode == 0, output[-3000:]
    assert "site A: server cannot be reached" in output and "planned from its listing saved at" in output
    assert pull_jobs(job_counts(output)) == 2  # the local session and the saved XNAT one
    from_saved = snakemake(run, "--configfile", str(config), "-n", "--config", "plan=saved")
    assert from_saved.returncode == 0, (from_saved.stdout + from_saved.stderr)[-3000:]
    assert pull_jobs(job_counts(from_saved.stdout + from_saved.stderr)) == 2


def test_exit_statuses(tmp_path: Path) -> None:
    """0 done; 2 bad input or config (another config's plan included); 3 a server that
    cannot be reached, naming the site."""
    run = tmp_path / "run"
    run.mkdir()
    good = write_config(tmp_path / "good.yaml", write_synthetic_site(tmp_path / "local", {"s1": "01"}))
    assert vhi("plan", "--config", str(good), cwd=run).returncode == 0
    bad = write_config(tmp_path / "bad.yaml", write_synthetic_site(tmp_path / "local", {"s1": "01"}),
                       plan="sometimes")
    result = vhi("plan", "--config", str(bad), cwd=run)
    assert result.returncode == EXIT_INPUT and "plan" in result.stderr and "sometimes" in result.stderr
    other = write_config(tmp_path / "other.yaml",
                         write_synthetic_site(tmp_path / "other", {"s9": "09"}, site="b"))
    result = vhi("status", "--config", str(other), "--plan",
                 str(run / saved_plan_path(load_config_file(good))), cwd=run)
    assert result.returncode == EXIT_INPUT and "another config's plan is never read" in result.stderr
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pacs = {"name": "pacs", "source": {"type": "dicomweb", "url": f"http://127.0.0.1:{port}",
                                       "retries": 0}}
    down = write_config(tmp_path / "down.yaml", pacs)
    for command in ("plan", "dicomweb-plan"):
        result = vhi(command, "--config", str(down), cwd=run)
        assert result.returncode == EXIT_ENVIRONMENT, result.stderr[-2000:]
        assert "site pacs" in result.stderr and "server cannot be reached" in result.stderr


# --------------------------------------------------------------------------- the plan file
def test_a_plan_file_of_another_version_or_config_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    config = write_config(tmp_path / "c.yaml", write_synthetic_site(tmp_path / "local", {"s1": "01"}))
    assert vhi("plan", "--config", str(config), cwd=run).returncode == 0
    settings = load_config_file(config)
    path = run / saved_plan_path(settings)
    assert [p.key for p in load_plan(path, settings).sessions] == ["a/01/s1"]
    data = json.loads(path.read_text())
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**data, "version": PLAN_VERSION + 1}))
    with pytest.raises(ConfigError, match=f"newer.json: cohort plan version {PLAN_VERSION + 1}"):
        load_plan(newer)
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps(data["sessions"]))  # a plan file of earlier versions: a bare list
    with pytest.raises(ConfigError, match="not a cohort plan"):
        load_plan(legacy)
    other = load_config_file(write_config(
        tmp_path / "o.yaml", write_synthetic_site(tmp_path / "l2", {"s1": "01"}, site="b")))
    with pytest.raises(ConfigError, match="another config's plan is never read"):
        load_plan(path, other)


def test_the_run_marker_names_the_run_that_holds_the_work_folder(tmp_path: Path, caplog) -> None:
    work = tmp_path / "work"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        first = RunMarker(pid=sleeper.pid, host=socket.gethostname(), started="2026-01-02T03:04:05+00:00",
                          config=("/studies/a.yaml",), cwd="/studies", plan="plan-x.json")
        claim(work, first)
        second = RunMarker.this_process(["/studies/b.yaml"], "plan-y.json")
        with pytest.raises(WorkFolderBusyError) as refused:
            claim(work, second)
        for part in (f"pid {sleeper.pid} on {socket.gethostname()}", "started 2026-01-02T03:04:05",
                     "config /studies/a.yaml"):
            assert part in str(refused.value)
        assert refused.value.exit_status == EXIT_ENVIRONMENT
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    claim(work, second)  # the first run is gone (kill -9): its marker is taken over
    assert read_marker(work) == second and "taking over the marker of a run that is gone" in caplog.text
    release(work, first)  # not the holder: nothing happens
    assert marker_path(work).is_file()
    release(work, second)
    assert not marker_path(work).exists()
    elsewhere = RunMarker(pid=1, host="login2.example", started="2026-01-02T03:04:05+00:00",
                          config=("/studies/a.yaml",), cwd="/studies", plan="plan-x.json")
    claim(work, elsewhere)
    with pytest.raises(WorkFolderBusyError, match=f"login2.example.*remove {marker_path(work)}"):
        claim(work, second)


# --------------------------------------------------------------------------- the workflow
def stir_sha256(run: Path) -> str:
    return pd.read_csv(run / "results" / "cohort_vhi.csv")["stir_sha256"].iloc[0]


@pytest.mark.slow
def test_no_stale_numbers(tmp_path: Path, stand_in_model) -> None:
    """A scan replaced at the same path is pulled again; a session file removed is made
    again; complete results are set aside when a later run fails, and come back when the
    same command finishes."""
    root, run = tmp_path / "cohort", tmp_path / "run"
    site = write_synthetic_site(root, {"s1": "01"})
    config = write_config(tmp_path / "config.yaml", site)
    assert snakemake(run, "--configfile", str(config)).returncode == 0
    stir = root / "scans" / "s1_STIR.nii.gz"
    first = pd.read_csv(run / "results" / "cohort_vhi.csv").iloc[0]
    assert first["stir_sha256"] == hashlib.sha256(stir.read_bytes()).hexdigest()

    # the STIR replaced at the same path (twice as bright): pulled again, new thresholds
    _save(stir, SessionDesign(cleaned=True).stir() * 2)
    again = snakemake(run, "--configfile", str(config))
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    second = pd.read_csv(run / "results" / "cohort_vhi.csv").iloc[0]
    assert second["stir_sha256"] == hashlib.sha256(stir.read_bytes()).hexdigest() != first["stir_sha256"]
    assert second["upper"] == 2 * first["upper"] and second["lower"] == pytest.approx(2 * first["lower"])

    # "remove it and run again": the session's file is made again, whatever results/ holds
    vhi_json = run / "work" / "a" / "01" / "s1" / "vhi.json"
    vhi_json.unlink()
    redo = snakemake(run, "--configfile", str(config))
    assert redo.returncode == 0 and "Nothing to be done" not in redo.stdout + redo.stderr
    assert json.loads(vhi_json.read_text())["vhi_ml"] == second["vhi_ml"]

    # a later run fails (a new session's T1W is missing): the complete results move aside
    with (root / "sheet_a.csv").open("a") as fh:
        fh.write(f"a,02,late,pre,,{root / 'gone_T1W.nii.gz'},\n")
    failed = snakemake(run, "--configfile", str(config))
    assert failed.returncode != 0
    results = run / "results"
    assert not (results / "cohort_vhi.csv").exists() and not (results / "report.html").exists()
    assert (results / "partial" / "status.csv").is_file()
    stale = pd.read_csv(results / "stale" / "cohort_vhi.csv")
    assert stale["stir_sha256"].tolist() == [second["stir_sha256"]]
    assert "no longer current" in (results / "stale" / "STALE.txt").read_text()
    status = status_json(config, cwd=run)
    assert status["results"]["complete"] is None and status["results"]["stale"]
    assert status["total"]["failed"] == 1 and status["total"]["measured"] == 1
    # fixed, the same command finishes: results/ anew, nothing stale or partial left
    _save(root / "gone_T1W.nii.gz", SessionDesign().t1w())
    assert snakemake(run, "--configfile", str(config)).returncode == 0
    assert sorted(p.name for p in results.iterdir() if p.is_dir()) == ["qc"]
    assert set(pd.read_csv(results / "status.csv")["state"]) == {"measured", "segmented"}


@pytest.mark.slow
def test_status_while_running_and_a_second_run_on_the_work_folder(tmp_path: Path, stand_in_model,
                                                                    monkeypatch) -> None:
    run = tmp_path / "run"
    config = write_config(tmp_path / "first.yaml", write_synthetic_site(tmp_path / "cohort", {"s1": "01"}))
    other = write_config(tmp_path / "second.yaml",
                         write_synthetic_site(tmp_path / "other", {"s7": "07", "s8": "08"}, site="b"))
    hold = tmp_path / "segmentation may finish"
    monkeypatch.setenv(HOLD_ENV, str(hold))
    first = subprocess.Popen(snakemake_command(run, "--configfile", str(config)), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=workflow_env(),
                             start_new_session=True)
    try:
        log = run / "logs" / "a" / "01" / "s1" / "segment_disease_region.log"
        deadline = time.monotonic() + 180
        while not log.is_file():
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "no segmentation started in 180 s"
            time.sleep(0.2)
        status = status_json(config, cwd=run)
        assert status["total"]["running"] == 1 and status["total"]["failed"] == 0
        assert status["run"]["pid"] == first.pid and status["run"]["alive"] is True
        terminal = vhi("status", "--config", str(config), cwd=run).stdout
        assert "running" in terminal.splitlines()[0] and f"run in progress: pid {first.pid}" in terminal

        second = snakemake(run, "--configfile", str(other))
        output = second.stdout + second.stderr
        assert second.returncode != 0, output[-3000:]
        for part in ("another run uses this work folder", f"pid {first.pid} on {socket.gethostname()}",
                     f"config {config}", "started 20"):
            assert part in output, output[-3000:]
        assert not (run / "logs" / "b").exists()  # nothing of the second run ran
        # the second config's status reads its own plan, never the running run's
        mine = status_json(other, cwd=run)
        assert mine["total"]["total"] == 2 and set(mine["sites"]) == {"b"}
    finally:
        hold.touch()
        output = first.communicate(timeout=300)[0]
        if first.returncode is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 0, output[-3000:]
    done = status_json(config, cwd=run)
    assert done["total"]["measured"] == 1 and done["total"]["running"] == 0 and done["run"] is None
    assert not marker_path(run / "work").exists()
