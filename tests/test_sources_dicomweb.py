"""vhi.sources.dicomweb against a real Orthanc: selection, pull, push, collect, faults, secrets.

Orthanc (Debian `orthanc` + `orthanc-dicomweb`) is started by the tests on 127.0.0.1 with
the package's config (vhi/viewer/orthanc.json), storage in the test's folder; the
faults come from a loopback proxy in front of it (tests/support/orthanc.py). The data are
small synthetic series (tests/support/dicom_series.py).
"""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from vhi.errors import ConfigError, UnreachableError
from vhi.imaging.nifti import save_nifti
from vhi.imaging.seg import write_seg
from vhi.sources import SOURCE_TYPES, make_source
from vhi.sources.dicomweb import DicomwebError, DicomwebSource

from support.dicom_series import add_segment, write_series
from support.env import unset_env
from support.orthanc import FaultProxy, Orthanc, needs_orthanc
from support.workflow import workflow_env

pytestmark = needs_orthanc

USER, CANARY = "vhi-robot", "CANARY-dw-8c2a71"
CREDENTIAL_VARS = ("DICOMWEB_USER", "DICOMWEB_PASS", "DICOMWEB_TOKEN", "REQUESTS_CA_BUNDLE",
                   "CURL_CA_BUNDLE", "NETRC")


@dataclass
class Study:
    """One synthetic study as stored: ids, series UIDs and the volumes written."""

    subject: str
    session: str
    study_uid: str
    series: dict[str, str]  # content -> SeriesInstanceUID
    files: dict[str, list[Path]]
    stir: np.ndarray
    t1w: np.ndarray


def _volume(seed: int, shape=(24, 20, 6)) -> nib.Nifti1Image:
    rng = np.random.default_rng(seed)
    data = rng.integers(50, 400, size=shape).astype(np.int16)
    data[8:14, 6:12, 2:4] = 1500  # a bright "lesion"
    return nib.Nifti1Image(data, np.diag([-1.5, 1.5, 4.0, 1.0]))


def make_study(folder: Path, subject: str, session: str, seed: int) -> Study:
    """A study with a localiser, a T1W, a STIR and a T2 (the T2 a copy of the T1W's data)."""
    study_uid, frame = generate_uid(), generate_uid()
    stir, t1w = _volume(seed), _volume(seed + 100)
    small = nib.Nifti1Image(np.asarray(t1w.dataobj)[::4, ::4, 2:4].copy(), np.diag([-6.0, 6.0, 4.0, 1.0]))
    series, files = {}, {}
    for number, (content, img, desc) in enumerate(
            [("scout", small, "localizer"), ("t1w", t1w, "T1_TSE_COR"),
             ("stir", stir, "STIR_COR_OBL"), ("t2", t1w, "T2_TSE_COR")], start=1):
        info = write_series(img, folder / session / content, series_description=desc,
                            series_number=number, study_uid=study_uid, patient_id=subject,
                            patient_name=f"Test^{subject}", study_date="20240105",
                            frame_of_reference_uid=frame)
        for path in info.files:  # the session id the site's config reads (session_label)
            ds = pydicom.dcmread(path)
            ds.AccessionNumber = session
            ds.save_as(path, enforce_file_format=True)
        series[content], files[content] = info.series_uid, info.files
    return Study(subject, session, study_uid, series, files, np.asarray(stir.dataobj),
                 np.asarray(t1w.dataobj))


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """One Orthanc (basic auth) with two studies; read only for the tests that use it."""
    folder = tmp_path_factory.mktemp("orthanc")
    with Orthanc(folder / "server", users={USER: CANARY}) as orthanc:
        studies = [make_study(folder / "dicom", "P01", "S01_pre", 1),
                   make_study(folder / "dicom", "P02", "S02_post", 2)]
        for study in studies:
            orthanc.upload(p for files in study.files.values() for p in files)
        yield orthanc, studies


@pytest.fixture
def env(monkeypatch):
    unset_env(monkeypatch, *CREDENTIAL_VARS)
    monkeypatch.setenv("DICOMWEB_USER", USER)
    monkeypatch.setenv("DICOMWEB_PASS", CANARY)


def spec(url: str, **extra) -> dict:
    return {"type": "dicomweb", "url": url, "session_label": "{AccessionNumber}",
            "timepoint_pattern": "_(pre|post)$", "backoff_s": 0.01, "retries": 2, **extra}


