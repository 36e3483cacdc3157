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
#: The header's voxel sizes (``pixdim``, which the volume is computed from, as the paper's
#: code does) must agree with the affine (which places the voxels) to this relative
#: tolerance; the public data agree to 2e-6. A header where they disagree is refused.
PIXDIM_TOLERANCE = 1e-4
#: A voxel edge outside this range (mm) is a broken header, not an MR scan.
VOXEL_SIZE_RANGE_MM = (1e-3, 100.0)
#: The most voxels an input may hold, checked from the header before any data is read
#: (a 1 kB file can claim gigabytes). Override with VHI_MAX_VOXELS.
MAX_VOXELS = 200_000_000

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
    """Volume of one voxel in ml from the header's voxel sizes (checked against the
    affine by :func:`geometry_problem` for every image read)."""
    zooms = img.header.get_zooms()[:3]
    return float(np.prod(np.asarray(zooms, dtype=np.float64))) / 1000.0


def geometry_problem(img: nib.spatialimages.SpatialImage) -> str | None:
    """Why an image's geometry cannot be trusted for a volume, or None when it can."""
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    affine = np.asarray(img.affine, dtype=np.float64)
    low, high = VOXEL_SIZE_RANGE_MM
    if not np.all(np.isfinite(zooms)) or np.any(zooms < low) or np.any(zooms > high):
        return f"voxel sizes (pixdim) {zooms.tolist()} mm are not between {low} and {high} mm"
    if not np.all(np.isfinite(affine)):
        return "the affine (sform/qform) holds NaN or infinite values"
    axes = affine[:3, :3]
    norms = np.linalg.norm(axes, axis=0)
    volume = abs(float(np.linalg.det(axes)))
    if (np.max(np.abs(norms - zooms) / zooms) > PIXDIM_TOLERANCE
            or abs(volume - float(np.prod(zooms))) / float(np.prod(zooms)) > PIXDIM_TOLERANCE):
        return (f"voxel sizes in the header (pixdim {np.round(zooms, 6).tolist()} mm) disagree "
                f"with its affine ({np.round(norms, 6).tolist()} mm, "
                f"{volume:.6g} mm3 per voxel): fix the header")
    return None


def max_voxels() -> int:
    try:
        return int(os.environ.get("VHI_MAX_VOXELS", MAX_VOXELS))
    except ValueError:
        return MAX_VOXELS


def _read(path: str | os.PathLike[str]) -> tuple[Path, nib.Nifti1Image]:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, not a NIfTI file")
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(path, f"cannot read as NIfTI ({exc})") from exc
    written = _written_zooms(path, img)
    if written is not None and not np.all(written != 0):
        raise InputError(path, f"voxel sizes (pixdim) {written.tolist()} mm in the header: a size "
                               "of 0 is no size (nibabel would take 1 mm); fix the header")
    if len(img.shape) == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    if len(img.shape) != 3:
        raise InputError(path, f"expected a 3-D volume, got shape {tuple(img.shape)}")
    voxels = int(np.prod(img.shape, dtype=np.int64))
    if voxels > max_voxels():
        raise InputError(path, f"the header claims {tuple(img.shape)} = {voxels:,} voxels, more "
                               f"than the {max_voxels():,} allowed (VHI_MAX_VOXELS)")
    dtype = img.get_data_dtype()
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise InputError(path, f"voxel type {dtype} is not a real scalar (complex or RGB images "
                               f"are not MR magnitude images)")
    why = geometry_problem(img)
    if why:
        raise InputError(path, why)
    return path, img


def _written_zooms(path: Path, img: nib.spatialimages.SpatialImage) -> np.ndarray | None:
    """The voxel sizes as the file holds them: nibabel sets a pixdim of 0 to 1 when it
    loads a header, which would give a qform-only image 1 mm voxels unsaid."""
    if not isinstance(img.header, nib.Nifti1Header):  # Nifti2Header is one too
        return None
    try:
        with nib.openers.ImageOpener(path) as fh:
            header = type(img.header).from_fileobj(fh, check=False)
    except Exception:  # noqa: BLE001 - nib.load read it; a second read failing changes nothing
        return None
    return np.asarray(header["pixdim"][1:4], dtype=np.float64)


def load_header(path: str | os.PathLike[str]) -> nib.Nifti1Image:
    """An image's header and geometry (checked as for every read), without its voxels."""
    return _read(path)[1]


def _data(path: Path, img: nib.Nifti1Image, what: str) -> np.ndarray:
    try:
        data = img.get_fdata(dtype=np.float64)
    except MemoryError:
        raise InputError(path, f"not enough memory to read the {what} "
                               f"({tuple(img.shape)} voxels)") from None
    except Exception as exc:  # truncated gzip, short data block, ...
        raise InputError(path, f"cannot read the {what} data ({exc})") from exc
    if not np.all(np.isfinite(data)):
        raise InputError(path, f"{int(np.sum(~np.isfinite(data)))} voxels are NaN or infinite")
    return data


def load_image(path: str | os.PathLike[str]) -> Volume:
    """Read an MR image (STIR or T1W) as float64 with its scale factor applied.

    Refuses non-3-D images, non-finite values and images without signal.
    """
    path, img = _read(path)
    data = _data(path, img, "image")
    if not np.any(data):
        raise InputError(path, "image is all zero (no signal)")
    return Volume(data, img, path)


def load_mask(path: str | os.PathLike[str]) -> Volume:
    """Read a mask or label image; ``data`` holds the labels (0 = background) as float64.

    Labels must be non-negative integers: a probability map or a signed image is refused
    (counting every non-zero voxel of one would give a silently wrong volume).
    """
    path, img = _read(path)
    data = _data(path, img, "mask")
    if np.any(data < 0):
        raise InputError(path, f"mask holds negative values (min {data.min():g}); labels are "
                               f"0 (background) and positive integers")
    fractional = data[data != np.round(data)]
    if fractional.size:
        raise InputError(path, f"mask holds non-integer values (e.g. {fractional[0]:g}; "
                               f"{fractional.size} voxels): a probability map? threshold it first")
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
    limit = GRID_TOLERANCE_VOXELS * float(np.linalg.norm(a.affine[:3, :3], axis=0).min())
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
