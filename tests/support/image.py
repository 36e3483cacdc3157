"""The project's image for the container tier: built once by scripts/build-image.sh and
named as the config names it (tests/test_image.py, tests/test_image_demo.py).

The build is cached (a debootstrap base under ~/.cache/vhi, or $VHI_CACHE; buildah with
podman's layer cache): seconds when nothing changed, minutes and ~1.4 GB the first time.
Two test modules may ask for it at once (pytest-xdist workers): a file lock lets one
build while the other waits, then finds the cache. Skipped, with the reason in pytest's
summary, where podman and buildah are missing or cannot run here; a build that starts
and fails is a failure.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess

import pytest
import yaml

from vhi import __version__
from vhi.config.image import container_uri
from vhi.config.load import resolve_config

from support.env import OVERSUBSCRIBED_ENV
from support.paths import PROJECT_ROOT

BUILD_TIMEOUT_S = 1800
CONTAINERS_CONF = PROJECT_ROOT / "containers" / "containers.conf"
DIST = PROJECT_ROOT / "dist"


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def unavailable_reason() -> str | None:
    missing = [tool for tool in ("podman", "buildah", "runc") if shutil.which(tool) is None]
    if missing:
        return (f"cannot build the image here: {', '.join(missing)} not found "
                "(scripts/system-packages/containers.list)")
    info = subprocess.run(["podman", "info"], capture_output=True, text=True, timeout=120,
                          env=podman_env(), check=False)
    if info.returncode != 0:
        return f"cannot build the image here: `podman info` fails: {info.stderr.strip()[-500:]}"
    return None


def configured_image() -> str:
    """The embedded config's image, as the Snakefile gives it to Snakemake."""
    config = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    return container_uri(resolve_config(config).image, PROJECT_ROOT)


def built_image() -> str:
    """The image built by scripts/build-image.sh, as podman names the config's archive."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    DIST.mkdir(exist_ok=True)
    with (DIST / ".test-build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker's build first: then the cache
        build = subprocess.run([str(PROJECT_ROOT / "scripts" / "build-image.sh")], capture_output=True,
                               text=True, timeout=BUILD_TIMEOUT_S, env=podman_env(), check=False)
    assert build.returncode == 0, f"image build failed:\n{build.stdout[-3000:]}\n{build.stderr[-5000:]}"
    uri = configured_image()
    archive = DIST / f"vhi-{__version__}.oci.tar"
    assert uri == f"oci-archive://{archive}", uri  # the file the build wrote, for this version
    assert archive.is_file()
    return f"oci-archive:{archive}"


def podman_run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    passed = [f"--env={name}" for name in OVERSUBSCRIBED_ENV if name in os.environ]
    return subprocess.run(["podman", "run", "--rm", *passed, *args], capture_output=True, text=True,
                          timeout=timeout, env=podman_env(), check=False)