def source(url: str, **extra) -> DicomwebSource:
    made = make_source(spec(url, **extra), site="X")
    assert isinstance(made, DicomwebSource)
    return made


def session_of(src: DicomwebSource, name: str):
    return next(s for s in src.list_sessions() if s.session == name)


def proposal_files(tmp: Path, src: DicomwebSource, session, voxels) -> dict[str, Path]:
    """The pulled STIR and a proposal on its grid with the given voxels set."""
    src.fetch_scan(session, "stir", tmp / "stir.nii.gz")
    stir = nib.load(tmp / "stir.nii.gz")
    mask = np.zeros(stir.shape, np.uint8)
    for v in voxels:
        mask[v] = 1
    save_nifti(mask, stir, tmp / "proposal.nii.gz")
    return {"proposal": tmp / "proposal.nii.gz"}


def viewer_edit(seg_bytes: bytes, *, clear: tuple = (), set_: tuple = (),
                study_uid: str | None = None) -> pydicom.Dataset:
    """A SEG as a viewer saves it: new UIDs, no platform marks, frames edited."""
    seg = pydicom.dcmread(io.BytesIO(seg_bytes))
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns)).astype(bool)
    for f, r, c in clear:
        frames[f, r, c] = False
    for f, r, c in set_:
        frames[f, r, c] = True
    seg.PixelData = np.packbits(frames.reshape(-1), bitorder="little").tobytes()
    seg.SOPInstanceUID = seg.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    seg.SeriesInstanceUID = generate_uid()
    seg.SeriesDescription = "Corrected by reader"
    seg.Manufacturer = "OHIF"
    seg.ContentLabel = "SEGMENTATION"
    seg.ContentDate, seg.ContentTime = "20990101", "120000"
    if study_uid:
        seg.StudyInstanceUID = study_uid
    return seg


def stow(orthanc: Orthanc, ds: pydicom.Dataset) -> None:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with orthanc.rest() as session:
        session.post(f"{orthanc.url}/instances", data=buffer.getvalue(), timeout=30).raise_for_status()


# ----------------------------------------------------------------------------- config
def test_registered_with_its_schema_defaults():
    assert SOURCE_TYPES["dicomweb"] == "vhi.sources.dicomweb:DicomwebSource"
    src = make_source({"type": "dicomweb", "url": "https://pacs.example.org/dicom-web"}, site="X")
    assert src.spec["query"] == {"ModalitiesInStudy": "MR"}
    assert (src.spec["user_env"], src.spec["password_env"], src.spec["verify"]) == (
        "DICOMWEB_USER", "DICOMWEB_PASS", True)
    with pytest.raises(ConfigError, match="url"):
        make_source({"type": "dicomweb", "url": "https://u:p@pacs.example.org"}, site="X")
    with pytest.raises(ConfigError, match="session_label"):
        make_source({"type": "dicomweb", "url": "https://pacs", "session_label": "{Nope}"}, site="X")
    with pytest.raises(ConfigError):
        make_source({"type": "dicomweb", "url": "https://pacs", "password": "x"}, site="X")


# ----------------------------------------------------------------------------- list + pull
def test_list_picks_stir_and_t1w_by_the_rules(pacs, env):
    orthanc, studies = pacs
    src = source(orthanc.dicomweb)
    plan = {item.session.session: item for item in src.plan_sessions()}
    assert sorted(plan) == ["S01_pre", "S02_post"]
    for study in studies:
        item = plan[study.session]
        assert item.session.subject == study.subject
        assert item.session.timepoint == study.session.split("_")[1]
        assert {r: s.uid for r, s in item.selection.picked.items()} == {
            "stir": study.series["stir"], "t1w": study.series["t1w"]}
        rejected = {d.scan.series_description: d.reason for d in item.selection.decisions
                    if d.role == "t1w" and not d.picked}
        assert rejected["T2_TSE_COR"].startswith("no t1w pattern matches")


