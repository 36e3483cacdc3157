"""DICOM→NIfTI for the platform: one MR series from XNAT in, one 3-D NIfTI out.

The conversion is the real dcm2niix, run with fixed options, because the paper's
NIfTI volumes were made by dcm2niix and the method works in their array space
(``../shared/METHOD.md``, "Data quirks": never reorient). The layout dcm2niix writes
(checked for v1.0.20260724, the pinned version) is, for a classic single-frame series:

* array axis ``i`` (first) = DICOM column, increasing along the row cosine
  ``ImageOrientationPatient[0:3]``;
* array axis ``j`` = DICOM row **counted from the last row** (dcm2niix flips rows), so
  ``+j`` points along ``-ImageOrientationPatient[3:6]``;
* array axis ``k`` (last, the slice axis) = instances sorted by position along the
  slice normal ``row cosine × column cosine`` (ascending), whatever their
  InstanceNumbers;
* the affine is RAS+ (nibabel), from the LPS+ DICOM geometry, always with a negative
  determinant (qfac = -1); stored integers with RescaleSlope/Intercept as the NIfTI
  scale, so ``get_fdata()`` gives the scanner's scaled values.

:func:`dicom_to_nifti` keeps that layout unchanged. :func:`read_series` returns the
instances in the same slice order, so ``read_series(d)[k]`` is slice ``k`` of
``dicom_to_nifti(d, ...)``; code that needs the exact voxel of a DICOM pixel (the SEG
writer) still derives it from geometry, not from this order.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from vhi.errors import InputError
from vhi.fileio import atomic_path

log = logging.getLogger(__name__)

#: Seconds dcm2niix may take for one series (a 25-slice series takes well under one).
DCM2NIIX_TIMEOUT_S = 300

#: Files that XNAT or file managers leave beside DICOM files; skipped, never read.
_IGNORED_SUFFIXES = ("catalog.xml",)

#: Two instances closer than this along the slice normal (mm) count as one position.
_SAME_POSITION_MM = 1e-3

_UNCOMPRESSED = {
    pydicom.uid.ImplicitVRLittleEndian,
    pydicom.uid.ExplicitVRLittleEndian,
    pydicom.uid.ExplicitVRBigEndian,
}


def dcm2niix_executable() -> str:
    """Path of the dcm2niix binary: the pinned PyPI package's, else the one on PATH."""
    try:
        import dcm2niix

        path = Path(dcm2niix.bin)
        if path.is_file():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("dcm2niix")
    if not found:
        raise RuntimeError("dcm2niix not found: install the 'dcm2niix' package or put it on PATH")
    return found


def _candidate_files(dicom_dir: Path) -> list[Path]:
    files = []
    for path in sorted(dicom_dir.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(dicom_dir).parts):
            continue
        if path.name.lower().endswith(_IGNORED_SUFFIXES):
            log.debug("skipping %s (not a DICOM file by name)", path)
            continue
        files.append(path)
    return files


def _expected_pixel_bytes(ds: Dataset) -> int:
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    bits = int(ds.BitsAllocated)
    n = int(ds.Rows) * int(ds.Columns) * samples * frames
    return (n * bits + 7) // 8


