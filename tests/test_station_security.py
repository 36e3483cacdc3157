"""The station's proxy is no open proxy: each hostile request of [reliability-2] item 1 is
refused, through the real station server in front of a real Orthanc with credentials.

Seen before the fix: ``/dicom-web/../tools/shutdown`` (also ``%2e%2e``, ``..%2f``) reached
Orthanc's REST API with the proxy's credentials (a SEG injected, Orthanc shut down, a
study created); a ``text/plain`` POST was accepted (cross-site forms can send it); any
``Host`` was served (DNS rebinding); no request needed to be signed in.
"""

from __future__ import annotations

import http.client
import json

import pytest
import requests

from vhi.config.load import load_config_file
from vhi.viewer.access import SingleUser
from vhi.viewer.dicomweb_routes import Refused, parse
from vhi.viewer.station import station_for

from support.env import unset_env
from support.orthanc import Orthanc, needs_orthanc
from support.viewer import multipart, reader_seg, synthetic_series, token_session

USER, CANARY = "vhi-robot", "CANARY-station-5e1f"
STUDY = "1.2.826.0.1.3680043.8.498.100"


# ----------------------------------------------------------------------------- routes (no server)
@pytest.mark.parametrize("path", [
    "/dicom-web/../tools/shutdown", "/dicom-web/%2e%2e/tools/shutdown", "/dicom-web/..%2ftools/shutdown",
    "/dicom-web/studies/..%2F..%2Ftools%2Fshutdown", "/dicom-web//tools/shutdown",
    "/dicom-web/tools/shutdown", "/dicom-web/servers", "/dicom-web/studies/1.2;x",
    "/dicom-web/studies/.hidden",
    "/dicom-web/studies/1.2/series/3.4/instances/5.6/file", "/dicom-web/studies/1.2/archive",
    "/dicom-web/studies/1.2/series/3.4/instances/5.6/bulk/../../x", "/dicom-web\\..\\tools",
    "/dicom-web/studies/1.2%2F..", "/dicom-web/studies/abc",
])
def test_anything_but_a_dicomweb_route_is_refused(path):
    with pytest.raises(Refused) as refused:
        parse("GET", path)
    assert refused.value.status in (403, 404)


def test_the_dicomweb_routes_are_rebuilt_from_their_parts():
    s, se, i = "1.2.3", "1.2.3.4", "1.2.3.4.5"
    assert parse("GET", "/dicom-web/studies").kind == "qido"
    assert parse("GET", "/dicom-web/studies/").path == "studies"
    route = parse("GET", f"/dicom-web/studies/{s}/series/{se}/instances/{i}/frames/1,2")
    assert (route.kind, route.study_uid, route.series_uid, route.sop_uid) == ("wado", s, se, i)
    metadata = f"studies/{s}/series/{se}/metadata"
    assert parse("GET", f"/dicom-web/{metadata}").path == metadata
    assert parse("GET", f"/dicom-web/studies/{s}/series/{se}/instances/{i}/bulk/7fe00010").kind == "wado"
    assert parse("GET", f"/dicom-web/studies/{s}/series").kind == "qido"
    assert parse("POST", "/dicom-web/studies").kind == "stow"
    assert parse("POST", f"/dicom-web/studies/{s}").study_uid == s
    for method, path in (("POST", f"/dicom-web/studies/{s}/series"), ("DELETE", f"/dicom-web/studies/{s}"),
                         ("PUT", "/dicom-web/studies")):
        with pytest.raises(Refused):
            parse(method, path)


