"""The workflow against the XNAT emulator: pull → propose → push, a radiologist cleans, collect.

Slow (a workflow run per test): ``pytest -m slow``.
The emulator runs in this process; Snakemake runs as a subprocess whose jobs reach it
over HTTP through xnatpy, with credentials only in the environment.

Two tiers (``xnat_data``): synthetic stand-ins of the demo volumes (always run), and the
public demo volumes (skipped where ``../shared`` is absent); the disease region comes from
:mod:`support.fake_model` in place of the U-Net in both (its output is test_workflow.py's).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import xnat
import yaml

from support.env import unset_env
from support.workflow import half_written, job_counts, pull_jobs, snakemake, status_of, workflow_env
from xnat_emulator import XnatEmulator
from xnat_emulator.demo import (
    SITE_PROJECTS,
    DemoSession,
    build_demo_series,
    edit_seg,
    save_cleaned,
    seed_demo,
)
from xnat_emulator.synthetic_demo import write_synthetic_demo

pytest_plugins = ["xnat_emulator.fixtures"]  # self_signed_cert

USER, CANARY = "vhi-robot", "CANARY-pw-5d1e2f"
RADIOLOGIST = ("radiologist", "rad-pw-1")
#: every seeded session (2 + 2 keeps the run inside a few minutes on 2 cores)
SPLIT = {"A": ["1003", "4386"], "B": ["1012", "3002"]}

@pytest.fixture(params=["synthetic", "demo"])
def xnat_data(request, tmp_path_factory, stand_in_model) -> Path:
    """The volumes the emulator is seeded with: synthetic stand-ins, or the demo data."""
    if request.param == "demo":
        return request.getfixturevalue("data_dir")
    return write_synthetic_demo(tmp_path_factory.mktemp("synthetic_demo"))


@pytest.fixture
def env(monkeypatch):
    """The robot's credentials in the environment only (the runs inherit it), no TLS overrides."""
    unset_env(monkeypatch, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR",
              "XNATPY_USER", "XNATPY_PASS")
    monkeypatch.setenv("XNAT_USER", USER)
    monkeypatch.setenv("XNAT_PASS", CANARY)


def xnat_config(path: Path, url: str, sites=("A", "B"), **extra) -> Path:
    """Two XNAT sites with their own selection rules; no credentials anywhere in it."""
    rules = {"A": {}, "B": {"stir": {"match": ["stir"], "choose": "last"},
                            "t1w": {"match": ["^t1w"], "fields": ["type"]}}}
    config = {"timepoints": ["pre", "post"], "sites": [
        {"name": site, "reference": "auto",
         "source": {"type": "xnat", "server": url, "project": SITE_PROJECTS[site],
                    "timepoint_pattern": "_(pre|post)$", "backoff_s": 0.05,
                    "selection": rules[site], **extra}}
        for site in sites]}
    path.write_text(yaml.safe_dump(config))
    return path


def collections(emu: XnatEmulator, experiment: str) -> list:
    with emu.store.lock:
        return sorted((a for a in emu.store.state.assessors.values() if a.session_id == experiment),
                      key=lambda a: a.insert_date)


def files_with(secret: str, *paths: Path) -> list[Path]:
    """The files at or under ``paths`` that hold ``secret`` (gzip files also uncompressed)."""
    needle = secret.encode()
    found = []
    for path in paths:
        for f in [path] if path.is_file() else sorted(path.rglob("*")):
            if not f.is_file():
                continue
            data = f.read_bytes()
            if data[:2] == b"\x1f\x8b":  # .nii.gz and the like: a header field is compressed
                with contextlib.suppress(OSError, EOFError):
                    data += gzip.decompress(data)
            if needle in data:
                found.append(f)
    return found


def authenticated_as(emu: XnatEmulator, user: str) -> list:
    """The requests the emulator served as ``user`` (its password was right)."""
    return [e for e in emu.log.entries if e.user == user and e.status < 400]


