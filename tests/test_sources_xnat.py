"""vhi.sources.xnat against the XNAT emulator: selection, pull, push, collect, faults, secrets, TLS.

The emulator holds the demo volumes as two sites (tests/xnat_emulator/demo.py); every
server call goes through xnatpy, as in production.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import xnat

from vhi.errors import ConfigError, InputError
from vhi.imaging.nifti import save_nifti
from vhi.sources import SOURCE_TYPES, make_source
from vhi.sources.select import ScanRow, compile_rules, format_report, select_scans
from vhi.sources.xnat import XnatError, XnatSource

from support.env import unset_env
from xnat_emulator import Behaviour, XnatEmulator
from xnat_emulator.demo import (
    EXPECTED_PICK,
    SITE_PROJECTS,
    SITE_SCANS,
    DemoSession,
    build_demo_series,
    edit_seg,
    save_cleaned,
    save_collection,
    seed_demo,
)
from xnat_emulator.model import Assessor
from xnat_emulator.synthetic import SeriesInfo, build_rtstruct
from xnat_emulator.synthetic_demo import write_synthetic_demo

pytest_plugins = ["xnat_emulator.fixtures"]  # self_signed_cert

USER, CANARY = "vhi-robot", "canary-Pw-7f3e9c1d"
SPLIT = {"A": ["1003"], "B": ["1012"]}


# ----------------------------------------------------------------------------- selection (pure)
def _rows(site: str) -> list[ScanRow]:
    return [ScanRow(id=s.id, type=s.type, series_description=s.description, quality=s.quality,
                    frames=25) for s in SITE_SCANS[site]]


@pytest.mark.parametrize("site", ["A", "B"])
def test_default_rules_pick_stir_and_t1w_of_both_sites(site):
    selection = select_scans(_rows(site), compile_rules(None))
    assert {role: s.id for role, s in selection.picked.items()} == EXPECTED_PICK[site]
    assert not selection.problems
    report = format_report("X/1/s", selection)
    assert "NONE" not in report
    if site == "B":  # the unusable duplicate STIR is rejected for its quality
        reason = next(d.reason for d in selection.decisions if d.scan.id == "5" and d.role == "stir")
        assert reason == "quality 'unusable' not accepted (usable)"
        assert "- scan 5 'cor STIR SIJ' [unusable]: quality 'unusable'" in report


def test_rules_for_several_candidates():
    rows = [ScanRow("3", "STIR", "cor STIR", "usable", 25), ScanRow("7", "STIR", "cor STIR", "usable", 20),
            ScanRow("8", "STIR", "cor STIR", "questionable", 30), ScanRow("2", "T1", "t1 cor", "", 25)]
    pick = {c: select_scans(rows, compile_rules({"stir": {"choose": c}})).picked.get("stir")
            for c in ("last", "first", "most_frames", "unique")}
    assert {c: s.id if s else None for c, s in pick.items()} == {
        "last": "7", "first": "3", "most_frames": "3", "unique": None}
    ambiguous = select_scans(rows, compile_rules({"stir": {"choose": "unique"}}))
    assert "2 candidates (3, 7)" in ambiguous.problems["stir"]
    with_questionable = select_scans(rows, compile_rules(
        {"stir": {"quality": ["usable", "questionable"], "choose": "most_frames"}}))
    assert with_questionable.picked["stir"].id == "8"
    assert with_questionable.picked["t1w"].id == "2"  # empty quality counts as usable


def test_rules_match_fields_and_exclude():
    rows = [ScanRow("1", "T1_SE", "T1 post Gd", "usable"), ScanRow("2", "T1_SE", "T1 pre", "usable"),
            ScanRow("3", "MISC", "tirm_cor", "usable")]
    rules = compile_rules({"t1w": {"exclude": ["gd"]}, "stir": {"fields": ["series_description"]}})
    selection = select_scans(rows, rules)
    assert selection.picked["t1w"].id == "2"
    assert selection.picked["stir"].id == "3"
    excluded = next(d for d in selection.decisions if d.scan.id == "1" and d.role == "t1w")
    assert excluded.reason == "excluded: series_description 'T1 post Gd' matches /gd/"
    t1_only = select_scans(rows[:2], compile_rules({"stir": {"match": ["stir"]}}))
    assert "stir" not in t1_only.picked and t1_only.problems["stir"] == "no scan matches the rules"


@pytest.mark.parametrize(("selection", "where"), [
    ({"stir": {"match": ["("]}}, "selection.stir.match"),
    ({"stir": {"choose": "best"}}, "selection.stir.choose"),
    ({"flair": {}}, "selection.flair"),
    ({"t1w": {"fields": ["protocol"]}}, "selection.t1w.fields"),
])
def test_bad_selection_config_names_the_key(selection, where):
    with pytest.raises(ConfigError) as raised:
        compile_rules(selection)
    assert raised.value.where == where


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", params=["synthetic", "demo"])
def xnat_data(request, tmp_path_factory) -> Path:
    """The volumes the emulator is seeded with: synthetic stand-ins (always), the public demo
    volumes (the extra tier, skipped without ../shared)."""
    if request.param == "demo":
        return request.getfixturevalue("data_dir")
    return write_synthetic_demo(tmp_path_factory.mktemp("synthetic_demo"))


@pytest.fixture
def dates() -> str:
    """The emulator's overwrite-date behaviour (collect tests run under both)."""
    return Behaviour.from_env().overwrite_dates