# ----------------------------------------------------------------------------- through the server
def _raw(server, method: str, path: str, *, cookie: str = "", host: str | None = None,
         body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    """One request with the path exactly as written (no client normalises it)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host or f"127.0.0.1:{server.port}")
    if cookie:
        conn.putheader("Cookie", cookie)
    for key, value in (headers or {}).items():
        conn.putheader(key, value)
    conn.putheader("Content-Length", str(len(body or b"")))
    conn.endheaders(body or b"")
    answer = conn.getresponse()
    data = answer.read()
    conn.close()
    return answer.status, data


@pytest.fixture
def dist(tmp_path):
    folder = tmp_path / "dist"
    folder.mkdir()
    (folder / "index.html").write_text("<html>OHIF</html>")
    (folder / "app-config.js").write_text("window.config = {};")
    return folder


@needs_orthanc
def test_hostile_requests_are_refused_and_orthanc_is_untouched(tmp_path, dist, monkeypatch):
    unset_env(monkeypatch, "DICOMWEB_USER", "DICOMWEB_PASS", "DICOMWEB_TOKEN")
    monkeypatch.setenv("DICOMWEB_USER", USER)
    monkeypatch.setenv("DICOMWEB_PASS", CANARY)
    monkeypatch.chdir(tmp_path)
    series = synthetic_series(tmp_path / "mr", STUDY)
    with Orthanc(tmp_path / "orthanc", users={USER: CANARY}) as orthanc:
        orthanc.upload(series)
        rest = orthanc.rest()
        before = rest.get(f"{orthanc.url}/statistics", timeout=10).json()
        config = tmp_path / "config.yaml"
        config.write_text(json.dumps({"sites": [{"name": "C", "source": {
            "type": "dicomweb", "url": orthanc.dicomweb}}]}))
        access = SingleUser(list)
        server, _ = station_for(load_config_file(config), access, dist=dist)
        with server:
            base = server.url
            anonymous = requests.Session()
            anonymous.trust_env = False
            # nothing without signing in: the proxy (401), pages (to the sign-in), a POST (401)
            assert anonymous.get(f"{base}/dicom-web/studies", timeout=10).status_code == 401
            page = anonymous.get(f"{base}/segmentation?StudyInstanceUIDs={STUDY}", timeout=10,
                                 allow_redirects=False)
            assert page.status_code == 303 and page.headers["location"].startswith("/signin?next=")
            assert anonymous.get(f"{base}/auth?token=wrong", timeout=10).status_code == 401
            assert _raw(server, "GET", "/dicom-web/../tools/shutdown")[0] == 401
            # the printed URL signs the browser in: a signed, HttpOnly, SameSite=Strict cookie
            client = token_session(access.signin_url(base))
            cookie = client.cookies.get("vhi_station")
            [set_cookie] = [c for c in client.cookies if c.name == "vhi_station"]
            assert set(set_cookie._rest) == {"httponly", "samesite"}
            assert set_cookie._rest["samesite"] == "strict"
            assert set_cookie.expires is not None and not set_cookie.secure  # plain HTTP on loopback
            signed = f"vhi_station={cookie}"
            [study] = client.get(f"{base}/dicom-web/studies", timeout=10).json()
            assert study["0020000D"]["Value"] == [STUDY]
            assert CANARY not in client.get(f"{base}/app-config.js", timeout=10).text

            # signed in, every path outside the DICOMweb routes is refused, as sent
            for method, path in (
                    ("POST", "/dicom-web/../tools/shutdown"), ("POST", "/dicom-web/%2e%2e/tools/shutdown"),
                    ("POST", "/dicom-web/..%2ftools/shutdown"), ("GET", "/dicom-web/../system"),
                    ("POST", "/dicom-web/../instances"), ("GET", "/dicom-web/..%2f..%2fpatients"),
                    ("DELETE", f"/dicom-web/studies/{STUDY}"), ("GET", "/dicom-web/servers"),
                    ("POST", "/dicom-web/servers/x/stow"), ("GET", "/dicom-web/tools/shutdown")):
                status, _ = _raw(server, method, path, cookie=signed, body=b"x")
                assert status in (403, 405), (method, path, status)
            assert rest.get(f"{orthanc.url}/system", timeout=10).status_code == 200  # not shut down
            # a cross-site form's text/plain POST, another origin, another Host: refused
            seg = reader_seg(series, tmp_path)
            body, stow_type = multipart(seg)
            assert _raw(server, "POST", "/dicom-web/studies", cookie=signed, body=seg,
                        headers={"Content-Type": "text/plain"})[0] == 415
            assert _raw(server, "POST", "/dicom-web/studies", cookie=signed, body=body,
                        headers={"Content-Type": stow_type, "Origin": "http://evil.example"})[0] == 403
            assert _raw(server, "GET", "/dicom-web/studies", cookie=signed, host="evil.example:80")[0] == 421
            assert _raw(server, "GET", "/", cookie=signed, host=f"rebind.example:{server.port}")[0] == 421
            # only SEGs are stored, and only into their own study
            mr_body, mr_type = multipart(series[0].read_bytes())
            assert _raw(server, "POST", "/dicom-web/studies", cookie=signed, body=mr_body,
                        headers={"Content-Type": mr_type})[0] == 403
            assert _raw(server, "POST", "/dicom-web/studies/1.2.3", cookie=signed, body=body,
                        headers={"Content-Type": stow_type})[0] == 403
            after = rest.get(f"{orthanc.url}/statistics", timeout=10).json()
            assert after["CountInstances"] == before["CountInstances"] == len(series)
            # what OHIF does: a STOW-RS of a SEG, same origin, is stored
            status, _ = _raw(server, "POST", "/dicom-web/studies", cookie=signed, body=body,
                             headers={"Content-Type": stow_type, "Origin": base})
            assert status == 200
            stored = rest.get(f"{orthanc.url}/statistics", timeout=10).json()["CountInstances"]
            assert stored == len(series) + 1
            # signing out ends the session on the server: the old cookie is worthless
            assert client.post(f"{base}/signout", timeout=10, allow_redirects=False).status_code == 303
            assert _raw(server, "GET", "/dicom-web/studies", cookie=signed)[0] == 401
        assert all(path.startswith("/") and ".." not in path for _, path, _ in server.requests)