def clean_like_a_radiologist(emu: XnatEmulator, demo: DemoSession) -> tuple[str, str, int, str]:
    """Open the proposal, remove its busiest slice, save as a new collection (as OHIF does);
    its label, id, kept voxels and SEG Series Instance UID."""
    with xnat.connect(emu.url, user=RADIOLOGIST[0], password=RADIOLOGIST[1],
                      loglevel="WARNING") as conn:
        seg = conn.get(f"/xapi/roi/projects/{demo.project}/collections/"
                       f"VHI_PROPOSAL_{demo.session}").content
        ds = pydicom.dcmread(io.BytesIO(seg))
        frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), -1)
        busiest = int(np.argmax(frames.sum(axis=1)))
        cleaned, kept = edit_seg(seg, remove_frames=[busiest])
        label, ident = save_cleaned(conn, demo.project, demo.experiment, cleaned,
                                    series_number=int(ds.SeriesNumber))
    assert kept < int(frames.sum()) or int(frames.sum()) == 0
    return label, ident, kept, str(pydicom.dcmread(io.BytesIO(cleaned)).SeriesInstanceUID)


@pytest.mark.slow
def test_pull_push_clean_collect_through_the_workflow(tmp_path, xnat_data, env):
    users = {USER: CANARY, RADIOLOGIST[0]: RADIOLOGIST[1]}
    with XnatEmulator(tmp_path / "xnat", users=users) as emu:
        demo = seed_demo(emu, xnat_data, tmp_path / "dicom", SPLIT)
        config = xnat_config(tmp_path / "config.yaml", emu.url)
        run = tmp_path / "run"

        # run 1: pull, segment, propose, push for every seeded session of both sites
        first = snakemake(run, "--configfile", str(config))
        assert first.returncode == 0, first.stderr[-5000:]
        counts = job_counts(first.stdout + first.stderr)
        assert pull_jobs(counts) == 4 and counts["push_proposal"] == 4, counts
        status = status_of(run, by=("site", "session"))
        assert {k: r["state"] for k, r in status.items()} == {
            f"{d.site}/{d.session}": "awaiting_cleaning" for d in demo}
        for d in demo:
            [proposal] = collections(emu, d.experiment)
            assert proposal.label == f"VHI_PROPOSAL_{d.session}"
            receipt = json.loads((run / "work" / d.site / d.subject / d.session / "pushed.json").read_text())
            assert receipt["verified"] is True and receipt["collection"]["uid"] == proposal.fields["UID"]
            assert receipt["stir"]["series_uid"] == d.series[d.stir_scan]

        # the radiologists clean every proposal in the viewer
        cleaned = {d.session: clean_like_a_radiologist(emu, d) for d in demo}

        # run 2: only the collection and the measurement run
        puts_before = len(emu.log.find("PUT", r"^/xapi/roi/"))
        second = snakemake(run, "--configfile", str(config))
        assert second.returncode == 0, second.stderr[-5000:]
        counts = job_counts(second.stdout + second.stderr)
        assert counts.get("collect_cleaned") == 4 and not pull_jobs(counts), counts
        assert not {"segment_disease_region", "propose_lesions", "push_proposal"} & set(counts), counts
        assert len(emu.log.find("PUT", r"^/xapi/roi/")) == puts_before  # nothing pushed again
        cohort = pd.read_csv(run / "results" / "cohort_vhi.csv", dtype={"subject": str, "session": str})
        assert len(cohort) == 4
        for d in demo:
            label, ident, kept, series_uid = cleaned[d.session]
            row = cohort[(cohort.site == d.site) & (cohort.session == d.session)].iloc[0]
            # voxel volume of the STIR as pulled (dcm2niix's header; the demo NIfTI's to 1e-5)
            mask = nib.load(run / "work" / d.site / d.subject / d.session / "cleaned.nii.gz")
            voxel_ml = float(np.prod(np.asarray(mask.header.get_zooms()[:3], float))) / 1000
            demo_ml = float(np.prod(np.asarray(nib.load(d.stir_nifti).header.get_zooms()[:3], float))) / 1000
            assert voxel_ml == pytest.approx(demo_ml, rel=1e-5)
            assert row.vhi_voxels == kept == int(np.count_nonzero(np.asarray(mask.dataobj)))
            assert row.vhi_ml == pytest.approx(kept * voxel_ml, rel=1e-12)
            assert row.cleaned_uri == f"{emu.url}/xapi/roi/projects/{d.project}/collections/{ident}"
            sidecar = json.loads((run / "work" / d.site / d.subject / d.session / "cleaned.json").read_text())
            source = sidecar["source"]
            assert (source["label"], source["collection"]) == (label, ident)
            stored = next(a for a in collections(emu, d.experiment) if a.id == ident)
            assert source["seg_sop_instance_uid"] == stored.fields["UID"]  # VHI traces to its SEG
            assert row.cleaned_seg_uid == source["seg_series_instance_uid"] == series_uid
            assert len(collections(emu, d.experiment)) == 2  # proposal + the radiologist's
        assert {r["state"] for r in status_of(run, by=("site", "session")).values()} == {"measured"}

        # `vhi tables` rebuilds results/ from the run's saved plan: the server is not asked
        asked = len(emu.log.entries)
        tables = subprocess.run(["vhi", "tables", "--config", str(config)], cwd=run, capture_output=True,
                                text=True, env=workflow_env(), timeout=300, check=False)
        assert tables.returncode == 0, tables.stderr[-3000:]
        assert len(emu.log.entries) == asked
        assert {r["state"] for r in status_of(run, by=("site", "session")).values()} == {"measured"}

        # run 3: nothing left to do
        third = snakemake(run, "--configfile", str(config), "-n")
        assert third.returncode == 0 and "Nothing to be done" in third.stdout + third.stderr

    # The runs had the canary password: they logged in as the robot, whose only password it
    # is, and not from the config (no credentials in it): from the environment they inherited.
    assert authenticated_as(emu, USER)
    assert USER not in config.read_text() and CANARY not in config.read_text()
    # ... and it is in nothing the runs wrote: work files, tables, logs, Snakemake's metadata,
    # the plan and config the runs saved, what went to the server, the runs' own output.
    written = {"work": run / "work", "results": run / "results", "logs": run / "logs",
               "snakemake metadata": run / ".snakemake", "pushed to the server": tmp_path / "xnat"}
    for what, folder in written.items():
        assert any(p.is_file() for p in folder.rglob("*")), f"{what}: nothing was written there"
        assert files_with(CANARY, folder) == [], what
    assert files_with(CANARY, run, config) == []  # every file of the run's folder and the config
    assert all(CANARY not in r.stdout + r.stderr for r in (first, second, third))
    # (the check finds the password where it is, compressed or not)
    planted = tmp_path / "planted.json.gz"
    planted.write_bytes(gzip.compress(json.dumps({"XNAT_PASS": CANARY}).encode()))
    assert files_with(CANARY, planted, run) == [planted]
    assert half_written(run / "work", run / "results") == []


