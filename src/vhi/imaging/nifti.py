"""NIfTI input/output and geometry checks.

The method works in array space, as the paper does: volumes are never reoriented
(see ../shared/METHOD.md, "Data quirks"). Every image is read with the scale factor
applied (``get_fdata``); every output is written atomically (:mod:`vhi.fileio`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from vhi.errors import InputError
from vhi.fileio import atomic_path

log = logging.getLogger(__name__)

#: Two grids count as the same when every corner voxel centre lies within this fraction
#: of the smallest voxel size (1012's 0.5953 vs 0.5952 mm pixels move the far corner by
#: 0.034 mm, 0.06 of a voxel; a one-voxel shift or another field of view is far above it).
GRID_TOLERANCE_VOXELS = 0.1

@dataclass(frozen=True)
class Volume:
    """A 3-D image read from disk: float64 data (scale applied), its NIfTI image and path."""

    data: np.ndarray
    img: nib.Nifti1Image
    path: Path

    @property
    def affine(self) -> np.ndarray:
        return self.img.affine

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres, from the header's pixel dimensions."""
        return voxel_volume_ml(self.img)


def voxel_volume_ml(img: nib.spatialimages.SpatialImage) -> float:
    zooms = img.header.get_zooms()[:3]
    return float(np.prod(np.asarray(zooms, dtype=np.float64))) / 1000.0


def _read(path: str | os.PathLike[str]) -> tuple[Path, nib.Nifti1Image]:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(path, f"cannot read as NIfTI ({exc})") from exc
    if len(img.shape) == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    if len(img.shape) != 3:
        raise InputError(path, f"expected a 3-D volume, got shape {tuple(img.shape)}")
    return path, img


def load_image(path: str | os.PathLike[str]) -> Volume:
    """Read an MR image (STIR or T1W) as float64 with its scale factor applied.

    Refuses non-3-D images, non-finite values and images without signal.
    """
    path, img = _read(path)
    try:
        data = img.get_fdata(dtype=np.float64)
    except Exception as exc:  # truncated gzip, short data block, ...
        raise InputError(path, f"cannot read the image data ({exc})") from exc
    if not np.all(np.isfinite(data)):
        raise InputError(path, f"{int(np.sum(~np.isfinite(data)))} voxels are NaN or infinite")
    if not np.any(data):
        raise InputError(path, "image is all zero (no signal)")
    return Volume(data, img, path)


def load_mask(path: str | os.PathLike[str]) -> Volume:
    """Read a mask or label image; ``data`` holds the labels (0 = background) as float64."""
    path, img = _read(path)
    try:
        data = img.get_fdata(dtype=np.float64)
    except Exception as exc:
        raise InputError(path, f"cannot read the mask data ({exc})") from exc
    if not np.all(np.isfinite(data)):
        raise InputError(path, "mask holds NaN or infinite values")
    return Volume(data, img, path)


def grid_mismatch(a: nib.spatialimages.SpatialImage, b: nib.spatialimages.SpatialImage) -> str | None:
    """Why two images do not share one voxel grid, or None when they do."""
    if tuple(a.shape[:3]) != tuple(b.shape[:3]):
        return f"shape {tuple(a.shape[:3])} differs from {tuple(b.shape[:3])}"
    corners = np.array(
        [[i, j, k, 1] for i in (0, a.shape[0] - 1) for j in (0, a.shape[1] - 1) for k in (0, a.shape[2] - 1)],
        dtype=np.float64,
    ).T
    shift = np.linalg.norm((a.affine @ corners - b.affine @ corners)[:3], axis=0).max()
    limit = GRID_TOLERANCE_VOXELS * float(min(a.header.get_zooms()[:3]))
    if shift > limit:
        return f"voxel positions differ by up to {shift:.3f} mm (tolerance {limit:.3f} mm)"
    return None


def require_same_grid(reference: Volume, other: Volume) -> None:
    """Raise an InputError naming ``other`` if it is not on ``reference``'s grid."""
    why = grid_mismatch(reference.img, other.img)
    if why:
        raise InputError(other.path, f"not on the grid of {reference.path.name}: {why}")


def save_nifti(array: np.ndarray, like: nib.spatialimages.SpatialImage, dest: str | os.PathLike[str],
               dtype: type | np.dtype = np.uint8) -> Path:
    """Write ``array`` with ``like``'s affine and header (geometry), atomically."""
    header = like.header.copy()
    header.set_data_dtype(dtype)
    out = nib.Nifti1Image(np.asarray(array).astype(dtype), like.affine, header)
    out.header.set_slope_inter(1, 0)
    with atomic_path(dest) as tmp:
        nib.save(out, tmp)
    return Path(dest)
