"""The station in readers mode, without a browser: sign-in, worklists, per-reader access to
studies (pages and DICOMweb), the record of every save; in front of a real Orthanc.

The browser test (two readers over HTTPS, OHIF) is tests/test_readers_browser.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path

import pydicom
import pytest
import requests

from vhi.cli.viewer import station_access
from vhi.config.load import load_config_file
from vhi.readers.store import Assignment, ReadersStore, utc_iso
from vhi.viewer.station import station_for

from support.orthanc import Orthanc, needs_orthanc
from support.viewer import multipart, reader_seg, synthetic_series

PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}
STUDIES = {"C/P1/S1": "1.2.826.0.1.3680043.8.498.201", "C/P2/S2": "1.2.826.0.1.3680043.8.498.202",
           "C/P3/S3": "1.2.826.0.1.3680043.8.498.203"}
#: S1 is alice's, S2 bob's, S3 a double read (alice first, bob second).
ASSIGNED = [("C/P1/S1", "alice", "first"), ("C/P2/S2", "bob", "first"),
            ("C/P3/S3", "alice", "first"), ("C/P3/S3", "bob", "second")]


def _receipt(work: Path, key: str, study: str) -> None:
    folder = work / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pushed.json").write_text(json.dumps({
        "source": "dicomweb", "session": key, "seg": {"study_uid": study, "series_uid": study + ".9",
                                                      "sop_uid": study + ".9.1"},
        "viewer_path": f"/segmentation?StudyInstanceUIDs={study}",
        "pushed_at": utc_iso("2026-12-01T10:00:00")}))


def _sign_in(base: str, reader: str, password: str) -> tuple[requests.Session, requests.Response]:
    client = requests.Session()
    client.trust_env = False
    answer = client.post(f"{base}/signin", data={"reader": reader, "password": password, "next": "/"},
                         headers={"Origin": base}, timeout=10, allow_redirects=False)
    return client, answer


def _sop_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture
def dist(tmp_path):
    folder = tmp_path / "dist"
    folder.mkdir()
    (folder / "index.html").write_text("<html>OHIF</html>")
    (folder / "app-config.js").write_text("window.config = {};")
    return folder


@needs_orthanc
def test_readers_reach_only_their_sessions_and_every_save_is_recorded(tmp_path, dist, monkeypatch):
    monkeypatch.chdir(tmp_path)
    series = {key: synthetic_series(tmp_path / key.replace("/", "_"), study)
              for key, study in STUDIES.items()}
    with Orthanc(tmp_path / "orthanc") as orthanc:
        for files in series.values():
            orthanc.upload(files)
        config = tmp_path / "config.yaml"
        config.write_text(json.dumps({
            "readers": [{"id": "alice", "name": "Dr Alice", "sites": ["C"]},
                        {"id": "bob", "name": "Dr Bob", "sites": ["C"]}],
            "sites": [{"name": "C", "double_read": 0.5,
                       "source": {"type": "dicomweb", "url": orthanc.dicomweb}}]}))
        settings = load_config_file(config)
        work = Path(settings.work_dir)
        with ReadersStore.open(work) as store:
            for reader, password in PASSWORDS.items():
                store.set_password(reader, password)
            store.add_assignments([Assignment(key, "C", reader, role, STUDIES[key],
                                              f"/segmentation?StudyInstanceUIDs={STUDIES[key]}",
                                              utc_iso("2026-12-01T10:00:00"), utc_iso("2026-12-15T10:00:00"),
                                              "test") for key, reader, role in ASSIGNED], by="test")
        for key, study in STUDIES.items():
            _receipt(work, key, study)
        access, recorder = station_access(settings, ["C"], [])
        assert access.mode == "readers"
        server, _ = station_for(settings, access, "C", dist=dist, on_stored=recorder)
        with server:
            base = server.url
            # signed out, nothing: pages go to the sign-in, the proxy answers 401
            anonymous = requests.Session()
            anonymous.trust_env = False
            home = anonymous.get(f"{base}/", timeout=10, allow_redirects=False)
            assert home.headers["location"] == "/signin?next=%2F"
            alices = STUDIES["C/P1/S1"]
            assert anonymous.get(f"{base}/dicom-web/studies/{alices}/series", timeout=10).status_code == 401
            assert anonymous.get(f"{base}/auth?token=x", timeout=10).status_code == 401  # no token mode here
            _, wrong = _sign_in(base, "alice", "bob-secret-22")
            assert wrong.status_code == 401 and "wrong password" in wrong.text
            _, unknown = _sign_in(base, "mallory", "whatever-1")
            assert unknown.status_code == 401

            alice, answer = _sign_in(base, "alice", PASSWORDS["alice"])
            assert answer.status_code == 303 and answer.headers["location"] == "/"
            assert "samesite=strict" in answer.headers["set-cookie"].lower()
            bob, _ = _sign_in(base, "bob", PASSWORDS["bob"])
            page = alice.get(f"{base}/", timeout=10).text
            assert "Worklist of Dr Alice" in page and "0 of 2 sessions saved" in page
            assert "C/P1/S1" in page and "C/P3/S3" in page and "C/P2/S2" not in page

            # alice cannot open bob's session, by page or by DICOMweb URL; the search hides it
            refused = alice.get(f"{base}/open/C/P2/S2", timeout=10, allow_redirects=False)
            assert refused.status_code == 403 and "not assigned to you" in refused.text
            bobs = STUDIES["C/P2/S2"]
            assert alice.get(f"{base}/dicom-web/studies/{bobs}/series", timeout=10).status_code == 403
            assert alice.get(f"{base}/dicom-web/studies/{bobs}/metadata", timeout=10).status_code == 403
            found = alice.get(f"{base}/dicom-web/studies", timeout=10).json()
            assert {r["0020000D"]["Value"][0] for r in found} == {STUDIES["C/P1/S1"], STUDIES["C/P3/S3"]}
            by_patient = alice.get(f"{base}/dicom-web/studies?PatientID=P2", timeout=10).json()
            assert by_patient == []
            opened = alice.get(f"{base}/open/C/P1/S1", timeout=10, allow_redirects=False)
            assert opened.status_code == 303 and opened.headers["location"].endswith(STUDIES["C/P1/S1"])
            assert alice.get(f"{base}/dicom-web/studies/{alices}/series", timeout=10).status_code == 200

            # a save into alice's study is recorded; one into bob's refused
            seg = reader_seg(series["C/P1/S1"], tmp_path, voxels=12)
            body, kind = multipart(seg)
            stored = alice.post(f"{base}/dicom-web/studies", data=body, timeout=30,
                                headers={"Content-Type": kind, "Origin": base})
            assert stored.status_code == 200, stored.text
            body_b, kind_b = multipart(reader_seg(series["C/P2/S2"], tmp_path))
            assert alice.post(f"{base}/dicom-web/studies", data=body_b, timeout=30,
                              headers={"Content-Type": kind_b, "Origin": base}).status_code == 403

            # bob opens his session; the data manager moves it to alice, who sees bob's open
            assert bob.get(f"{base}/open/C/P2/S2", timeout=10, allow_redirects=False).status_code == 303
            assert bob.get(f"{base}/open/C/P3/S3", timeout=10, allow_redirects=False).status_code == 303
            with ReadersStore.open(work) as store:
                store.reassign("C/P2/S2", "bob", "alice", "bob is away", by="data manager")
            page = alice.get(f"{base}/", timeout=10).text
            assert "C/P2/S2" in page and "opened by Dr Bob since" in page
            assert "1 of 3 sessions saved" in page
            assert page.count("opened by") == 1  # never for the double read (S3)
            assert bob.get(f"{base}/open/C/P2/S2", timeout=10, allow_redirects=False).status_code == 403
            # signing out ends alice's session
            assert alice.post(f"{base}/signout", headers={"Origin": base}, timeout=10,
                              allow_redirects=False).status_code == 303
            assert alice.get(f"{base}/dicom-web/studies", timeout=10).status_code == 401

        # the save deleted from the service is stored again from the station's copy, byte for byte
        rest = orthanc.rest()
        [found] = rest.post(f"{orthanc.url}/tools/lookup", data=_sop_of(seg), timeout=10).json()
        assert rest.get(f"{orthanc.url}/instances/{found['ID']}/file", timeout=10).content == seg
        assert rest.delete(f"{orthanc.url}/instances/{found['ID']}", timeout=10).status_code == 200
        restored = subprocess.run(["vhi", "restore", "C/P1/S1", "--config", str(config)], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=120, check=False)
        assert restored.returncode == 0, restored.stderr[-2000:]
        assert restored.stdout.split("\t")[-1].strip() == "restored"
        [back] = rest.post(f"{orthanc.url}/tools/lookup", data=_sop_of(seg), timeout=10).json()
        assert rest.get(f"{orthanc.url}/instances/{back['ID']}/file", timeout=10).content == seg
        again = subprocess.run(["vhi", "restore", "C/P1/S1", "--config", str(config)], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0 and again.stdout.split("\t")[-1].strip() == "present"

    with ReadersStore.open(work) as store:
        [save] = store.saves()
        assert (save.session_key, save.reader, save.source) == ("C/P1/S1", "alice", "station")
        assert save.proposal == STUDIES["C/P1/S1"] + ".9.1"  # the proposal it answers
        assert save.sha256 == hashlib.sha256(seg).hexdigest()
        assert store.blob_path(save.blob).read_bytes() == seg
        assert [c.reader for c in store.claims("C/P3/S3")] == ["bob"]
    for text in (p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.suffix in
                 (".log", ".json", ".csv", ".yaml")):
        assert not any(pw in text for pw in PASSWORDS.values())


def test_xnat_readers_sign_in_with_their_xnat_account_and_open_xnat_s_viewer(tmp_path, monkeypatch):
    """An XNAT site's station: no viewer, no proxy; XNAT checks the password; the worklist's
    link opens the session in XNAT's OHIF viewer."""
    from vhi.viewer.server import StationServer
    from vhi.viewer.xnat_accounts import XnatReadersAccess

    from xnat_emulator.server import XnatEmulator

    monkeypatch.chdir(tmp_path)
    with XnatEmulator(tmp_path / "xnat", users={"alice": "alice-xnat-pw", "bob": "bob-xnat-pw"}) as xnat:
        config = tmp_path / "config.yaml"
        config.write_text(json.dumps({
            "readers": [{"id": "alice", "name": "Dr Alice", "sites": ["X"]}],
            "sites": [{"name": "X", "source": {"type": "xnat", "server": xnat.url, "project": "P"}}]}))
        settings = load_config_file(config)
        viewer = f"{xnat.url}/VIEWER/?subjectId=S1&projectId=P&experimentId=XNAT_E1&experimentLabel=E1"
        with ReadersStore.open(settings.work_dir) as store:
            store.add_assignments([Assignment("X/S1/E1", "X", "alice", "first", "", viewer,
                                              utc_iso("2026-12-01T10:00:00"), utc_iso("2026-12-15T10:00:00"),
                                              "test")], by="test")
            access = XnatReadersAccess(settings, settings.site("X"), store)
            assert not store.has_account("alice")  # XNAT's account, not the station's
            with StationServer(None, "", None, "", access) as server:
                base = server.url
                assert _sign_in(base, "alice", "wrong")[1].status_code == 401
                assert _sign_in(base, "bob", "bob-xnat-pw")[1].status_code == 401  # not a reader here
                alice, answer = _sign_in(base, "alice", "alice-xnat-pw")
                assert answer.status_code == 303
                assert "X/S1/E1" in alice.get(f"{base}/", timeout=10).text
                opened = alice.get(f"{base}/open/X/S1/E1", timeout=10, allow_redirects=False)
                assert opened.status_code == 303 and opened.headers["location"] == viewer
                assert alice.get(f"{base}/dicom-web/studies", timeout=10).status_code == 404
            assert [c.reader for c in store.claims("X/S1/E1")] == ["alice"]
        logins = [e for e in xnat.requests if e.path == "/data/services/auth"]
        assert [e.status for e in logins] == [401, 200]  # bob is no reader: XNAT is not even asked
