"""A real Orthanc (Debian `orthanc` + `orthanc-dicomweb`) for the tests, on 127.0.0.1.

:class:`Orthanc` is the package's launcher (:class:`vhi.viewer.orthanc.OrthancServer`:
the config template shipped with the package, a free port, only the DICOMweb plugin)
with storage in the test's folder and, optionally, HTTP basic-auth users, plus the
tests' helpers to store and read DICOM through Orthanc's REST API. :class:`FaultProxy`
is a small loopback proxy in front of it that injects faults (an HTTP status, a
connection dropped mid-answer, an answer that trickles) into chosen requests.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
import requests

from vhi.viewer.orthanc import OrthancServer, free_port, missing_orthanc

needs_orthanc = pytest.mark.skipif(
    missing_orthanc() is not None,
    reason=f"{missing_orthanc()} (scripts/install-system-packages.sh installs Debian's "
           "`orthanc` and `orthanc-dicomweb`)")

__all__ = ["FaultProxy", "Orthanc", "free_port", "needs_orthanc", "running_orthanc", "seed_demo"]


class Orthanc(OrthancServer):
    """The package's Orthanc launcher (:mod:`vhi.viewer.orthanc`) with the tests' helpers;
    ``config``: further Orthanc options (e.g. ``{"LimitFindResults": 2}``)."""

    def __init__(self, folder: str | Path, users: dict[str, str] | None = None, *,
                 config: dict | None = None, **kwargs: object) -> None:
        super().__init__(folder, users, **kwargs)  # type: ignore[arg-type]
        self.config = dict(config or {})

    def write_config(self) -> Path:
        path = super().write_config()
        if self.config:
            import json
            import os

            merged = {**json.loads(path.read_text()), **self.config}
            path.unlink()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(merged, indent=2))
        return path

    def version(self) -> str:
        return str(self.rest().get(f"{self.url}/system", timeout=10).json()["Version"])

    def rest(self) -> requests.Session:
        """A session for Orthanc's own REST API (as the first registered user, if any)."""
        return self.http()

    # ------------------------------------------------------------------ data
    def upload(self, files: Iterable[Path], **attributes: str) -> list[str]:
        """Store DICOM files through the REST API (POST /instances); their Orthanc ids.

        ``attributes`` (keyword -> value, e.g. ``AccessionNumber``) are set on each file's
        dataset before it is sent.
        """
        ids = []
        with self.rest() as session:
            for path in files:
                data = Path(path).read_bytes()
                if attributes:
                    ds = pydicom.dcmread(io.BytesIO(data))
                    for keyword, value in attributes.items():
                        setattr(ds, keyword, value)
                    buffer = io.BytesIO()
                    ds.save_as(buffer, enforce_file_format=True)
                    data = buffer.getvalue()
                answer = session.post(f"{self.url}/instances", data=data, timeout=60)
                answer.raise_for_status()
                ids.append(answer.json()["ID"])
        return ids

    def series_of_study(self, study_uid: str) -> list[dict]:
        """QIDO-RS series rows of a study (DICOM JSON)."""
        answer = self.rest().get(f"{self.dicomweb}/studies/{study_uid}/series", timeout=30)
        answer.raise_for_status()
        return answer.json()

    def instance_file(self, study_uid: str, series_uid: str) -> list[bytes]:
        """The stored files of a series (Orthanc's REST API, by its own lookup)."""
        with self.rest() as session:
            found = session.post(f"{self.url}/tools/find", json={
                "Level": "Instance", "Query": {"StudyInstanceUID": study_uid,
                                               "SeriesInstanceUID": series_uid}}, timeout=30).json()
            return [session.get(f"{self.url}/instances/{i}/file", timeout=30).content for i in found]


@contextlib.contextmanager
def running_orthanc(folder: Path, users: dict[str, str] | None = None) -> Iterator[Orthanc]:
    with Orthanc(folder, users) as orthanc:
        yield orthanc


# ----------------------------------------------------------------------------- fault proxy
@dataclass
class Fault:
    """Requests matching ``method`` and ``path`` (regex) get ``status``, are dropped mid-answer,
    or trickle: the answer's headers at once, then its body ``chunk`` bytes every ``trickle_s``
    seconds (a server that never stalls long enough for a read timeout)."""

    method: str
    path: str
    status: int = 500
    drop: bool = False
    trickle_s: float = 0.0
    chunk: int = 64
    count: int = 1000
    hits: int = 0