@pytest.fixture
def zip_layout() -> str:
    return Behaviour.from_env().zip_layout


@pytest.fixture
def csrf() -> bool:
    return Behaviour.from_env().csrf


@pytest.fixture
def behaviour(dates, zip_layout, csrf) -> Behaviour:
    """The emulator's switches (tests parametrize ``dates``, ``zip_layout``, ``csrf``)."""
    return Behaviour.from_env(overwrite_dates=dates, zip_layout=zip_layout, csrf=csrf)


@pytest.fixture(scope="module")
def dicom_cache(tmp_path_factory, xnat_data) -> Path:
    """DICOM folders of the demo sessions used here, built once per module."""
    cache = tmp_path_factory.mktemp("demo_dicom")
    for site, ids in SPLIT.items():
        for scan_id in ids:
            build_demo_series(xnat_data, cache, site, scan_id)
    return cache


@pytest.fixture
def emu(tmp_path, xnat_data, dicom_cache, monkeypatch, behaviour):
    monkeypatch.setenv("XNAT_USER", USER)
    monkeypatch.setenv("XNAT_PASS", CANARY)
    with XnatEmulator(tmp_path / "xnat", users={USER: CANARY, "radiologist": "rad-pw"},
                      behaviour=behaviour) as server:
        server.demo = seed_demo(server, xnat_data, dicom_cache, SPLIT)
        yield server


def _source(emu: XnatEmulator, site: str = "A", **extra) -> XnatSource:
    spec = {"type": "xnat", "server": emu.url, "project": SITE_PROJECTS[site],
            "timepoint_pattern": "_(pre|post)$", "backoff_s": 0.01, **extra}
    source = make_source(spec, site)
    assert isinstance(source, XnatSource)
    return source


def _demo(emu: XnatEmulator, site: str) -> DemoSession:
    return next(d for d in emu.demo if d.site == site)


def _state(emu: XnatEmulator) -> str:
    with emu.store.lock:
        return json.dumps(dataclasses.asdict(emu.store.state), sort_keys=True)


def _proposal(source: XnatSource, session, tmp_path: Path, xnat_data: Path, demo: DemoSession) -> Path:
    """The reader-1 mask as a proposal on the grid the pull gives (as propose_lesions writes it)."""
    stir = tmp_path / f"{demo.session}_stir.nii.gz"
    source.fetch_scan(session, "stir", stir)
    mask = nib.load(xnat_data / "inflammation" / "R11" / f"{demo.scan_id}_inflammation_R11.nii.gz")
    out = tmp_path / f"{demo.session}_proposal.nii.gz"
    save_nifti(np.asarray(mask.dataobj) > 0, nib.load(stir), out)
    return out


def _collections(emu: XnatEmulator, experiment: str) -> list:
    with emu.store.lock:
        return sorted((a for a in emu.store.state.assessors.values() if a.session_id == experiment),
                      key=lambda a: a.insert_date)


def _connect(emu: XnatEmulator):
    return xnat.connect(emu.url, user="radiologist", password="rad-pw", loglevel="WARNING")


# ----------------------------------------------------------------------------- list + pull
def test_registered_and_spec_keys():
    assert SOURCE_TYPES["xnat"] == "vhi.sources.xnat:XnatSource"
    spec = {"type": "xnat", "server": "https://x.org", "project": "P", "selection": {},
            "ca_bundle": "", "proposal_label": "L_{session}"}
    assert "selection" not in XnatSource.spec_for(spec, "fetch")
    assert "selection" in XnatSource.spec_for(spec, "list")
    assert "proposal_label" in XnatSource.spec_for(spec, "cleaned")


@pytest.mark.parametrize(("spec", "where"), [
    ({"server": "https://u:p@xnat.org", "project": "P"}, "source.server"),
    ({"server": "xnat.org", "project": "P"}, "source.server"),
    ({"server": "https://xnat.org"}, "source.project"),
    ({"server": "https://xnat.org", "project": "P", "ca_bundle": "/nonexistent.pem"}, "source.ca_bundle"),
    ({"server": "https://xnat.org", "project": "P", "selection": {"stir": {"match": "("}}},
     "source.selection.stir.match"),
])
def test_bad_source_config(spec, where):
    with pytest.raises(ConfigError) as raised:
        make_source({"type": "xnat", **spec}, "A")
    assert raised.value.where.endswith(where)
    assert "u:p" not in str(raised.value)


@pytest.mark.parametrize("site", ["A", "B"])
def test_list_sessions_picks_scans_by_site_rules(emu, site, caplog):
    caplog.set_level(logging.INFO, logger="vhi")
    demo = _demo(emu, site)
    with _source(emu, site) as source:
        sessions = source.list_sessions()
        plan = source.plan_sessions()
    assert [s.key for s in sessions] == [f"{site}/{demo.subject}/{demo.session}"]
    session = sessions[0]
    assert session.timepoint == demo.timepoint
    assert session.scans == {role: f"{emu.url}/data/experiments/{demo.experiment}/scans/{scan}"
                             for role, scan in EXPECTED_PICK[site].items()}
    report = plan[0].report()
    assert report["picked"] == EXPECTED_PICK[site]
    assert len(report["decisions"]) == 2 * len(SITE_SCANS[site])
    assert f"{site}/{demo.subject}/{demo.session}:" in caplog.text  # the dry-run explanation
    assert not emu.log.find("PUT", r"^/(data|xapi)/(?!services/auth)")  # listing writes nothing