def test_fetch_gives_back_the_volumes_exactly(pacs, env, tmp_path):
    orthanc, studies = pacs
    src = source(orthanc.dicomweb)
    for study in studies:
        session = session_of(src, study.session)
        for role, data in (("stir", study.stir), ("t1w", study.t1w)):
            info = src.fetch_scan(session, role, tmp_path / f"{study.session}_{role}.nii.gz")
            pulled = np.asarray(nib.load(tmp_path / f"{study.session}_{role}.nii.gz").dataobj)
            assert np.array_equal(pulled, data)
            assert info["instances"] == data.shape[2] and info["series_uid"] == study.series[role]


def test_dicomweb_plan_command(pacs, env, tmp_path):
    orthanc, _ = pacs
    import yaml

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"sites": [{"name": "X", "source": spec(orthanc.dicomweb)}]}))
    out = tmp_path / "plan.json"
    result = subprocess.run(["vhi", "dicomweb-plan", "--config", str(config), "--out", str(out)],
                            capture_output=True, text=True, env=workflow_env(), timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = {r["session"]: r for r in json.loads(out.read_text())["sessions"]}
    assert set(report) == {"X/P01/S01_pre", "X/P02/S02_post"}
    assert "+ scan 3 'STIR_COR_OBL' [?]: picked: the only candidate" in result.stderr
    assert CANARY not in result.stdout + result.stderr + out.read_text()


def _config(tmp: Path, url: str, **source_keys) -> Path:
    import yaml

    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({"sites": [{"name": "X", "reference": "auto",
                                                 "source": spec(url, **source_keys)}]}))
    return config


def _dicomweb_plan(config: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["vhi", "dicomweb-plan", "--config", str(config), "--out", str(out)],
                          capture_output=True, text=True, env=workflow_env(), timeout=120, check=False)


def _upload(orthanc: Orthanc, study: Study, **attributes: str) -> None:
    orthanc.upload((p for files in study.files.values() for p in files), **attributes)


def test_the_documented_wildcard_query_matches_on_orthanc(tmp_path, env):
    """docs/usage.md's `StudyDescription: "MRI SIJ*"`: `*` goes unencoded and the space as
    `?` (Orthanc 1.10 decodes neither %2A nor %20 in a query value), and what `?` matched
    beyond the value as written ("MRI_SIJ") is left out."""
    with Orthanc(tmp_path / "server") as orthanc, FaultProxy(orthanc.port) as proxy:
        for n, description in enumerate(["MRI SIJ both", "MRI SIJ", "MRI_SIJ other", "CT chest"], 1):
            _upload(orthanc, make_study(tmp_path / "dicom", f"P0{n}", f"S0{n}_pre", n),
                    StudyDescription=description)
        config = _config(tmp_path, f"{proxy.url}/dicom-web",
                         query={"ModalitiesInStudy": "MR", "StudyDescription": "MRI SIJ*"})
        result = _dicomweb_plan(config, tmp_path / "plan.json")
        assert result.returncode == 0, result.stderr
        planned = sorted(r["session"] for r in json.loads((tmp_path / "plan.json").read_text())["sessions"])
        assert planned == ["X/P01/S01_pre", "X/P02/S02_pre"]
        [search] = [path for method, path, _ in proxy.log if "/dicom-web/studies?" in path][:1]
        assert "StudyDescription=MRI?SIJ*&" in search and "%2A" not in search


def test_a_capped_search_fails_instead_of_planning_a_short_cohort(tmp_path, env):
    """Orthanc with LimitFindResults (1.10: no Warning header, offset pages within the cap):
    the series of a study are fewer than its NumberOfStudyRelatedSeries, so the plan stops,
    naming the study and the cause, before any job (it planned 1 of 4 sessions, exit 0)."""
    from support.workflow import snakemake

    with Orthanc(tmp_path / "server", config={"LimitFindResults": 2}) as orthanc:
        for n in range(1, 5):
            _upload(orthanc, make_study(tmp_path / "dicom", f"P0{n}", f"S0{n}_pre", n))
        config = _config(tmp_path, orthanc.dicomweb)
        result = _dicomweb_plan(config, tmp_path / "plan.json")
        assert result.returncode == 2
        cause = ("listing the series of the study: the service lists 3 of the 4 series of the "
                 "study (NumberOfStudyRelatedSeries): it caps the results of a search (e.g. "
                 "Orthanc's LimitFindResults); raise that limit on the service")
        assert f"session X/P01/S01_pre: {cause}" in result.stderr, result.stderr
        run = snakemake(tmp_path / "run", "--configfile", str(config), "-n")
        assert run.returncode != 0 and cause in run.stdout + run.stderr
        assert not (tmp_path / "run" / "work").exists()


