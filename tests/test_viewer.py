"""vhi.viewer without a browser: the written OHIF config, the station server and its proxy, the fetch.

The station's proxy is checked against a real Orthanc with basic auth: the browser side
sends no credentials, the proxy adds the site's from the environment.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tarfile

import pytest
import requests

from vhi.config.load import load_config_file
from vhi.errors import ConfigError
from vhi.viewer import ohif
from vhi.viewer.access import SingleUser
from vhi.viewer.station import awaiting_cleaning, station_for

from support.env import unset_env
from support.orthanc import Orthanc, needs_orthanc
from support.viewer import announced_links, announced_url, token_session

USER, CANARY = "vhi-robot", "CANARY-station-93b1"


def test_app_config_sets_the_station_after_the_shipped_config():
    js = ohif.app_config("window.config = {name: 'shipped', dataSources: []};")
    assert js.startswith("window.config = {name: 'shipped'")
    settings = json.loads(js.split("Object.assign(window.config, ", 1)[1].split(");\n", 1)[0])
    [source] = settings["dataSources"]
    assert settings["defaultDataSourceName"] == source["sourceName"] == "vhi"
    conf = source["configuration"]
    assert conf["qidoRoot"] == conf["wadoRoot"] == "/dicom-web"  # same origin: no CORS, no credentials
    assert conf["segmentation"]["store"] == {"defaultMode": "bitmap",
                                             "transferSyntaxUID": "1.2.840.10008.1.2.1"}
    assert settings["investigationalUseDialog"] == {"option": "never"}
    assert "shownTours" in js


@pytest.fixture
def dist(tmp_path):
    folder = tmp_path / "dist"
    folder.mkdir()
    (folder / "index.html").write_text("<html>OHIF</html>")
    (folder / "app-config.js").write_text("window.config = {};")
    (folder / "codec.wasm").write_bytes(b"\0asm")
    return folder


@needs_orthanc
def test_station_serves_ohif_and_proxies_with_the_sites_credentials(tmp_path, dist, monkeypatch):
    unset_env(monkeypatch, "DICOMWEB_USER", "DICOMWEB_PASS", "DICOMWEB_TOKEN")
    monkeypatch.setenv("DICOMWEB_USER", USER)
    monkeypatch.setenv("DICOMWEB_PASS", CANARY)
    monkeypatch.chdir(tmp_path)
    with Orthanc(tmp_path / "orthanc", users={USER: CANARY}) as orthanc:
        config = tmp_path / "config.yaml"
        config.write_text(json.dumps({"sites": [{"name": "C", "source": {
            "type": "dicomweb", "url": orthanc.dicomweb}}]}))
        settings = load_config_file(config)
        assert awaiting_cleaning(settings, "C") == []
        access = SingleUser(list)
        server, site = station_for(settings, access, dist=dist)
        anonymous = requests.Session()
        anonymous.trust_env = False
        assert anonymous.get(f"{orthanc.dicomweb}/studies", timeout=10).status_code == 401
        with server:
            assert site.name == "C"
            plain = token_session(access.signin_url(server.url))
            page = plain.get(f"{server.url}/segmentation?StudyInstanceUIDs=1.2.3", timeout=10)
            assert page.status_code == 200 and page.text == "<html>OHIF</html>"  # single-page app
            config_js = plain.get(f"{server.url}/app-config.js", timeout=10).text
            assert "Object.assign(window.config" in config_js and CANARY not in config_js
            wasm = plain.get(f"{server.url}/codec.wasm", timeout=10)
            assert wasm.headers["Content-Type"] == "application/wasm"
            studies = plain.get(f"{server.url}/dicom-web/studies", timeout=10)
            assert studies.status_code == 200 and studies.json() == []
            assert plain.get(f"{server.url}/missing.js", timeout=10).status_code == 404
        assert server.requests == [("GET", "/studies", 200)]
    with pytest.raises(ConfigError, match="no DICOMweb site"):
        station_for(load_config_file(_local_config(tmp_path)), SingleUser(list), dist=dist)


def _local_config(tmp_path):
    path = tmp_path / "local.yaml"
    path.write_text(json.dumps({"sites": [{"name": "L", "source": {"type": "local", "root": "."}}]}))
    return path


def test_fetch_refuses_a_tarball_with_another_digest(tmp_path, monkeypatch):
    """npm (a stand-in here) gives a tarball whose sha256 is not the pinned one: nothing unpacked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    package = tmp_path / "package" / "dist"
    package.mkdir(parents=True)
    (package / "index.html").write_text("tampered")
    with tarfile.open(tmp_path / "ohif-app-3.13.2.tgz", "w:gz") as archive:
        archive.add(tmp_path / "package", arcname="package")
    npm = bin_dir / "npm"
    npm.write_text(f"#!/bin/sh\ncp {tmp_path}/ohif-app-3.13.2.tgz .\n"
                   "echo '[{\"filename\": \"ohif-app-3.13.2.tgz\"}]'\n")
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match=r"ohif-app-3.13.2.tgz has sha256 [0-9a-f]{64}, expected "
                                          f"{ohif.OHIF_SHA256}: not unpacked"):
        ohif.fetch_ohif(cache)
    assert not ohif.ohif_root(cache).exists() and not ohif.is_fetched(cache)


def test_viewer_command_needs_a_config():
    result = subprocess.run(["vhi", "viewer"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "--config is required" in result.stderr


@needs_orthanc
@pytest.mark.skipif(not ohif.is_fetched(), reason="OHIF not fetched (`make setup`)")
def test_viewer_command_serves_until_stopped(tmp_path):
    with Orthanc(tmp_path / "orthanc") as orthanc:
        config = tmp_path / "config.yaml"
        config.write_text(json.dumps({"sites": [{"name": "C", "source": {
            "type": "dicomweb", "url": orthanc.dicomweb}}]}))
        proc = subprocess.Popen(["vhi", "viewer", "--config", str(config), "--port", "0"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line, url = announced_url(proc, "site C")
            assert "0 sessions await cleaning" in line
            links = announced_links(proc, 0)
            assert links["worklist"].startswith(f"{url}/auth?token=")
            assert requests.get(f"{url}/segmentation", timeout=10, allow_redirects=False).status_code == 303
            browser = token_session(links["worklist"])
            page = browser.get(f"{url}/segmentation", timeout=10)
            assert page.status_code == 200 and "<html" in page.text.lower()
            config_js = browser.get(f"{url}/app-config.js", timeout=10).text
            assert '"defaultMode": "bitmap"' in config_js
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_the_station_listens_where_the_report_links() -> None:
    from vhi.cli.viewer import station_port

    assert station_port(None, "http://127.0.0.1:8000") == 8000
    assert station_port(None, "http://127.0.0.1:8042/") == 8042
    assert station_port(None, "http://station.example") == 8000
    assert station_port(0, "http://127.0.0.1:8042") == 0  # --port wins
