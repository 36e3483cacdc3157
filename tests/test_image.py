"""The image the workflow names is the one the project builds (tests/support/image.py).

Run by that name (podman's `oci-archive:` transport, the file Apptainer converts to a
SIF), the image runs `vhi` as an unprivileged user, holds nothing of the checkout or the
weights, and refuses to segment without the weights. The demo's sessions run in it in
tests/test_image_demo.py.
"""

from __future__ import annotations

import pytest

from vhi import __version__

from support.data import needs_data, needs_models
from support.image import built_image, podman_run
from support.paths import SHARED

pytestmark = [pytest.mark.container, pytest.mark.slow, needs_models, needs_data]


@pytest.fixture(scope="module")
def image() -> str:
    return built_image()


def test_image_runs_vhi(image: str) -> None:
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
