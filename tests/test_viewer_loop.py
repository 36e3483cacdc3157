"""The radiologist's cleaning loop for real: Snakemake, Orthanc, OHIF in headless Chromium.

Two demo sessions go through the workflow against a real Orthanc (pull, propose, push);
`vhi viewer`'s station serves OHIF 3.13.2 with a same-origin proxy to Orthanc; Chromium
opens one session, loads the proposal SEG (its segment and voxel counts must be ours),
removes one connected component and adds a few voxels through OHIF's labelmap API, and
saves through OHIF's own store command; the next run's VHI must be our count of the
edited mask × the voxel volume. Screenshots go to the test's ``artefacts`` folder. The
disease region comes from the stand-in model (support.fake_model): the loop is the point.
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import urlsplit

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from vhi.config.load import load_config_file
from vhi.viewer.access import SingleUser
from vhi.viewer.ohif import OHIF_VERSION, is_fetched
from vhi.viewer.station import awaiting_cleaning, station_for

from support.browser import needs_browser
from support.env import unset_env
from support.ohif_browser import KNOWN_CONSOLE_ERRORS, clean_in_browser, reader_edit
from support.orthanc import Orthanc, needs_orthanc, seed_demo
from support.workflow import job_counts, snakemake, status_of

log = logging.getLogger(__name__)

USER, CANARY = "vhi-robot", "CANARY-ohif-41d9"
SESSIONS = ("1003", "4386")  # demo scan ids; site A's series layout

needs_ohif = pytest.mark.skipif(not is_fetched(), reason=f"OHIF {OHIF_VERSION} not fetched "
                                                          "(`make setup` runs `vhi viewer --fetch-only`)")


@pytest.fixture
def env(monkeypatch):
    unset_env(monkeypatch, "DICOMWEB_USER", "DICOMWEB_PASS", "DICOMWEB_TOKEN", "REQUESTS_CA_BUNDLE")
    monkeypatch.setenv("DICOMWEB_USER", USER)
    monkeypatch.setenv("DICOMWEB_PASS", CANARY)


@pytest.mark.slow
@needs_orthanc
@needs_browser
@needs_ohif
@pytest.mark.usefixtures("stand_in_model")
def test_clean_in_ohif_and_collect(tmp_path, data_dir, env, monkeypatch):
    started = time.monotonic()
    artefacts = tmp_path / "artefacts"
    artefacts.mkdir()
    with Orthanc(tmp_path / "orthanc", users={USER: CANARY}) as orthanc:
        seeded = seed_demo(orthanc, data_dir, tmp_path / "dicom", SESSIONS)
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"timepoints": ["pre", "post"], "sites": [
            {"name": "A", "reference": "auto",
             "source": {"type": "dicomweb", "url": orthanc.dicomweb, "session_label": "{AccessionNumber}",
                        "timepoint_pattern": "_(pre|post)$", "backoff_s": 0.05}}]}))
        run = tmp_path / "run"

        # run 1: pull, segment, propose, push
        first = snakemake(run, "--configfile", str(config))
        assert first.returncode == 0, first.stderr[-5000:]
        assert job_counts(first.stdout + first.stderr)["push_proposal"] == 2
        assert {r["state"] for r in status_of(run, by=("site", "session")).values()} == {"awaiting_cleaning"}
        t_run1 = time.monotonic() - started

        session, info = "1003_pre", seeded["1003_pre"]
        work = run / "work" / "A" / info["subject"] / session
        proposal = nib.load(work / "proposal.nii.gz")
        ours = int(np.count_nonzero(np.asarray(proposal.dataobj) >= 1))
        edited, edits = reader_edit(np.asarray(proposal.dataobj))
        ny = proposal.shape[1]
        js_edits = [[info["sops"][k], ny - 1 - j, i, v] for i, j, k, v in edits]

        monkeypatch.chdir(run)  # where `vhi viewer` runs: the run's folder
        settings = load_config_file(config)
        waiting = {a.key: a for a in awaiting_cleaning(settings, "A")}
        assert set(waiting) == {f"A/{s['subject']}/{name}" for name, s in seeded.items()}
        access = SingleUser(lambda: list(waiting.values()))
        server, _ = station_for(settings, access, "A")

        def seg_series() -> list:
            return [s for s in orthanc.series_of_study(info["study"]) if s["00080060"]["Value"] == ["SEG"]]

        with server:
            chromium, requests_seen, console, _ = clean_in_browser(
                access.signin_url(server.url, waiting[f"A/{info['subject']}/{session}"].viewer_path),
                saved=lambda: len(seg_series()) == 2, ours=ours, edited=edited, js_edits=js_edits,
                artefacts=artefacts)
        segs = seg_series()
        t_browser = time.monotonic() - started - t_run1
        hosts = {urlsplit(u).hostname for u in requests_seen if urlsplit(u).scheme in ("http", "https")}
        assert hosts == {"127.0.0.1"}, hosts
        unknown = [m for m in console if not any(k in m for k in KNOWN_CONSOLE_ERRORS)]
        assert unknown == [], unknown
        assert any(m == "POST" and p.startswith("/studies") and s == 200 for m, p, s in server.requests)

        # run 2: the reader's SEG is collected and measured
        second = snakemake(run, "--configfile", str(config))
        assert second.returncode == 0, second.stderr[-5000:]
        counts = job_counts(second.stdout + second.stderr)
        assert counts.get("collect_cleaned") == 1 and "push_proposal" not in counts, counts
        cohort = pd.read_csv(run / "results" / "cohort_vhi.csv", dtype={"subject": str, "session": str})
        row = cohort[cohort.session == session].iloc[0]
        voxel_ml = float(np.prod(np.asarray(proposal.header.get_zooms()[:3], float))) / 1000
        cleaned = np.asarray(nib.load(work / "cleaned.nii.gz").dataobj) >= 1
        assert np.array_equal(cleaned, edited)
        assert row.vhi_voxels == int(edited.sum())
        assert row.vhi_ml == pytest.approx(int(edited.sum()) * voxel_ml, rel=1e-9)
        sidecar = json.loads((work / "cleaned.json").read_text())["source"]
        saved = next(s for s in segs if s["0020000E"]["Value"][0] != json.loads(
            (work / "pushed.json").read_text())["seg"]["series_uid"])
        assert sidecar["seg_series_instance_uid"] == saved["0020000E"]["Value"][0]
        assert row.cleaned_seg_uid == sidecar["seg_series_instance_uid"]
        status = status_of(run, by=("site", "session"))
        assert status[f"A/{session}"]["state"] == "measured"
        assert status["A/4386_post"]["state"] == "awaiting_cleaning"
        assert status["A/4386_post"]["reason"].endswith(  # the report lists it with its viewer route
            f"open it in `vhi viewer` at /segmentation?StudyInstanceUIDs={seeded['4386_post']['study']}")
        version = orthanc.version()
    wall = time.monotonic() - started
    log.warning("viewer loop: Orthanc %s, OHIF %s, Chromium %s; run 1 %.0f s, browser %.0f s, "
                "whole test %.0f s", version, OHIF_VERSION, chromium, t_run1, t_browser, wall)
    (artefacts / "timings.json").write_text(json.dumps({
        "orthanc": version, "ohif": OHIF_VERSION, "chromium": chromium, "run1_s": t_run1,
        "browser_s": t_browser, "wall_s": wall}))
    assert all(CANARY not in r.stdout + r.stderr for r in (first, second))
    leaked = [p for p in [config, *run.rglob("*")] if p.is_file() and CANARY.encode() in p.read_bytes()]
    assert leaked == []  # work files, tables, logs, Snakemake's metadata, the config