@dataclass
class FaultProxy:
    """A loopback HTTP proxy to ``upstream`` (host:port) that injects :class:`Fault` s.

    ``qido_page``: answer every QIDO-RS search with at most that many results, and the
    standard's ``Warning: 299`` when more can be requested (a PACS that pages, as
    dcm4chee does); with ``ignore_offset`` it answers the first page whatever the offset.
    """

    upstream_port: int
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    qido_page: int = 0
    ignore_offset: bool = False

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _fault(self) -> Fault | None:
                with proxy.lock:
                    for fault in proxy.faults:
                        if (fault.method == self.command and re.search(fault.path, self.path)
                                and fault.hits < fault.count):
                            fault.hits += 1
                            return fault
                return None

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = self._fault()
                if fault is not None and not (fault.drop or fault.trickle_s):
                    data = b"injected fault"
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    proxy.log.append((self.command, self.path, fault.status))
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "accept-encoding", "connection")}
                path, paged = self.path, self._paged()
                if paged is not None:
                    path = re.sub(r"([?&])limit=\d+", rf"\g<1>limit={proxy.qido_page + 1}", path)
                    if proxy.ignore_offset:
                        path = re.sub(r"([?&])offset=\d+", r"\g<1>offset=0", path)
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                try:
                    conn.request(self.command, path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                more = False
                if paged is not None and answer.status == 200:
                    rows = json.loads(data or b"[]")
                    more = len(rows) > proxy.qido_page
                    data = json.dumps(rows[:proxy.qido_page]).encode()
                proxy.log.append((self.command, self.path, answer.status))
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                if more:
                    self.send_header("Warning", '299 127.0.0.1 "There are additional results that '
                                                'can be requested"')
                self.send_header("Content-Length", str(len(data)))
                if fault is not None and fault.trickle_s:
                    self.end_headers()
                    with contextlib.suppress(OSError):  # the client gave up
                        for start in range(0, len(data), fault.chunk):
                            self.wfile.write(data[start:start + fault.chunk])
                            self.wfile.flush()
                            time.sleep(fault.trickle_s)
                    self.close_connection = True
                    return
                if fault is not None:  # drop: half the answer, then the connection goes away
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.end_headers()
                self.wfile.write(data)

            def _paged(self) -> str | None:
                """The search of a QIDO-RS request this proxy pages, else None."""
                if not (proxy.qido_page and self.command == "GET" and "limit=" in self.path):
                    return None
                match = re.search(r"/(studies|series|instances)\?", self.path)
                return match.group(1) if match else None

            do_GET = do_POST = do_PUT = do_DELETE = _forward  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, method: str, path: str, **kwargs: object) -> Fault:
        fault = Fault(method, path, **kwargs)  # type: ignore[arg-type]
        with self.lock:
            self.faults.append(fault)
        return fault


# ----------------------------------------------------------------------------- demo data
def seed_demo(orthanc: Orthanc, data_dir: Path, work: Path, scan_ids: Iterable[str], *,
              drop_stir_instance: Iterable[str] = ()) -> dict[str, dict]:
    """Demo sessions (site A's series layout, tests/xnat_emulator/demo.py) stored in Orthanc,
    their session id as AccessionNumber; per session: subject, study, T1W series, STIR series
    and its SOP Instance UIDs in slice order. ``drop_stir_instance``: scan ids whose STIR is stored
    without its third instance."""
    from xnat_emulator.demo import DEMO_SESSIONS, build_demo_series

    drop = set(drop_stir_instance)
    seeded = {}
    for scan_id in scan_ids:
        number, timepoint = DEMO_SESSIONS[scan_id]
        session = f"{scan_id}_{timepoint}"
        folders, uids, study = build_demo_series(data_dir, work, "A", scan_id)
        for scan, folder in folders.items():
            files = sorted(folder.glob("*.dcm"))
            if scan == "3" and scan_id in drop:
                files = [f for f in files if f.name != "IM_0003.dcm"]
            orthanc.upload(files, AccessionNumber=session)
        stir_files = sorted(folders["3"].glob("IM_*.dcm"))  # IM_{k+1}: slice k (support.dicom_series)
        seeded[session] = {"subject": f"VHIA{number:02d}", "study": study, "t1w_series": uids["2"],
                           "stir_series": uids["3"],
                           "sops": [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                                    for f in stir_files]}
    return seeded
