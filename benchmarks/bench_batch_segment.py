"""Load once, segment many: whole `vhi` processes on demo scans, in the same run.

Four ways to segment the same scans, each timed as whole processes (start-up, imports,
model load, inference, writing), one after the other in this run on this machine:

* ``per-scan``   – one ``vhi segment`` process per scan (each loads the ensemble);
* ``paper``      – one process per scan running the paper's loop (each fold as published,
  BatchNorm unfused, called slice by slice), the reference the [hpc] issue compares with;
* ``batch``      – one ``vhi segment`` process for every scan (``--t1w`` repeated);
* ``worker``     – one ``vhi segment --worker`` process per scan, as the workflow's jobs
  run: the first starts the job's worker, the others reuse its loaded ensemble.

Prints wall seconds, seconds per scan and the speed-ups, and checks that the masks of
``batch``, ``worker`` and ``per-scan`` are voxel-identical (``paper`` may differ in a
few voxels: its arithmetic order differs; the count is printed).

Run: ``python benchmarks/bench_batch_segment.py [--scans 1003 1007 1012 1013] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import data_dir_or_exit

VHI = str(Path(sys.executable).with_name("vhi"))

PAPER_SCRIPT = """
import sys
import nibabel as nib, numpy as np
sys.path.insert(0, {bench!r})
from bench_inference import paper_style, published
from vhi.imaging.nifti import load_image
from vhi.model.bundles import get_bundle
from vhi.model.inference import load_fold
models = [published(load_fold(p, fuse=False)) for p in get_bundle("sij_disease_region_unet").fold_paths()]
image = load_image({t1w!r})
mask = paper_style(models, image.data)
nib.save(nib.Nifti1Image(mask.astype(np.uint8), image.img.affine), {out!r})
"""


def timed(commands: list[list[str]], env: dict[str, str]) -> float:
    start = time.perf_counter()
    for command in commands:
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def masks(folder: Path, scans: list[str]) -> list[np.ndarray]:
    return [np.asarray(nib.load(folder / f"{s}.nii.gz").dataobj) > 0 for s in scans]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", nargs="+", default=["1003", "1007", "1012", "1013"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--no-paper", action="store_true", help="skip the paper-style loop")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds over the paths (the fastest of each is kept; >1 on a busy machine)")
    args = parser.parse_args()
    data = data_dir_or_exit()
    t1ws = [data / "t1w" / f"{s}_T1W.nii.gz" for s in args.scans]
    env = {**os.environ, "VHI_RUN_ID": f"bench-{uuid.uuid4().hex[:8]}", "VHI_WORKER_IDLE_S": "10"}
    segment = [VHI, "-q", "--no-progress", "segment", "--device", args.device]
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = {name: Path(tmp) / name for name in ("per-scan", "paper", "batch", "worker")}
        for folder in out.values():
            folder.mkdir()
        pairs = list(zip(args.scans, t1ws, strict=True))
        batch = [*segment]
        for s, t in pairs:
            batch += ["--t1w", str(t), "--out", str(out["batch"] / f"{s}.nii.gz")]
        bench = str(Path(__file__).parent)
        paths = {
            "per-scan": [[*segment, "--t1w", str(t), "--out", str(out["per-scan"] / f"{s}.nii.gz")]
                         for s, t in pairs],
            "paper": [[sys.executable, "-c", PAPER_SCRIPT.format(
                bench=bench, t1w=str(t), out=str(out["paper"] / f"{s}.nii.gz"))] for s, t in pairs],
            "batch": [batch],
            # a fresh run id per round: the first process starts the worker, as in a new job
            "worker": [[*segment, "--worker", "--t1w", str(t), "--out", str(out["worker"] / f"{s}.nii.gz")]
                       for s, t in pairs],
        }
        if args.no_paper:
            del paths["paper"]
        # Rounds over the paths, the fastest of each kept: a shared machine's load drifts.
        for _ in range(args.rounds):
            for name, commands in paths.items():
                round_env = {**env, "VHI_RUN_ID": f"bench-{uuid.uuid4().hex[:8]}"}
                results[name] = min(results.get(name, float("inf")), timed(commands, round_env))
        reference = masks(out["batch"], args.scans)
        identical = {name: all(np.array_equal(a, b) for a, b in zip(masks(out[name], args.scans),
                                                                    reference, strict=True))
                     for name in ("per-scan", "worker")}
        paper_diff = (sum(int(np.count_nonzero(a != b)) for a, b in
                          zip(masks(out["paper"], args.scans), reference, strict=True))
                      if "paper" in results else None)

    n = len(args.scans)
    print(f"{n} demo scans ({', '.join(args.scans)}), device {args.device}, whole processes")
    print(f"{'path':<10} {'wall s':>8} {'s/scan':>8} {'vs per-scan':>12} {'vs paper':>9}")
    for name, seconds in results.items():
        vs_paper = f"{results['paper'] / seconds:8.2f}x" if "paper" in results else "        -"
        print(f"{name:<10} {seconds:8.2f} {seconds / n:8.2f} {results['per-scan'] / seconds:11.2f}x "
              f"{vs_paper}")
    print(f"masks identical to batch: per-scan {identical['per-scan']}, worker {identical['worker']}"
          + (f"; paper-style differs in {paper_diff} voxels" if paper_diff is not None else ""))
    if not all(identical.values()):
        sys.exit("masks differ between the paths")


if __name__ == "__main__":
    main()
