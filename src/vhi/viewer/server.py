"""A loopback HTTP server for the cleaning station: OHIF's files, its config, a DICOMweb proxy.

* ``/app-config.js`` is the config :func:`vhi.viewer.ohif.app_config` wrote;
* ``/dicom-web/...`` is forwarded (GET, POST) to the site's DICOMweb root through the
  source's own HTTP session, so the site's credentials (environment or ``~/.netrc``) and
  TLS settings apply and the browser never sees them; the browser's ``Host`` is passed
  on, so a service that builds bulk-data URLs from it (Orthanc) points them back here;
* any other path is a file of the OHIF build, and a path that is no file and has no
  extension is the app's ``index.html`` (OHIF is a single-page app: ``/segmentation``...).

It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import mimetypes
import posixpath
import threading
import time
import urllib.parse
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

mimetypes.add_type("application/wasm", ".wasm")
PROXIED = "/dicom-web"
#: Request headers not passed upstream (hop-by-hop, or set by the proxy's session).
_DROP = {"host", "accept-encoding", "connection", "keep-alive", "authorization", "cookie",
         "content-length", "transfer-encoding", "proxy-authorization"}
_DROP_BACK = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


class _Handler(SimpleHTTPRequestHandler):
    station: StationServer

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("viewer %s", fmt % args)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith(PROXIED):
            return self._proxy()
        if path == "/app-config.js":
            return self._send(200, self.station.config_js.encode(), "application/javascript")
        local = Path(self.directory) / path.lstrip("/")
        if path == "/" or not local.exists():
            last = posixpath.basename(path)
            if "." not in last or last.endswith(".html"):
                self.path = "/index.html"
        return super().do_GET()

    def do_POST(self) -> None:
        if urllib.parse.urlsplit(self.path).path.startswith(PROXIED):
            return self._proxy()
        return self._send(405, b"method not allowed", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _proxy(self) -> None:
        import requests

        station = self.station
        tail = self.path[len(PROXIED):]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _DROP}
        headers["Host"] = self.headers.get("Host", "")
        # A GET is tried again on a dropped connection (a kept-alive connection the service
        # closed, or a moment of overload under the viewer's many parallel frame requests).
        attempts = 3 if self.command == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                answer = station.session.request(self.command, station.upstream + tail, data=body,
                                                 headers=headers, timeout=station.timeout_s)
                break
            except requests.ConnectionError as exc:
                if attempt < attempts:
                    time.sleep(0.2 * attempt)
                    continue
                error: Exception = exc
            except requests.RequestException as exc:
                error = exc
            log.warning("viewer proxy: %s %s: %s", self.command, tail[:120], type(error).__name__)
            return self._send(502, f"DICOMweb service unreachable ({type(error).__name__})".encode(),
                              "text/plain")
        if answer.status_code >= 400:
            log.warning("viewer proxy: %s %s: HTTP %d", self.command, tail[:120], answer.status_code)
        station.requests.append((self.command, tail, answer.status_code))
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in _DROP_BACK:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)


class StationServer:
    """OHIF at ``http://127.0.0.1:<port>/`` in front of one DICOMweb root; a context manager."""

    def __init__(self, dist: Path, upstream: str, session: Any, config_js: str, *, port: int = 0,
                 timeout_s: float = 120) -> None:
        self.dist = Path(dist)
        self.upstream = upstream.rstrip("/")
        self.session = session
        self.config_js = config_js
        self.timeout_s = timeout_s
        self.requests: list[tuple[str, str, int]] = []
        handler = type("Handler", (_Handler,), {"station": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(handler, directory=str(self.dist)))
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StationServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> StationServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