def _read_one(path: Path, what: object) -> Dataset:
    """Read one file fully; InputError(what, ...) for non-DICOM, truncated or pixel-less files."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise InputError(what, f"{path.name} is not a DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises many types on damaged files
        raise InputError(what, f"{path.name} is corrupt or unreadable ({type(exc).__name__}: {exc})") from exc
    sop_class = ds.get("SOPClassUID") or ds.get("file_meta", Dataset()).get("MediaStorageSOPClassUID")
    missing = [key for key in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID") if key not in ds]
    if missing:
        raise InputError(what, f"{path.name} is truncated or corrupt: no {', '.join(missing)}")
    if "PixelData" not in ds:
        if "Image Storage" in getattr(sop_class, "name", ""):
            raise InputError(what, f"{path.name} is truncated or corrupt: an image "
                                   f"({sop_class.name}) without pixel data")
        raise InputError(what, f"{path.name} holds no image (modality {ds.get('Modality', '?')}, "
                               f"{getattr(sop_class, 'name', sop_class)}): not an image series")
    for key in ("Rows", "Columns", "BitsAllocated"):
        if key not in ds:
            raise InputError(what, f"{path.name} lacks {key}")
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is None or tsyntax in _UNCOMPRESSED:
        expected, got = _expected_pixel_bytes(ds), len(ds.PixelData)
        if got < expected:
            raise InputError(what, f"{path.name} is truncated: {got} of {expected} bytes of pixel data")
    return ds


def _check_one_series(datasets: list[tuple[Path, Dataset]], what: object) -> None:
    series: dict[str, list[Path]] = {}
    for path, ds in datasets:
        series.setdefault(str(ds.SeriesInstanceUID), []).append(path)
    if len(series) > 1:
        parts = []
        for uid, paths in series.items():
            first = next(ds for p, ds in datasets if p == paths[0])
            parts.append(f"{uid} (series {getattr(first, 'SeriesNumber', '?')} "
                         f"'{getattr(first, 'SeriesDescription', '')}', {len(paths)} files)")
        raise InputError(what, f"{len(series)} series in one folder, expected one: " + "; ".join(parts))
    echoes = {str(ds.get("EchoNumbers", "")) for _, ds in datasets}
    if len(echoes) > 1:
        raise InputError(what, f"several echoes in one series (EchoNumbers {sorted(echoes)}), "
                               "expected one 3-D volume")
    sops = [str(ds.SOPInstanceUID) for _, ds in datasets]
    if len(set(sops)) != len(sops):
        raise InputError(what, "the same SOPInstanceUID occurs in more than one file")


def _geometry(ds: Dataset, what: object, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(LPS position of the first pixel, row/column/normal cosines as rows of a 3×3)."""
    try:
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError(what, f"{name} lacks a valid ImagePositionPatient/ImageOrientationPatient "
                               f"({exc})") from exc
    if ipp.shape != (3,) or iop.shape != (6,):
        raise InputError(what, f"{name} has malformed ImagePositionPatient/ImageOrientationPatient")
    row, col = iop[:3], iop[3:]
    return ipp, np.stack([row, col, np.cross(row, col)])


def _scan_folder(dicom_dir: str | os.PathLike[str], what: object) -> list[tuple[Path, Dataset]]:
    dicom_dir = Path(dicom_dir)
    if not dicom_dir.is_dir():
        raise InputError(what, f"DICOM folder {dicom_dir} not found")
    files = _candidate_files(dicom_dir)
    if not files:
        raise InputError(what, f"no files in DICOM folder {dicom_dir}")
    datasets = [(path, _read_one(path, what)) for path in files]
    _check_one_series(datasets, what)
    return datasets


def read_series(dicom_dir: str | os.PathLike[str]) -> list[Dataset]:
    """Read every instance of the one single-frame image series in ``dicom_dir`` (recursively).

    Returns the datasets (pixel data included) sorted by position along the slice
    normal ``row cosine × column cosine`` (LPS), ascending: the order of the slice axis
    (last array axis) of :func:`dicom_to_nifti`'s output. Hidden files and XNAT
    ``*catalog.xml`` files are skipped.

    Raises InputError (naming the folder) for an empty folder, non-DICOM, truncated or
    unreadable files, non-image objects, several series or echoes in the folder,
    multi-frame images, inconsistent orientation or matrix, and repeated slice positions.
    """
    dicom_dir = Path(dicom_dir)
    datasets = _scan_folder(dicom_dir, dicom_dir)
    first_path, first = datasets[0]
    if int(getattr(first, "NumberOfFrames", 1) or 1) > 1:
        raise InputError(dicom_dir, f"{first_path.name} is a multi-frame image; "
                                    "read_series handles classic single-frame series only")
    _, axes0 = _geometry(first, dicom_dir, first_path.name)
    keyed = []
    for path, ds in datasets:
        ipp, axes = _geometry(ds, dicom_dir, path.name)
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise InputError(dicom_dir, f"{path.name} is {ds.Rows}×{ds.Columns}, "
                                        f"{first_path.name} is {first.Rows}×{first.Columns}")
        if np.abs(axes - axes0).max() > 1e-4:
            raise InputError(dicom_dir, f"{path.name} has another ImageOrientationPatient "
                                        f"than {first_path.name}")
        keyed.append((float(ipp @ axes0[2]), path, ds))
    keyed.sort(key=lambda t: t[0])
    positions = np.array([k for k, _, _ in keyed])
    gaps = np.diff(positions)
    if np.any(gaps < _SAME_POSITION_MM):
        i = int(np.argmin(gaps))
        raise InputError(dicom_dir, f"{keyed[i][1].name} and {keyed[i + 1][1].name} share one slice "
                                    "position (repeated acquisition or several echoes?)")
    return [ds for _, _, ds in keyed]


