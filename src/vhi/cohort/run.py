"""Which workflow run holds a work folder: the run marker ``work/.vhi/run.json``.

A run takes the marker when it starts (Snakemake's ``onstart``) and gives it back when it
ends (``onsuccess``/``onerror``). The marker is created whole in one step (a hard link of
a complete file, which fails when one exists), so of two runs starting at once exactly
one gets it. It names the run: process id and host, start time, config files, the working
directory and the plan file its jobs read (:mod:`vhi.cohort.plan`). A second run on the
same work folder is refused with those; ``vhi status`` reads them to tell running steps
from failed ones.

A marker left by a run that was killed outright (``kill -9``, a lost node) is stale: on
the same host its process is gone (or is another process, started later) and the next
run takes the marker over; from another host that cannot be seen, so the message says
which file to remove once that run is known to be gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vhi.errors import WorkFolderBusyError

log = logging.getLogger(__name__)

#: The folder under the work folder that holds the platform's own records of runs.
STATE_DIR = ".vhi"
MARKER = "run.json"


def marker_path(work: str | os.PathLike[str]) -> Path:
    return Path(work, STATE_DIR, MARKER)


def _process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, Linux ``/proc``); "" unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]  # field 22 of stat(5), after the command


@dataclass(frozen=True)
class RunMarker:
    """One run that holds (or held) a work folder."""

    pid: int
    host: str
    started: str  # ISO 8601, UTC
    config: tuple[str, ...]  # the config files of the run
    cwd: str  # the run's working directory (Snakemake's --directory)
    plan: str  # the plan file its jobs read, relative to the marker's folder
    process_start: str = ""  # see _process_start: tells a reused pid from the run's

    @classmethod
    def this_process(cls, config: Sequence[str], plan: str) -> RunMarker:
        pid = os.getpid()
        return cls(pid=pid, host=socket.gethostname(), started=datetime.now(UTC).isoformat(),
                   config=tuple(str(c) for c in config), cwd=str(Path.cwd()), plan=plan,
                   process_start=_process_start(pid))

    def alive(self) -> bool | None:
        """True while the run's process is running, False once it is gone, None when that
        cannot be seen from here (the run's host is another one)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process of that pid: alive, if it is the run
            pass
        return not (self.process_start and _process_start(self.pid) not in ("", self.process_start))

    def describe(self) -> str:
        config = ", ".join(self.config) or "?"
        return (f"pid {self.pid} on {self.host}, started {self.started}, config {config}, "
                f"working directory {self.cwd}")


def read_marker(work: str | os.PathLike[str]) -> RunMarker | None:
    """The marker of the run that holds ``work`` (running or stale); None when there is none."""
    path = marker_path(work)
    try:
        data = json.loads(path.read_text())
        data["config"] = tuple(data.get("config") or ())
        return RunMarker(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("%s: unreadable run marker (%s): taken as no run", path, exc)
        return None


def active_run(work: str | os.PathLike[str]) -> RunMarker | None:
    """The run that holds ``work`` now: alive, or on another host (cannot be told); None when
    no run holds it or its marker is stale."""
    marker = read_marker(work)
    return marker if marker is not None and marker.alive() is not False else None


def refuse_if_held(work: str | os.PathLike[str]) -> None:
    """Raise :class:`WorkFolderBusyError` naming the run that holds ``work``, if one does."""
    marker = active_run(work)
    if marker is None or (marker.pid == os.getpid() and marker.host == socket.gethostname()):
        return
    how = ("it is running" if marker.alive() else
           f"it may still be running there; if it is not, remove {marker_path(work)}")
    raise WorkFolderBusyError(work, f"another run uses this work folder ({marker.describe()}); {how}. "
                               "Two runs on one work folder would delete each other's temporary "
                               "scans: wait for it to finish, or give this config its own work_dir")


def claim(work: str | os.PathLike[str], marker: RunMarker) -> None:
    """Take the work folder for the run ``marker`` describes, or raise :class:`WorkFolderBusyError`
    naming the run that holds it. A stale marker (its process gone) is taken over."""
    path = marker_path(work)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{MARKER}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(marker), fh, indent=2)
            fh.write("\n")
        for _ in range(2):
            try:
                os.link(tmp, path)  # fails when a marker exists: one run wins
                return
            except FileExistsError:
                pass
            refuse_if_held(work)
            stale = read_marker(work)
            log.warning("%s: taking over the marker of a run that is gone (%s)", path,
                        stale.describe() if stale else "unreadable")
            path.unlink(missing_ok=True)
        refuse_if_held(work)
        raise WorkFolderBusyError(work, f"cannot take the run marker {path}")
    finally:
        Path(tmp).unlink(missing_ok=True)


def release(work: str | os.PathLike[str], marker: RunMarker) -> None:
    """Give the work folder back, if ``marker``'s run still holds it."""
    held = read_marker(work)
    if held is not None and (held.pid, held.host, held.started) == (marker.pid, marker.host,
                                                                     marker.started):
        with contextlib.suppress(FileNotFoundError):
            marker_path(work).unlink()


def summary(marker: RunMarker | None) -> dict[str, Any] | None:
    """The marker for ``vhi status --json``: who runs, and whether it is seen alive."""
    if marker is None:
        return None
    alive = marker.alive()
    return {**asdict(marker), "config": list(marker.config),
            "alive": "unknown (another host)" if alive is None else alive}