def test_planning_costs_one_request_per_session(emu, dicom_cache):
    """One listing of the project, then the experiment's JSON per session: no scan, assessor
    or collection listing, however many collections a session has (O(sites + sessions))."""
    folders = {s.id: dicom_cache / "A_1003" / s.id for s in SITE_SCANS["A"]}
    for n in range(3):
        experiment = emu.seed_session(SITE_PROJECTS["A"], f"A9{n}", f"999{n}_pre")
        for scan_id, type_ in (("2", "T1_TSE_COR"), ("3", "STIR_COR_OBL")):
            emu.add_dicom_scan(experiment.id, scan_id, folders[scan_id], type=type_)
    with emu.store.lock:  # every session pushed, and cleaned twice
        for experiment in list(emu.store.state.experiments.values()):
            stir = next((s.uid for s in experiment.scans if s.id == "3"), "")
            for n, label in enumerate((f"VHI_PROPOSAL_{experiment.label}", "SEG_1", "SEG_2")):
                ident = f"RoiCollection_{experiment.id}_{n}"
                emu.store.state.assessors[ident] = Assessor(
                    id=ident, label=label, project=experiment.project, session_id=experiment.id,
                    insert_date=emu.store.insert_date(), series_uids=[stir],
                    fields={"collectionType": "SEG", "name": "SEG", "UID": f"2.25.{n}"})
    with _source(emu) as source:
        start = len(emu.log.entries)
        sessions = source.list_sessions()
        found = source.find_cleaned(sessions, {s.key: {"collections_before": []} for s in sessions})
        asked = emu.log.entries[start:]
    assert len(sessions) == 4
    assert {f["label"] for f in found.values() if f["label"]} == {"SEG_2"} and len(found) == 4
    data = [e.path for e in asked if e.path.startswith(("/data/projects", "/data/experiments"))]
    with emu.store.lock:
        experiments = sorted(e.id for e in emu.store.state.experiments.values()
                             if e.project == SITE_PROJECTS["A"])
    assert data[0] == f"/data/projects/{SITE_PROJECTS['A']}/experiments"
    assert sorted(data[1:]) == [f"/data/experiments/{e}" for e in experiments]  # nothing else


def test_session_without_stir_is_listed_t1w_only_with_the_reason(emu, dicom_cache, caplog):
    folders = {s.id: dicom_cache / "A_1003" / s.id for s in SITE_SCANS["A"]}
    experiment = emu.seed_session(SITE_PROJECTS["A"], "A99", "9999_pre")
    for scan_id, type_ in (("1", "AAHScout"), ("2", "T1_TSE_COR")):
        emu.add_dicom_scan(experiment.id, scan_id, folders[scan_id], type=type_)
    caplog.set_level(logging.WARNING, logger="vhi")
    with _source(emu) as source:
        sessions = {s.key: s for s in source.list_sessions()}
    assert sessions["A/A99/9999_pre"].scans.keys() == {"t1w"}
    assert "session A/A99/9999_pre: no STIR (no scan matches the rules)" in caplog.text


def test_session_with_an_invalid_label_is_skipped_with_the_reason(emu, caplog):
    """A session whose label cannot be an id (XNAT allows more than the platform's ids) is
    left out of the plan and reported by the source, for status.csv's `skipped` rows."""
    experiment = emu.seed_session(SITE_PROJECTS["A"], "A98", "_9998_pre")
    caplog.set_level(logging.WARNING, logger="vhi")
    with _source(emu) as source:
        keys = [s.key for s in source.list_sessions()]
        [skipped] = source.skipped()
    assert "A/A98/_9998_pre" not in keys and keys
    assert (skipped.site, skipped.label, skipped.subject, skipped.session) == (
        "A", f"experiment {experiment.id}", "A98", "_9998_pre")
    assert skipped.reason.startswith("session label '_9998_pre': not a valid id")


def test_fetch_gives_back_the_demo_volumes_exactly(emu, tmp_path):
    demo = _demo(emu, "A")
    with _source(emu) as source:
        session = source.list_sessions()[0]
        infos = {role: source.fetch_scan(session, role, tmp_path / f"{role}.nii.gz")
                 for role in ("stir", "t1w")}
    for role, original in (("stir", demo.stir_nifti), ("t1w", demo.t1w_nifti)):
        got, want = nib.load(tmp_path / f"{role}.nii.gz"), nib.load(original)
        assert np.array_equal(got.get_fdata(), want.get_fdata())
        assert np.abs(got.affine - want.affine).max() < 1e-3
    assert infos["stir"]["series_uid"] == demo.series[demo.stir_scan]
    assert infos["stir"]["files"] == nib.load(demo.stir_nifti).shape[2]
    assert len(infos["stir"]["sha256"]) == 64
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "xnat") == ["stir.nii.gz", "t1w.nii.gz"]


