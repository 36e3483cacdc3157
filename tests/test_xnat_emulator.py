"""The XNAT emulator, exercised through the unmodified xnatpy client."""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
import xnat
from pydicom.uid import generate_uid
from xnat.exceptions import (
    XNATLoginFailedError,
    XNATResponseError,
    XNATUploadError,
)

from vhi.imaging.seg import write_seg

from support.dicom_series import write_series
from support.env import unset_env
from xnat_emulator import XnatEmulator
from xnat_emulator.synthetic import (
    PROJECT,
    TEST_USERS,
    SyntheticStudy,
    build_seg,
    write_mr_series,
)

pytest_plugins = ["xnat_emulator.fixtures"]  # xnat_emulator, xnat_connection, synthetic_study

OCTET = {"Content-Type": "application/octet-stream"}
ANY_STATUS = range(100, 600)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324 - XNAT's digest


def _session(connection: xnat.session.XNATSession, label: str = "SESS1"):
    return connection.projects[PROJECT].experiments[label]


def _put_seg(connection, session_id: str, label: str, data: bytes, *,
             overwrite: bool = False) -> requests.Response:
    return connection.put(
        f"/xapi/roi/projects/{PROJECT}/sessions/{session_id}/collections/{label}",
        query={"type": "SEG", "overwrite": str(overwrite).lower()},
        data=data,
        headers=OCTET,
        accepted_status=ANY_STATUS,
    )


# ---------------------------------------------------------------------------- browsing
def test_connect_lists_the_seeded_archive(xnat_connection, synthetic_study: SyntheticStudy):
    project = xnat_connection.projects[PROJECT]
    assert sorted(s.label for s in project.subjects.values()) == ["SUBJ1", "SUBJ2"]
    session = project.subjects["SUBJ1"].experiments["SESS1"]
    assert session.__xsi_type__ == "xnat:mrSessionData"
    assert session.uid == synthetic_study.scan1.study_uid
    scan = session.scans["1"]
    assert scan.__xsi_type__ == "xnat:mrScanData"
    assert scan.type == "STIR_cor"
    assert scan.series_description == "STIR_cor"
    assert scan.quality == "usable"
    assert scan.uid == synthetic_study.scan1.series_uid
    assert scan.frames == 4
    assert session.scans["T1_cor"].id == "2"  # secondary lookup by type
    resource = scan.resources["DICOM"]
    assert resource.file_count == 4
    digests = {f.id: f.data["digest"] for f in resource.files.values()}
    assert digests == {p.name: _md5(p) for p in synthetic_study.scan1.files}


def test_scan_zip_download_and_single_file_md5(xnat_connection, synthetic_study, tmp_path):
    scan = _session(xnat_connection).scans["1"]
    target = tmp_path / "scan.zip"
    scan.download(target, verbose=False)
    with zipfile.ZipFile(target) as archive:
        names = sorted(archive.namelist())
        assert len(names) == 4
        assert all("/resources/DICOM/files/" in n for n in names)
        originals = {p.name: p.read_bytes() for p in synthetic_study.scan1.files}
        assert {Path(n).name: archive.read(n) for n in names} == originals
    single = scan.resources["DICOM"].files["IM_0001.dcm"]
    single.download(tmp_path / "IM_0001.dcm", verbose=False)  # xnatpy checks the MD5 digest
    assert _md5(tmp_path / "IM_0001.dcm") == _md5(synthetic_study.scan1.files[0])
    whole = xnat_connection.get(f"{_session(xnat_connection).fulluri}/scans/ALL/files",
                                format="zip")
    with zipfile.ZipFile(io.BytesIO(whole.content)) as archive:
        assert len(archive.namelist()) == 8


def test_listing_filters_and_columns(xnat_connection):
    rows = xnat_connection.get_json(
        f"/data/projects/{PROJECT}/experiments",
        query={"xsiType": "xnat:mrSessionData", "label": "SESS*", "columns": "label,UID"},
    )["ResultSet"]["Result"]
    assert sorted(r["label"] for r in rows) == ["SESS1", "SESS2"]
    assert set(rows[0]) == {"ID", "URI", "label", "UID"}
    assert all(isinstance(v, str) for r in rows for v in r.values())


