"""A NIfTI volume as a classic MR DICOM series, for a viewer (the local cleaning station).

Geometry (DICOM is LPS+, nibabel affines RAS+; they differ by ``diag(-1, -1, 1)``):

* one instance per slice ``k`` (the last array axis), InstanceNumber ``k + 1``;
* DICOM column ``c`` = array ``i`` (row cosine = LPS direction of ``+i``);
* DICOM row ``r`` = array ``j`` counted from the last (``j = ny - 1 - r``, column cosine
  = direction of ``-j``) when the affine's determinant is negative, which is what
  dcm2niix writes, so dcm2niix gives the array back unchanged; otherwise ``j = r``.
  Either way the slice normal (row cosine × column cosine) points along ``+k``;
* ImagePositionPatient = the LPS centre of the slice's pixel (0, 0); PixelSpacing =
  [between rows, between columns] = [|j step|, |i step|].

Pixels are the volume's scaled values as int16 with RescaleSlope/RescaleIntercept:
the NIfTI's own stored integers and scale when they are int16, else a linear
quantisation of the scaled values. The display window (WindowCenter/WindowWidth, in
scaled units) is the caller's: a viewer opens the series with it.

UIDs are derived from the caller's ``key`` (study) and the file's content (series,
instances), so the same file always gives the same instances and storing it again
changes nothing.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage
from pydicom.valuerep import format_number_as_ds

from vhi.errors import InputError

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
_INT16_MAX = 32767


@dataclass(frozen=True)
class Window:
    """A display window in the image's scaled units (DICOM VOI LUT window)."""

    low: float
    high: float
    explanation: str

    @property
    def center(self) -> float:
        return (self.low + self.high) / 2

    @property
    def width(self) -> float:
        return max(self.high - self.low, 1.0)


@dataclass(frozen=True)
class SeriesIds:
    """Who the series belongs to and its deterministic identity."""

    study_uid: str
    series_uid: str
    patient_id: str
    accession: str
    description: str
    series_number: int = 1


#: The namespace of the platform's name-based UUIDs (uuid5 of a fixed name).
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://vhi-platform/dicom-uid")


