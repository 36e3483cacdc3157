"""Ensemble inference speed and memory on one real scan.

Prints, measured in this run on this machine:
* the fp32 matrix-multiply throughput (torch.mm, 4096², the machine's yardstick);
* the paper-style loop (each fold as published: BatchNorm unfused, upsampling before
  the decoder's 1x1 convolutions, called slice by slice);
* the platform's ensemble (`DiseaseRegionEnsemble`);
each as effective GFLOP/s (FLOPs counted by torch's FlopCounterMode) and as a ratio to
the matmul throughput; the fraction of mask voxels that differ; and the peak RSS of a
`vhi segment` process on one scan.

Targets ([method] issue): platform ≥ 0.8 × matmul throughput, ≤ 0.01 % voxels differ,
peak RSS < 1.5 GiB.  Run: `python benchmarks/bench_inference.py [--scan 1003]`.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, data_dir_or_exit

from vhi.imaging.nifti import load_image
from vhi.model.inference import DiseaseRegionEnsemble, from_batch, load_fold, normalise, to_batch
from vhi.model.unet import UNet


def matmul_gflops(n: int = 4096, seconds: float = 3.0) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    reps = max(2, int(seconds * 80e9 / (2 * n**3)))
    elapsed, _ = best_of(lambda: [torch.mm(a, b) for _ in range(reps)], repeats=2)
    return 2 * n**3 * reps / elapsed / 1e9


def published(model: UNet) -> UNet:
    """The paper's module order: upsample, then the decoder's 1x1 convolution."""
    for level in model.up_path:
        level.forward = level.forward_published_order
    return model


def flops_per_scan(shape: tuple[int, int, int], folds: int) -> float:
    """The published network's work, the yardstick of 'effective' throughput."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        published(UNet().eval())(torch.zeros(1, 1, shape[1], shape[0]))
    return counter.get_total_flops() * shape[2] * folds


def paper_style(models: list[UNet], t1w: np.ndarray) -> np.ndarray:
    """Each fold called on one slice at a time, as the paper's notebook does."""
    batch = to_batch(normalise(t1w))
    probs = np.zeros((batch.shape[0], batch.shape[2], batch.shape[3]), dtype=np.float32)
    with torch.no_grad():
        for model in models:
            for k in range(batch.shape[0]):
                probs[k] += model(torch.from_numpy(batch[k:k + 1]))[0, 0].numpy()
    return from_batch(probs / len(models)) > 0.5


def peak_rss_gib(t1w_path: Path) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(Path(sys.executable).with_name("vhi")), "-q", "segment", "--t1w", str(t1w_path),
                        "--out", str(Path(tmp) / "mask.nii.gz"), "--device", "cpu"], check=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", default="1007")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = data_dir_or_exit()
    t1w_path = data / "t1w" / f"{args.scan}_T1W.nii.gz"
    t1w = load_image(t1w_path).data
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, scan {args.scan} "
          f"{t1w.shape}")

    ensemble = DiseaseRegionEnsemble(device="cpu")
    gflop = flops_per_scan(t1w.shape, len(ensemble.models)) / 1e9
    paper_models = [published(load_fold(p, fuse=False)) for p in ensemble.fold_paths]

    yardstick = matmul_gflops()
    t_paper, mask_paper = best_of(lambda: paper_style(paper_models, t1w), args.repeats)
    t_ours, mask_ours = best_of(lambda: ensemble.segment(t1w), args.repeats)
    differ = np.count_nonzero(mask_paper != mask_ours) / mask_ours.size
    rss = peak_rss_gib(t1w_path)

    rows = [("fp32 matmul (torch.mm 4096²)", None, yardstick),
            ("paper-style loop (fold × slice)", t_paper, gflop / t_paper),
            ("platform ensemble", t_ours, gflop / t_ours)]
    print(f"\nwork: {gflop:.1f} GFLOP for {len(ensemble.models)} folds × {t1w.shape[2]} slices")
    print(f"{'':34s} {'seconds':>8s} {'GFLOP/s':>8s} {'× matmul':>9s}")
    for name, seconds, rate in rows:
        sec = f"{seconds:8.2f}" if seconds else " " * 8
        print(f"{name:34s} {sec} {rate:8.1f} {rate / yardstick:9.2f}")
    print(f"\nspeed-up over the paper-style loop: {t_paper / t_ours:.2f}×")
    print(f"mask voxels differing from the paper-style loop: {differ * 100:.4f} % (target ≤ 0.01 %)")
    print(f"peak RSS of `vhi segment` on one scan: {rss:.2f} GiB (target < 1.5 GiB)")
    ratio = gflop / t_ours / yardstick
    print(f"\nverdict: throughput ratio {ratio:.2f} (target ≥ 0.8): "
          f"{'met' if ratio >= 0.8 else 'NOT met'}; memory {'met' if rss < 1.5 else 'NOT met'}; "
          f"agreement {'met' if differ <= 1e-4 else 'NOT met'}")


if __name__ == "__main__":
    main()
