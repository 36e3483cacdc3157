"""One pure function that builds the provenance block of every JSON sidecar.

A workflow run identifies itself to the ``vhi`` commands it starts through the
environment: ``VHI_RUN_ID`` (one id per ``snakemake`` invocation) and
``VHI_CONFIG_SHA256`` (the validated config's digest); both go into every sidecar.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from uuid import uuid4

import vhi
from vhi.fileio import sha256_file

#: provenance key -> environment variable set by the workflow for the jobs of one run
RUN_VARIABLES = {"run_id": "VHI_RUN_ID", "config_sha256": "VHI_CONFIG_SHA256"}


def mark_run(config_sha256: str) -> str:
    """Set this run's id (kept if already set: cluster jobs inherit the main process's)
    and config digest in the environment the ``vhi`` commands of the run inherit."""
    run_id = os.environ.setdefault(
        RUN_VARIABLES["run_id"], datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid4().hex[:8])
    os.environ[RUN_VARIABLES["config_sha256"]] = config_sha256
    return run_id


@cache
def git_commit() -> str | None:
    """The commit of the checkout the package runs from (``src/vhi`` of a git work tree,
    as with an editable install); None for an installed wheel or image."""
    package = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(package), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() / "src" / "vhi" != package:
        return None  # not a checkout, or one that merely contains an installed copy (a venv)
    return lines[1]


@cache
def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", "numpy", "nibabel", "scipy", "highdicom", "pydicom"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def build_provenance(
    *,
    step: str,
    inputs: Mapping[str, str | os.PathLike[str]] = (),
    model: Mapping[str, Any] | None = None,
    device: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    started: datetime | None = None,
    extra: Mapping[str, Any] | None = None,
    hashed_inputs: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The provenance of one output: software, model, device, inputs (with sha256), times.

    ``inputs`` maps a role (``stir``, ``t1w``…) to a path; every input is hashed unless
    ``hashed_inputs`` restricts which roles are. Pure apart from reading the inputs.
    """
    finished = datetime.now(UTC)
    roles = set(hashed_inputs) if hashed_inputs is not None else set(dict(inputs))
    prov: dict[str, Any] = {
        "step": step,
        "software": {
            "name": "vhi",
            "version": vhi.__version__,
            "git_commit": git_commit(),
            "python": platform.python_version(),
            "libraries": _library_versions(),
        },
        "intended_use": "research use only, not for clinical decisions",
        "inputs": {
            role: {"path": str(path), **({"sha256": sha256_file(path)} if role in roles else {})}
            for role, path in dict(inputs).items()
        },
        "started": (started or finished).isoformat(),
        "finished": finished.isoformat(),
    }
    run = {key: os.environ[var] for key, var in RUN_VARIABLES.items() if os.environ.get(var)}
    if run:
        prov["run"] = run
    if model is not None:
        prov["model"] = dict(model)
    if device is not None:
        prov["device"] = device
    if parameters:
        prov["parameters"] = dict(parameters)
    if extra:
        prov.update(extra)
    return prov
