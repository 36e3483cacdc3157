"""The HTTP(S) server and :class:`XnatEmulator`, its start/stop API for tests."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qsl, unquote, urlsplit

from . import seed
from .app import App
from .auth import AuthManager
from .behaviour import Behaviour
from .faults import FaultRule, FaultSet, LogEntry, RequestLog, sanitize_query
from .model import Experiment, Scan, Store
from .responses import Response, text
from .rest import Request

LOG = logging.getLogger(__name__)

MAX_BODY = 2 * 1024**3
CHUNK_LINE_LIMIT = 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: XnatEmulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _Server

    # ------------------------------------------------------------------ plumbing
    def handle(self) -> None:
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                LOG.info("TLS handshake failed: %s", exc)
                return
        try:
            super().handle()
        except (ConnectionError, ssl.SSLError) as exc:
            LOG.debug("connection ended: %s", exc)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests are logged by :meth:`_dispatch`, without query secrets."""

    def log_message(self, format: str, *args: object) -> None:
        LOG.debug("http: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(CHUNK_LINE_LIMIT)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(CHUNK_LINE_LIMIT) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("request body too large")
                parts.append(self.rfile.read(size))
                self.rfile.readline(CHUNK_LINE_LIMIT)
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self) -> None:
        emulator = self.server.emulator
        method = self.command.upper()
        split = urlsplit(self.path)
        path = unquote(split.path)
        try:
            body = self._read_body()
        except ValueError as exc:
            self._send(text(str(exc), 413), method)
            self.close_connection = True
            return
        rule = emulator.faults.take(method, path, split.query)
        user: str | None = None
        if rule is not None and rule.kind == "delay":
            time.sleep(rule.seconds)
        if rule is not None and rule.kind == "status":
            response = text(rule.body, rule.status)
            if rule.status == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="XNAT"'
        else:
            request = Request(
                method="GET" if method == "HEAD" else method,
                path=path,
                query=dict(parse_qsl(split.query, keep_blank_values=True)),
                body=body,
                content_type=self.headers.get("Content-Type", ""),
            )
            try:
                response, user = emulator.app(
                    request, self.headers.get("Authorization"), self.headers.get("Cookie")
                )
            except Exception:  # a bug in the emulator: answer 500 like a servlet container
                LOG.exception("emulator error on %s %s", method, path)
                response = text("Internal emulator error (see the test log).", 500)
        emulator.log.append(
            LogEntry(method=method, path=path, query=sanitize_query(split.query),
                     status=response.status, user=user,
                     fault=rule.kind if rule is not None else None)
        )
        self._send(response, method, rule)

    def _send(self, response: Response, method: str, rule: FaultRule | None = None) -> None:
        body = response.body
        declared = len(body)
        if rule is not None and rule.kind in ("drop", "truncate_zip"):
            body = body[: int(len(body) * rule.fraction)]
            if rule.kind == "truncate_zip":
                declared = len(body)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(declared))
        for name, value in response.headers.items():
            self.send_header(name, value)
        for cookie in response.cookies:
            self.send_header("Set-Cookie", cookie)
        if rule is not None and rule.kind == "drop":
            self.send_header("Connection", "close")
        self.end_headers()
        if rule is not None and rule.kind == "trickle" and method != "HEAD":
            try:
                for start in range(0, len(body), rule.chunk):
                    self.wfile.write(body[start:start + rule.chunk])
                    self.wfile.flush()
                    time.sleep(rule.seconds)
            except OSError as exc:  # the client gave up
                LOG.debug("trickle ended: %s", exc)
            self.close_connection = True
            return
        if method != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
        if rule is not None and rule.kind == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                LOG.debug("shutdown after dropped body: %s", exc)


class XnatEmulator:
    """A local XNAT (REST + ROI API) for tests.

    ``with XnatEmulator(tmp_path, users={"alice": "secret"}) as emu:`` starts it on a
    free port of 127.0.0.1 in a background thread; ``emu.url`` is its base URL.
    """

    def __init__(
        self,
        root: str | Path,
        users: dict[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        session_timeout: float = 3600.0,
        version: str = "1.8.10",
        behaviour: Behaviour | None = None,
    ) -> None:
        self.behaviour = behaviour or Behaviour.from_env()
        self.store = Store(Path(root))
        self.auth = AuthManager(users if users is not None else {"admin": "admin"},
                                session_timeout=session_timeout)
        self.app = App(self.store, self.auth, version=version, behaviour=self.behaviour)
        self.faults = FaultSet()
        self.log = RequestLog()
        self._host = host
        self._port = port
        self._certfile = certfile
        self._keyfile = keyfile
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> XnatEmulator:
        if self._server is not None:
            return self
        server = _Server((self._host, self._port), _Handler)
        server.emulator = self
        if self._certfile is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self._certfile), str(self._keyfile) if self._keyfile else None)
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"xnat-emulator-{self.port}", daemon=True,
        )
        self._thread.start()
        LOG.info("XNAT emulator listening on %s (state in %s)", self.url, self.store.root)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
        self.store.save()

    def __enter__(self) -> XnatEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._certfile is not None else "http"
        return f"{scheme}://{self._host}:{self.port}"

    # ------------------------------------------------------------------ test helpers
    def expire_sessions(self) -> None:
        """Invalidate every JSESSION: the next cookie-authenticated call gets 401."""
        self.auth.expire_all()

    @property
    def requests(self) -> list[LogEntry]:
        return self.log.entries

    def seed_session(
        self,
        project: str,
        subject: str,
        session: str,
        scans: dict[str, Path] | None = None,
        **kwargs: str,
    ) -> Experiment:
        """Create project/subject/session (as needed) and one DICOM scan per folder.

        ``scans`` maps a scan ID to a folder of .dcm files of one series.
        """
        with self.store.lock:
            result = seed.seed_session(self.store, project, subject, session, scans or {}, **kwargs)
            self.store.save()
            return result

    def add_dicom_scan(self, session_id: str, scan_id: str, dicom_dir: Path,
                       **kwargs: str) -> Scan:
        with self.store.lock:
            experiment = self.store.state.experiments[session_id]
            scan = seed.add_dicom_scan(self.store, experiment, scan_id, Path(dicom_dir), **kwargs)
            self.store.save()
            return scan
