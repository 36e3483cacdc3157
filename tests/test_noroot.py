"""The main job needs no root: the README's command for the demo's first session, run by an
unprivileged user in a fresh clone with the project's venv, never calling sudo.

Run as root (CI), the test runs the command as ``nobody``; run by another user, as that
user. The user has a home of its own and a PATH where ``sudo`` and ``apt-get`` only record
that they were called. Where the machine's Python lives in a folder other users cannot
enter (here: pyenv under /root, mode 0700), the run gets that folder in a mount namespace
of its own, as a login node's users see a system-wide Python: the interpreter, the venv
and the shared data are bound into an empty, world-readable stand-in for it, nothing
else of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vhi import api

from support.data import needs_data, needs_models
from support.demo import r11
from support.env import OVERSUBSCRIBED_ENV
from support.paths import DATA, MODELS, PROJECT_ROOT, SHARED

pytestmark = [pytest.mark.noroot, pytest.mark.slow, needs_data, needs_models]

USER = "nobody"
#: the README's line for one session of the demo (its first, 1234 of subject 01)
README_COMMAND = re.compile(r"^(make demo ARGS=(\S+))", re.M)


def readme_command() -> tuple[str, str]:
    """(the command, the file it asks for) as the README gives them."""
    found = README_COMMAND.search((PROJECT_ROOT / "README.md").read_text())
    assert found, "the README gives no `make demo ARGS=<one session's file>` line"
    return found[1], found[2]


def blocked_ancestor(path: Path) -> Path | None:
    """The outermost folder above ``path`` that other users cannot enter, if any."""
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def as_unprivileged(command: list[str], needed: list[Path], stage: Path) -> list[str]:
    """``command`` run as :data:`USER` (root) or as is (another user); folders the user
    could not reach are bound into world-readable stand-ins of what hides them."""
    if os.geteuid() != 0:
        return command
    lines = ["set -e"]
    binds = [(p, blocked_ancestor(p)) for p in needed]
    binds = [(p, b) for p, b in binds if b is not None]
    for i, (path, _) in enumerate(binds):
        lines.append(f"mkdir -p {stage}/{i} && mount --bind {shlex.quote(str(path))} {stage}/{i}")
    for hidden in sorted({b for _, b in binds}):
        lines.append(f"mount -t tmpfs -o mode=0755,size=1m tmpfs {shlex.quote(str(hidden))}")
    for i, (path, _) in enumerate(binds):
        target = shlex.quote(str(path))
        lines.append(f"mkdir -p {target} && mount --bind {stage}/{i} {target}")
    lines.append('exec setpriv --reuid "$0" --regid "$(id -g "$0")" --clear-groups -- "$@"')
    script = "\n".join(lines)
    if binds:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, USER, *command]
    return ["setpriv", "--reuid", USER, "--regid", str(pwd.getpwnam(USER).pw_gid), "--clear-groups",
            "--", *command]


@pytest.fixture
def place() -> Iterator[Path]:
    """A folder the unprivileged user owns (outside pytest's, which is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="vhi-noroot-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_demos_first_session_runs_without_root(place: Path) -> None:
    command, target = readme_command()
    clone = place / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(PROJECT_ROOT), str(clone)],
                   check=True, capture_output=True)
    venv = Path(sys.prefix).resolve()
    (clone / ".venv").symlink_to(venv)
    # the Makefile's stamp of a venv installed from these requirements (else it installs)
    digest = hashlib.sha256(b"".join((clone / name).read_bytes()
                                     for name in ("requirements.txt", "pyproject.toml"))).hexdigest()
    stamp_name = f".installed-{digest[:16]}"
    assert (venv / stamp_name).is_file(), (
        f"the project's venv {venv} was not set up for this checkout's requirements ({stamp_name} "
        "missing): run `make venv` (as its owner)")
    home, fake = place / "home", place / "bin"
    fake.mkdir()
    home.mkdir()
    for tool in ("sudo", "apt-get", "su"):
        (fake / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {home}/privileged-calls\nexit 1\n')
        (fake / tool).chmod(0o755)
    if os.geteuid() == 0:
        user = pwd.getpwnam(USER)
        for path in (place, *place.rglob("*")):
            os.lchown(path, user.pw_uid, user.pw_gid)
    env = {"HOME": str(home), "PATH": f"{fake}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "VHI_SHARED": str(SHARED), "VHI_MODELS": str(MODELS), "VHI_NO_PROGRESS": "1",
           **{name: os.environ[name] for name in OVERSUBSCRIBED_ENV if name in os.environ}}
    stage = Path(tempfile.mkdtemp(prefix="vhi-noroot-stage-"))
    try:
        needed = [Path(sys.base_prefix).resolve(), venv, SHARED, MODELS]
        result = subprocess.run(as_unprivileged(["sh", "-c", f"id -u; {command}"], needed, stage),
                                cwd=clone, env=env, capture_output=True, text=True, timeout=900,
                                check=False)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert int(result.stdout.split()[0]) != 0, "the command ran as root"
    assert not (home / "privileged-calls").exists(), (home / "privileged-calls").read_text()

    measured = clone / target
    assert measured.stat().st_uid == int(result.stdout.split()[0])
    vhi = json.loads(measured.read_text())
    session = measured.parent.name
    expected = api.measure(r11(DATA, session))
    assert vhi["vhi_ml"] == pytest.approx(expected["vhi_ml"], rel=1e-12) and vhi["vhi_ml"] > 0
    assert (measured.parent / "proposal.json").is_file()  # the U-Net and the proposal ran too