# ---------------------------------------------------------------------------- creation
def test_create_upload_overwrite_extract_and_delete(xnat_connection, xnat_emulator,
                                                    tmp_path):
    created = xnat_connection.put("/data/archive/projects/NEWPROJ")
    assert created.status_code == 201
    xnat_connection.clearcache()
    project = xnat_connection.projects["NEWPROJ"]
    subject = xnat_connection.classes.SubjectData(parent=project, label="S01")
    assert subject.id.startswith("XNAT_S")
    session = xnat_connection.classes.MrSessionData(parent=subject, label="S01_MR1")
    assert session.id.startswith("XNAT_E")
    scan = xnat_connection.classes.MrScanData(parent=session, id="7", type="STIR",
                                              series_description="STIR_cor", quality="usable")
    assert scan.id == "7"
    assert session.scans["7"].type == "STIR"
    resource = scan.create_resource("DICOM", format="DICOM")

    series = write_mr_series(tmp_path / "upload", slices=3)
    resource.upload(series.files[0], "IM_0001.dcm")
    with pytest.raises(XNATUploadError):
        resource.upload(series.files[0], "IM_0001.dcm")  # exists, no overwrite: 409
    assert xnat_emulator.log.find("PUT", r"/files/IM_0001\.dcm$")[-1].status == 409
    resource.upload(series.files[0], "IM_0001.dcm", overwrite=True)

    rest = tmp_path / "rest"
    rest.mkdir()
    for path in series.files[1:]:
        shutil.copy(path, rest / path.name)
    resource.upload_dir(rest)  # tar.gz with extract=true
    resource.clearcache()
    assert sorted(resource.files.keys()) == ["IM_0001.dcm", "IM_0002.dcm", "IM_0003.dcm"]

    xnat_connection.put(session.fulluri, query={"pullDataFromHeaders": "true"})
    session.clearcache()
    scan.clearcache()
    assert session.uid == series.study_uid
    assert scan.uid == series.series_uid

    resource.files["IM_0002.dcm"].delete()
    resource.clearcache()
    assert sorted(resource.files.keys()) == ["IM_0001.dcm", "IM_0003.dcm"]
    xnat_connection.clearcache()  # objects built by constructors are not in xnatpy's cache
    xnat_connection.projects["NEWPROJ"].experiments["S01_MR1"].delete()
    xnat_connection.clearcache()
    assert len(xnat_connection.projects["NEWPROJ"].experiments) == 0


def test_experiment_label_clash_is_refused(xnat_connection):
    subject = xnat_connection.projects[PROJECT].subjects["SUBJ1"]
    with pytest.raises(xnat.exceptions.XNATObjectAlreadyExistsError):
        xnat_connection.classes.MrSessionData(parent=subject, label="SESS1")


# ---------------------------------------------------------------------------- ROI API
def test_roi_put_get_exists_listing_and_delete(xnat_connection, synthetic_study):
    session = _session(xnat_connection)
    seg = build_seg(synthetic_study.scan1, description="AI proposal")
    response = _put_seg(xnat_connection, session.id, "PROPOSAL_1", seg)
    assert response.status_code == 200
    collection_id = response.text
    assert collection_id.startswith("RoiCollection_")

    base = f"/xapi/roi/projects/{PROJECT}"
    assert xnat_connection.get_json(f"{base}/exists/PROPOSAL_1") is True
    assert xnat_connection.get_json(f"{base}/exists/{collection_id}") is True
    assert xnat_connection.get(f"{base}/collections/{collection_id}").content == seg
    assert xnat_connection.get(f"{base}/collections/PROPOSAL_1",
                               query={"type": "SEG"}).content == seg
    uid_map = xnat_connection.get_json(f"{base}/sessions/{session.id}/uididmap")
    assert uid_map == {synthetic_study.scan1.series_uid: "1",
                       synthetic_study.scan2.series_uid: "2"}

    session.clearcache()
    assessor = session.assessors["PROPOSAL_1"]
    assert assessor.__xsi_type__ == "icr:roiCollectionData"
    rows = xnat_connection.get_json(f"{session.fulluri}/assessors",
                                    query={"xsiType": "icr:roiCollectionData"})
    assert [r["ID"] for r in rows["ResultSet"]["Result"]] == [collection_id]
    detail = xnat_connection.get_json(f"{session.fulluri}/assessors/{collection_id}")["items"][0]
    fields = detail["data_fields"]
    assert fields["collectionType"] == "SEG"
    assert fields["name"] == "AI proposal"
    assert fields["imageSession_ID"] == session.id
    refs = next(c for c in detail["children"] if c["field"] == "references/seriesUID")
    assert [i["data_fields"]["seriesUID"] for i in refs["items"]] == [
        synthetic_study.scan1.series_uid
    ]
    files = xnat_connection.get_json(f"/data/experiments/{session.id}/assessors/{collection_id}/files")
    row = next(r for r in files["ResultSet"]["Result"] if r["collection"] == "SEG")
    assert row["Name"] == "PROPOSAL_1.dcm"
    assert xnat_connection.get(row["URI"]).content == seg
    assert row["digest"] == hashlib.md5(seg).hexdigest()  # noqa: S324

    deleted = xnat_connection.delete(f"{base}/collections/PROPOSAL_1")
    assert deleted.status_code == 200
    assert xnat_connection.get_json(f"{base}/exists/PROPOSAL_1") is False
    missing = xnat_connection.get(f"{base}/collections/PROPOSAL_1", accepted_status=ANY_STATUS)
    assert missing.status_code == 404