# ----------------------------------------------------------------------------- push
def test_push_writes_a_verified_seg_and_pushing_again_changes_nothing(emu, tmp_path, xnat_data):
    demo = _demo(emu, "B")
    with _source(emu, "B") as source:
        session = source.list_sessions()[0]
        proposal = _proposal(source, session, tmp_path, xnat_data, demo)
        receipt = source.push_proposal(session, {"proposal": proposal})
        puts = len(emu.log.find("PUT", r"^/xapi/roi/"))
        state = _state(emu)
        again = source.push_proposal(session, {"proposal": proposal})
    assert receipt["status"] == "created" and receipt["verified"] is True
    assert again["status"] == "unchanged"
    assert again["collection"]["id"] == receipt["collection"]["id"]
    assert len(emu.log.find("PUT", r"^/xapi/roi/")) == puts == 1  # no second upload
    assert _state(emu) == state
    [stored] = _collections(emu, demo.experiment)
    assert stored.label == "VHI_PROPOSAL_1012_post" == receipt["collection"]["label"]
    with _connect(emu) as conn:
        data = conn.get(f"/xapi/roi/projects/{demo.project}/collections/{stored.label}").content
    seg = pydicom.dcmread(io.BytesIO(data))
    assert seg.SegmentationType == "BINARY"
    assert seg.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert seg.StudyInstanceUID == demo.study_uid
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [demo.series[demo.stir_scan]]
    assert "AI proposal" in seg.SeriesDescription and "research" in seg.SeriesDescription
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "VHI two-threshold lesion proposal"
    assert algorithm.AlgorithmVersion
    assert stored.fields["UID"] == seg.SOPInstanceUID == receipt["collection"]["uid"]
    assert receipt["files"]["seg"]["sha256"] == hashlib.sha256(data).hexdigest()
    voxels = int((np.asarray(nib.load(proposal).dataobj) > 0).sum())
    assert receipt["proposal_voxels"] == voxels == int(seg.pixel_array.sum())


