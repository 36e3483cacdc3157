"""The emulator answers as the protocol note documents, and its switches for what is unsure.

Golden documents (``tests/xnat_emulator/golden/routes.json``, written from the protocol
note) fix the shape and the keys of every route the platform reads; the switches
(overwrite dates, zip layout, CSRF) give the two plausible servers a client must survive.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import xnat

from xnat_emulator import Behaviour, XnatEmulator
from xnat_emulator.synthetic import PROJECT, TEST_USERS, build_aim, build_rtstruct, build_seg

pytest_plugins = ["xnat_emulator.fixtures"]  # xnat_emulator, xnat_connection, synthetic_study

GOLDEN = json.loads((Path(__file__).parent / "xnat_emulator" / "golden" / "routes.json").read_text())
OCTET = {"Content-Type": "application/octet-stream"}


def _put(connection, session_id: str, label: str, data: bytes, kind: str = "SEG", **query: str):
    return connection.put(f"/xapi/roi/projects/{PROJECT}/sessions/{session_id}/collections/{label}",
                          query={"type": kind, "overwrite": "false", **query}, data=data,
                          headers=OCTET, accepted_status=range(100, 600))


def _same_shape(got: Any, want: Any, where: str, *, exact_rows: bool) -> None:
    """``got`` has ``want``'s structure: the same keys for listing rows (``exact_rows``), at
    least ``want``'s keys for objects, the same JSON types; lists compared by their first item."""
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        if exact_rows:
            assert set(got) == set(want), f"{where}: {sorted(set(got) ^ set(want))}"
        else:
            assert set(want) <= set(got), f"{where}: missing {sorted(set(want) - set(got))}"
        for key, value in want.items():
            if key == "children":
                fields = {c["field"]: c for c in got[key]}
                for child in value:
                    assert child["field"] in fields, f"{where}: no child {child['field']}"
                    _same_shape(fields[child["field"]], child, f"{where}/{child['field']}",
                                exact_rows=False)
            elif key == "Result":
                assert got[key], f"{where}: no rows"
                for row in got[key]:
                    _same_shape(row, value[0], f"{where}/row", exact_rows=True)
            else:
                _same_shape(got[key], value, f"{where}/{key}", exact_rows=exact_rows)
    elif isinstance(want, list):
        assert isinstance(got, list) and (got or not want), where
        if want:
            _same_shape(got[0], want[0], f"{where}[0]", exact_rows=exact_rows)
    else:
        assert type(got) is type(want), f"{where}: {type(got).__name__} is not {type(want).__name__}"


def test_every_route_answers_like_the_golden_document(xnat_connection, synthetic_study):
    session = xnat_connection.projects[PROJECT].experiments["SESS1"]
    assert _put(xnat_connection, session.id, "SEG_1", build_seg(synthetic_study.scan1)).status_code == 200
    roi_id = next(r["ID"] for r in xnat_connection.get_json(
        f"/data/experiments/{session.id}/assessors")["ResultSet"]["Result"])
    paths = {
        "projects": "/data/projects",
        "project_subjects": f"/data/projects/{PROJECT}/subjects",
        "project_experiments": f"/data/projects/{PROJECT}/experiments",
        "experiments": "/data/experiments",
        "scans": f"/data/experiments/{session.id}/scans",
        "assessors": f"/data/experiments/{session.id}/assessors",
        "scan_resources": f"/data/experiments/{session.id}/scans/1/resources",
        "files": f"/data/experiments/{session.id}/scans/1/resources/DICOM/files",
        "experiment": f"/data/experiments/{session.id}",
        "scan": f"/data/experiments/{session.id}/scans/1",
        "roi_collection": f"/data/experiments/{session.id}/assessors/{roi_id}",
    }
    assert set(paths) == set(GOLDEN) - {"_about"}
    for name, path in paths.items():
        got = xnat_connection.get_json(path, query={"format": "json"})
        _same_shape(got, GOLDEN[name]["document"], name, exact_rows=False)
        if "ResultSet" in got:
            rows = got["ResultSet"]["Result"]
            assert all(isinstance(v, str) for r in rows for v in r.values()), name
            assert isinstance(got["ResultSet"]["totalRecords"], str)


