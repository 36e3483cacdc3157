"""Batch inference on a GPU: the demo T1W scans on ``cuda`` with the ensemble loaded once.

What one GPU job of the workflow does (the segmentation worker), measured in this run:

* time to first scan: from this process's start (imports, CUDA start, loading and checking
  the 3 folds, reading, segmenting and writing the first scan);
* scans per minute once loaded: every demo scan ``--repeat`` times through
  ``vhi.api.segment`` (read, segment, write mask + sidecar), the GPU synchronised;
* agreement with the CPU: each scan's CUDA mask against the CPU ensemble's, Dice ≥ 0.9999.

Builds nothing and needs no network: the venv (or image) and the shared weights and data.
Without a usable CUDA device it stops at once with status 2, saying so. Goal on an
H100-class GPU ([hpc] issue): ≥ 200 scans/min in one job.

Run: ``benchmarks/bench_gpu.sh [--repeat 10] [--batch-size 32]``.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402 - the clock starts before the imports
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import data_dir_or_exit  # noqa: E402

from vhi import api  # noqa: E402
from vhi.imaging.nifti import load_image  # noqa: E402

MIN_DICE = 0.9999


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="passes over the demo scans")
    parser.add_argument("--batch-size", type=int, default=None, help="slices per forward pass")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"bench_gpu: no usable CUDA device (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda or 'none'}): this benchmark needs a GPU; nothing was measured",
              file=sys.stderr)
        return 2
    scans = sorted((data_dir_or_exit() / "t1w").glob("*_T1W.nii.gz"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        ensemble = api.load_ensemble(device="cuda", batch_size=args.batch_size)
        api.segment(scans[0], out / "first.nii.gz", ensemble=ensemble)
        torch.cuda.synchronize()
        first_s = time.perf_counter() - STARTED

        start = time.perf_counter()
        for r in range(args.repeat):
            for scan in scans:
                api.segment(scan, out / f"{r}_{scan.name}", ensemble=ensemble)
        torch.cuda.synchronize()
        loop_s = time.perf_counter() - start
        n = args.repeat * len(scans)

        cpu = api.load_ensemble(device="cpu")
        worst = 1.0
        for scan in scans:
            cuda_mask = np.asarray(nib.load(out / f"0_{scan.name}").dataobj) > 0
            cpu_mask = cpu.segment(load_image(scan).data)
            d = dice(cuda_mask, cpu_mask)
            worst = min(worst, d)
            print(f"{scan.name}: Dice cuda vs cpu {d:.6f} ({int(cuda_mask.sum())} / "
                  f"{int(cpu_mask.sum())} voxels)")
    print(f"GPU: {torch.cuda.get_device_name(0)}; batch {ensemble.batch_size} slices")
    print(f"time to first scan: {first_s:.1f} s (process start, CUDA, 3 folds, first scan)")
    print(f"{n} scans in {loop_s:.1f} s with the ensemble loaded once: {60 * n / loop_s:.0f} scans/min "
          f"(goal >= 200 on an H100-class GPU)")
    if worst < MIN_DICE:
        print(f"FAIL: a CUDA mask differs from the CPU's (worst Dice {worst:.6f} < {MIN_DICE})",
              file=sys.stderr)
        return 1
    print(f"masks: every scan's Dice cuda vs cpu >= {MIN_DICE} (worst {worst:.6f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
