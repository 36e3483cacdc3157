"""A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) on 127.0.0.1, started by the platform.

:class:`OrthancServer` writes the package's config template (``orthanc.json`` beside
this module: HTTP only, no DICOM port, no remote access, only the DICOMweb plugin) with
a free port and storage under a folder of the caller's choosing, starts ``Orthanc`` on
it, waits until it answers and stops it on exit. The local cleaning station keeps its
storage in the run's work folder so that what radiologists saved survives between
sessions of the station; the tests keep theirs in a temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from vhi.errors import ConfigError

log = logging.getLogger(__name__)

#: Where Debian's ``orthanc-dicomweb`` puts the plugin.
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: Seconds Orthanc may take to answer after start (it usually needs under 2).
START_TIMEOUT_S = 30


def orthanc_executable() -> str | None:
    return shutil.which("Orthanc")


def missing_orthanc() -> str | None:
    """Why Orthanc cannot be started here, or None."""
    if orthanc_executable() is None:
        return "Orthanc is not installed (Debian package `orthanc`)"
    if not DICOMWEB_PLUGIN.is_file():
        return f"the Orthanc DICOMweb plugin is not installed ({DICOMWEB_PLUGIN}; Debian `orthanc-dicomweb`)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """What the Orthanc child runs before exec so that it gets a SIGTERM when the station's
    process dies, even if it is killed outright: no Orthanc outlives its station (Linux
    ``prctl(PR_SET_PDEATHSIG)``; looked up here, in the parent, so the child only calls it)."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def config_template() -> dict:
    return json.loads(resources.files("vhi.viewer").joinpath("orthanc.json").read_text())


class OrthancServer:
    """One Orthanc process with its storage under ``folder``; a context manager.

    ``users`` (name -> password) turns on HTTP basic authentication (tests of
    credentials); by default it has none and listens on 127.0.0.1 only.
    """

    def __init__(self, folder: str | Path, users: dict[str, str] | None = None, *, port: int = 0,
                 name: str = "VHI") -> None:
        self.folder = Path(folder).absolute()
        self.users = dict(users or {})
        self.port = port or free_port()
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log_file(self) -> Path:
        return self.folder / "orthanc.log"

    def http(self) -> Any:
        """A :class:`requests.Session` for this Orthanc (its first user's credentials, no proxies)."""
        import requests

        session = requests.Session()
        session.trust_env = False
        if self.users:
            session.auth = next(iter(self.users.items()))
        return session

    def write_config(self) -> Path:
        config = config_template()
        config.update({"Name": self.name, "HttpPort": self.port,
                       "StorageDirectory": str(self.folder / "db"),
                       "IndexDirectory": str(self.folder / "db"),
                       "Plugins": [str(DICOMWEB_PLUGIN)]})
        if self.users:
            config.update({"AuthenticationEnabled": True, "RegisteredUsers": self.users})
        path = self.folder / "orthanc.json"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it may hold passwords
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(config, indent=2))
        return path

    def start(self) -> OrthancServer:
        import requests

        why = missing_orthanc()
        if why:
            raise ConfigError("Orthanc", f"{why}: scripts/install-system-packages.sh installs it")
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        with self.log_file.open("ab") as out:
            # in a session of its own, so a Ctrl-C at the terminal (SIGINT to the foreground
            # process group) reaches the station, which collects the last saves before it
            # stops Orthanc; it still dies with the station (PR_SET_PDEATHSIG)
            self.proc = subprocess.Popen([str(orthanc_executable()), str(config)], cwd=self.folder,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent())  # noqa: PLW1509 - one libc call
        deadline = time.monotonic() + START_TIMEOUT_S
        with self.http() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    tail = self.log_file.read_text(errors="replace")[-1500:]
                    self.proc = None
                    raise ConfigError("Orthanc", f"exited at start (storage {self.folder}; another "
                                                 f"station on the same storage?): {tail}")
                with contextlib.suppress(requests.RequestException):
                    if http.get(f"{self.url}/system", timeout=2).status_code == 200:
                        log.info("Orthanc on %s (storage %s)", self.url, self.folder)
                        return self
                time.sleep(0.1)
        self.stop()
        raise ConfigError("Orthanc", f"did not answer within {START_TIMEOUT_S} s (log {self.log_file})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