def test_columns_name_the_fields_a_listing_carries(xnat_connection, synthetic_study):
    session = xnat_connection.projects[PROJECT].experiments["SESS1"]
    plain = xnat_connection.get_json(f"/data/experiments/{session.id}/scans")["ResultSet"]["Result"]
    assert "UID" not in plain[0] and "frames" not in plain[0]
    asked = xnat_connection.get_json(f"/data/experiments/{session.id}/scans",
                                     query={"columns": "UID,frames"})["ResultSet"]["Result"]
    assert {r["ID"]: set(r) for r in asked} == {"1": {"ID", "URI", "UID", "frames"},
                                                "2": {"ID", "URI", "UID", "frames"}}
    assert {r["ID"]: r["UID"] for r in asked} == {"1": synthetic_study.scan1.series_uid,
                                                  "2": synthetic_study.scan2.series_uid}
    scan = xnat_connection.get_json(f"/data/experiments/{session.id}/scans/1")["items"][0]
    assert scan["data_fields"]["UID"] == synthetic_study.scan1.series_uid
    assert scan["data_fields"]["frames"] == 4


@pytest.mark.parametrize("mode", ["reset", "keep"])
def test_overwrite_date_switch(tmp_path, synthetic_study, mode):
    with XnatEmulator(tmp_path / "x", users=TEST_USERS, behaviour=Behaviour(overwrite_dates=mode)) as emu:
        experiment = emu.seed_session(PROJECT, "SUBJ1", "SESS1", {"1": synthetic_study.scan1.folder})
        with xnat.connect(emu.url, user="alice", password=TEST_USERS["alice"], loglevel="WARNING") as conn:
            _put(conn, experiment.id, "SEG_A", build_seg(synthetic_study.scan1, description="first"))

            def date() -> str:
                rows = conn.get_json(f"/data/experiments/{experiment.id}/assessors")["ResultSet"]["Result"]
                return rows[0]["insert_date"]

            first = date()
            assert _put(conn, experiment.id, "SEG_A", build_seg(synthetic_study.scan1, description="2nd"),
                        overwrite="true").status_code == 200
            assert (date() > first) if mode == "reset" else (date() == first)


def test_flat_zip_layout(tmp_path, synthetic_study):
    with XnatEmulator(tmp_path / "x", users=TEST_USERS, behaviour=Behaviour(zip_layout="flat")) as emu:
        experiment = emu.seed_session(PROJECT, "SUBJ1", "SESS1", {"1": synthetic_study.scan1.folder})
        with xnat.connect(emu.url, user="alice", password=TEST_USERS["alice"], loglevel="WARNING") as conn:
            data = conn.get(f"/data/experiments/{experiment.id}/scans/1/resources/DICOM/files",
                            query={"format": "zip"}).content
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == sorted(p.name for p in synthetic_study.scan1.files)


def test_contour_collections_are_stored(xnat_connection, synthetic_study):
    session = xnat_connection.projects[PROJECT].experiments["SESS1"]
    assert _put(xnat_connection, session.id, "RT_1", build_rtstruct(synthetic_study.scan1),
                "RTSTRUCT").status_code == 200
    aim = build_aim(synthetic_study.scan1)
    assert _put(xnat_connection, session.id, "AIM_1", aim, "AIM").status_code == 200
    assert _put(xnat_connection, session.id, "AIM_2", b"not xml", "AIM").status_code == 422
    doc = xnat_connection.get_json(f"/data/experiments/{session.id}")["items"][0]
    assessors = next(c for c in doc["children"] if c["field"] == "assessors/assessor")["items"]
    kinds = {a["data_fields"]["label"]: a["data_fields"]["collectionType"] for a in assessors}
    assert kinds == {"RT_1": "RTSTRUCT", "AIM_1": "AIM"}
    for item in assessors:
        refs = next(c for c in item["children"] if c["field"] == "references/seriesUID")["items"]
        assert [r["data_fields"]["seriesUID"] for r in refs] == [synthetic_study.scan1.series_uid]
    aim = xnat_connection.get(f"/xapi/roi/projects/{PROJECT}/collections/AIM_1").content
    assert aim.startswith(b"<?xml")


def test_csrf_switch(tmp_path, synthetic_study):
    with XnatEmulator(tmp_path / "x", users=TEST_USERS, behaviour=Behaviour(csrf=True)) as emu:
        experiment = emu.seed_session(PROJECT, "SUBJ1", "SESS1", {"1": synthetic_study.scan1.folder})
        with xnat.connect(emu.url, user="alice", password=TEST_USERS["alice"], loglevel="WARNING") as conn:
            seg = build_seg(synthetic_study.scan1)
            refused = _put(conn, experiment.id, "SEG_A", seg)
            assert refused.status_code == 403
            who = conn.get("/data/auth", query={"CSRF": "true"}).text
            assert who.startswith("User 'alice' is logged in; XNAT_CSRF=")
            token = who.rsplit("XNAT_CSRF=", 1)[1]
            assert _put(conn, experiment.id, "SEG_A", seg, XNAT_CSRF=token).status_code == 200
            assert conn.get("/data/auth").text == "User 'alice' is logged in"
