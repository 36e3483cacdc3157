"""Dice of the 3-fold U-Net ensemble against the manual disease region, all 11 T1W scans.

METHOD.md: 0.9724 on 1003 (the paper's test scan), 0.974–0.990 on the ten others, all
possibly optimistic (the released weights were probably trained with every one of
them). Run: `python benchmarks/disease_region_table.py [--device auto|cpu|cuda]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import data_dir_or_exit

from vhi.imaging.nifti import load_image, load_mask
from vhi.method.measure import dice, volume_similarity
from vhi.model.inference import DiseaseRegionEnsemble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    data = data_dir_or_exit()
    ensemble = DiseaseRegionEnsemble(device=args.device)
    scans = sorted(p.name.split("_")[0] for p in (data / "t1w").glob("*_T1W.nii.gz"))
    print(f"device {ensemble.device}, {len(scans)} T1W scans")
    print(f"{'scan':6s} {'slices':>6s} {'Dice':>7s} {'VS':>7s} {'auto ml':>8s} {'manual ml':>9s} {'s':>5s}")
    scores = []
    for scan in scans:
        t1w = load_image(data / "t1w" / f"{scan}_T1W.nii.gz")
        manual = load_mask(data / "disease_region" / f"{scan}_disease_region.nii.gz").data == 1
        start = time.perf_counter()
        auto = ensemble.segment(t1w.data)
        seconds = time.perf_counter() - start
        score = dice(auto, manual)
        scores.append(score)
        ml = t1w.voxel_volume_ml
        print(f"{scan:6s} {t1w.data.shape[2]:6d} {score:7.4f} {volume_similarity(auto, manual):7.4f} "
              f"{auto.sum() * ml:8.2f} {manual.sum() * ml:9.2f} {seconds:5.1f}")
    print(f"\nDice min {min(scores):.4f}, median {sorted(scores)[len(scores) // 2]:.4f}, "
          f"max {max(scores):.4f}")


if __name__ == "__main__":
    main()