def _tail(text: str, lines: int = 8) -> str:
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


def dicom_to_nifti(dicom_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                   scan: str) -> Path:
    """Convert the one MR series in ``dicom_dir`` to a gzipped 3-D NIfTI at ``dest``.

    Runs dcm2niix (``-z y -b n -m n -g i``: gzip, no sidecar, no merging of echoes,
    user defaults file ignored) on links to the series' files in a temporary folder;
    ``dest`` must end in ``.nii.gz`` and is written atomically. The layout is dcm2niix's
    (see the module docstring); nothing is reoriented.

    Raises InputError naming ``scan`` when the folder is missing or empty, a file is not
    DICOM, truncated or unreadable, the folder holds several series or echoes or no
    image, or dcm2niix fails or writes anything but exactly one 3-D volume (its own
    messages are quoted). ``dest`` is then left as it was.
    """
    dest = Path(dest)
    if not dest.name.endswith(".nii.gz"):
        raise ValueError(f"dest must end in .nii.gz, got {dest.name}")
    datasets = _scan_folder(dicom_dir, scan)
    with tempfile.TemporaryDirectory(prefix="vhi-dcm2niix-") as tmp:
        src, out = Path(tmp, "in"), Path(tmp, "out")
        src.mkdir()
        out.mkdir()
        for n, (path, _) in enumerate(datasets):
            (src / f"{n:05d}.dcm").symlink_to(path.resolve())
        cmd = [dcm2niix_executable(), "-g", "i", "-z", "y", "-b", "n", "-m", "n", "-d", "0",
               "-f", "vol", "-o", str(out), str(src)]
        log.debug("running %s", cmd)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DCM2NIIX_TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise InputError(scan, f"dcm2niix did not finish within {DCM2NIIX_TIMEOUT_S} s") from exc
        messages = _tail(proc.stdout + "\n" + proc.stderr)
        outputs = sorted(p.name for p in out.iterdir() if p.name.endswith((".nii", ".nii.gz")))
        if proc.returncode != 0:
            raise InputError(scan, f"dcm2niix failed (exit {proc.returncode}): {messages}")
        if len(outputs) != 1:
            what = "no volume" if not outputs else f"{len(outputs)} volumes ({', '.join(outputs)})"
            raise InputError(scan, f"dcm2niix wrote {what}, expected exactly one: {messages}")
        produced = out / outputs[0]
        try:
            img = nib.load(produced)
            shape = img.shape
        except Exception as exc:  # nibabel raises many types for a bad file
            raise InputError(scan, f"dcm2niix output is unreadable ({exc}): {messages}") from exc
        if len(shape) != 3 and not (len(shape) == 4 and shape[3] == 1):
            raise InputError(scan, f"dcm2niix wrote shape {tuple(shape)}, expected one 3-D volume")
        if len(shape) == 4:
            img = img.slicer[..., 0]
        with atomic_path(dest) as tmp_dest:
            if len(shape) == 4 or not produced.name.endswith(".nii.gz"):
                nib.save(img, tmp_dest)
            else:
                shutil.copyfile(produced, tmp_dest)
    log.info("%s: %d DICOM files → %s %s", scan, len(datasets), dest.name, tuple(img.shape))
    return dest
