"""Load once, segment many, across processes: a segmentation worker per job.

Every ``segment_disease_region`` job of the workflow is one ``vhi segment --worker``
process for one session (its own outputs, sidecar and log; a bad scan fails alone).
Instead of loading the U-Net ensemble itself (seconds on a CPU, far longer with a CUDA
start on a GPU), the process asks a worker that holds the ensemble: the first job of a
batch (a SLURM group job of N sessions, or a local run) starts it, the next ones reuse
it, and it exits after ``$VHI_WORKER_IDLE_S`` (30) seconds without a request, or with
the job (it is not a session of its own: a SLURM step's end or Ctrl-C stops it).

One worker per (SLURM job or host, run id, bundle, device, batch size, vhi version,
models folder, Python): a worker never serves another run, model or version. It
listens on a Unix socket in a folder private to the user (``$XDG_RUNTIME_DIR`` or the
temporary folder, ``vhi-<uid>/``); it binds the socket only once the ensemble is loaded,
so a socket that accepts is a worker that is ready. A lock file makes concurrent first
jobs start one worker. Requests are served one at a time (one model, one device), each
with the scan's own error: the worker stays up after a bad scan. The protocol is one
JSON line each way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import vhi
from vhi.errors import InputError, VhiError
from vhi.provenance import RUN_VARIABLES
from vhi.settings import models_dir

log = logging.getLogger(__name__)

#: Seconds a worker waits for the next request before it exits (``$VHI_WORKER_IDLE_S``).
DEFAULT_IDLE_S = 30.0
IDLE_VARIABLE = "VHI_WORKER_IDLE_S"
#: How a worker process is started (``vhi segment-worker`` follows).
WORKER_COMMAND = [sys.executable, "-m", "vhi.cli"]
#: Seconds a client waits for a new worker to load the ensemble (a CUDA start included).
START_TIMEOUT_S = 600.0


class WorkerError(VhiError):
    """The worker could not be started or stopped answering (not a problem of the scan)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"segmentation worker: {self.message}"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is loaded with; equal specs share one worker."""

    bundle: str
    device: str
    batch_size: int | None

    def key(self) -> str:
        scope = {
            **asdict(self),
            "job": os.environ.get("SLURM_JOB_ID") or socket.gethostname(),
            "run": os.environ.get(RUN_VARIABLES["run_id"], ""),
            "version": vhi.__version__,
            "models": str(models_dir()),
            "python": sys.executable,
        }
        return hashlib.sha256(json.dumps(scope, sort_keys=True).encode()).hexdigest()[:20]


def runtime_dir() -> Path:
    """A folder only this user can enter, for worker sockets, locks and logs."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    folder = Path(base) / f"vhi-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise WorkerError(f"{folder} must be owned by this user and private (mode 700)")
    return folder


@dataclass(frozen=True)
class WorkerPaths:
    socket: Path
    lock: Path
    log: Path

    @classmethod
    def for_spec(cls, spec: WorkerSpec) -> WorkerPaths:
        base = runtime_dir() / f"segment-{spec.key()}"
        return cls(Path(f"{base}.sock"), Path(f"{base}.lock"), Path(f"{base}.log"))


# ----------------------------------------------------------------------------- client side
def segment_with_worker(spec: WorkerSpec, t1w: Path, out: Path, *,
                        started: datetime | None = None) -> dict[str, Any]:
    """Segment one scan through the worker of ``spec`` (started if none runs).

    Returns the worker's answer: the scan's sidecar and the worker's pid, device note and
    how many scans it has served. A scan the model refuses raises :class:`InputError`.
    """
    request = {"t1w": str(Path(t1w).resolve()), "out": str(Path(out).resolve()),
               "started": (started or datetime.now(UTC)).isoformat()}
    paths = WorkerPaths.for_spec(spec)
    for attempt in range(2):  # a worker that exits (idle) as we connect is started afresh
        with _connect_or_start(spec, paths) as conn:
            conn.sendall((json.dumps(request) + "\n").encode())
            line = _read_line(conn)
        if line:
            break
        log.warning("the worker closed the connection without an answer (attempt %d, see %s)",
                    attempt + 1, paths.log)
    else:
        raise WorkerError(f"no answer for {t1w} (see {paths.log}):\n{_tail(paths.log)}")
    answer = json.loads(line)
    if not answer.get("ok"):
        raise InputError(answer.get("what") or t1w, answer.get("cause", "segmentation failed"))
    return answer


def _read_line(conn: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)


def _try_connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        if exc.errno in {errno.ENOENT, errno.ECONNREFUSED}:
            return None
        raise WorkerError(f"cannot connect to {path}: {exc}") from exc
    return sock


