"""A real single-node SLURM cluster for tests, started from the Debian packages in a temporary folder.

Everything the cluster owns lives under one folder: its own munge key and ``munged`` (socket, pid,
log and seed files), ``slurm.conf``, the controller's state, the node's spool, logs and pid files.
Ports are picked free on loopback, so it never collides with a site cluster or a second test run.
The node is this host (``hostname -s``) with 2 CPUs, in two partitions on the same node: ``cpu``
(default) and ``gpu``. The node declares one GPU as a generic resource (``GresTypes=gpu``, node
``Gres=gpu:1``, ``gres.conf`` with ``AutoDetect=off`` and ``File=/dev/null``): there is no real GPU,
but a job's ``--gres=gpu:1`` is scheduled, accounted (``gres/gpu`` in its TRES) and visible in
``scontrol show job``, as on a GPU cluster; jobs that ask for it run one at a time.

Accounting as real clusters have it: ``slurmdbd`` with a MariaDB server of the cluster's own
(``mariadb-install-db`` into the folder, ``mariadbd`` on a free loopback port, a random password
for slurmdbd's database user), so ``sacct`` reports every job, and the executor plugin's default
status check (``sacct``) is the one tested. ``squeue`` stays usable (``MinJobAge=300`` s keeps
finished jobs in the controller), the documented fallback for clusters without accounting.

Inside a job, snakemake-executor-plugin-slurm-jobstep (0.6.1) runs the rule through ``srun`` with
every ``SLURM_*`` variable but the job's ids removed, SLURM_CONF included (upstream issue
snakemake-executor-plugin-slurm#164), so that ``srun`` finds the configuration only where a site's
clients do: /etc/slurm/slurm.conf or, on a configless cluster, ``/run/slurm/conf/slurm.conf`` (the
link slurmd makes to its config cache). The cluster makes that link to its own config folder while it
runs, the one thing it puts outside its folder, and only where neither path exists (it removes the
link on teardown); otherwise ``nested_srun_reason`` says why workflow jobs cannot run here.

Use the session fixture ``slurm_cluster`` (import ``slurm_cluster_fixture`` into a test module)
or ``SlurmCluster`` as a context manager. The daemons are stopped on teardown even when a test fails.
Needs root (slurmd runs jobs as their submitting user) and the binaries of ``slurm-wlm`` and ``munge``
(``scripts/install-system-packages.sh``); otherwise the fixture skips and says why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scancel", "scontrol", "sacct", "sacctmgr",
           "mariadb-install-db", "mariadb")
NODE_GPUS = 1
NODE_CPUS = 2
MIN_JOB_AGE_S = 300  # SLURM's default; the plugin's squeue status check needs >= 3 × its poll interval
START_TIMEOUT_S = 60.0
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
FOLDER_PREFIX = "vhi-slurm-"  # the cluster's folder, under the temporary folder
CONFIGLESS_LINK = Path("/run/slurm/conf")  # where clients look after SLURM_CONF and SYSTEM_CONF
STOP_TIMEOUT_S = 20.0

# Executor settings for `snakemake --executor slurm` against this cluster (profile keys; the CLI
# options are the same with a leading --): the plugin's default status check (sacct, against the
# accounting database); no account (the test cluster has no associations); a short first poll;
# SLURM logs kept for the tests to read.
SNAKEMAKE_SLURM_SETTINGS = {
    "slurm-no-account": True,
    "slurm-init-seconds-before-status-checks": 2,
    "slurm-keep-successful-logs": True,
}


#: The states of a job that has not ended (squeue's and sacct's names).
ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"})


def _left_by_a_killed_test_cluster(link: Path) -> bool:
    """``link`` is a dangling link into a test cluster's folder (a session killed before its
    teardown): safe to replace, nothing else can be reading it."""
    if not link.is_symlink() or link.exists():
        return False
    target = link.readlink()
    return target.parent.name.startswith(FOLDER_PREFIX) and \
        target.parent.parent == Path(tempfile.gettempdir())


class SlurmUnavailableError(RuntimeError):
    """The machine cannot run a test cluster (missing binaries, not root)."""


class SlurmStartError(RuntimeError):
    """A daemon did not come up; the message carries the log tails."""


def unavailable_reason() -> str | None:
    """Why a test cluster cannot be started here, or None if it can."""
    missing = [b for b in (*DAEMONS, "munge", *CLIENTS) if shutil.which(b) is None and not _sbin(b)]
    if missing:
        return (f"SLURM/munge/MariaDB binaries not found: {', '.join(missing)} (install slurm-wlm, "
                "munge, slurmdbd and mariadb-server: scripts/install-system-packages.sh)")
    if os.geteuid() != 0:
        return "a test SLURM cluster needs root (slurmd runs jobs as their owner)"
    return None


def _sbin(name: str) -> str | None:
    for folder in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def _exe(name: str) -> str:
    path = shutil.which(name) or _sbin(name)
    if path is None:
        raise SlurmUnavailableError(f"{name} not found")
    return path


def _free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on this host (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _memory_mb() -> int:
    with Path("/proc/meminfo").open() as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise SlurmUnavailableError("cannot read MemTotal from /proc/meminfo")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return f"--- {path.name} (last {lines} lines):\n" + "\n".join(text[-lines:])


def _session_pids(sid: int) -> list[int]:
    """Processes whose session id is `sid` (the daemons run in sessions of their own)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


