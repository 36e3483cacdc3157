"""Load once, segment many: `vhi segment --worker` processes share one loaded ensemble.

Whole `vhi` processes, as the workflow's jobs run them: two at once (one worker is
started, not two), a bad scan (fails alone, the worker goes on), the masks identical to
an in-process segmentation, and the worker gone once idle.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vhi import api
from vhi.cli.worker import WorkerPaths, WorkerSpec

from support.data import middle_slices, needs_models

pytestmark = [needs_models, pytest.mark.slow]

IDLE_S = 3


def vhi_segment(t1w: Path, out: Path, log: Path) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("vhi")), "--no-progress", "segment",
               "--t1w", str(t1w), "--out", str(out), "--device", "auto", "--worker"]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)


def served_by(log: Path) -> int:
    found = re.search(r"served by segmentation worker pid (\d+)", log.read_text())
    assert found, log.read_text()
    return int(found.group(1))


def test_worker_serves_every_job_with_one_load(data_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VHI_RUN_ID", f"test-{uuid.uuid4().hex}")  # a worker of this test only
    monkeypatch.setenv("VHI_WORKER_IDLE_S", str(IDLE_S))
    scans = {s: middle_slices(data_dir / "t1w" / f"{s}_T1W.nii.gz", tmp_path / f"{s}_T1W.nii.gz")
             for s in ("1003", "1007")}
    bad = tmp_path / "constant_T1W.nii.gz"
    good = nib.load(scans["1003"])
    nib.save(nib.Nifti1Image(np.ones(good.shape, np.float32), good.affine), bad)

    # Two jobs at once: one worker starts (the lock), both are served by it.
    procs = {s: vhi_segment(t1w, tmp_path / f"{s}.nii.gz", tmp_path / f"{s}.log")
             for s, t1w in scans.items()}
    assert {s: p.wait(timeout=300) for s, p in procs.items()} == {"1003": 0, "1007": 0}
    pid = served_by(tmp_path / "1003.log")
    assert served_by(tmp_path / "1007.log") == pid
    started = [s for s in scans if "started segmentation worker" in (tmp_path / f"{s}.log").read_text()]
    assert len(started) == 1

    # A scan the model refuses fails alone, named in its own log; the worker goes on.
    assert vhi_segment(bad, tmp_path / "bad.nii.gz", tmp_path / "bad.log").wait(timeout=120) == 2
    assert "constant_T1W.nii.gz: the T1W volume is constant" in (tmp_path / "bad.log").read_text()
    assert not (tmp_path / "bad.nii.gz").exists() and not (tmp_path / "bad.json").exists()
    again = tmp_path / "again.nii.gz"
    assert vhi_segment(scans["1003"], again, tmp_path / "again.log").wait(timeout=120) == 0
    assert served_by(tmp_path / "again.log") == pid
    assert "scan 3 of that worker" in (tmp_path / "again.log").read_text()

    # Each job has its own mask and sidecar, identical to an in-process segmentation.
    sidecar = json.loads((tmp_path / "1003.json").read_text())
    assert sidecar["step"] == "segment_disease_region" and sidecar["device"] == "cpu"
    assert sidecar["inputs"]["t1w"]["path"].endswith("1003_T1W.nii.gz")
    api.segment(scans["1003"], tmp_path / "inproc.nii.gz", ensemble=api.load_ensemble(device="cpu"))
    expected = np.asarray(nib.load(tmp_path / "inproc.nii.gz").dataobj)
    for name in ("1003", "again"):
        mask = np.asarray(nib.load(tmp_path / f"{name}.nii.gz").dataobj)
        assert mask.dtype == np.uint8 and int(mask.sum()) == sidecar["voxels"] == int(expected.sum())
        np.testing.assert_array_equal(mask, expected)

    # Idle: the worker exits and takes its socket with it.
    paths = WorkerPaths.for_spec(WorkerSpec("sij_disease_region_unet", "auto", None))
    deadline = time.monotonic() + IDLE_S + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    assert not paths.socket.exists()
    assert f"worker {pid}: idle for {IDLE_S} s after 3 scans; exiting" in paths.log.read_text()


def _zombie(pid: int) -> bool:
    """The worker's parent (a finished client) may not have reaped it yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def test_segment_skips_existing_outputs(data_dir: Path, tmp_path: Path, caplog):
    from vhi.cli import main

    caplog.set_level(logging.INFO)
    out = tmp_path / "dr.nii.gz"
    out.write_bytes(b"kept")
    (tmp_path / "dr.json").write_text("{}")
    assert main(["segment", "--t1w", str(data_dir / "t1w" / "1003_T1W.nii.gz"), "--out", str(out),
                 "--skip-existing", "--device", "cpu"]) == 0
    assert out.read_bytes() == b"kept"
    assert "1 of 1 scans already segmented: skipped" in caplog.text
