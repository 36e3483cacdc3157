"""``vhi`` with a stand-in for the U-Net, for workflow runs where the published weights are
absent (the synthetic tier of the XNAT workflow tests).

:func:`write_vhi_shim` writes an executable ``vhi`` that runs the real CLI
(:func:`vhi.cli.main`) with :func:`vhi.api.load_ensemble` replaced by
:class:`BoxEnsemble`: the real bundle's metadata, and as the disease region the central
part of every slice instead of the network's output (held until the file
:data:`HOLD_ENV` names exists, where a test sets it). Every other command is the real one.
``VHI_FAKE_SEGMENT_S`` (seconds, default 0) makes each segmentation take that long, as the
U-Net does on the CPU, for tests that interrupt a run while it segments.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]


#: A file a test names to hold every segmentation until the file exists (at most 300 s):
#: the test watches the run while a step runs (``vhi status``: running; a second run).
HOLD_ENV = "VHI_TEST_SEGMENT_UNTIL"


def hold_segmentation() -> None:
    until = os.environ.get(HOLD_ENV)
    deadline = time.monotonic() + 300
    while until and not Path(until).exists() and time.monotonic() < deadline:
        time.sleep(0.1)


class BoxEnsemble:
    """The disease region = the middle half of every slice (rows and columns)."""

    def __init__(self, bundle: str | None = None, **_: object) -> None:
        from vhi.model.bundles import DEFAULT_BUNDLE, get_bundle

        self.bundle = get_bundle(bundle or DEFAULT_BUNDLE)
        self.device = "cpu"
        self.device_note = None

    def segment(self, t1w: np.ndarray) -> np.ndarray:
        hold_segmentation()
        time.sleep(float(os.environ.get("VHI_FAKE_SEGMENT_S") or 0))
        mask = np.zeros(t1w.shape, dtype=np.uint8)
        nx, ny = t1w.shape[:2]
        mask[nx // 4: nx - nx // 4, ny // 4: ny - ny // 4, :] = 1
        return mask


def main() -> int:
    from vhi import api
    from vhi.cli import main as vhi_main
    from vhi.cli import worker

    api.load_ensemble = lambda bundle=None, **kwargs: BoxEnsemble(bundle)  # type: ignore[assignment]
    worker.WORKER_COMMAND = [sys.executable, sys.argv[0]]  # the segmentation worker: this shim
    return vhi_main()


def write_vhi_shim(folder: Path) -> Path:
    """An executable ``vhi`` in ``folder`` (put the folder first on PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "vhi"
    shim.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                    "from support.fake_model import main\nsys.exit(main())\n")
    shim.chmod(0o755)
    return folder
