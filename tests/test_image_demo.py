"""The demo workflow's first two sessions run inside the project's image with its own
Snakemake and `vhi` (the project's workflow files, the data and the weights mounted read
only): every number equals the host's run of the same sessions (the shared demo run).
The image is built as tests/support/image.py says.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from vhi import __version__

from support.data import needs_data, needs_models
from support.demo import STIR_SESSIONS, DemoRun
from support.image import built_image, podman_run
from support.paths import MODELS, PROJECT_ROOT, SHARED

pytestmark = [pytest.mark.container, pytest.mark.slow, needs_models, needs_data]

#: the demo's first two sessions (`vhi sheet`'s order), both with a STIR and a cleaned mask
FIRST_TWO = ("1234", "4386")
#: what each session's sidecars say that must be equal, wherever the run ran
NUMBERS = {"disease_region.json": ("voxels", "device"),
           "proposal.json": ("voxels", "lower", "upper", "proposal_ml", "thresholds"),
           "vhi.json": ("vhi_ml", "voxels")}


@pytest.fixture(scope="module")
def image() -> str:
    return built_image()


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