@pytest.mark.parametrize("ignore_offset", [False, True])
def test_a_service_that_pages_is_read_to_the_end(tmp_path, env, ignore_offset):
    """A PACS that answers 2 results a page with `Warning: 299` (as dcm4chee does): every
    page is read (4 of 4 studies, each once); one that says there is more but ignores
    `offset` fails by name instead of giving 2. (No ModalitiesInStudy in the query: Orthanc
    1.10 applies limit and offset of such a search to series, not studies.)"""
    with Orthanc(tmp_path / "server") as orthanc, \
            FaultProxy(orthanc.port, qido_page=2, ignore_offset=ignore_offset) as proxy:
        for n in range(1, 5):
            _upload(orthanc, make_study(tmp_path / "dicom", f"P0{n}", f"S0{n}_pre", n))
        config = _config(tmp_path, f"{proxy.url}/dicom-web", query={"PatientID": "P*"})
        result = _dicomweb_plan(config, tmp_path / "plan.json")
        if ignore_offset:
            assert result.returncode == 2
            assert (f"site X (DICOMweb {proxy.url}/dicom-web): searching for studies: the service "
                    "says more results can be requested (Warning: 299) but gives none after the 2 "
                    "found (it does not page with offset)") in result.stderr
            return
        assert result.returncode == 0, result.stderr
        report = json.loads((tmp_path / "plan.json").read_text())["sessions"]
        assert sorted(r["session"] for r in report) == [f"X/P0{n}/S0{n}_pre" for n in range(1, 5)]
        assert all({"stir", "t1w"} <= set(r["picked"]) for r in report)


def test_an_empty_site_stops_the_run_unless_allowed(tmp_path, env):
    """A query that finds nothing stops the run before any job (it gave empty results, exit
    0); `allow_empty: true` lets a site have none."""
    from support.workflow import snakemake

    with Orthanc(tmp_path / "server") as orthanc:
        _upload(orthanc, make_study(tmp_path / "dicom", "P01", "S01_pre", 1))
        query = {"ModalitiesInStudy": "MR", "StudyDescription": "no such study*"}
        run = snakemake(tmp_path / "run", "--configfile", str(_config(tmp_path, orthanc.dicomweb,
                                                                      query=query)), "-n")
        assert run.returncode != 0
        assert ("site X: its source lists no session: check its query, project or server"
                in run.stdout + run.stderr), run.stdout[-2000:]
        allowed = _config(tmp_path, orthanc.dicomweb, query=query, allow_empty=True)
        run = snakemake(tmp_path / "run", "--configfile", str(allowed), "-n")
        assert run.returncode == 0, run.stderr[-2000:]


