"""The radiologist's cleaning loop for real: Snakemake, Orthanc, OHIF in headless Chromium.

Two demo sessions go through the workflow against a real Orthanc (pull, propose, push);
`vhi viewer`'s station serves OHIF 3.13.2 with a same-origin proxy to Orthanc; Chromium
opens one session, loads the proposal SEG (its segment and voxel counts must be ours),
removes one connected component and adds a few voxels through OHIF's labelmap API, and
saves through OHIF's own store command; the next run's VHI must be our count of the
edited mask × the voxel volume. Screenshots go to the test's ``artefacts`` folder.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from urllib.parse import urlsplit

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage

from vhi.config.load import load_config_file
from vhi.viewer.ohif import OHIF_VERSION, is_fetched
from vhi.viewer.station import awaiting_cleaning, station_for

from support.browser import browser_context, needs_browser
from support.env import unset_env
from support.orthanc import Orthanc, needs_orthanc, seed_demo
from support.paths import MODELS
from support.workflow import job_counts, snakemake, status_of

log = logging.getLogger(__name__)

USER, CANARY = "vhi-robot", "CANARY-ohif-41d9"
SESSIONS = ("1003", "4386")  # demo scan ids; site A's series layout
SEG_LABEL = "VHI inflammation (AI proposal, research use)"
#: Browser console errors known to be harmless here.
KNOWN_CONSOLE_ERRORS = ("favicon.ico", "Failed to load resource: the server responded with a status of 404")

needs_weights = pytest.mark.skipif(
    not (MODELS / "sij_disease_region_unet" / "model_1.pt").is_file(),
    reason=f"published U-Net weights not found under {MODELS}")
needs_ohif = pytest.mark.skipif(not is_fetched(), reason=f"OHIF {OHIF_VERSION} not fetched "
                                                          "(`make setup` runs `vhi viewer --fetch-only`)")

JS_COUNT = """(segId) => {
  const seg = window.cornerstoneTools.segmentation.state.getSegmentation(segId);
  const lm = seg.representationData.Labelmap;
  let voxels = 0;
  for (const id of lm.imageIds) {
    const d = window.cornerstone.cache.getImage(id).getPixelData();
    for (let n = 0; n < d.length; n++) if (d[n]) voxels++;
  }
  return {segments: Object.keys(seg.segments).filter(k => seg.segments[k]).length, voxels};
}"""

JS_EDIT = """([segId, edits]) => {
  // edits: [sopInstanceUID, row, column, value]; the labelmap image of each source image
  // is found through the source image's SOP Instance UID
  const cs = window.cornerstone;
  const seg = window.cornerstoneTools.segmentation.state.getSegmentation(segId);
  const lm = seg.representationData.Labelmap;
  const bySop = {};
  for (const id of lm.imageIds) {
    const image = cs.cache.getImage(id);
    const sop = cs.metaData.get('sopCommonModule', image.referencedImageId).sopInstanceUID;
    bySop[sop] = image;
  }
  let done = 0;
  for (const [sop, r, c, v] of edits) {
    const image = bySop[sop];
    if (!image) continue;
    image.getPixelData()[r * image.columns + c] = v;
    done++;
  }
  window.cornerstoneTools.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(segId);
  return done;
}"""


@pytest.fixture
def env(monkeypatch):
    unset_env(monkeypatch, "DICOMWEB_USER", "DICOMWEB_PASS", "DICOMWEB_TOKEN", "REQUESTS_CA_BUNDLE")
    monkeypatch.setenv("DICOMWEB_USER", USER)
    monkeypatch.setenv("DICOMWEB_PASS", CANARY)


def reader_edit(proposal: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Remove the smallest connected component, add a 2×2 square elsewhere: the edited mask
    and the edits as voxel (i, j, k, value)."""
    mask = proposal >= 1
    labels, n = ndimage.label(mask)
    assert n >= 2, "the proposal needs two components for this test"
    sizes = ndimage.sum_labels(mask, labels, index=range(1, n + 1))
    drop = int(np.argmin(sizes)) + 1
    edits = [(int(i), int(j), int(k), 0) for i, j, k in np.argwhere(labels == drop)]
    k = int(np.argwhere(mask)[:, 2].mean())
    free = [(i, j) for i in range(2, mask.shape[0] - 2) for j in range(2, mask.shape[1] - 2)
            if not mask[i:i + 2, j:j + 2, k].any()]
    i0, j0 = free[len(free) // 2]
    edits += [(i, j, k, 1) for i in (i0, i0 + 1) for j in (j0, j0 + 1)]
    edited = mask.copy()
    for i, j, kk, v in edits:
        edited[i, j, kk] = bool(v)
    return edited, edits


def clean_in_browser(server, orthanc: Orthanc, url: str, info: dict, *, ours: int, edited: np.ndarray,
                     js_edits: list, artefacts: Path) -> tuple[list, str, list[str], list[str]]:
    """Open the session in OHIF, load the proposal, edit it, save it through OHIF's store
    command; the study's SEG series afterwards, the Chromium version, the URLs requested
    and the console errors."""
    with browser_context() as context:
        requests_seen: list[str] = []
        console: list[str] = []
        context.on("request", lambda r: requests_seen.append(r.url))
        page = context.new_page()
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.goto(url)
        page.wait_for_function("() => window.services && window.services.displaySetService"
                               ".getActiveDisplaySets().length >= 2", timeout=60000)
        page.get_by_text(SEG_LABEL).first.dblclick()
        page.get_by_role("button", name="Yes").click()
        page.wait_for_function("() => window.services.segmentationService.getSegmentations()"
                               ".length > 0", timeout=60000)
        seg_id = page.evaluate("() => window.services.segmentationService.getSegmentations()[0]"
                               ".segmentationId")
        page.wait_for_timeout(1000)
        loaded = page.evaluate(JS_COUNT, seg_id)
        page.screenshot(path=str(artefacts / "loaded.png"))
        assert loaded == {"segments": 1, "voxels": ours}

        assert page.evaluate(JS_EDIT, [seg_id, js_edits]) == len(js_edits)
        page.wait_for_timeout(1000)
        assert page.evaluate(JS_COUNT, seg_id)["voxels"] == int(edited.sum())
        page.screenshot(path=str(artefacts / "edited.png"))

        # the command's promise settles when the dialog closes: not awaited here
        page.evaluate("(segId) => { window.commandsManager.runCommand('storeSegmentation', "
                      "{segmentationId: segId, modality: 'SEG'}); }", seg_id)
        page.get_by_role("dialog").get_by_role("button", name="Save").click()
        deadline = time.monotonic() + 60
        segs: list = []
        while time.monotonic() < deadline:
            segs = [s for s in orthanc.series_of_study(info["study"])
                    if s["00080060"]["Value"] == ["SEG"]]
            if len(segs) == 2:
                break
            time.sleep(0.5)
        assert len(segs) == 2, "OHIF's save did not reach Orthanc"
        page.wait_for_timeout(500)
        page.screenshot(path=str(artefacts / "saved.png"))
        return segs, context.browser.version, requests_seen, console


@pytest.mark.slow
@needs_weights
@needs_orthanc
@needs_browser
@needs_ohif
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
        server, _ = station_for(settings, "A")
        with server:
            segs, chromium, requests_seen, console = clean_in_browser(
                server, orthanc, waiting[f"A/{info['subject']}/{session}"].url(server.url), info,
                ours=ours, edited=edited, js_edits=js_edits, artefacts=artefacts)
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