def test_roi_label_rules_and_overwrite(xnat_connection, xnat_emulator, synthetic_study):
    sess1 = _session(xnat_connection, "SESS1")
    sess2 = _session(xnat_connection, "SESS2")
    first = build_seg(synthetic_study.scan1, description="first")
    first_id = _put_seg(xnat_connection, sess1.id, "SEG_A", first).text

    again = _put_seg(xnat_connection, sess1.id, "SEG_A", first)
    assert again.status_code == 422
    assert "overwrite not specified" in again.text

    other_session = _put_seg(xnat_connection, sess2.id, "SEG_A",
                             build_seg(synthetic_study.other_study))
    assert other_session.status_code == 409

    insert_before = xnat_connection.get_json(f"{sess1.fulluri}/assessors/{first_id}")[
        "items"][0]["meta"]["start_date"]
    second = build_seg(synthetic_study.scan1, description="second")
    replaced = _put_seg(xnat_connection, sess1.id, "SEG_A", second, overwrite=True)
    assert replaced.status_code == 200
    assert replaced.text == first_id
    item = xnat_connection.get_json(f"{sess1.fulluri}/assessors/{first_id}")["items"][0]
    assert item["data_fields"]["name"] == "second"
    if xnat_emulator.behaviour.overwrite_dates == "reset":  # the other server keeps the date
        assert item["meta"]["start_date"] > insert_before
    else:
        assert item["meta"]["start_date"] == insert_before
    stored = xnat_connection.get(f"/xapi/roi/projects/{PROJECT}/collections/SEG_A").content
    assert stored == second


def test_roi_insert_dates_increase_between_puts(xnat_connection, synthetic_study):
    session = _session(xnat_connection)
    seg = build_seg(synthetic_study.scan1)
    ids = [_put_seg(xnat_connection, session.id, f"SEG_{i}", seg).text for i in range(3)]
    rows = xnat_connection.get_json(f"{session.fulluri}/assessors")["ResultSet"]["Result"]
    dates = [next(r["insert_date"] for r in rows if r["ID"] == i) for i in ids]
    assert dates == sorted(dates)
    assert len(set(dates)) == 3


def test_roi_dependency_checks(xnat_connection, xnat_emulator, synthetic_study):
    session = _session(xnat_connection)
    wrong_study = build_seg(synthetic_study.scan1, study_uid="1.2.3.4.5.6.7.8.9")
    response = _put_seg(xnat_connection, session.id, "WRONG_STUDY", wrong_study)
    assert response.status_code == 422
    assert "Missing dependencies" in response.text

    not_archived = build_seg(synthetic_study.unarchived)  # same study, unknown series
    response = _put_seg(xnat_connection, session.id, "WRONG_SERIES", not_archived)
    assert response.status_code == 422
    assert synthetic_study.unarchived.series_uid in response.text

    scan2 = session.scans["2"]
    scan2.resources["DICOM"].files["IM_0004.dcm"].delete()
    response = _put_seg(xnat_connection, session.id, "MISSING_SOP",
                        build_seg(synthetic_study.scan2))
    assert response.status_code == 422
    assert "referenced instance" in response.text

    wrong_type = xnat_connection.put(
        f"/xapi/roi/projects/{PROJECT}/sessions/{session.id}/collections/X",
        query={"type": "SEG"}, data=b"x", headers={"Content-Type": "text/plain"},
        accepted_status=ANY_STATUS,
    )
    assert wrong_type.status_code == 415
    assert xnat_connection.get_json(f"/xapi/roi/projects/{PROJECT}/exists/WRONG_STUDY") is False
    assert not [a for a in xnat_emulator.store.state.assessors.values()]