def test_studies_found_and_skipped_are_rows_of_status_csv(tmp_path, env):
    """A study whose PatientID is not a valid id and one without an AccessionNumber are
    skipped, each a `skipped` row of status.csv with its reason (`vhi tables`), and in the
    dry run's report; the valid study is planned."""
    import csv

    with Orthanc(tmp_path / "server") as orthanc:
        _upload(orthanc, make_study(tmp_path / "dicom", "P01", "S01_pre", 1))
        bad_id = make_study(tmp_path / "dicom", "P 02", "S02_pre", 2)
        no_accession = make_study(tmp_path / "dicom", "P03", "S03_pre", 3)
        _upload(orthanc, bad_id)
        _upload(orthanc, no_accession, AccessionNumber="")
        config = _config(tmp_path, orthanc.dicomweb)
        result = _dicomweb_plan(config, tmp_path / "plan.json")
        assert result.returncode == 0, result.stderr
        report = json.loads((tmp_path / "plan.json").read_text())
        assert [r["session"] for r in report["sessions"]] == ["X/P01/S01_pre"]
        assert len(report["skipped"]) == 2

        result = subprocess.run(["vhi", "tables", "--config", str(config), "--refresh"], cwd=tmp_path,
                                capture_output=True, text=True, env=workflow_env(), timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr
        with (tmp_path / "results" / "partial" / "status.csv").open() as fh:
            rows = {r["subject"]: r for r in csv.DictReader(fh)}
        assert rows["P01"]["state"] == "pending"
        assert (rows["P 02"]["state"], rows["P 02"]["session"]) == ("skipped", "S02_pre")
        assert rows["P 02"]["reason"] == (
            f"study {bad_id.study_uid}: subject id 'P 02' from {{PatientID}} is not a valid id: "
            "1 to 128 letters, digits, _ or -, starting with a letter or digit")
        assert rows["P03"]["reason"] == (f"study {no_accession.study_uid}: session id from "
                                         "{AccessionNumber} is empty")


# ----------------------------------------------------------------------------- push + collect
def test_push_verify_push_again_collect(tmp_path, env):
    with Orthanc(tmp_path / "server") as orthanc, FaultProxy(orthanc.port) as proxy:
        study = make_study(tmp_path / "dicom", "P01", "S01_pre", 3)
        orthanc.upload(p for files in study.files.values() for p in files)
        src = source(f"{proxy.url}/dicom-web")
        session = session_of(src, "S01_pre")
        assert src.find_cleaned([session]) == {}
        files = proposal_files(tmp_path, src, session, [(10, 8, 2), (11, 8, 2), (12, 9, 3)])
        receipt = src.push_proposal(session, files)
        assert (receipt["status"], receipt["verified"], receipt["proposal_voxels"]) == ("created", True, 3)
        [seg_row] = [s for s in orthanc.series_of_study(study.study_uid)
                     if s["00080060"]["Value"] == ["SEG"]]
        assert seg_row["0020000E"]["Value"] == [receipt["seg"]["series_uid"]]
        [stored] = orthanc.instance_file(study.study_uid, receipt["seg"]["series_uid"])
        ds = pydicom.dcmread(io.BytesIO(stored))
        assert "AI proposal" in ds.SeriesDescription and ds.Manufacturer == "VHI platform"
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == study.series["stir"]
        assert src.find_cleaned([session]) == {}  # our own proposal is not a cleaned SEG

        posts = sum(1 for m, _, _ in proxy.log if m == "POST")
        again = src.push_proposal(session, files)
        assert again["status"] == "unchanged" and again["seg"] == receipt["seg"]
        assert sum(1 for m, _, _ in proxy.log if m == "POST") == posts  # nothing sent

        # a reader removes one voxel and adds two, saved as a new series (as OHIF does)
        frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
        first = tuple(int(v) for v in np.argwhere(frames)[0])
        edited = viewer_edit(stored, clear=[first], set_=[(4, 0, 0), (4, 0, 1)])
        stow(orthanc, edited)
        found = src.find_cleaned([session])[session.key]
        assert found["series_uid"] == edited.SeriesInstanceUID
        assert found["reads"] == [["", "", edited.SOPInstanceUID, ""]]
        info = src.fetch_cleaned(session, tmp_path / "cleaned.nii.gz")
        mask = np.asarray(nib.load(tmp_path / "cleaned.nii.gz").dataobj)
        assert int(mask.sum()) == 4 and int(mask[10:13, 8:10, 2:4].sum()) == 2
        assert info["seg_sop_instance_uid"] == edited.SOPInstanceUID
        assert info["seg_series_instance_uid"] == edited.SeriesInstanceUID


def _collect(src: DicomwebSource, session, tmp: Path, name: str) -> subprocess.CompletedProcess:
    """``vhi collect`` as the collect rule runs it (the proposal at tmp/proposal.nii.gz, the
    push receipt the source made)."""
    (tmp / "pushed.json").write_text(json.dumps(src._receipts[session.key]))
    return subprocess.run(
        ["vhi", "collect", "--source", json.dumps(src.spec), "--session", json.dumps(session.to_dict()),
         "--like", str(tmp / "proposal.nii.gz"), "--out", str(tmp / f"{name}.nii.gz"),
         "--vhi-out", str(tmp / f"{name}_vhi.json"), "--receipt", str(tmp / "pushed.json")],
        capture_output=True, text=True, env=workflow_env(), timeout=120, check=False)


def test_collect_measures_the_inflammation_segment_only(tmp_path, env):
    """A reader's save with a second segment (a note, another finding; OHIF writes every
    segment's type as "Tissue" and keeps the proposal's label): `vhi collect` measures the
    inflammation segment; a save whose segments are none of them inflammation is refused,
    naming them, and nothing is written."""
    with Orthanc(tmp_path / "server") as orthanc:
        study = make_study(tmp_path / "dicom", "P01", "S01_pre", 7)
        orthanc.upload(p for files in study.files.values() for p in files)
        src = source(orthanc.dicomweb)
        session = session_of(src, "S01_pre")
        lesion = [(x, y, 2) for x in range(8, 14) for y in range(6, 12)]
        files = proposal_files(tmp_path, src, session, lesion)
        receipt = src.push_proposal(session, files)
        [stored] = orthanc.instance_file(study.study_uid, receipt["seg"]["series_uid"])
        edited = viewer_edit(stored)
        frames = edited.pixel_array.reshape(int(edited.NumberOfFrames), int(edited.Rows),
                                            int(edited.Columns)).astype(bool)
        note = np.zeros_like(frames)
        note[0:2, 0:4, 0:5] = True  # 40 pixels far from the lesion
        stow(orthanc, add_segment(edited, note, "Segment 2"))

        result = _collect(src, session, tmp_path, "cleaned")
        assert result.returncode == 0, result.stderr
        vhi = json.loads((tmp_path / "cleaned_vhi.json").read_text())
        assert vhi["voxels"] == 36  # the proposal's 6 x 6, not 36 + 40
        assert ("measuring segment 1 'Inflammation (AI proposal)' (Tissue); left out (not "
                "inflammation): 2 'Segment 2' (Tissue) with 40 pixels") in result.stderr

        other = viewer_edit(stored)
        other.SegmentSequence[0].SegmentLabel = "Segment 1"
        other.ContentTime = "120100"  # saved after the first
        stow(orthanc, add_segment(other, note, "erosion"))
        result = _collect(src, session, tmp_path, "refused")
        assert result.returncode == 2
        assert ("the SEG has 2 segments and none is the inflammation segment (segments "
                "1 'Segment 1' (Tissue), 2 'erosion' (Tissue))") in result.stderr, result.stderr
        assert f"session X/P01/S01_pre: SEG series {other.SeriesInstanceUID}" in result.stderr
        assert not list(tmp_path.glob("refused*"))


# ----------------------------------------------------------------------------- faults
def test_faults_name_the_session_and_leave_the_others(tmp_path, env, caplog):
    caplog.set_level(logging.DEBUG)
    with Orthanc(tmp_path / "server", users={USER: CANARY}) as orthanc, \
            FaultProxy(orthanc.port) as proxy:
        good = make_study(tmp_path / "dicom", "P01", "S01_pre", 4)
        bad = make_study(tmp_path / "dicom", "P02", "S02_pre", 5)
        gappy = make_study(tmp_path / "dicom", "P03", "S03_pre", 6)
        orthanc.upload(p for s in (good, bad) for files in s.files.values() for p in files)
        orthanc.upload(p for c, files in gappy.files.items() for p in files
                       if not (c == "stir" and p.name == "IM_0003.dcm"))
        src = source(f"{proxy.url}/dicom-web")
        sessions = {s.session: s for s in src.list_sessions()}

        # the connection drops in the middle of every retrieval of one series
        proxy.add("GET", rf"/series/{bad.series['t1w']}$", drop=True)
        with pytest.raises(DicomwebError, match=r"session X/P02/S02_pre: retrieving T1W series .*"
                                                r"\(after 3 attempts\)"):
            src.fetch_scan(sessions["S02_pre"], "t1w", tmp_path / "bad_t1w.nii.gz")
        assert not (tmp_path / "bad_t1w.nii.gz").exists()
        src.fetch_scan(sessions["S01_pre"], "t1w", tmp_path / "good_t1w.nii.gz")  # the others go on

        # an instance missing on the server
        with pytest.raises(DicomwebError, match=r"S03_pre: STIR series .* is incomplete: 8.00 mm "
                                                r"between slices 2 and 3 .*an instance is missing"):
            src.fetch_scan(sessions["S03_pre"], "stir", tmp_path / "gappy.nii.gz")

        # a 500 on every STOW of one study
        files = proposal_files(tmp_path, src, sessions["S02_pre"], [(9, 9, 2)])
        proxy.add("POST", rf"/dicom-web/studies/{bad.study_uid}$", status=500)
        with pytest.raises(DicomwebError, match=r"S02_pre: storing SEG .* \(STOW-RS\): HTTP 500 "
                                                r"from the service .*\(after 3 attempts\)"):
            src.push_proposal(sessions["S02_pre"], files)
        assert not [s for s in orthanc.series_of_study(bad.study_uid) if s["00080060"]["Value"] == ["SEG"]]
        (tmp_path / "g").mkdir()
        good_files = proposal_files(tmp_path / "g", src, sessions["S01_pre"], [(9, 9, 2)])
        assert src.push_proposal(sessions["S01_pre"], good_files)["status"] == "created"

        # a SEG drawn on another study, stored into this one
        other = proposal_seg(tmp_path / "o", src, sessions["S03_pre"], gappy, orthanc)
        foreign = viewer_edit(other, study_uid=good.study_uid)
        stow(orthanc, foreign)
        assert src.find_cleaned([sessions["S01_pre"]])[sessions["S01_pre"].key]["foreign"] is True
        with pytest.raises(DicomwebError, match=r"S01_pre: the newest cleaned segmentation, SEG series "
                                                r".*references series .*none of which is in this study"):
            src.fetch_cleaned(sessions["S01_pre"], tmp_path / "foreign.nii.gz")
        assert not (tmp_path / "foreign.nii.gz").exists()

        # Orthanc itself goes down (the environment, exit 3: UnreachableError), then comes back
        orthanc.stop()
        with pytest.raises(UnreachableError, match=r"site X: server cannot be reached: session "
                                                   r"X/P01/S01_pre: listing the instances of STIR series .*"
                                                   r"(ConnectionError|HTTP 502).*\(after 3 attempts\)"):
            src.fetch_scan(sessions["S01_pre"], "stir", tmp_path / "down.nii.gz")
        orthanc.start()
        src.fetch_scan(sessions["S01_pre"], "stir", tmp_path / "up.nii.gz")
    assert CANARY not in caplog.text


def _pull(src: DicomwebSource, session, out: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """``vhi pull`` of the STIR as the pull rule runs it."""
    return subprocess.run(
        ["vhi", "pull", "--source", json.dumps(src.spec), "--session", json.dumps(session.to_dict()),
         "--scan", f"stir={out}"],
        capture_output=True, text=True, env=workflow_env(), timeout=timeout, check=False)


def test_a_server_that_trickles_meets_the_deadline_then_the_retry_rules(tmp_path, env):
    """A retrieval whose answer trickles in (never slow enough for a read timeout) is cut at
    source.deadline_s and retried; the last try's failure names the session, the series and
    the deadline, and nothing is written. A trickle on one try only: the retry succeeds."""
    import time

    with Orthanc(tmp_path / "server") as orthanc, FaultProxy(orthanc.port) as proxy:
        study = make_study(tmp_path / "dicom", "P01", "S01_pre", 8)
        orthanc.upload(p for files in study.files.values() for p in files)
        src = source(f"{proxy.url}/dicom-web", deadline_s=2, retries=1, backoff_s=0.1)
        session = session_of(src, "S01_pre")
        series = rf"/series/{study.series['stir']}$"
        proxy.add("GET", series, trickle_s=0.5, chunk=100)  # ~20 KB: minutes at this rate
        started = time.monotonic()
        result = _pull(src, session, tmp_path / "stir.nii.gz")
        took = time.monotonic() - started
        assert result.returncode == 2, result.stderr
        assert (f"session X/P01/S01_pre: retrieving STIR series {study.series['stir']}: no complete "
                "answer within 2 s (source.deadline_s): the server sends too slowly or stalls "
                "(after 2 attempts)") in result.stderr
        assert "retry 1 of 1 in 0.1 s" in result.stderr
        assert took < 30, took
        assert [m for m, path, _ in proxy.log if re.search(series, path)] == ["GET", "GET"]
        assert not list(tmp_path.glob("stir*"))

        proxy.faults.clear()
        proxy.add("GET", series, trickle_s=0.5, chunk=100, count=1)
        result = _pull(src, session, tmp_path / "stir.nii.gz")
        assert result.returncode == 0, result.stderr
        assert np.array_equal(np.asarray(nib.load(tmp_path / "stir.nii.gz").dataobj), study.stir)


def test_an_answer_that_is_not_dicom_names_the_series(tmp_path, env):
    """A WADO-RS answer that is not multipart/related (a proxy's page, an error as text with
    HTTP 200): the pull fails naming the session and the series (it ended in a traceback)."""
    with Orthanc(tmp_path / "server") as orthanc, FaultProxy(orthanc.port) as proxy:
        study = make_study(tmp_path / "dicom", "P01", "S01_pre", 9)
        orthanc.upload(p for files in study.files.values() for p in files)
        src = source(f"{proxy.url}/dicom-web")
        proxy.add("GET", rf"/series/{study.series['stir']}$", status=200)
        result = _pull(src, session_of(src, "S01_pre"), tmp_path / "stir.nii.gz")
    assert result.returncode == 2, result.stderr
    assert (f"session X/P01/S01_pre: retrieving STIR series {study.series['stir']}: the service's "
            "answer is not DICOM (WADO-RS multipart/related): Unexpected media type: "
            '"text/plain"') in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.glob("stir*"))


def proposal_seg(tmp: Path, src: DicomwebSource, session, study: Study, orthanc: Orthanc) -> bytes:
    """A platform SEG of ``study``'s T1W series (complete, unlike its STIR), as bytes."""
    from vhi.imaging.dicom import dicom_to_nifti, read_series

    tmp.mkdir()
    folder = study.files["t1w"][0].parent
    nifti = nib.load(dicom_to_nifti(folder, tmp / "t1w.nii.gz", scan="t1w"))
    mask = np.zeros(nifti.shape, bool)
    mask[5, 5, 1] = True
    write_seg(mask, nifti.affine, read_series(folder), tmp / "seg.dcm", algorithm_version="t",
              series_number=9)
    return (tmp / "seg.dcm").read_bytes()


def test_wrong_credentials_are_named_and_never_shown(pacs, monkeypatch, caplog):
    orthanc, _ = pacs
    unset_env(monkeypatch, *CREDENTIAL_VARS)
    monkeypatch.setenv("DICOMWEB_USER", USER)
    monkeypatch.setenv("DICOMWEB_PASS", CANARY + "-wrong")
    with pytest.raises(DicomwebError, match=r"searching for studies: HTTP 401: the service refused "
                                            r"the credentials \(\$DICOMWEB_USER/\$DICOMWEB_PASS\)") as err:
        source(orthanc.dicomweb).list_sessions()
    assert CANARY not in str(err.value) + caplog.text


def test_netrc_credentials(pacs, monkeypatch, tmp_path):
    orthanc, studies = pacs
    unset_env(monkeypatch, *CREDENTIAL_VARS)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {CANARY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert len(source(orthanc.dicomweb).list_sessions()) == len(studies)


def test_workflow_dry_run_plans_every_study(pacs, env, tmp_path):
    """The workflow builds its DAG from the DICOMweb listing (credentials from the environment)."""
    import yaml

    from support.workflow import job_counts, snakemake

    orthanc, studies = pacs
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"timepoints": ["pre", "post"], "sites": [
        {"name": "X", "reference": "auto", "source": spec(orthanc.dicomweb)}]}))
    result = snakemake(tmp_path / "run", "--configfile", str(config), "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert (counts["pull_scans_stir"], counts["push_proposal"]) == (len(studies), len(studies))
    assert CANARY not in result.stdout + result.stderr + config.read_text()


def test_workflow_with_wrong_credentials_stops_before_any_job(pacs, monkeypatch, tmp_path):
    """A site whose service refuses the credentials cannot be planned: the run stops before
    any job, naming the site, the variables and the answer, never the password."""
    import yaml

    from support.workflow import snakemake

    orthanc, _ = pacs
    unset_env(monkeypatch, *CREDENTIAL_VARS)
    monkeypatch.setenv("DICOMWEB_USER", USER)
    monkeypatch.setenv("DICOMWEB_PASS", CANARY + "-wrong")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"sites": [
        {"name": "X", "reference": "auto", "source": spec(orthanc.dicomweb)}]}))
    result = snakemake(tmp_path / "run", "--configfile", str(config))
    assert result.returncode != 0
    assert ("site X" in result.stderr and "HTTP 401: the service refused the credentials "
            "($DICOMWEB_USER/$DICOMWEB_PASS)" in result.stderr), result.stderr[-3000:]
    assert CANARY not in result.stdout + result.stderr
    assert not (tmp_path / "run" / "work").exists()  # nothing started