@pytest.mark.slow
def test_failing_sessions_are_reported_and_the_others_complete(tmp_path, xnat_data, env):
    """A 500 on every T1W download of one session, a 422 on another's push."""
    split = {"A": ["1003", "1007", "1234"]}
    with XnatEmulator(tmp_path / "xnat", users={USER: CANARY}) as emu:
        demo = {d.session: d for d in seed_demo(emu, xnat_data, tmp_path / "dicom", split)}
        bad_pull, bad_push = demo["1003_pre"], demo["1007_pre"]
        emu.faults.add("GET", rf"/experiments/{bad_pull.experiment}/scans/2/resources/DICOM/files$",
                       "status", status=500, count=1000, query="format=zip")
        emu.faults.fail("PUT", rf"^/xapi/roi/projects/VHI_SITE_A/sessions/{bad_push.experiment}/", 422,
                        count=1000, body="Missing dependencies: injected")
        config = xnat_config(tmp_path / "config.yaml", emu.url, sites=("A",))
        run = tmp_path / "run"
        result = snakemake(run, "--configfile", str(config))
        assert result.returncode != 0
        assert not (run / "results" / "cohort_vhi.csv").exists()  # results/partial/ only
        status = status_of(run, by=("site", "session"), partial=True)
        assert status["A/1234_pre"]["state"] == "awaiting_cleaning"
        row = status["A/1003_pre"]
        assert (row["state"], row["step"]) == ("failed", "pull_scans")
        assert row["reason"].startswith("session A/A09/1003_pre: downloading T1W scan 2: HTTP 500")
        assert "(after 4 attempts)" in row["reason"]
        row = status["A/1007_pre"]
        assert (row["state"], row["step"]) == ("failed", "push_proposal")
        assert "session A/A11/1007_pre: the server refused ROI collection VHI_PROPOSAL_1007_pre " \
               "(HTTP 422: Missing dependencies: injected)" in row["reason"]
        # only the good session's proposal reached the server; nothing half-written here
        assert [len(collections(emu, d.experiment)) for d in demo.values()] == [0, 0, 1]
        assert not (run / "work" / "A" / "A09" / "1003_pre" / "t1w.nii.gz").exists()
        assert not (run / "work" / "A" / "A11" / "1007_pre" / "pushed.json").exists()
        assert half_written(run / "work", run / "results") == []
        assert authenticated_as(emu, USER)  # the run logged in with the canary password ...
        assert files_with(CANARY, run) == []  # ... and wrote it nowhere


