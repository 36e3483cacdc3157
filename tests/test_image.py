"""The image the workflow names is the one the project builds, and the workflow runs in it.

scripts/build-image.sh builds the OCI image offline (a debootstrap base cached under
~/.cache/vhi, or $VHI_CACHE; buildah with podman's layer cache: seconds when nothing
changed, minutes and ~1.4 GB the first time) and writes the OCI archive the config's
`image` names by default. Run by that name (podman's `oci-archive:` transport, the file
Apptainer converts to a SIF), the image runs `vhi`, refuses to segment without the
weights, and runs the demo workflow's first two sessions with its own Snakemake and
`vhi` (the project's workflow files, the data and the weights mounted read only): every
number equals the host's run of the same sessions. Skipped, with the reason in pytest's
summary, where podman and buildah are missing or cannot run here; a build that starts
and fails is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from vhi import __version__
from vhi.config.image import container_uri
from vhi.config.load import resolve_config

from support.data import needs_data, needs_models
from support.demo import STIR_SESSIONS, DemoRun
from support.paths import MODELS, PROJECT_ROOT, SHARED

pytestmark = [pytest.mark.container, pytest.mark.slow, needs_models, needs_data]

BUILD_TIMEOUT_S = 1800
CONTAINERS_CONF = PROJECT_ROOT / "containers" / "containers.conf"
#: the demo's first two sessions (`vhi sheet`'s order), both with a STIR and a cleaned mask
FIRST_TWO = ("1234", "4386")
#: what each session's sidecars say that must be equal, wherever the run ran
NUMBERS = {"disease_region.json": ("voxels", "device"),
           "proposal.json": ("voxels", "lower", "upper", "proposal_ml", "thresholds"),
           "vhi.json": ("vhi_ml", "voxels")}


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


def configured_image() -> str:
    """The embedded config's image, as the Snakefile gives it to Snakemake."""
    config = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    return container_uri(resolve_config(config).image, PROJECT_ROOT)


@pytest.fixture(scope="module")
def image() -> str:
    """The image built by scripts/build-image.sh, as podman names the config's archive."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    build = subprocess.run([str(PROJECT_ROOT / "scripts" / "build-image.sh")], capture_output=True,
                           text=True, timeout=BUILD_TIMEOUT_S, env=_env(), check=False)
    assert build.returncode == 0, f"image build failed:\n{build.stdout[-3000:]}\n{build.stderr[-5000:]}"
    uri = configured_image()
    archive = PROJECT_ROOT / "dist" / f"vhi-{__version__}.oci.tar"
    assert uri == f"oci-archive://{archive}", uri  # the file the build wrote, for this version
    assert archive.is_file()
    return f"oci-archive:{archive}"


def podman_run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "run", "--rm", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), check=False)


def test_image_runs_vhi(image: str, tmp_path: Path) -> None:
    proc = podman_run(image, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"vhi {__version__}"
    # Nothing of the project's checkout or the weights is in the image.
    listing = podman_run("--entrypoint", "sh", image, "-c", "ls /models /opt/vhi 2>&1; id -u")
    assert "No such file or directory" in listing.stdout and listing.stdout.split()[-1] == "1000"
    # Weights are checked against their sha256 inside the image too: none mounted, a clear error.
    t1w = SHARED / "data" / "bone_mri" / "t1w" / "1003_T1W.nii.gz"
    missing = podman_run("-v", f"{t1w.parent}:/data:ro", image, "segment", "--t1w", f"/data/{t1w.name}",
                         "--out", "/data/never_written.nii.gz", "--device", "cpu")
    assert missing.returncode == 2
    assert "/models/sij_disease_region_unet/model_1.pt: weights of model bundle" in missing.stderr


def test_demo_sessions_in_the_image_equal_the_hosts(image: str, demo_run: DemoRun, tmp_path: Path) -> None:
    """Snakemake and `vhi` of the image run the project's workflow (mounted read only) on
    the demo's first two sessions; the host's are the shared demo run's."""
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o777)  # the image runs as uid 1000
    targets = [f"work/demo/{STIR_SESSIONS[s]}/{s}/vhi.json" for s in FIRST_TWO]
    mounts = ["-v", f"{PROJECT_ROOT}:/project:ro", "-v", f"{SHARED}:/shared:ro",
              "-v", f"{MODELS}:/models:ro", "-v", f"{run}:/cohort", "-w", "/cohort",
              "-e", "VHI_SHARED=/shared"]
    started = time.monotonic()
    proc = podman_run(*mounts, "--entrypoint", "snakemake", image, "--snakefile", "/project/Snakefile",
                      "--profile", "/project/profiles/local", *targets, timeout=1200)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    print(f"the demo's first two sessions in the image: {elapsed:.0f} s")  # shown with -s
    for session in FIRST_TWO:
        ours = run / "work" / "demo" / STIR_SESSIONS[session] / session
        hosts = demo_run.run / "work" / "demo" / STIR_SESSIONS[session] / session
        for name, keys in NUMBERS.items():
            inside, outside = (json.loads((folder / name).read_text()) for folder in (ours, hosts))
            assert {k: inside[k] for k in keys} == {k: outside[k] for k in keys}, (session, name)
        sidecar = json.loads((ours / "disease_region.json").read_text())  # its own provenance
        assert sidecar["software"]["version"] == __version__
        assert sidecar["software"]["git_commit"] is None  # the image's installed vhi, no checkout