# ---------------------------------------------------------------------------- faults
def test_fault_status_fires_count_times(xnat_connection, xnat_emulator):
    session = _session(xnat_connection)
    rule = xnat_emulator.faults.fail("GET", r"/scans$", 500, count=1)
    with pytest.raises(XNATResponseError) as raised:
        xnat_connection.get_json(f"{session.fulluri}/scans")
    assert raised.value.status_code == 500
    assert len(xnat_connection.get_json(f"{session.fulluri}/scans")["ResultSet"]["Result"]) == 2
    assert rule.hits == 1
    assert xnat_emulator.log.find("GET", r"/scans$")[0].fault == "status"


def test_fault_422_and_401_status(xnat_connection, xnat_emulator, synthetic_study):
    session = _session(xnat_connection)
    xnat_emulator.faults.fail("PUT", r"^/xapi/roi/", 422, body="Missing dependencies: injected")
    response = _put_seg(xnat_connection, session.id, "X", build_seg(synthetic_study.scan1))
    assert (response.status_code, response.text) == (422, "Missing dependencies: injected")
    xnat_emulator.faults.fail("GET", r"/experiments$", 401)
    raw = xnat_connection.get(f"/data/projects/{PROJECT}/experiments", accepted_status=ANY_STATUS)
    assert raw.status_code == 401
    assert raw.headers["WWW-Authenticate"].startswith("Basic")


def test_fault_drop_mid_body(xnat_connection, xnat_emulator, tmp_path):
    scan = _session(xnat_connection).scans["1"]
    xnat_emulator.faults.drop("GET", r"/scans/1/files$")
    with pytest.raises(requests.exceptions.RequestException):
        scan.download(tmp_path / "dropped.zip", verbose=False)
    scan.download(tmp_path / "ok.zip", verbose=False)
    assert zipfile.ZipFile(tmp_path / "ok.zip").testzip() is None


def test_fault_truncated_zip(xnat_connection, xnat_emulator, tmp_path):
    scan = _session(xnat_connection).scans["1"]
    xnat_emulator.faults.truncate_zip(r"/scans/1/files$")
    scan.download(tmp_path / "cut.zip", verbose=False)  # the transfer itself looks complete
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(tmp_path / "cut.zip")


def test_expired_sessions_get_401(xnat_connection, xnat_emulator):
    assert xnat_emulator.auth.session_count >= 1
    xnat_emulator.expire_sessions()
    with pytest.raises(XNATResponseError) as raised:
        xnat_connection.get_json(f"/data/projects/{PROJECT}/subjects")
    assert raised.value.status_code == 401
    raw = xnat_connection.get("/data/auth", accepted_status=ANY_STATUS)
    assert raw.status_code == 401
    assert "Basic" in raw.headers["WWW-Authenticate"]