def test_self_signed_server_refused_unless_its_ca_is_configured(tmp_path, xnat_data, env,
                                                                 self_signed_cert):
    """Planning (a dry run) already connects: without the CA nothing is sent."""
    cert, key = self_signed_cert
    with XnatEmulator(tmp_path / "xnat", users={USER: CANARY}, certfile=cert, keyfile=key) as emu:
        folders, _, _ = build_demo_series(xnat_data, tmp_path / "dicom", "A", "1003")
        experiment = emu.seed_session("VHI_SITE_A", "A09", "1003_pre")
        for scan_id, type_ in (("2", "T1_TSE_COR"), ("3", "STIR_COR_OBL")):
            emu.add_dicom_scan(experiment.id, scan_id, folders[scan_id], type=type_)
        refused = snakemake(tmp_path / "run1", "--configfile",
                            str(xnat_config(tmp_path / "plain.yaml", emu.url, sites=("A",))), "-n")
        assert refused.returncode != 0
        assert "TLS certificate verification failed; for a site CA set source.ca_bundle" in (
            refused.stdout + refused.stderr)
        assert not emu.log.find("PUT", r"^/data/services/auth$")
        trusted = snakemake(tmp_path / "run2", "--configfile",
                            str(xnat_config(tmp_path / "ca.yaml", emu.url, sites=("A",),
                                            ca_bundle=str(cert))), "-n")
        assert trusted.returncode == 0, trusted.stderr[-3000:]
        assert pull_jobs(job_counts(trusted.stdout + trusted.stderr)) == 1


def test_xnat_plan_explains_the_selection(tmp_path, xnat_data, env):
    with XnatEmulator(tmp_path / "xnat", users={USER: CANARY}) as emu:
        seed_demo(emu, xnat_data, tmp_path / "dicom", {"A": ["1003"], "B": ["1012"]})
        config = xnat_config(tmp_path / "config.yaml", emu.url)
        out = tmp_path / "plan.json"
        result = subprocess.run(["vhi", "xnat-plan", "--config", str(config), "--out", str(out)],
                                capture_output=True, text=True, env=workflow_env(), timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr
        assert not emu.log.find("PUT", r"^/xapi/")
        assert authenticated_as(emu, USER)  # it logged in with the canary password ...
    report = {r["session"]: r for r in json.loads(out.read_text())["sessions"]}
    assert report["A/A09/1003_pre"]["picked"] == {"stir": "3", "t1w": "2"}
    assert report["B/B13/1012_post"]["picked"] == {"stir": "4", "t1w": "3"}
    unusable = next(d for d in report["B/B13/1012_post"]["decisions"]
                    if d["scan"] == "5" and d["role"] == "stir")
    assert unusable["reason"] == "quality 'unusable' not accepted (usable)"
    assert "+ scan 3 'STIR_COR_OBL' [usable]: picked: the only candidate" in result.stderr
    assert CANARY not in result.stdout + result.stderr + out.read_text()  # ... and showed it nowhere
