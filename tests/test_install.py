"""The package stands without the repository: a wheel, installed (not editable) into a fresh
venv, runs its commands from another folder, schemas and all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from support.data import needs_data
from support.paths import DATA, PROJECT_ROOT


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: int = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(the fresh venv's bin folder, its environment, a working folder outside the project).

    The wheel is built from the project without build isolation (the project venv's
    setuptools) and installed with --no-deps; the dependencies come from the project
    venv's site-packages through a .pth file, which does not process that folder's own
    .pth files, so the editable install of the checkout is not on the path.
    """
    tmp = tmp_path_factory.mktemp("wheel")
    project = tmp / "project"  # what the wheel is built from, so nothing is written to the checkout
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, project / name)
    shutil.copytree(PROJECT_ROOT / "src", project / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
          "-w", str(tmp / "dist"), str(project)], cwd=tmp)
    wheels = list((tmp / "dist").glob("vhi-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheels[0])],
         cwd=tmp)
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=tmp).stdout.strip()
    Path(site, "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VHI_NO_PROGRESS="1")
    work = tmp / "elsewhere"
    work.mkdir()
    return venv / "bin", env, work


def test_installed_package_is_the_wheel(installed):
    bin_dir, env, work = installed
    where = _run([str(bin_dir / "python"), "-c", "import vhi; print(vhi.__file__)"], work, env)
    assert Path(where.stdout.strip()).is_relative_to(bin_dir.parent)
    assert not Path(where.stdout.strip()).is_relative_to(PROJECT_ROOT / "src")
    version = _run([str(bin_dir / "vhi"), "--version"], work, env)
    assert version.stdout.strip() == "vhi 0.1.0"
    models = _run([str(bin_dir / "vhi"), "models"], work, env)
    assert json.loads(models.stdout)["name"] == "sij_disease_region_unet"
    css = _run([str(bin_dir / "python"), "-c",
                "from vhi.results.report.page import stylesheet; print(len(stylesheet()))"], work, env)
    assert int(css.stdout) > 500  # the report's stylesheet ships as package data


@needs_data
def test_installed_package_checks_a_sheet_and_proposes(installed):
    bin_dir, env, work = installed
    vhi = str(bin_dir / "vhi")
    env = {**env, "VHI_SHARED": str(DATA.parents[1])}
    _run([vhi, "sheet", "--out", "demo.csv"], work, env)
    checked = _run([vhi, "sheet", "--check", "demo.csv"], work, env)
    assert "11 sessions, valid" in checked.stderr
    _run([vhi, "propose", "--stir", str(DATA / "stir" / "1003_STIR.nii.gz"),
          "--disease-region", str(DATA / "disease_region" / "1003_disease_region.nii.gz"),
          "--reference", str(DATA / "normal_marrow" / "1003_normal_marrow.nii.gz"),
          "--out", "proposal.nii.gz"], work, env)
    sidecar = json.loads((work / "proposal.json").read_text())
    assert sidecar["voxels"] == {"label_ge1": 6031, "label2": 3461}
    assert sidecar["provenance"]["software"]["git_commit"] is None  # not a checkout