# ---------------------------------------------------------------------------- auth
def test_wrong_password_and_basic_auth(xnat_emulator):
    with pytest.raises(XNATLoginFailedError):
        xnat.connect(xnat_emulator.url, user="alice", password="wrong", loglevel="ERROR")
    login = requests.put(f"{xnat_emulator.url}/data/services/auth",
                         data={"username": "alice", "password": "nope"}, timeout=5)
    assert (login.status_code, login.text) == (401, "Authentication failed.")
    assert requests.get(f"{xnat_emulator.url}/data/services/auth", timeout=5).status_code == 405

    anonymous = requests.get(f"{xnat_emulator.url}/data/projects", timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    wrong_basic = requests.get(f"{xnat_emulator.url}/data/auth", auth=("alice", "x"), timeout=5)
    assert (wrong_basic.status_code, wrong_basic.text) == (401, "Authentication failed.")

    basic = requests.get(f"{xnat_emulator.url}/data/auth",
                         auth=("bob", TEST_USERS["bob"]), timeout=5)
    assert (basic.status_code, basic.text) == (200, "User 'bob' is logged in")
    token = basic.cookies["JSESSIONID"]
    assert len(token) == 32
    cookie = requests.get(f"{xnat_emulator.url}/data/JSESSION",
                          cookies={"JSESSIONID": token}, timeout=5)
    assert cookie.text == token
    requests.delete(f"{xnat_emulator.url}/data/JSESSION", cookies={"JSESSIONID": token}, timeout=5)
    after = requests.get(f"{xnat_emulator.url}/data/auth", cookies={"JSESSIONID": token}, timeout=5)
    assert after.status_code == 401


def test_no_credentials_in_request_log_or_logs(xnat_emulator, caplog):
    caplog.set_level(logging.DEBUG)
    password = TEST_USERS["alice"]
    with xnat.connect(xnat_emulator.url, user="alice", password=password, loglevel="WARNING") as c:
        c.get("/data/auth", query={"password": password})
    requests.get(f"{xnat_emulator.url}/data/auth", auth=("alice", password), timeout=5)
    logged = "\n".join(repr(e) for e in xnat_emulator.requests)
    emulator_logs = "\n".join(r.getMessage() for r in caplog.records
                              if r.name.startswith("xnat_emulator"))
    assert "/data/services/auth" in logged
    assert password not in logged
    assert password not in emulator_logs
    assert "Authorization" not in logged


def test_extension_types_off_still_connects(xnat_emulator):
    with xnat.connect(xnat_emulator.url, user="alice", password=TEST_USERS["alice"],
                      extension_types=False, loglevel="WARNING") as connection:
        assert connection.xnat_version == "1.8.10"
        assert "icr:roiCollectionData" not in connection.XNAT_CLASS_LOOKUP
        assert list(connection.projects.keys()) == [PROJECT]


def test_state_survives_restart(tmp_path, synthetic_study):
    root = tmp_path / "state"
    with XnatEmulator(root, users=TEST_USERS) as first:
        first.seed_session(PROJECT, "SUBJ1", "SESS1", {"1": synthetic_study.scan1.folder})
    with XnatEmulator(root, users=TEST_USERS) as second, xnat.connect(
        second.url, user="alice", password=TEST_USERS["alice"], loglevel="WARNING"
    ) as connection:
        scan = connection.projects[PROJECT].experiments["SESS1"].scans["1"]
        assert scan.uid == synthetic_study.scan1.series_uid
        assert len(scan.resources["DICOM"].files) == 4


# ---------------------------------------------------------------------------- TLS
def test_tls_verification(tmp_path, self_signed_cert, monkeypatch):
    cert, key = self_signed_cert
    unset_env(monkeypatch, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
    with XnatEmulator(tmp_path / "tls", users=TEST_USERS, certfile=cert, keyfile=key) as emu:
        emu.seed_session(PROJECT, "SUBJ1", "SESS1")
        assert emu.url.startswith("https://127.0.0.1:")
        with pytest.raises(requests.exceptions.SSLError):
            xnat.connect(emu.url, user="alice", password=TEST_USERS["alice"], loglevel="ERROR")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        with xnat.connect(emu.url, user="alice", password=TEST_USERS["alice"],
                          loglevel="WARNING") as connection:
            assert list(connection.projects.keys()) == [PROJECT]


def test_module_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "xnat_emulator", "--help"],
        cwd=Path(__file__).parent, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0
    assert "--root" in result.stdout


# ---------------------------------------------------------------------------- interop
def test_platform_seg_writer_passes_the_dependency_check(xnat_emulator, tmp_path):
    """A SEG from vhi.imaging.seg over a tests/support series is accepted, as on a real XNAT."""

    affine = np.diag([-1.0, 1.0, 2.0, 1.0])
    volume = nib.Nifti1Image(np.arange(8 * 8 * 4, dtype=np.int16).reshape(8, 8, 4), affine)
    study_uid = generate_uid()
    series = write_series(
        volume, tmp_path / "platform", series_description="STIR_cor", series_number=5,
        study_uid=study_uid, patient_id="EMU002", patient_name="Interop^Test",
        study_date="20240102", frame_of_reference_uid=generate_uid(),
    )
    xnat_emulator.seed_session(PROJECT, "SUBJ3", "SESS3", {"5": tmp_path / "platform"})
    mask = np.zeros((8, 8, 4), dtype=bool)
    mask[2:5, 2:5, 1:3] = True
    sources = [pydicom.dcmread(p) for p in series.files]
    seg_path = tmp_path / "proposal.dcm"
    write_seg(mask, affine, sources, seg_path, algorithm_name="emulator-test",
                    algorithm_version="0", series_description="Inflammation", series_number=99)
    with xnat.connect(xnat_emulator.url, user="alice", password=TEST_USERS["alice"],
                      loglevel="WARNING") as connection:
        session = connection.projects[PROJECT].experiments["SESS3"]
        response = _put_seg(connection, session.id, "AI_PROPOSAL", seg_path.read_bytes())
        assert response.status_code == 200, response.text
        session.clearcache()
        assert session.assessors["AI_PROPOSAL"].collection_type == "SEG"
