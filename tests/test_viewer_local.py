"""The local cleaning station (`vhi viewer --local`) with a real Orthanc, on synthetic data.

A two-session folder cohort runs through the workflow (the box model of
support.fake_model stands in for the U-Net); the station loads both sessions into the
Orthanc it starts (storage in the run's work folder), a reader's edit is stored as a
viewer would (a highdicom SEG without the platform's marks, STOW-RS), the station writes
it to the cleaned path, and the next workflow run measures it. A file someone saved at
the other session's cleaned path is kept.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
import yaml
from dicomweb_client import DICOMwebClient

from vhi.config.load import load_config_file
from vhi.fileio import sha256_file
from vhi.imaging.seg import read_seg, write_seg
from vhi.sources.local import StationRecord
from vhi.viewer import ohif
from vhi.viewer.access import SingleUser
from vhi.viewer.local import LocalStation, oedema_window, station_dir

from support.browser import needs_browser
from support.fake_model import write_vhi_shim
from support.ohif_browser import KNOWN_CONSOLE_ERRORS, clean_in_browser, reader_edit
from support.orthanc import needs_orthanc
from support.viewer import announced_links, announced_url, token_session
from support.workflow import snakemake, status_of, workflow_env
from xnat_emulator.demo import edit_seg
from xnat_emulator.synthetic_demo import write_synthetic_demo

SITE = "L"
SCANS = {"1003": ("09", "pre"), "4386": ("03", "post")}


def local_cohort(root: Path) -> Path:
    """Two sessions of the synthetic demo volumes as a local site; returns the config."""
    demo = write_synthetic_demo(root / "scans")
    rows = [{"site": SITE, "subject": subject, "session": scan, "timepoint": timepoint,
             "stir": str(demo / "stir" / f"{scan}_STIR.nii.gz"),
             "t1w": str(demo / "t1w" / f"{scan}_T1W.nii.gz"), "normal_marrow": ""}
            for scan, (subject, timepoint) in SCANS.items()]
    sheet = root / "sheet.csv"
    with sheet.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"timepoints": ["pre", "post"], "sites": [
        {"name": SITE, "reference": "auto",
         "source": {"type": "local", "root": str(root), "sheet": str(sheet),
                    "outbox": str(root / "outbox"), "station": True}}]}))
    return config


def cohort_rows(run: Path) -> dict[str, dict[str, str]]:
    with (run / "results" / "cohort_vhi.csv").open() as fh:
        return {row["session"]: row for row in csv.DictReader(fh)}


def stored_instances(station: LocalStation) -> int:
    with station.orthanc.http() as http:
        return int(http.get(f"{station.orthanc.url}/statistics", timeout=10).json()["CountInstances"])


@needs_orthanc
def test_local_station_loads_collects_and_the_workflow_measures(tmp_path, monkeypatch):
    monkeypatch.setenv("VHI_TEST_BIN", str(write_vhi_shim(tmp_path / "bin")))
    root = tmp_path / "cohort"
    config = local_cohort(root)
    run = tmp_path / "run"
    monkeypatch.chdir(run.parent)
    first = snakemake(run, "--configfile", str(config))
    assert first.returncode == 0, first.stderr[-3000:]
    assert {k: r["state"] for k, r in status_of(run).items()} == {
        "1003": "awaiting_cleaning", "4386": "awaiting_cleaning"}

    monkeypatch.chdir(run)  # the config's work folder is relative to the run
    settings = load_config_file(config)
    with LocalStation(settings, SITE) as station:
        assert station.orthanc.folder == (run / "work" / ".vhi" / "station" / SITE).absolute()
        started = time.monotonic()
        loaded = station.load()
        print(f"local station: 2 sessions loaded in {time.monotonic() - started:.1f} s")
        assert [(o.key, o.action) for o in loaded] == [(f"{SITE}/09/1003", "loaded"),
                                                        (f"{SITE}/03/4386", "loaded")]
        status = status_of(run)  # the report's link: the session's address at the station
        assert [station.sessions[o.key].viewer_path for o in loaded] == [
            status["1003"]["viewer_path"], status["4386"]["viewer_path"]]
        # the station's Orthanc answers only with the run's password (the viewer's proxy adds it)
        assert requests.get(f"{station.dicomweb}/studies", timeout=10).status_code == 401
        client = DICOMwebClient(station.dicomweb, session=station.orthanc.http())
        edited_voxels = {}
        for o in loaded:
            item = station.sessions[o.key]
            stir = nib.load(item.stir)
            proposal = nib.load(item.proposal).get_fdata() >= 1
            assert proposal.sum() > 0
            region = nib.load(item.region).get_fdata()
            upper = json.loads(item.proposal_sidecar.read_text())["upper"]
            window = oedema_window(stir.get_fdata(), region, upper)
            series = {s["0020000E"]["Value"][0]: s for s in client.search_for_series(
                item.study_uid, fields=["NumberOfSeriesRelatedInstances", "Modality"])}
            mr = series[item.series_uid]
            assert mr["00080060"]["Value"] == ["MR"]
            assert mr["00201209"]["Value"] == [stir.shape[2]]
            meta = client.retrieve_series_metadata(item.study_uid, item.series_uid)
            assert len(meta) == stir.shape[2]
            first_meta = pydicom.Dataset.from_json(meta[0], bulk_data_uri_handler=lambda *_: b"")
            assert float(first_meta.WindowCenter) == pytest.approx(window.center, abs=0.01)
            assert float(first_meta.WindowWidth) == pytest.approx(window.width, abs=0.01)
            values = stir.get_fdata()[region > 0]  # the disease region's P1 .. P99.9 (or upper)
            assert (window.low, window.high) == (np.percentile(values, 1),
                                                 max(np.percentile(values, 99.9), upper))
            assert window.low > stir.get_fdata().min()  # not the whole volume's range
            [seg_uid] = [uid for uid, s in series.items() if s["00080060"]["Value"] == ["SEG"]]
            [seg] = client.retrieve_series(item.study_uid, seg_uid)
            path = tmp_path / f"{item.session.session}.seg.dcm"
            seg.save_as(path, enforce_file_format=True)
            assert int(read_seg(path, stir, item.datasets).sum()) == int(proposal.sum())
            if item.session.session == "1003":  # the reader's edit, stored as a viewer does
                edited = proposal.copy()
                edited[..., int(np.argmax(proposal.sum(axis=(0, 1))))] = False
                edited[1:3, 1:3, 0] = True
                write_seg(edited, stir.affine, item.datasets, tmp_path / "edit.dcm",
                          algorithm_version="0", series_number=1)
                data, _ = edit_seg((tmp_path / "edit.dcm").read_bytes(), description="Cleaned by R1")
                client.store_instances([pydicom.dcmread(io.BytesIO(data))], item.study_uid)
                edited_voxels[o.key] = (int(edited.sum()), str(pydicom.dcmread(io.BytesIO(data))
                                                                .SeriesInstanceUID))
        count = stored_instances(station)
        again = station.load()
        assert [(o.action, o.sent) for o in again] == [("unchanged", 0), ("unchanged", 0)]
        assert stored_instances(station) == count

        hand = station.sessions[f"{SITE}/03/4386"].cleaned
        hand.parent.mkdir(parents=True, exist_ok=True)
        mask = np.zeros(nib.load(station.sessions[f"{SITE}/03/4386"].stir).shape, np.uint8)
        mask[5:8, 5:8, 3] = 1
        nib.save(nib.Nifti1Image(mask, nib.load(station.sessions[f"{SITE}/03/4386"].stir).affine), hand)
        # a viewer SEG on the second session too: the hand-saved file still wins
        item = station.sessions[f"{SITE}/03/4386"]
        write_seg(nib.load(item.proposal).get_fdata() >= 1, nib.load(item.stir).affine, item.datasets,
                  tmp_path / "edit2.dcm", algorithm_version="0", series_number=1)
        data, _ = edit_seg((tmp_path / "edit2.dcm").read_bytes())
        client.store_instances([pydicom.dcmread(io.BytesIO(data))], item.study_uid)
        hand_sha = hand.read_bytes()

        collected = {o.key: o for o in station.collect()}
        assert collected[f"{SITE}/09/1003"].action == "written"
        assert collected[f"{SITE}/03/4386"].action == "kept"
        assert "not written by the station: kept" in collected[f"{SITE}/03/4386"].detail
        assert hand.read_bytes() == hand_sha
        cleaned = station.sessions[f"{SITE}/09/1003"].cleaned
        voxels, seg_series = edited_voxels[f"{SITE}/09/1003"]
        assert int(nib.load(cleaned).get_fdata().sum()) == voxels
        assert [o.action for o in station.collect()] == ["unchanged", "kept"]
        assert StationRecord(cleaned).seg_of(sha256_file(cleaned))["seg_series_instance_uid"] == seg_series

    # the next run collects both as any cleaned mask; no server runs
    second = snakemake(run, "--configfile", str(config))
    assert second.returncode == 0, second.stderr[-3000:]
    rows = cohort_rows(run)
    voxel_ml = float(np.prod(nib.load(cleaned).header.get_zooms()[:3])) / 1000
    assert float(rows["1003"]["vhi_ml"]) == pytest.approx(voxels * voxel_ml, rel=1e-6)
    assert float(rows["4386"]["vhi_ml"]) == pytest.approx(9 * voxel_ml, rel=1e-6)
    assert rows["1003"]["cleaned_seg_uid"] and not rows["4386"]["cleaned_seg_uid"]
    sidecar = json.loads((run / "work" / SITE / "09" / "1003" / "cleaned.json").read_text())
    assert sidecar["source"]["seg_series_instance_uid"] == seg_series
    assert "seg_series_instance_uid" not in json.loads(
        (run / "work" / SITE / "03" / "4386" / "cleaned.json").read_text())["source"]

    # the command: the same storage, nothing sent again, nothing left to clean
    out = subprocess.run([sys.executable, "-m", "vhi.cli", "viewer", "--config", str(config), "--local",
                          "--no-serve"], cwd=run, capture_output=True, text=True, timeout=300,
                         env=workflow_env(), check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "0 instances sent" in out.stderr
    assert out.stdout == ""
    assert station_dir(settings, SITE).is_dir()
    if ohif.is_fetched():
        serve_and_save_again(run, config, station_dir(settings, SITE), cleaned)


def _default_sigint() -> None:
    """In the child: SIGINT as a terminal gives it, even where the tests run with it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def serve_and_save_again(run: Path, config: Path, storage: Path, cleaned: Path) -> None:
    """The serving station writes a second save while it serves; Ctrl-C at its terminal (SIGINT
    to its process group, twice) stops it after it collected a third save made just before,
    with its Orthanc still up for that last look ([reliability-2] item 5)."""
    proc = subprocess.Popen([sys.executable, "-m", "vhi.cli", "viewer", "--config", str(config), "--local",
                             "--port", "0", "--collect-every", "1"], cwd=run, env=workflow_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own process group, as a terminal's job
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    try:
        line, url = announced_url(proc, f"local site {SITE}")
        assert "0 sessions await cleaning" in line
        links = announced_links(proc, 0)
        assert requests.get(f"{url}/segmentation", timeout=10, allow_redirects=False).status_code == 303
        browser = token_session(links["worklist"])  # the printed URL signs in
        assert browser.get(f"{url}/segmentation", timeout=10).status_code == 200
        # through the station's proxy, as OHIF saves (same origin)
        client = DICOMwebClient(f"{url}/dicom-web", session=browser, headers={"Origin": url})
        [study] = client.search_for_studies(search_filters={"AccessionNumber": "1003"})
        study_uid = study["0020000D"]["Value"][0]
        rows = client.search_for_series(study_uid, search_filters={"Modality": "SEG"})
        newest = max(rows, key=lambda r: int(r["00200011"]["Value"][0]))
        [seg] = client.retrieve_series(study_uid, newest["0020000E"]["Value"][0])
        buffer = io.BytesIO()
        seg.save_as(buffer, enforce_file_format=True)
        frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
        keep = np.ones(frames.shape, dtype=bool)
        keep[int(np.argmax(frames.sum(axis=(1, 2))))] = False  # the reader removes another slice
        data, voxels = edit_seg(buffer.getvalue(), keep, description="Cleaned again")
        again = pydicom.dcmread(io.BytesIO(data))
        now = datetime.datetime.now()  # a viewer stamps its save
        again.ContentDate, again.ContentTime = f"{now:%Y%m%d}", f"{now:%H%M%S}"
        client.store_instances([again], study_uid)
        deadline = time.monotonic() + 30
        while int(nib.load(cleaned).get_fdata().sum()) != voxels:
            assert time.monotonic() < deadline, "the second save was not written while serving"
            time.sleep(0.2)
        keep[int(np.argsort(frames.sum(axis=(1, 2)))[-2])] = False  # and one more, just before Ctrl-C
        data, last = edit_seg(buffer.getvalue(), keep, description="Cleaned a third time")
        third = pydicom.dcmread(io.BytesIO(data))
        third.ContentDate, third.ContentTime = f"{now:%Y%m%d}", f"{now:%H%M%S}"
        third.SeriesNumber = int(again.SeriesNumber) + 1
        client.store_instances([third], study_uid)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # an impatient second Ctrl-C is ignored
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        assert "stopping the station" in err and "collecting the last saves" in err
        assert "Traceback" not in err
        assert int(nib.load(cleaned).get_fdata().sum()) == last < voxels
    finally:
        if proc.poll() is None:
            proc.terminate()  # the station stops its Orthanc
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert (storage / "orthanc.log").is_file()


@needs_orthanc
@needs_browser
@pytest.mark.skipif(not ohif.is_fetched(), reason="OHIF not fetched (`make setup`)")
def test_local_station_in_ohif(tmp_path, monkeypatch):
    """OHIF opens the station's STIR with the oedema window, loads the proposal, a reader's
    edit is saved through OHIF's own store command, the station writes it to the cleaned
    path, and the next run measures it."""
    started = time.monotonic()
    monkeypatch.setenv("VHI_TEST_BIN", str(write_vhi_shim(tmp_path / "bin")))
    config = local_cohort(tmp_path / "cohort")
    run = tmp_path / "run"
    first = snakemake(run, "--configfile", str(config))
    assert first.returncode == 0, first.stderr[-3000:]
    artefacts = tmp_path / "artefacts"
    artefacts.mkdir()
    monkeypatch.chdir(run)
    with LocalStation(load_config_file(config), SITE) as station:
        station.load()
        item = station.sessions[f"{SITE}/09/1003"]
        proposal = np.asarray(nib.load(item.proposal).dataobj)
        edited, edits = reader_edit(proposal)
        ny = proposal.shape[1]
        flip = np.linalg.det(item.grid.affine[:3, :3]) < 0  # rows counted from the last j
        js_edits = [[str(item.datasets[k].SOPInstanceUID), ny - 1 - j if flip else j, i, v]
                    for i, j, k, v in edits]
        browser_started = time.monotonic()
        access = SingleUser(lambda: [item.awaiting()])
        with station.server(access) as server:
            chromium, requests_seen, console, voi = clean_in_browser(
                access.signin_url(server.url, item.viewer_path), ours=int(np.count_nonzero(proposal >= 1)),
                saved=lambda: station.collect([item])[0].action == "written", edited=edited,
                js_edits=js_edits, artefacts=artefacts)
        browser_s = time.monotonic() - browser_started
    # OHIF's linear VOI: [centre - 0.5 - (width - 1) / 2, centre - 0.5 + (width - 1) / 2]
    assert voi["lower"] == pytest.approx(item.window.low, abs=0.01)
    assert voi["upper"] == pytest.approx(item.window.high - 1, abs=0.01)
    assert np.array_equal(nib.load(item.cleaned).get_fdata() > 0, edited)
    hosts = {urlsplit(u).hostname for u in requests_seen if urlsplit(u).scheme in ("http", "https")}
    assert hosts == {"127.0.0.1"}, hosts
    unknown = [m for m in console if not any(k in m for k in KNOWN_CONSOLE_ERRORS)]
    assert unknown == [], unknown

    second = snakemake(run, "--configfile", str(config))
    assert second.returncode == 0, second.stderr[-3000:]
    row = cohort_rows(run)["1003"]
    voxel_ml = float(np.prod(nib.load(item.cleaned).header.get_zooms()[:3])) / 1000
    assert int(row["vhi_voxels"]) == int(edited.sum())
    assert float(row["vhi_ml"]) == pytest.approx(int(edited.sum()) * voxel_ml, rel=1e-6)
    print(f"local station in OHIF (Chromium {chromium}): browser {browser_s:.0f} s, "
          f"whole test {time.monotonic() - started:.0f} s")
