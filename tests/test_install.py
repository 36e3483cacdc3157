"""The package stands on its own: the wheel, installed with its declared dependencies (and
nothing else) into a fresh venv, runs its commands from another folder, schemas and all,
and every one of its modules imports.

The dependencies come from a wheel cache the test fills, ``$VHI_CACHE/wheels`` (default
``~/.cache/vhi/wheels``): the first run fills it from the package index (``pip wheel``;
torch is the local CPU build that ``pip install torch==2.13.0`` takes), later runs install
offline (``--no-index``). The venv with the dependencies is kept under
``$VHI_CACHE/install-test/<key>``, the key being the sha256 of the wheel's
``Requires-Dist`` and the Python version: a new or removed dependency makes a new venv,
installed fresh from the wheel; with the same dependencies each run reinstalls only the
wheel, and checks that what the venv holds is exactly what that fresh install gave.
"""

from __future__ import annotations

import email
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.data import needs_data
from support.imports import imported_modules, third_party
from support.paths import DATA, PROJECT_ROOT

pytestmark = pytest.mark.install

CACHE = Path(os.environ.get("VHI_CACHE") or "~/.cache/vhi").expanduser()
WHEELS = CACHE / "wheels"
VENVS = CACHE / "install-test"
#: venvs of other dependency sets kept (other branches, a dependency tried and dropped)
KEEP_VENVS = 2
COMPLETE = "complete.json"


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert not check or proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def build_wheel(tmp: Path) -> Path:
    """The wheel, built without build isolation (the project venv's setuptools) from a copy
    of the project, so nothing is written to the checkout."""
    project = tmp / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, project / name)
    shutil.copytree(PROJECT_ROOT / "src", project / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
          "-w", str(tmp / "dist"), str(project)], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("vhi-*.whl")
    return wheel


def requires_dist(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return sorted(email.message_from_bytes(zf.read(meta)).get_all("Requires-Dist") or [])


def clean_env(venv: Path) -> dict[str, str]:
    """This process's environment without anything that reaches into the project."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONNOUSERSITE="1",
               VHI_NO_PROGRESS="1")
    return env


def pip(venv: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
                cwd=venv, env=clean_env(venv), check=check)


def freeze(venv: Path) -> list[str]:
    lines = pip(venv, "freeze", "--all", "--exclude", "vhi").stdout.splitlines()
    return sorted(line for line in lines if line.strip())


def fill_wheel_cache(requirements: list[str], tmp: Path) -> None:
    """Wheels of the dependencies and theirs into the cache (from the index; pip's
    configured find-links give the local torch build)."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    reqs = tmp / "requirements.txt"
    reqs.write_text("\n".join(requirements) + "\n")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(WHEELS), "-r", str(reqs)],
         cwd=tmp, timeout=3600)


def fresh_venv(venv: Path, wheel: Path, tmp: Path) -> None:
    """A new venv with the wheel and its dependencies, from the wheel cache only."""
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp)
    install = ["install", "--quiet", "--no-index", "--find-links", str(WHEELS), str(wheel)]
    if pip(venv, *install, check=False).returncode != 0:  # first time, or a new dependency
        fill_wheel_cache(requires_dist(wheel), tmp)
        pip(venv, *install)
    (venv / COMPLETE).write_text(json.dumps({"requires": requires_dist(wheel), "freeze": freeze(venv)}))


def prune(keep: Path) -> None:
    """Drop the least recently used venvs of other dependency sets."""
    others = sorted((p for p in VENVS.iterdir() if p.is_dir() and p != keep),
                    key=lambda p: (p / COMPLETE).stat().st_mtime if (p / COMPLETE).exists() else 0)
    for old in others[:max(0, len(others) - (KEEP_VENVS - 1))]:
        shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class Installed:
    venv: Path
    env: dict[str, str]
    work: Path  # a folder outside the project

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([str(self.venv / "bin" / args[0]), *args[1:]], self.work, self.env, check=check)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp)
    requires = requires_dist(wheel)
    key = hashlib.sha256(json.dumps([sys.version, requires]).encode()).hexdigest()[:16]
    VENVS.mkdir(parents=True, exist_ok=True)
    venv = VENVS / key
    with (VENVS / ".lock").open("w") as lock:  # other checkouts' test runs share the cache
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / COMPLETE).is_file():
            fresh_venv(venv, wheel, tmp)
        else:  # the same dependencies as that fresh install: only the wheel is new
            pip(venv, "install", "--quiet", "--no-index", "--no-deps", "--force-reinstall", str(wheel))
        recorded = json.loads((venv / COMPLETE).read_text())
        assert freeze(venv) == recorded["freeze"], "the cached venv was changed by hand: remove it"
        pip(venv, "check")  # every requirement of the installed wheel is met
        (venv / COMPLETE).touch()
        prune(venv)
        work = tmp / "elsewhere"
        work.mkdir()
        yield Installed(venv, clean_env(venv), work)


