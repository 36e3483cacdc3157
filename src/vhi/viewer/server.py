"""The station's web server: the ASGI app (:mod:`vhi.viewer.app`) under uvicorn.

:class:`StationServer` binds its socket when made (so a port of 0 is known at once),
serves from a thread (``start``/``stop``, or a context manager) and stops on request;
the command that runs it keeps its main thread for signals. It listens on 127.0.0.1
unless told otherwise; with ``tls=(cert, key)`` it speaks HTTPS only, and its cookies
are then sent over HTTPS only. Binding any other address without TLS is allowed (a
reverse proxy that terminates TLS in front of it) but warned about loudly.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vhi.errors import ConfigError
from vhi.viewer.access import Access
from vhi.viewer.app import Station, create_app
from vhi.viewer.dicomweb_routes import ROOT

log = logging.getLogger(__name__)

PROXIED = ROOT
LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def station_names(host: str, public_urls: tuple[str, ...] = ()) -> frozenset[str]:
    """The names the station answers to (checked against ``Host``, so that a page of another
    site cannot reach it through DNS rebinding): its address, ``localhost`` names on
    loopback, the machine's names when on every address, and the public URLs' hosts."""
    names = {host, *(urlsplit(u).hostname or "" for u in public_urls)}
    if is_loopback(host):
        names |= {"127.0.0.1", "localhost", "::1"}
    if host in ("0.0.0.0", "::"):  # noqa: S104 - the names of this machine, for the check only
        names |= {socket.gethostname(), socket.getfqdn(), "127.0.0.1", "localhost"}
    return frozenset(n.lower() for n in names if n)


def station_origins(names: frozenset[str], scheme: str, port: int,
                    public_urls: tuple[str, ...] = ()) -> frozenset[str]:
    """The origins of the station's own pages: its names on its port, and the public URLs'."""
    origins = {f"{scheme}://{n if ':' not in n else f'[{n}]'}:{port}" for n in names}
    for url in public_urls:
        parts = urlsplit(url)
        origins.add(f"{parts.scheme}://{parts.netloc}".lower())
    return frozenset(origins)


class StationServer:
    """The station on ``host:port`` in front of one DICOMweb root; a context manager."""

    def __init__(self, dist: Path | None, upstream: str, session: Any, config_js: str, access: Access, *,
                 host: str = LOOPBACK, port: int = 0, timeout_s: float = 120,
                 tls: tuple[Path, Path] | None = None, public_urls: tuple[str, ...] = (),
                 on_stored: Any = None) -> None:
        if tls is not None:
            for path in tls:
                if not Path(path).is_file():
                    raise ConfigError("--tls-cert/--tls-key", f"{path} is not a file")
        elif not is_loopback(host):
            log.warning("!! the station listens on %s WITHOUT TLS: passwords and patient images cross "
                        "the network in clear text. Give --tls-cert/--tls-key, or put it behind a "
                        "reverse proxy that terminates TLS and bind it to 127.0.0.1 !!", host)
        self.host = host
        self.tls = tls
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise ConfigError("--host/--port", f"cannot listen on {host}:{port} ({exc.strerror})") from None
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        self.station = Station(dist=Path(dist) if dist else None, upstream=upstream.rstrip("/"), http=session,
                               config_js=config_js, access=access, timeout_s=timeout_s,
                               hostnames=(names := station_names(host, public_urls)),
                               origins=station_origins(names, "https" if tls else "http", self.port,
                                                       public_urls),
                               https=tls is not None, on_stored=on_stored)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104
        return f"{scheme}://{host}:{self.port}"

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """(method, DICOMweb path, status) of the last requests proxied (tests, diagnostics)."""
        return list(self.station.requests)

    def start(self) -> StationServer:
        import uvicorn

        options: dict[str, Any] = {"log_level": "warning", "access_log": False, "lifespan": "off",
                                   "server_header": False, "proxy_headers": False,
                                   "timeout_graceful_shutdown": 5}
        if self.tls:
            options.update(ssl_certfile=str(self.tls[0]), ssl_keyfile=str(self.tls[1]))
        self._server = uvicorn.Server(uvicorn.Config(create_app(self.station), **options))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]},
                                        name="vhi-station", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.05)
        if not self._server.started:
            raise ConfigError("vhi viewer", "the station's web server did not start (see the log)")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.sock.close()

    def __enter__(self) -> StationServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
