"""Markers for tests that need the public data or the published weights (the extra tier)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.paths import DATA, MODELS

#: The published U-Net bundle's folder.
BUNDLE_DIR = MODELS / "sij_disease_region_unet"

needs_data = pytest.mark.skipif(
    not (DATA / "stir").is_dir(),
    reason=f"public bone-MRI data not found at {DATA} (set VHI_SHARED to the shared folder)",
)
needs_models = pytest.mark.skipif(
    not (BUNDLE_DIR / "SHA256SUMS").is_file(),
    reason=f"published U-Net weights not found at {BUNDLE_DIR} (set VHI_SHARED or VHI_MODELS)",
)


def middle_slices(volume: Path, dest: Path, count: int = 4) -> Path:
    """``count`` middle slices of a volume (its affine kept by nibabel's slicer): the U-Net
    segments slice by slice, so a test of what wraps it need not pay for every slice."""
    import nibabel as nib

    image = nib.load(volume)
    first = (image.shape[2] - count) // 2
    nib.save(image.slicer[:, :, first:first + count], dest)
    return dest