def test_installed_package_is_the_wheel_alone(installed: Installed) -> None:
    """Nothing on the path but the venv and the base interpreter's standard library: no
    .pth file or variable borrows the project's packages."""
    script = ("import os, sys, sysconfig, vhi\n"
              "std = os.path.dirname(sysconfig.get_path('stdlib'))  # lib/: python3.x/ and python3x.zip\n"
              "print(vhi.__file__)\n"
              "print([p for p in sys.path if p and not p.startswith(sys.prefix + os.sep) and not (\n"
              "       p.startswith(std) and 'site-packages' not in p)])\n")
    file, outside = installed.run("python", "-c", script).stdout.splitlines()
    assert Path(file).is_relative_to(installed.venv)
    assert outside == "[]"
    torch = installed.run("python", "-c", "import torch; print(torch.__version__)")
    assert torch.stdout.strip() == "2.13.0+cpu"  # the local CPU build, not the index's CUDA one


def test_every_module_of_the_installed_package_imports(installed: Installed) -> None:
    """Each module, and each third-party module the installed files import anywhere
    (lazily inside a function too: the DICOMweb client, the QC images' Pillow)."""
    package = Path(installed.run("python", "-c", "import vhi; print(vhi.__path__[0])").stdout.strip())
    lazy = sorted(third_party(imported_modules(package)))
    assert {"torch", "dicomweb_client", "PIL"} <= set(lazy)
    script = ("import importlib, pkgutil, sys, vhi\n"
              "names = [m.name for m in pkgutil.walk_packages(vhi.__path__, 'vhi.')\n"
              "         if not m.name.endswith('__main__')]\n"
              "for name in names + sys.argv[1:]:\n"
              "    importlib.import_module(name)\n"
              "print(len(names))\n")
    result = installed.run("python", "-c", script, *lazy, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout) > 50


def test_installed_commands_run(installed: Installed) -> None:
    assert installed.run("vhi", "--version").stdout.strip() == "vhi 0.1.0"
    models = installed.run("vhi", "models")
    assert json.loads(models.stdout)["name"] == "sij_disease_region_unet"
    css = installed.run("python", "-c",
                        "from vhi.results.report.page import stylesheet; print(len(stylesheet()))")
    assert int(css.stdout) > 500  # the report's stylesheet ships as package data


@needs_data
def test_installed_package_checks_a_sheet_and_proposes(installed: Installed) -> None:
    env = {**installed.env, "VHI_SHARED": str(DATA.parents[1])}
    vhi = str(installed.venv / "bin" / "vhi")
    _run([vhi, "sheet", "--out", "demo.csv"], installed.work, env)
    checked = _run([vhi, "sheet", "--check", "demo.csv"], installed.work, env)
    assert "11 sessions, valid" in checked.stderr
    _run([vhi, "propose", "--stir", str(DATA / "stir" / "1003_STIR.nii.gz"),
          "--disease-region", str(DATA / "disease_region" / "1003_disease_region.nii.gz"),
          "--reference", str(DATA / "normal_marrow" / "1003_normal_marrow.nii.gz"),
          "--out", "proposal.nii.gz"], installed.work, env)
    sidecar = json.loads((installed.work / "proposal.json").read_text())
    assert sidecar["voxels"] == {"label_ge1": 6031, "label2": 3461}
    assert sidecar["provenance"]["software"]["git_commit"] is None  # not a checkout