class SlurmCluster:
    """One controller and one node on this host, all state under `root`; a context manager."""

    def __init__(self, root: Path, *, cluster_name: str = "vhitest") -> None:
        self.root = Path(root)
        self.cluster_name = cluster_name
        self.node = subprocess.run(["hostname", "-s"], capture_output=True, text=True,
                                   check=True, timeout=10).stdout.strip()
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.munge_key = self.root / "munge" / "munge.key"
        self.logs = self.root / "log"
        self.ctld_port, self.slurmd_port, self.dbd_port, self.db_port = _free_ports(4)
        self.db_socket = self.root / "db" / "mariadb.sock"
        self.real_memory_mb = max(512, int(_memory_mb() * 0.9))
        self._procs: dict[str, subprocess.Popen] = {}
        self._linked = self._made_run_dir = False
        self.nested_srun_reason: str | None = "the cluster is not running"

    # ------------------------------------------------------------------ environment
    @property
    def env(self) -> dict[str, str]:
        """The environment for SLURM client commands (and anything that calls them)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, args: Sequence[str], *, timeout: float = 30, check: bool = True,
            **kwargs) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster."""
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=check, **kwargs)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise SlurmUnavailableError(reason)
        for sub in ("etc", "munge", "state", "spool", "log", "run", "db"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # munged insists that every folder above its socket is searchable by all, and that
        # the key is private to its owner.
        for folder in (self.root, self.root / "munge"):
            folder.chmod(0o755)
        self._start_munged()
        self._write_conf()
        self._start_accounting()
        self._start_daemon("slurmctld")
        self._wait_for(self._controller_up, "slurmctld to answer `scontrol ping`")
        self._start_daemon("slurmd", "-N", self.node)
        self._wait_for(self._node_idle, f"node {self.node} to be idle in sinfo")
        self.nested_srun_reason = self._link_configless_cache()
        log.info("SLURM test cluster up: SLURM_CONF=%s", self.conf)

    def _start_munged(self) -> None:
        # Always a key and a daemon of our own: /etc/munge/munge.key (if any) and the system
        # socket are left alone, and a site's munged is never touched.
        self.munge_key.write_bytes(secrets.token_bytes(1024))
        self.munge_key.chmod(0o600)
        munge_dir = self.munge_key.parent
        self._procs["munged"] = subprocess.Popen(
            [_exe("munged"), "--foreground", f"--key-file={self.munge_key}",
             f"--socket={self.munge_socket}", f"--pid-file={munge_dir / 'munged.pid'}",
             f"--log-file={self.logs / 'munged.log'}", f"--seed-file={munge_dir / 'munged.seed'}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=(self.logs / "munged.stderr").open("w"), start_new_session=True)
        self._wait_for(self._munge_ok, "munged to answer on its socket")

    def _munge_ok(self) -> bool:
        self._check_alive("munged")
        if not self.munge_socket.exists():
            return False
        cred = subprocess.run([_exe("munge"), "-S", str(self.munge_socket), "-n"],
                              capture_output=True, timeout=10, check=False)
        if cred.returncode != 0:
            return False
        back = subprocess.run([_exe("unmunge"), "-S", str(self.munge_socket)], input=cred.stdout,
                              capture_output=True, timeout=10, check=False)
        return back.returncode == 0

    def _start_accounting(self) -> None:
        """MariaDB and slurmdbd of the cluster's own, and the cluster registered in them."""
        data = self.root / "db" / "data"
        install = subprocess.run(
            [_exe("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--user=root",
             "--auth-root-authentication-method=socket", "--skip-test-db", "--skip-name-resolve"],
            capture_output=True, text=True, timeout=120, check=False)
        if install.returncode != 0:
            raise SlurmStartError(f"mariadb-install-db failed:\n{install.stdout}{install.stderr}")
        self._procs["mariadbd"] = subprocess.Popen(
            [_exe("mariadbd"), "--no-defaults", f"--datadir={data}", "--user=root",
             f"--socket={self.db_socket}", f"--port={self.db_port}", "--bind-address=127.0.0.1",
             f"--pid-file={self.root / 'run' / 'mariadbd.pid'}",
             f"--log-error={self.logs / 'mariadbd.log'}", "--skip-name-resolve", "--skip-log-bin",
             "--innodb-buffer-pool-size=32M"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self._wait_for(self._db_up, "mariadbd to answer on its socket")
        password = secrets.token_hex(16)
        self._sql(f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                  "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
        dbd_conf = self.conf.parent / "slurmdbd.conf"
        dbd_conf.touch(mode=0o600)  # slurmdbd refuses a config others can read (the password)
        dbd_conf.write_text("\n".join([
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}",
            "DbdHost=localhost", f"DbdPort={self.dbd_port}", "SlurmUser=root",
            f"PidFile={self.root / 'run' / 'slurmdbd.pid'}", f"LogFile={self.logs / 'slurmdbd.log'}",
            "DebugLevel=info", "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1", f"StoragePort={self.db_port}", "StorageUser=slurm",
            f"StoragePass={password}", "StorageLoc=slurm_acct_db"]) + "\n")
        self._procs["slurmdbd"] = subprocess.Popen(
            [_exe("slurmdbd"), "-D"], env=self.env, stdin=subprocess.DEVNULL,
            stdout=(self.logs / "slurmdbd.stdout").open("w"), stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.root)
        self._wait_for(self._dbd_up, "slurmdbd to answer sacctmgr")
        self.run(["sacctmgr", "-i", "add", "cluster", self.cluster_name], timeout=30)

    def _sql(self, statements: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([_exe("mariadb"), "--no-defaults", "-S", str(self.db_socket), "-u", "root",
                               "-e", statements], capture_output=True, text=True, timeout=30, check=True)

    def _db_up(self) -> bool:
        self._check_alive("mariadbd")
        if not self.db_socket.exists():
            return False
        try:
            self._sql("SELECT 1")
        except subprocess.CalledProcessError:
            return False
        return True

    def _dbd_up(self) -> bool:
        self._check_alive("slurmdbd")
        return self.run(["sacctmgr", "-n", "show", "cluster"], check=False, timeout=10).returncode == 0

    def _write_conf(self) -> None:
        r = self.root
        plugstack = self.conf.parent / "plugstack.conf"
        plugstack.write_text("")  # keep /etc/slurm/plugstack.conf(.d) out of it
        lines = [
            f"ClusterName={self.cluster_name}",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.logs / 'slurmctld.log'}",
            f"SlurmdLogFile={self.logs / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"PlugStackConfig={plugstack}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=localhost",
            f"AccountingStoragePort={self.dbd_port}",
            # With MUNGE, the "password" to slurmdbd is the munged socket to use (ours).
            f"AccountingStoragePass={self.munge_socket}",
            "AccountingStorageTRES=gres/gpu",
            "JobAcctGatherType=jobacct_gather/none",
            "GresTypes=gpu",
            "JobCompType=jobcomp/none",
            # Finished jobs stay visible to squeue this long: the plugin's status check.
            f"MinJobAge={MIN_JOB_AGE_S}",
            "ReturnToService=2",
            # A job the node can never hold (more CPUs or memory than it has) is refused at
            # submission instead of pending forever.
            "EnforcePartLimits=ALL",
            # Jobs that give no --mem must not take the whole node's memory.
            "DefMemPerCPU=500",
            # The node reports what is configured here, not the hardware (a smaller test node).
            "SlurmdParameters=config_overrides",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} "
            f"RealMemory={self.real_memory_mb} Gres=gpu:{NODE_GPUS} State=UNKNOWN",
            f"PartitionName=cpu Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            # Same node: the GPU partition exists so `slurm_partition: gpu` is honoured.
            f"PartitionName=gpu Nodes={self.node} MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        # One GPU that is not there: scheduled and accounted, never opened by a job.
        (self.conf.parent / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={self.node} Name=gpu File=/dev/null\n")

    def _link_configless_cache(self) -> str | None:
        """Make /run/slurm/conf point at our config folder; None, or why jobs' srun cannot find it."""
        if SYSTEM_CONF.exists():
            return (f"{SYSTEM_CONF} exists: srun inside jobs (where the jobstep plugin drops "
                    "SLURM_CONF) would talk to that cluster, not the test cluster")
        if _left_by_a_killed_test_cluster(CONFIGLESS_LINK):
            log.warning("removing %s: it points at %s, a test cluster's folder that is gone",
                        CONFIGLESS_LINK, CONFIGLESS_LINK.readlink())
            CONFIGLESS_LINK.unlink()
        if CONFIGLESS_LINK.exists() or CONFIGLESS_LINK.is_symlink():
            return (f"{CONFIGLESS_LINK} exists (a configless slurmd on this host?): srun inside "
                    "jobs would read it, not the test cluster's config")
        try:
            if not CONFIGLESS_LINK.parent.exists():
                CONFIGLESS_LINK.parent.mkdir(parents=True)
                self._made_run_dir = True
            CONFIGLESS_LINK.symlink_to(self.conf.parent, target_is_directory=True)
        except OSError as exc:
            return f"cannot link {CONFIGLESS_LINK} to the test cluster's config: {exc}"
        self._linked = True
        return None

    def _unlink_configless_cache(self) -> None:
        if self._linked and CONFIGLESS_LINK.is_symlink() and \
                CONFIGLESS_LINK.readlink() == self.conf.parent:
            CONFIGLESS_LINK.unlink()
        if self._made_run_dir:
            with contextlib.suppress(OSError):  # only if empty: a slurmd may have started since
                CONFIGLESS_LINK.parent.rmdir()
        self._linked = self._made_run_dir = False

    def _start_daemon(self, name: str, *args: str) -> None:
        self._procs[name] = subprocess.Popen(
            [_exe(name), "-D", "-f", str(self.conf), *args],
            env=self.env, stdin=subprocess.DEVNULL,
            stdout=(self.logs / f"{name}.stdout").open("w"), stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.root)

    def _check_alive(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise SlurmStartError(f"{name} exited with status {proc.returncode}\n{self.diagnostics()}")

    def _controller_up(self) -> bool:
        self._check_alive("slurmctld")
        return self.run(["scontrol", "ping"], check=False, timeout=10).returncode == 0

    def _node_idle(self) -> bool:
        self._check_alive("slurmctld")
        self._check_alive("slurmd")
        out = self.run(["sinfo", "--noheader", "-N", "-o", "%N %t"], check=False, timeout=10)
        states = {line.split()[1] for line in out.stdout.splitlines() if line.split()[:1] == [self.node]}
        return bool(states) and states <= {"idle"}

    def _wait_for(self, ready, what: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.3)
        raise SlurmStartError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.diagnostics()}")

    def diagnostics(self) -> str:
        """Log tails of every daemon and the current node state, for error messages."""
        parts = [_tail(self.logs / f) for f in
                 ("munged.log", "munged.stderr", "mariadbd.log", "slurmdbd.log", "slurmdbd.stdout",
                  "slurmctld.log", "slurmctld.stdout", "slurmd.log", "slurmd.stdout")]
        parts = [p for p in parts if p]
        if self.conf.exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                parts.append("--- sinfo:\n" + self.run(["sinfo", "-N", "-l"], check=False, timeout=5).stdout)
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (and whatever they left behind)."""
        self.nested_srun_reason = "the cluster is not running"
        if self._procs.get("slurmctld") and self._procs["slurmctld"].poll() is None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.run(["scancel", "--full", f"--user={os.getuid()}"], check=False, timeout=10)
                deadline = time.monotonic() + STOP_TIMEOUT_S / 2
                while time.monotonic() < deadline:
                    out = self.run(["squeue", "--noheader", "-t", "PD,R,CG,CF,S"],
                                   check=False, timeout=10)
                    if out.returncode != 0 or not out.stdout.strip():
                        break
                    time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            proc = self._procs.pop(name, None)
            if proc is None:
                continue
            # Each daemon leads a session of its own; slurmd's holds the slurmstepds and jobs.
            self._signal_session(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S / 2)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM; killing it", name, proc.pid)
                proc.kill()
                proc.wait(timeout=5)
            self._signal_session(proc.pid, signal.SIGKILL)
        self._unlink_configless_cache()

    @staticmethod
    def _signal_session(sid: int, sig: signal.Signals) -> None:
        for pid in _session_pids(sid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    # ------------------------------------------------------------------ job helpers
    def sbatch(self, *args: str, cwd: Path | None = None) -> str:
        """Submit a batch job (`sbatch --parsable ARGS`) and return its job id."""
        out = self.run(["sbatch", "--parsable", *args], cwd=cwd)
        return out.stdout.strip().split(";")[0]

    def accounting(self, *args: str, timeout: float = 60) -> list[dict[str, str]]:
        """Jobs as the accounting database has them (``sacct -X``; one row per job, no steps),
        once it has every one of them ended: slurmctld tells slurmdbd of a job's end a moment
        after squeue shows it, longer on a busy machine."""
        fields = ("JobIDRaw", "JobName", "Partition", "State", "AllocTRES", "ExitCode")
        deadline = time.monotonic() + timeout
        while True:
            out = self.run(["sacct", "-X", "--parsable2", "--noheader", "--allusers",
                            "--starttime=now-6hours", f"--format={','.join(fields)}", *args])
            rows = [dict(zip(fields, line.split("|"), strict=True)) for line in out.stdout.splitlines()]
            if not any(row["State"] in ACTIVE_STATES for row in rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.5)

    def job_state(self, job_id: str) -> str | None:
        """The job's state as squeue reports it (kept for MinJobAge after it ends), or None."""
        out = self.run(["squeue", "--noheader", "--states=all", "-j", job_id, "-o", "%T"], check=False)
        return out.stdout.strip() or None

    def wait_job(self, job_id: str, timeout: float = 60) -> str:
        """Wait until the job has ended; return its final state (COMPLETED, FAILED, ...)."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state and state not in ACTIVE_STATES:
                return state
            time.sleep(0.3)
        raise TimeoutError(f"job {job_id} still {state} after {timeout:.0f} s\n{self.diagnostics()}")


@contextlib.contextmanager
def _exported(env: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the daemons are still stopped."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:  # someone else handles it; leave theirs in place
        yield
        return
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture() -> Iterator[SlurmCluster]:
    """A running single-node cluster for the whole session; SLURM_CONF exported while it runs."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    # Not tmp_path_factory: munged needs every folder above its socket to be searchable by all.
    root = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    try:
        with _sigterm_interrupts(), SlurmCluster(root) as cluster, \
                _exported({"SLURM_CONF": str(cluster.conf)}):
            yield cluster
    finally:
        shutil.rmtree(root, ignore_errors=True)