def uid_from(*parts: str) -> str:
    """A UID derived from ``parts``: the same parts always give the same UID.

    A name-based UUID (version 5) in the 2.25 form (ISO/IEC 9834-8); pydicom's
    ``generate_uid`` is random under the 2.25 root whatever its entropy sources.
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(31).join(parts)).int}"


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _pixels(img: nib.spatialimages.SpatialImage, what: object) -> tuple[np.ndarray, float, float]:
    """int16 stored values and (slope, intercept) giving the image's scaled values."""
    proxy = img.dataobj
    if hasattr(proxy, "get_unscaled"):
        raw = np.asanyarray(proxy.get_unscaled())
        slope = float(proxy.slope) if proxy.slope is not None else 1.0
        inter = float(proxy.inter) if proxy.inter is not None else 0.0
        if not np.isfinite(slope) or slope == 0:
            slope, inter = 1.0, 0.0
    else:
        raw, slope, inter = np.asanyarray(proxy), 1.0, 0.0
    if raw.ndim != 3:
        raise InputError(what, f"expected a 3-D image, got shape {raw.shape}")
    if (np.issubdtype(raw.dtype, np.integer) and raw.size
            and raw.min() >= -_INT16_MAX - 1 and raw.max() <= _INT16_MAX):
        return raw.astype(np.int16), slope, inter
    values = np.asarray(img.get_fdata(dtype=np.float64))
    if not np.all(np.isfinite(values)):
        raise InputError(what, "image holds NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    step = (hi - lo) / (2 * _INT16_MAX) or 1.0
    mid = (hi + lo) / 2
    return np.rint((values - mid) / step).astype(np.int16), step, mid


def _axes(affine: np.ndarray, what: object) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(row cosine, column cosine, zooms, rows counted from the last j) of an affine."""
    lin = LPS_FROM_RAS @ np.asarray(affine, dtype=np.float64)[:3, :3]
    zooms = np.linalg.norm(lin, axis=0)
    if np.any(zooms <= 0) or not np.all(np.isfinite(zooms)):
        raise InputError(what, f"degenerate affine (voxel sizes {zooms})")
    unit = lin / zooms
    flip = float(np.linalg.det(unit)) < 0
    row_cos = unit[:, 0]
    col_cos = -unit[:, 1] if flip else unit[:, 1]
    if float(np.cross(row_cos, col_cos) @ unit[:, 2]) < 0.5:
        raise InputError(what, "the slice axis is far from normal to the slices (sheared affine): "
                               "no DICOM series can hold this grid")
    return row_cos, col_cos, zooms, flip


def _common(ids: SeriesIds, zooms: np.ndarray, shape: tuple[int, ...], *, scale: tuple[float, float],
            window: Window | None) -> Dataset:
    """The attributes every instance of the series shares."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.StudyTime = ds.SeriesTime = ""
    ds.AccessionNumber = ids.accession
    ds.Modality = "MR"
    ds.Manufacturer = "VHI platform"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "VHI cleaning station"
    ds.SeriesDescription = ids.description
    ds.PatientID = ids.patient_id
    ds.PatientName = f"{ids.patient_id}^"
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.StudyInstanceUID = ids.study_uid
    ds.SeriesInstanceUID = ids.series_uid
    ds.StudyID = ids.accession[:16]
    ds.SeriesNumber = ids.series_number
    ds.FrameOfReferenceUID = uid_from("frame-of-reference", ids.series_uid)
    ds.PositionReferenceIndicator = ""
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(zooms[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = shape[1], shape[0]
    ds.PixelSpacing = [_ds(zooms[1]), _ds(zooms[0])]
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = _ds(scale[0])
    ds.RescaleIntercept = _ds(scale[1])
    ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter = _ds(window.center)
        ds.WindowWidth = _ds(window.width)
        ds.WindowCenterWidthExplanation = window.explanation[:64]
    return ds


def mr_series(img: nib.spatialimages.SpatialImage, ids: SeriesIds, window: Window | None = None,
              *, what: object = "image") -> list[Dataset]:
    """The instances (one per slice, in slice order) of ``img`` as MR Image Storage datasets:
    DICOM files (preamble, ``DICM`` and file meta), however they are written (dicomweb-client's
    STOW-RS writes a dataset as it stands, so a bare dataset would be stored without them)."""
    raw, slope, inter = _pixels(img, what)
    ny = raw.shape[1]
    affine = np.asarray(img.affine, dtype=np.float64)
    row_cos, col_cos, zooms, flip = _axes(affine, what)
    common = _common(ids, zooms, raw.shape, scale=(slope, inter), window=window)
    orientation = [_ds(v) for v in (*row_cos, *col_cos)]
    out = []
    for k in range(raw.shape[2]):
        plane = raw[:, :, k].T  # [j, i] = [row, column] before the flip
        if flip:
            plane = plane[::-1]
        corner = (0.0, ny - 1.0 if flip else 0.0, float(k))
        position = LPS_FROM_RAS @ (affine @ np.array([*corner, 1.0]))[:3]
        sop = uid_from("instance", ids.series_uid, str(k))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset("", copy.deepcopy(common), file_meta=meta, preamble=b"\0" * 128)
        ds.SOPInstanceUID = sop
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = orientation
        ds.PixelData = np.ascontiguousarray(plane, dtype="<i2").tobytes()
        out.append(ds)
    return out


def percentile_window(values: Sequence[float] | np.ndarray, low_pct: float, high_pct: float,
                      explanation: str, *, at_least: float | None = None) -> Window:
    """A window from ``low_pct`` to ``high_pct`` percentile of ``values``; its top is raised to
    ``at_least`` when given (e.g. the proposal's upper threshold)."""
    values = np.asarray(values, dtype=np.float64)
    low, high = (float(v) for v in np.percentile(values, [low_pct, high_pct]))
    if at_least is not None and np.isfinite(at_least):
        high = max(high, float(at_least))
    return Window(low, high, explanation)
