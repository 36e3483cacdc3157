"""A stand-in for the public demo volumes: the same folder layout, synthetic content.

:func:`write_synthetic_demo` writes ``stir/<id>_STIR.nii.gz``, ``t1w/<id>_T1W.nii.gz`` and
``inflammation/R11/<id>_inflammation_R11.nii.gz`` for every demo session id, small and
oblique, with the demo's slice counts, so that every test that seeds the emulator from
"the demo data" (:mod:`xnat_emulator.demo`) also runs where ``../shared`` is absent. The
real volumes stay the extra tier.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from .demo import DEMO_SESSIONS

#: slices per demo session id (as the real volumes have them), else 23
SLICES = {"1012": 25, "1016": 25}
SIZE = 40


def _affine(seed: int, slices: int) -> np.ndarray:
    """An oblique affine with det < 0 (as dcm2niix writes), 1.5 mm pixels, 4 mm slices."""
    angle = np.deg2rad(10 + 5 * (seed % 4))
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])
    linear = rotation @ np.diag([-1.5, 1.5, 4.0])
    offset = -linear @ np.array([SIZE / 2, SIZE / 2, slices / 2])
    return np.vstack([np.column_stack([linear, offset]), [0, 0, 0, 1]])


def write_synthetic_demo(root: Path) -> Path:
    """Write the stand-in volumes under ``root`` (once); returns ``root``."""
    for n, scan_id in enumerate(sorted(DEMO_SESSIONS)):
        if (root / "stir" / f"{scan_id}_STIR.nii.gz").is_file():
            continue
        slices = SLICES.get(scan_id, 23)
        rng = np.random.default_rng(n)
        affine = _affine(n, slices)
        ii, jj, kk = np.meshgrid(np.arange(SIZE), np.arange(SIZE), np.arange(slices), indexing="ij")
        blob = ((ii - 20) ** 2 + (jj - 18) ** 2 < 36) & (kk >= 2) & (kk < slices - 2)
        t1w = (400 + 40 * rng.standard_normal((SIZE, SIZE, slices))).astype(np.int16)
        stir = (200 + 30 * rng.standard_normal((SIZE, SIZE, slices))).astype(np.int16)
        stir[blob] += 600
        for folder, name, data in (("stir", f"{scan_id}_STIR", stir), ("t1w", f"{scan_id}_T1W", t1w),
                                   ("inflammation/R11", f"{scan_id}_inflammation_R11",
                                    blob.astype(np.uint16))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            img = nib.Nifti1Image(data, affine)
            img.header.set_qform(affine, 1)
            img.header.set_sform(affine, 1)
            nib.save(img, root / folder / f"{name}.nii.gz")
    return root
