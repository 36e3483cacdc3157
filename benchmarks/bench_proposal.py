"""Proposal step (thresholds, labels, residue removal) against a paper-style per-slice loop.

The paper-style version follows the structure of the paper's code: Python loops over
the reference and disease-region voxels, then slice by slice a labelling and a loop
over components with a pixel-by-pixel copy of the kept ones. Both must give identical
labels; target ([method] issue): ≥ 10× faster.
Run: `python benchmarks/bench_proposal.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, data_dir_or_exit

from vhi.imaging.nifti import load_image, load_mask
from vhi.method.lesions import find_thresholds, propose

SCANS = ("1003", "1007", "1012", "1013", "1016", "1234", "3002", "4386")


def paper_style(stir: np.ndarray, region: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The structure of the paper's code (c-hepburn/Bone_MRI, segment.py), re-expressed.

    Reference intensities gathered voxel by voxel; each disease-region voxel compared
    with both thresholds in a Python loop; then, slice by slice, 8-connected labelling
    and, per component, a size check and a pixel-by-pixel copy of the kept labels.
    """
    ii, jj, kk = np.where(reference)
    values = np.asarray([stir[i, j, k] for i, j, k in zip(ii, jj, kk, strict=True)])
    t = find_thresholds(values)
    labels = np.zeros(stir.shape)
    for i, j, k in zip(*np.where(region), strict=True):
        labels[i, j, k] = float(stir[i, j, k] >= t.lower) + float(stir[i, j, k] >= t.upper)
    kept = np.zeros(stir.shape)
    for k in range(stir.shape[2]):
        comp, n = ndimage.label(labels[:, :, k] > 0, structure=np.ones((3, 3)))
        for c in range(1, n + 1):
            rows, cols = np.where(comp == c)
            if rows.size >= 4:
                for r, q in zip(rows, cols, strict=True):
                    kept[r, q, k] = labels[r, q, k]
    return kept


def main() -> None:
    data = data_dir_or_exit()
    print(f"{'scan':6s} {'paper (s)':>10s} {'platform (s)':>13s} {'speed-up':>9s} {'identical':>10s}")
    ratios = []
    for scan in SCANS:
        stir = load_image(data / "stir" / f"{scan}_STIR.nii.gz").data
        region = load_mask(data / "disease_region" / f"{scan}_disease_region.nii.gz").data == 1
        ref = load_mask(data / "normal_marrow" / f"{scan}_normal_marrow.nii.gz").data == 1
        t_paper, expected = best_of(lambda s=stir, r=region, n=ref: paper_style(s, r, n), repeats=1)
        t_ours, ours = best_of(lambda s=stir, r=region, n=ref: propose(s, r, n), repeats=5)
        same = np.array_equal(expected, ours.labels)
        ratios.append(t_paper / t_ours)
        print(f"{scan:6s} {t_paper:10.3f} {t_ours:13.4f} {t_paper / t_ours:8.1f}× {same!s:>10s}")
    print(f"\nmedian speed-up {np.median(ratios):.1f}× (target ≥ 10×), minimum {min(ratios):.1f}×")


if __name__ == "__main__":
    main()