@contextlib.contextmanager
def _connect_or_start(spec: WorkerSpec, paths: WorkerPaths) -> Iterator[socket.socket]:
    conn = _try_connect(paths.socket)
    if conn is None:
        with paths.lock.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one starter; the others then find it ready
            conn = _try_connect(paths.socket) or _start(spec, paths)
    try:
        yield conn
    finally:
        conn.close()


def _start(spec: WorkerSpec, paths: WorkerPaths) -> socket.socket:
    paths.socket.unlink(missing_ok=True)  # a dead worker's socket
    command = [*WORKER_COMMAND, "--no-progress", "segment-worker",
               "--socket", str(paths.socket), "--bundle", spec.bundle, "--device", spec.device,
               "--idle-timeout", os.environ.get(IDLE_VARIABLE) or str(DEFAULT_IDLE_S)]
    if spec.batch_size:
        command += ["--batch-size", str(spec.batch_size)]
    with paths.log.open("a") as log_file:
        # Not a session of its own: the worker stays inside the job (a SLURM group job's
        # step, a terminal's Ctrl-C), and ends with it.
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT)
    log.info("started segmentation worker pid %d (%s, log %s)", proc.pid, spec.device, paths.log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        conn = _try_connect(paths.socket)
        if conn is not None:
            return conn
        if proc.poll() is not None:
            raise WorkerError(f"exited with status {proc.returncode} before it was ready:\n"
                              f"{_tail(paths.log)}")
        time.sleep(0.1)
    proc.kill()
    raise WorkerError(f"not ready after {START_TIMEOUT_S:.0f} s:\n{_tail(paths.log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------- worker side
def serve(socket_path: Path, spec: WorkerSpec, idle_s: float = DEFAULT_IDLE_S) -> int:
    """Load the ensemble, then answer requests until ``idle_s`` pass without one."""
    from vhi import api

    loading = time.monotonic()
    ensemble = api.load_ensemble(spec.bundle, device=spec.device, batch_size=spec.batch_size)
    load_s = time.monotonic() - loading
    state = {"pid": os.getpid(), "device": str(ensemble.device),
             "device_note": ensemble.device_note, "load_s": round(load_s, 3), "scans": 0}
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = socket_path.with_name(f".{socket_path.name}.{os.getpid()}")
    bound.unlink(missing_ok=True)
    server.bind(str(bound))
    server.listen(64)
    bound.replace(socket_path)  # ready: a client that connects is served
    inode = socket_path.stat().st_ino
    server.settimeout(idle_s)
    log.info("worker %d: %s loaded on %s in %.1f s; serving %s", os.getpid(), spec.bundle,
             ensemble.device, load_s, socket_path)
    try:
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                break
            with conn:
                conn.settimeout(None)
                _answer(conn, ensemble, state)
    finally:
        # Only our own socket: a newer worker may have replaced a stale one.
        with contextlib.suppress(OSError):
            if socket_path.stat().st_ino == inode:
                socket_path.unlink()
        server.close()
    log.info("worker %d: idle for %.0f s after %d scans; exiting", os.getpid(), idle_s, state["scans"])
    return 0


def _answer(conn: socket.socket, ensemble: Any, state: dict[str, Any]) -> None:
    from vhi import api

    try:
        request = json.loads(_read_line(conn))
        t1w, out = Path(request["t1w"]), Path(request["out"])
        started = datetime.fromisoformat(request["started"])
    except (ValueError, KeyError, TypeError) as exc:
        answer: dict[str, Any] = {"ok": False, "what": "request", "cause": f"bad request: {exc}"}
    else:
        try:
            sidecar = api.segment(t1w, out, ensemble=ensemble, started=started)
        except InputError as exc:
            log.error("%s", exc)
            answer = {"ok": False, "what": exc.what, "cause": exc.cause}
        except VhiError as exc:
            log.error("%s", exc)
            answer = {"ok": False, "what": str(t1w), "cause": str(exc)}
        except Exception as exc:  # one scan's failure must not end the worker
            log.exception("%s: unexpected error", t1w)
            answer = {"ok": False, "what": str(t1w),
                      "cause": f"unexpected error {type(exc).__name__}: {exc} (traceback in the "
                               "segmentation worker's log)"}
        else:
            state["scans"] += 1
            answer = {"ok": True, "sidecar": sidecar, **state}
            log.info("%s: %d voxels -> %s", t1w.name, sidecar["voxels"], out)
    with contextlib.suppress(OSError):  # the client may have been killed meanwhile
        conn.sendall((json.dumps(answer, default=str) + "\n").encode())