def test_push_references_every_archived_stir_instance(emu, tmp_path, xnat_data):
    demo = _demo(emu, "A")
    with _source(emu) as source:
        session = source.list_sessions()[0]
        source.push_proposal(session, {"proposal": _proposal(source, session, tmp_path, xnat_data, demo)})
    with _connect(emu) as conn:
        base = f"/xapi/roi/projects/{demo.project}"
        archived = set(conn.get_json(f"{base}/sessions/{demo.experiment}/scans/{demo.stir_scan}/uids"))
        seg = pydicom.dcmread(io.BytesIO(conn.get(f"{base}/collections/VHI_PROPOSAL_1003_pre").content))
    referenced = {str(i.ReferencedSOPInstanceUID)
                  for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert referenced == archived


def test_changed_proposal_replaces_only_the_platforms_collection(emu, tmp_path, xnat_data):
    demo = _demo(emu, "A")
    with _source(emu) as source:
        session = source.list_sessions()[0]
        proposal = _proposal(source, session, tmp_path, xnat_data, demo)
        first = source.push_proposal(session, {"proposal": proposal})
        img = nib.load(proposal)
        data = np.asarray(img.dataobj).copy()
        data[..., : data.shape[2] // 2] = 0
        nib.save(nib.Nifti1Image(data, img.affine, img.header), proposal)
        second = source.push_proposal(session, {"proposal": proposal})
        assert second["status"] == "replaced"
        assert second["collection"]["id"] == first["collection"]["id"]
        assert second["collection"]["uid"] != first["collection"]["uid"]
        assert len(_collections(emu, demo.experiment)) == 1
        # a collection under the platform's label that someone else wrote is left alone
        other = _proposal(source, session, tmp_path, xnat_data, demo)
        with _connect(emu) as conn:
            seg = conn.get(f"/xapi/roi/projects/{demo.project}/collections/VHI_PROPOSAL_1003_pre").content
            foreign, _ = edit_seg(seg)
            conn.put(f"/xapi/roi/projects/{demo.project}/sessions/{demo.experiment}/collections/"
                     "VHI_PROPOSAL_1003_pre", query={"type": "SEG", "overwrite": "true"}, data=foreign,
                     headers={"Content-Type": "application/octet-stream"})
        state = _state(emu)
        with pytest.raises(XnatError) as raised:
            source.push_proposal(session, {"proposal": other})
    assert "not written by this platform: left untouched" in str(raised.value)
    assert raised.value.what == "session A/A09/1003_pre"
    assert _state(emu) == state


def test_seg_the_server_rejects_is_reported_for_the_session(emu, tmp_path, xnat_data):
    """The session's study UID no longer matches the archived series (e.g. merged/relabelled)."""
    demo = _demo(emu, "A")
    with _source(emu) as source:
        session = source.list_sessions()[0]
        proposal = _proposal(source, session, tmp_path, xnat_data, demo)
        with emu.store.lock:
            emu.store.state.experiments[demo.experiment].uid = "1.2.826.0.1.3680043.8.498.1"
        state = _state(emu)
        with pytest.raises(XnatError) as raised:
            source.push_proposal(session, {"proposal": proposal})
    message = str(raised.value)
    assert message.startswith("session A/A09/1003_pre: the server refused ROI collection "
                              "VHI_PROPOSAL_1003_pre (HTTP 422: Missing dependencies: study")
    assert "is not the session's study" in message
    assert len(emu.log.find("PUT", r"^/xapi/roi/")) == 1  # a 422 is not retried
    assert _state(emu) == state


# ----------------------------------------------------------------------------- collect
@pytest.mark.parametrize("dates", ["reset", "keep"])
def test_collect_takes_the_newest_cleaned_seg_after_the_proposal(emu, tmp_path, xnat_data):
    demo = _demo(emu, "A")
    project, experiment = demo.project, demo.experiment
    with _connect(emu) as conn, _source(emu) as source:
        session = source.list_sessions()[0]
        proposal = _proposal(source, session, tmp_path, xnat_data, demo)
        assert source.find_cleaned([session]) == {}
        source.push_proposal(session, {"proposal": proposal})
        assert source.find_cleaned([session]) == {}
        seg = conn.get(f"/xapi/roi/projects/{project}/collections/VHI_PROPOSAL_1003_pre").content
        early, _ = edit_seg(seg, remove_frames=range(5))
        save_cleaned(conn, project, experiment, early, label="SEG_20240101_101010_001_S3")
        found = source.find_cleaned([session])[session.key]
        assert found["label"] == "SEG_20240101_101010_001_S3"
        cleaned, kept = edit_seg(seg, remove_frames=range(12))
        label, ident = save_cleaned(conn, project, experiment, cleaned, series_number=3)
        before = _state(emu)
        found = source.find_cleaned([session])[session.key]
        info = source.fetch_cleaned(session, tmp_path / "cleaned.nii.gz")
    assert found == {"uri": f"{emu.url}/xapi/roi/projects/{project}/collections/{ident}",
                     "collection": ident, "label": label, "uid": info["seg_sop_instance_uid"],
                     "insert_date": info["insert_date"], "reads": [["", "", ident, ""]]}
    assert info["collection"] == ident and info["label"] == label
    saved = pydicom.dcmread(io.BytesIO(cleaned))
    assert info["seg_sop_instance_uid"] == str(saved.SOPInstanceUID)
    assert info["seg_series_instance_uid"] == str(saved.SeriesInstanceUID)
    mask = nib.load(tmp_path / "cleaned.nii.gz")
    stir = nib.load(tmp_path / "1003_pre_stir.nii.gz")
    assert mask.shape == stir.shape and np.allclose(mask.affine, stir.affine)
    r11 = np.asarray(nib.load(xnat_data / "inflammation/R11/1003_inflammation_R11.nii.gz").dataobj) > 0
    got = np.asarray(mask.dataobj) > 0
    assert int(got.sum()) == kept < int(r11.sum())
    assert not np.any(got & ~r11)  # only removals
    assert _state(emu) == before  # collecting writes nothing
    assert len(_collections(emu, experiment)) == 3


@pytest.mark.parametrize("dates", ["reset", "keep"])
def test_collect_ignores_other_series_and_earlier_collections(emu, tmp_path, xnat_data):
    demo = _demo(emu, "B")
    with _connect(emu) as conn, _source(emu, "B") as source:
        session = source.list_sessions()[0]
        proposal = _proposal(source, session, tmp_path, xnat_data, demo)
        source.push_proposal(session, {"proposal": proposal})
        seg = conn.get(f"/xapi/roi/projects/{demo.project}/collections/VHI_PROPOSAL_1012_post").content
        # a SEG drawn on the T2 series (same grid, another series)
        on_t2 = pydicom.dcmread(io.BytesIO(seg))
        t2_uid = demo.series["6"]
        on_t2.ReferencedSeriesSequence[0].SeriesInstanceUID = t2_uid
        t2_files = sorted((Path(emu.store.root) / "files").glob("*/IM_*.dcm"))
        t2_sops = {}
        for path in t2_files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if ds.SeriesInstanceUID == t2_uid:
                t2_sops[int(ds.InstanceNumber)] = str(ds.SOPInstanceUID)
        stir_by_sop = {}
        for path in t2_files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if ds.SeriesInstanceUID == demo.series["4"]:
                stir_by_sop[str(ds.SOPInstanceUID)] = t2_sops[int(ds.InstanceNumber)]
        for item in on_t2.ReferencedSeriesSequence[0].ReferencedInstanceSequence:
            item.ReferencedSOPInstanceUID = stir_by_sop[str(item.ReferencedSOPInstanceUID)]
        sources = list(on_t2.get("SourceImageSequence", []))
        for frame in on_t2.PerFrameFunctionalGroupsSequence:
            for der in frame.DerivationImageSequence:
                sources += list(der.SourceImageSequence)
        for src in sources:
            src.ReferencedSOPInstanceUID = stir_by_sop[str(src.ReferencedSOPInstanceUID)]
        buffer = io.BytesIO()
        on_t2.save_as(buffer)
        t2_seg, _ = edit_seg(buffer.getvalue())
        save_cleaned(conn, demo.project, demo.experiment, t2_seg)
        assert source.find_cleaned([session]) == {}
        assert source.fetch_cleaned(session, tmp_path / "none.nii.gz") is None
        # an edit saved, then the proposal pushed again (changed): the edit predates it
        cleaned, _ = edit_seg(seg, remove_frames=[3])
        old_label, _ = save_cleaned(conn, demo.project, demo.experiment, cleaned)
        assert source.find_cleaned([session])[session.key]["label"] == old_label
        img = nib.load(proposal)
        data = np.asarray(img.dataobj).copy()
        data[..., np.flatnonzero(data.any(axis=(0, 1)))[0]] = 0
        nib.save(nib.Nifti1Image(data, img.affine, img.header), proposal)
        assert source.push_proposal(session, {"proposal": proposal})["status"] == "replaced"
        # the old edit is not the new proposal's cleaning; the session waits, naming it
        [(key, found)] = source.find_cleaned([session]).items()
        assert key == session.key and set(found) == {"pending"}
        assert f"ROI collection {old_label} " in found["pending"] and "earlier proposal" in found["pending"]
        assert source.fetch_cleaned(session, tmp_path / "none.nii.gz") is None
    assert not (tmp_path / "none.nii.gz").exists()


@pytest.mark.parametrize(("dates", "zip_layout", "csrf"), [("reset", "default", False),
                                                           ("keep", "flat", True)])
def test_strict_server_push_and_collect_from_the_pulled_headers(emu, tmp_path, xnat_data, dicom_cache):
    """Push and collect need no second download; an unchanged re-push sends nothing;
    contours alone are reported, not collected."""
    demo = _demo(emu, "A")
    zips = lambda: [e for e in emu.log.find("GET", ZIP) if "format=zip" in e.query]  # noqa: E731
    with _source(emu) as source:
        session = source.list_sessions()[0]
        stir = tmp_path / "stir.nii.gz"
        info = source.fetch_scan(session, "stir", stir)
        assert info["series_uid"] == demo.series[demo.stir_scan]
        assert len(info["dicom_headers"]) == info["files"] == nib.load(stir).shape[2]
        sidecar = tmp_path / "stir.json"
        sidecar.write_text(json.dumps({"source": info}))
        r11 = nib.load(xnat_data / "inflammation" / "R11" / f"{demo.scan_id}_inflammation_R11.nii.gz")
        proposal = tmp_path / "proposal.nii.gz"
        save_nifti(np.asarray(r11.dataobj) > 0, nib.load(stir), proposal)
        context = {"stir": sidecar}
        receipt = source.push_proposal(session, {"proposal": proposal}, context)
        assert receipt["status"] == "created" and receipt["collections_before"] == []
        assert receipt["stir"]["series_uid"] == demo.series[demo.stir_scan]
        assert len(zips()) == 1  # the pull's only
        state, puts = _state(emu), len(emu.log.find("PUT", r"^/xapi/"))
        again = source.push_proposal(session, {"proposal": proposal}, context)
        assert again["status"] == "unchanged"
        assert len(emu.log.find("PUT", r"^/xapi/")) == puts and _state(emu) == state
        receipts = {session.key: again}
        # the radiologist saves contours only
        files = tuple(sorted((dicom_cache / f"A_{demo.scan_id}" / demo.stir_scan).glob("*.dcm")))
        series = SeriesInfo(files[0].parent, demo.study_uid, demo.series[demo.stir_scan], (), files)
        with _connect(emu) as conn:
            save_collection(conn, demo.project, demo.experiment, build_rtstruct(series), label="RT_1",
                            kind="RTSTRUCT")
            assert source.find_cleaned([session], receipts) == {
                session.key: {"pending": "cleaned as contours (RTSTRUCT/AIM): save as a segmentation",
                              "contours": ["RT_1"]}}
            seg = conn.get(f"/xapi/roi/projects/{demo.project}/collections/VHI_PROPOSAL_1003_pre").content
            cleaned, kept = edit_seg(seg, remove_frames=[3, 4, 5])
            label, ident = save_cleaned(conn, demo.project, demo.experiment, cleaned)
        found = _source(emu).find_cleaned([session], receipts)[session.key]
        assert (found["label"], found["collection"]) == (label, ident)
        (tmp_path / "pushed.json").write_text(json.dumps(again))
    fresh = _source(emu)  # as a collect job: its own process, the receipt from disk
    got = fresh.fetch_cleaned(session, tmp_path / "cleaned.nii.gz",
                              {"receipt": tmp_path / "pushed.json", "stir": sidecar, "like": proposal})
    assert got["collection"] == ident
    assert int((np.asarray(nib.load(tmp_path / "cleaned.nii.gz").dataobj) > 0).sum()) == kept
    assert len(zips()) == 1  # still only the pull's


# ----------------------------------------------------------------------------- faults
def _pulled(emu, tmp_path, role="stir", site="A", **extra):
    source = _source(emu, site, **extra)
    session = source.list_sessions()[0]
    return source, session


ZIP = r"/scans/3/resources/DICOM/files$"


@pytest.mark.parametrize("fault", ["500", "drop", "truncate"])
def test_transient_download_faults_are_retried(emu, tmp_path, fault, caplog):
    source, session = _pulled(emu, tmp_path)
    if fault == "500":
        emu.faults.add("GET", ZIP, "status", status=500, count=2, query="format=zip")
    elif fault == "drop":
        emu.faults.add("GET", ZIP, "drop", fraction=0.3, query="format=zip")
    else:
        emu.faults.add("GET", ZIP, "truncate_zip", fraction=0.6, query="format=zip")
    before = _state(emu)
    with source:
        info = source.fetch_scan(session, "stir", tmp_path / "stir.nii.gz")
    assert info["files"] == 23
    zips = [e for e in emu.log.find("GET", ZIP) if "format=zip" in e.query]
    assert len(zips) == (3 if fault == "500" else 2)
    assert "retry 1 of 3" in caplog.text
    assert _state(emu) == before


@pytest.mark.parametrize(("fault", "cause"), [
    ("500", "HTTP 500 from the server (after 4 attempts)"),
    ("truncate", "damaged zip"),
])
def test_persistent_download_faults_fail_clearly_and_leave_nothing(emu, tmp_path, fault, cause):
    source, session = _pulled(emu, tmp_path)
    if fault == "500":
        emu.faults.add("GET", ZIP, "status", status=500, count=100, query="format=zip")
    else:
        emu.faults.add("GET", ZIP, "truncate_zip", count=100, query="format=zip")
    dest = tmp_path / "out" / "stir.nii.gz"
    dest.parent.mkdir()
    with source, pytest.raises(XnatError) as raised:
        source.fetch_scan(session, "stir", dest)
    assert raised.value.what == "session A/A09/1003_pre"
    assert "downloading STIR scan 3" in raised.value.cause and cause in raised.value.cause
    assert list(dest.parent.iterdir()) == []
    # other sessions are unaffected
    with _source(emu, "B") as other:
        session_b = other.list_sessions()[0]
        other.fetch_scan(session_b, "stir", tmp_path / "b.nii.gz")


def test_a_download_that_trickles_meets_the_deadline_then_the_retry_rules(emu, tmp_path, caplog):
    """The scan's zip trickles in (64 bytes every 0.1 s: never a read timeout): each try is
    cut at source.deadline_s and retried; then the session fails by name, leaving nothing.
    A trickle on one try only: the retry downloads the scan."""
    import time

    source, session = _pulled(emu, tmp_path, deadline_s=1.5, retries=1)
    emu.faults.add("GET", ZIP, "trickle", seconds=0.1, chunk=64, count=100, query="format=zip")
    dest = tmp_path / "out" / "stir.nii.gz"
    dest.parent.mkdir()
    started = time.monotonic()
    with source, pytest.raises(XnatError) as raised:
        source.fetch_scan(session, "stir", dest)
    assert time.monotonic() - started < 20
    assert raised.value.what == "session A/A09/1003_pre"
    assert raised.value.cause == ("downloading STIR scan 3: no complete answer within 1.5 s "
                                  "(source.deadline_s): the server sends too slowly or stalls "
                                  "(after 2 attempts)")
    assert len([e for e in emu.log.find("GET", ZIP) if "format=zip" in e.query]) == 2
    assert list(dest.parent.iterdir()) == []

    emu.faults.clear()
    emu.faults.add("GET", ZIP, "trickle", seconds=0.1, chunk=64, count=1, query="format=zip")
    with source:
        assert source.fetch_scan(session, "stir", dest)["files"] == 23
    assert "no complete answer within 1.5 s" in caplog.text and "retry 1 of 1" in caplog.text


def test_corrupt_dicom_on_the_server_is_an_input_error(emu, tmp_path):
    demo = _demo(emu, "A")
    with emu.store.lock:
        scan = next(s for s in emu.store.state.experiments[demo.experiment].scans if s.id == "3")
        resource = scan.resources[0]
        name = sorted(resource.files)[5]
        data = emu.store.read_file(resource, name)
        emu.store.write_file(resource, name, data[: len(data) // 3], format="DICOM")  # catalog agrees
    source, session = _pulled(emu, tmp_path)
    dest = tmp_path / "stir.nii.gz"
    with source, pytest.raises(InputError) as raised:
        source.fetch_scan(session, "stir", dest)
    assert raised.value.what.startswith("session A/A09/1003_pre: STIR scan 3")
    assert "truncated" in raised.value.cause
    zips = [e for e in emu.log.find("GET", ZIP) if "format=zip" in e.query]
    assert len(zips) == 1  # the bytes are what the server holds: no retry
    assert not dest.exists()


def test_stir_series_gone_from_the_server(emu, tmp_path):
    source, session = _pulled(emu, tmp_path)
    demo = _demo(emu, "A")
    with emu.store.lock:
        experiment = emu.store.state.experiments[demo.experiment]
        experiment.scans = [s for s in experiment.scans if s.id != "3"]
    with source, pytest.raises(XnatError) as raised:
        source.fetch_scan(session, "stir", tmp_path / "stir.nii.gz")
    assert str(raised.value) == (f"session A/A09/1003_pre: STIR scan 3 is no longer in experiment "
                                 f"{demo.experiment}")


def test_expired_session_logs_in_again(emu, tmp_path):
    source, session = _pulled(emu, tmp_path)
    logins = len(emu.log.find("PUT", r"^/data/services/auth$"))
    emu.expire_sessions()
    with source:
        source.fetch_scan(session, "t1w", tmp_path / "t1w.nii.gz")
    assert len(emu.log.find("PUT", r"^/data/services/auth$")) == logins + 1
    emu.faults.fail("GET", r"/scans/\d+$", 401, count=100)
    with source, pytest.raises(XnatError) as raised:
        source.fetch_scan(session, "t1w", tmp_path / "t1w2.nii.gz")
    assert "HTTP 401" in str(raised.value) and raised.value.what == "session A/A09/1003_pre"


def test_422_on_push_is_reported_without_retry_and_changes_nothing(emu, tmp_path, xnat_data):
    demo = _demo(emu, "A")
    with _source(emu) as source:
        session = source.list_sessions()[0]
        proposal = _proposal(source, session, tmp_path, xnat_data, demo)
        emu.faults.fail("PUT", r"^/xapi/roi/", 422, body="Missing dependencies: injected")
        before = _state(emu)
        with pytest.raises(XnatError) as raised:
            source.push_proposal(session, {"proposal": proposal})
        assert "(HTTP 422: Missing dependencies: injected)" in str(raised.value)
        assert _state(emu) == before
        assert len(emu.log.find("PUT", r"^/xapi/roi/")) == 1
        emu.faults.fail("PUT", r"^/xapi/roi/", 503)  # transient: retried, then done once
        receipt = source.push_proposal(session, {"proposal": proposal})
    assert receipt["status"] == "created"
    assert len(_collections(emu, demo.experiment)) == 1


def test_push_whose_response_is_lost_is_not_duplicated(emu, tmp_path, xnat_data):
    """The PUT lands but the answer is dropped: the retry's 422 is resolved by reading back."""
    demo = _demo(emu, "A")
    with _source(emu) as source:
        session = source.list_sessions()[0]
        proposal = _proposal(source, session, tmp_path, xnat_data, demo)
        emu.faults.drop("PUT", r"^/xapi/roi/", fraction=0.0)
        receipt = source.push_proposal(session, {"proposal": proposal})
    assert receipt["verified"] is True
    assert [e.status for e in emu.log.find("PUT", r"^/xapi/roi/")] == [200, 422]
    assert len(_collections(emu, demo.experiment)) == 1


# ----------------------------------------------------------------------------- secrets + TLS
def test_canary_password_appears_nowhere(emu, tmp_path, xnat_data, caplog):
    caplog.set_level(logging.DEBUG)
    demo = _demo(emu, "A")
    with _source(emu) as source:
        session = source.list_sessions()[0]
        proposal = _proposal(source, session, tmp_path, xnat_data, demo)
        receipt = source.push_proposal(session, {"proposal": proposal})
        info = source.fetch_scan(session, "t1w", tmp_path / "t1w.nii.gz")
    texts = [caplog.text, json.dumps(receipt), json.dumps(info), json.dumps(session.to_dict()),
             "\n".join(repr(e) for e in emu.requests), json.dumps(source.spec)]
    assert all(CANARY not in t for t in texts)
    assert all(b"canary" not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_wrong_password_and_custom_env_names(emu, monkeypatch):
    monkeypatch.setenv("XNAT_PASS", "wrong-" + CANARY)
    with pytest.raises(XnatError) as raised:
        _source(emu).list_sessions()
    assert "login failed (credentials from $XNAT_USER)" in str(raised.value)
    assert CANARY not in str(raised.value)
    monkeypatch.setenv("SITE_A_USER", USER)
    monkeypatch.setenv("SITE_A_PASS", CANARY)
    with _source(emu, user_env="SITE_A_USER", password_env="SITE_A_PASS") as source:
        assert len(source.list_sessions()) == 1


def test_netrc_credentials(emu, tmp_path, monkeypatch):
    unset_env(monkeypatch, "XNAT_USER", "XNAT_PASS", "XNATPY_USER", "XNATPY_PASS")
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1:{emu.port} login {USER} password {CANARY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    with _source(emu) as source:
        assert len(source.list_sessions()) == 1


def test_self_signed_server_needs_its_ca(tmp_path, self_signed_cert, monkeypatch):
    cert, key = self_signed_cert
    unset_env(monkeypatch, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
    monkeypatch.setenv("XNAT_USER", USER)
    monkeypatch.setenv("XNAT_PASS", CANARY)
    with XnatEmulator(tmp_path / "tls", users={USER: CANARY}, certfile=cert, keyfile=key) as server:
        server.seed_session("VHI_SITE_A", "A01", "S1")
        spec = {"type": "xnat", "server": server.url, "project": "VHI_SITE_A", "backoff_s": 0.01}
        with pytest.raises(XnatError) as raised:
            make_source(spec, "A").list_sessions()
        assert "TLS certificate verification failed; for a site CA set source.ca_bundle" in str(raised.value)
        assert not server.log.find("PUT", r"^/data/services/auth$")  # no credentials were sent
        with make_source({**spec, "ca_bundle": str(cert)}, "A") as source:
            listed = source.list_sessions()  # a session without scans stays, to fail visibly
            assert [(s.key, dict(s.scans)) for s in listed] == [("A/A01/S1", {})]
            with pytest.raises(XnatError, match="session A/A01/S1: no T1W scan matched"):
                source.fetch_scan(listed[0], "t1w", tmp_path / "t1w.nii.gz")
            assert not (tmp_path / "t1w.nii.gz").exists()
        assert "REQUESTS_CA_BUNDLE" not in os.environ


def test_each_operation_logs_out_unless_the_source_is_held(emu):
    source = _source(emu)
    sessions = source.list_sessions()
    receipts = {s.key: {"collections_before": []} for s in sessions}
    source.list_sessions()
    other = _source(emu)  # no listing of its own: reads the experiment's JSON
    other.find_cleaned(sessions, receipts)
    assert len(emu.log.find("PUT", r"^/data/services/auth$")) == 3
    assert len(emu.log.find("DELETE", r"^/data/JSESSION$")) == 3
    assert emu.auth.session_count == 0
    with other:
        other.find_cleaned(other.list_sessions(), receipts)
    assert len(emu.log.find("PUT", r"^/data/services/auth$")) == 4
