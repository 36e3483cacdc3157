"""The OCI image, built offline by scripts/build-image.sh and run with podman.

Built from a debootstrap base (cached under ~/.cache/vhi, or $VHI_CACHE) with buildah; the
layers are cached by podman, so a rebuild with unchanged sources takes seconds (the first
build: minutes and ~1.4 GB). Then `vhi --version` in the image, and `vhi segment` on one demo
scan inside it with the weights mounted read-only: the same voxels as on the host. Skipped,
with the reason in pytest's summary (`-ra`, also in `.ci/run`'s output), where podman and
buildah are missing or cannot run here; a build that starts and fails is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vhi import __version__, api

from support.data import BUNDLE_DIR, needs_data, needs_models
from support.paths import DATA, PROJECT_ROOT

pytestmark = [pytest.mark.container, pytest.mark.slow, needs_models, needs_data]

TAG = "localhost/vhi:test"
BUILD_TIMEOUT_S = 1800
CONTAINERS_CONF = PROJECT_ROOT / "containers" / "containers.conf"


def _env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def unavailable_reason() -> str | None:
    missing = [tool for tool in ("podman", "buildah", "runc") if shutil.which(tool) is None]
    if missing:
        return (f"cannot build the image here: {', '.join(missing)} not found "
                "(scripts/system-packages/containers.list)")
    info = subprocess.run(["podman", "info"], capture_output=True, text=True, timeout=120,
                          env=_env(), check=False)
    if info.returncode != 0:
        return f"cannot build the image here: `podman info` fails: {info.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    build = subprocess.run([str(PROJECT_ROOT / "scripts" / "build-image.sh"), TAG], capture_output=True,
                           text=True, timeout=BUILD_TIMEOUT_S, env=_env(), check=False)
    assert build.returncode == 0, f"image build failed:\n{build.stdout[-3000:]}\n{build.stderr[-5000:]}"
    return TAG


def podman_run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "run", "--rm", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), check=False)


def test_image_runs_vhi(image: str):
    proc = podman_run(image, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"vhi {__version__}"
    # Nothing of the project's checkout or the weights is in the image.
    listing = podman_run("--entrypoint", "sh", image, "-c", "ls /models /opt/vhi 2>&1; id -u")
    assert "No such file or directory" in listing.stdout and listing.stdout.split()[-1] == "1000"


def test_segment_in_the_image_equals_the_host(image: str, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the image runs as uid 1000
    t1w = DATA / "t1w" / "1003_T1W.nii.gz"
    mounts = ["-v", f"{BUNDLE_DIR.parent}:/models:ro", "-v", f"{t1w.parent}:/data:ro", "-v", f"{out}:/out"]
    proc = podman_run(*mounts, image, "--no-progress", "segment", "--t1w", f"/data/{t1w.name}",
                      "--out", "/out/disease_region.nii.gz", "--device", "auto")
    assert proc.returncode == 0, proc.stderr
    assert "fell back to the CPU" in proc.stderr  # device auto without a GPU

    host = tmp_path / "host.nii.gz"
    api.segment(t1w, host, ensemble=api.load_ensemble(device="cpu"))
    inside = np.asarray(nib.load(out / "disease_region.nii.gz").dataobj)
    expected = np.asarray(nib.load(host).dataobj)
    assert inside.dtype == expected.dtype == np.uint8
    assert int(inside.sum()) == int(expected.sum()) > 0
    np.testing.assert_array_equal(inside, expected)
    sidecar = json.loads((out / "disease_region.json").read_text())
    assert sidecar["device"] == "cpu" and sidecar["voxels"] == int(expected.sum())
    assert sidecar["model"]["sha256"] == json.loads((tmp_path / "host.json").read_text())["model"]["sha256"]

    # Weights are checked against their sha256 inside the image too: none mounted, a clear error.
    missing = podman_run("-v", f"{t1w.parent}:/data:ro", image, "segment", "--t1w", f"/data/{t1w.name}",
                         "--out", "/data/never_written.nii.gz", "--device", "cpu")
    assert missing.returncode == 2
    assert "/models/sij_disease_region_unet/model_1.pt: weights of model bundle" in missing.stderr
