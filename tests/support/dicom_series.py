"""Write a NIfTI volume as a realistic single-frame MR DICOM series (test data, XNAT emulator seed).

Conventions
-----------
* NIfTI affines are RAS+ (nibabel); DICOM patient coordinates are LPS+. The two differ
  by ``diag(-1, -1, 1)``.
* The NIfTI array is ``data[i, j, k]``: ``k`` is the slice (last axis). DICOM pixel
  data is ``pixels[row, column]``.
* dcm2niix (checked against v1.0.20260724) writes ``i`` = DICOM column, ``j`` = DICOM
  row counted from the *last* row (it flips rows), ``k`` = slice order along the slice
  normal ``row cosine x column cosine``. This writer inverts that, so that
  ``dcm2niix`` on the written series gives back the input array exactly and its
  affine within float rounding:

  - DICOM column ``c`` = NIfTI ``i``; DICOM row ``r`` = NIfTI ``j = ny - 1 - r``;
  - row cosine (IOP[0:3]) = LPS direction of ``+i``; column cosine (IOP[3:6]) = LPS
    direction of ``-j``; ImagePositionPatient = LPS centre of voxel ``(0, ny-1, k)``;
  - the slice normal ``row x column`` then points along ``+k`` for every affine
    with a negative determinant (qfac = -1, which dcm2niix always writes); images
    with det > 0 are refused, because dcm2niix never produces them.

Pixels are stored as the NIfTI's raw int16 values with the NIfTI scale as
RescaleSlope/RescaleIntercept, so the scaled values survive the round trip exactly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class SeriesInfo:
    """What :func:`write_series` wrote: the series UID and, in slice-file order, SOP UIDs and files."""

    series_uid: str
    sop_uids: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def _ds(value: float) -> str:
    """A DS string (≤ 16 characters) that keeps as many digits as fit."""
    return format_number_as_ds(float(value))


def _raw_and_scale(img: nib.spatialimages.SpatialImage) -> tuple[np.ndarray, float, float]:
    """The stored integers and the scale (slope, intercept) that nibabel applies to them."""
    proxy = img.dataobj
    if hasattr(proxy, "get_unscaled"):
        raw = np.asanyarray(proxy.get_unscaled())
        slope, inter = float(proxy.slope), float(proxy.inter)
    else:
        raw, slope, inter = np.asanyarray(proxy), 1.0, 0.0
    if raw.ndim != 3:
        raise ValueError(f"expected a 3-D image, got shape {raw.shape}")
    if not np.issubdtype(raw.dtype, np.integer) or raw.min() < -32768 or raw.max() > 32767:
        raise ValueError(f"raw data must fit int16, got {raw.dtype} in [{raw.min()}, {raw.max()}]")
    return raw.astype(np.int16), slope, inter


def write_series(img: nib.spatialimages.SpatialImage, out_dir: str | Path, *,
                 series_description: str, series_number: int, study_uid: str, patient_id: str,
                 patient_name: str, study_date: str, frame_of_reference_uid: str,
                 series_uid: str | None = None, protocol_name: str | None = None) -> SeriesInfo:
    """Write ``img`` as one classic MR Image Storage file per slice under ``out_dir``.

    Files are ``IM_0001.dcm`` … in InstanceNumber order (explicit VR little endian,
    uncompressed). See the module docstring for the geometry convention.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw, slope, inter = _raw_and_scale(img)
    nx, ny, nz = raw.shape
    aff = np.asarray(img.affine, dtype=np.float64)
    lin = LPS_FROM_RAS @ aff[:3, :3]
    zooms = np.linalg.norm(lin, axis=0)
    row_cos = lin[:, 0] / zooms[0]          # +i  (along a row: increasing column)
    col_cos = -lin[:, 1] / zooms[1]         # -j  (down a column: increasing row)
    normal = np.cross(row_cos, col_cos)
    if float(normal @ (lin[:, 2] / zooms[2])) < 0.5:
        # dcm2niix sorts slices along the normal, so its affines always have det < 0.
        raise ValueError("the image's voxel axes are right-handed (affine det > 0) or the slice "
                         "axis is not normal to the slices: dcm2niix never writes such a "
                         "layout, so no DICOM series round-trips to it")
    ks = range(nz)

    series_uid = series_uid or generate_uid()
    dt.datetime.strptime(study_date, "%Y%m%d")  # ValueError unless YYYYMMDD
    series_time = "101500.000000"
    info = SeriesInfo(series_uid=series_uid)
    desc = series_description
    is_stir = "stir" in desc.lower() or "tirm" in desc.lower()
    for n, k in enumerate(ks, start=1):
        pos_ras = aff @ np.array([0.0, ny - 1.0, float(k), 1.0])
        pos = LPS_FROM_RAS @ pos_ras[:3]
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]
        ds.InstanceCreationDate = study_date
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
        ds.StudyTime = "100000.000000"
        ds.SeriesTime = series_time
        ds.AcquisitionTime = ds.ContentTime = f"1016{n:02d}.000000"
        ds.AccessionNumber = ""
        ds.Modality = "MR"
        ds.Manufacturer = "SIEMENS"
        ds.InstitutionName = "VHI test site"
        ds.ReferringPhysicianName = ""
        ds.StationName = "MRC0001"
        ds.StudyDescription = "MRI sacroiliac joints"
        ds.SeriesDescription = desc
        ds.ManufacturerModelName = "Avanto"
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.PatientAge = ""
        ds.BodyPartExamined = "SIJ"
        ds.ScanningSequence = ["SE", "IR"] if is_stir else ["SE"]
        ds.SequenceVariant = ["SK", "SP", "MP"] if is_stir else ["SK", "SP", "OSP"]
        ds.ScanOptions = ["IR"] if is_stir else ["PFP"]
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = "*tir2d1_15" if is_stir else "*tse2d1_3"
        ds.SliceThickness = _ds(zooms[2])
        ds.RepetitionTime = "4500" if is_stir else "550"
        ds.EchoTime = "40" if is_stir else "8"
        if is_stir:
            ds.InversionTime = "160"
        ds.NumberOfAverages = "1"
        ds.ImagingFrequency = "63.676"
        ds.ImagedNucleus = "1H"
        ds.EchoNumbers = "1"
        ds.MagneticFieldStrength = "1.5"
        ds.SpacingBetweenSlices = _ds(zooms[2])
        ds.EchoTrainLength = "15" if is_stir else "3"
        ds.PercentSampling = "100"
        ds.PercentPhaseFieldOfView = "100"
        ds.PixelBandwidth = "250"
        ds.SoftwareVersions = "syngo MR B17"
        ds.ProtocolName = protocol_name or desc
        ds.ReceiveCoilName = "Body"
        ds.TransmitCoilName = "Body"
        ds.AcquisitionMatrix = [0, nx, ny, 0]
        ds.InPlanePhaseEncodingDirection = "ROW"
        ds.FlipAngle = "150"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = n
        ds.ImagePositionPatient = [_ds(v) for v in pos]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_cos, *col_cos)]
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(pos @ normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ny
        ds.Columns = nx
        # PixelSpacing = [between rows (along j), between columns (along i)]
        ds.PixelSpacing = [_ds(zooms[1]), _ds(zooms[0])]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        plane = raw[:, ::-1, k].T  # [row, column] with row r = j (ny - 1 - r)
        ds.SmallestImagePixelValue = int(plane.min())
        ds.LargestImagePixelValue = int(plane.max())
        ds.RescaleIntercept = _ds(inter)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "US"
        center = float(raw.max()) * slope / 2 + inter
        ds.WindowCenter = _ds(center)
        ds.WindowWidth = _ds(max(2 * center, 1.0))
        ds.PixelData = np.ascontiguousarray(plane, dtype="<i2").tobytes()
        ds["SmallestImagePixelValue"].VR = "SS"
        ds["LargestImagePixelValue"].VR = "SS"
        path = out_dir / f"IM_{n:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        info.sop_uids.append(sop_uid)
        info.files.append(path)
    return info


def add_segment(seg: Dataset, frames: np.ndarray, label: str, *, ohif_types: bool = True) -> Dataset:
    """``seg`` (a BINARY SEG, one frame per source instance) with one more segment as OHIF
    3.13 saves it: its own frames (``frames``: bool, one per frame of ``seg``, same order),
    labelled ``label``, drawn by hand. ``ohif_types``: every segment's category and type
    become SRT T-D0050 "Tissue", as OHIF writes them (labels kept)."""
    import copy

    n, rows, cols = int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns)
    old = seg.pixel_array.reshape(n, rows, cols).astype(bool)
    frames = np.asarray(frames, dtype=bool).reshape(n, rows, cols)
    number = max(int(item.SegmentNumber) for item in seg.SegmentSequence) + 1
    added = []
    for item in seg.PerFrameFunctionalGroupsSequence[:n]:
        copied = copy.deepcopy(item)
        ident = Dataset()
        ident.ReferencedSegmentNumber = number
        copied.SegmentIdentificationSequence = [ident]
        added.append(copied)
    seg.PerFrameFunctionalGroupsSequence = [*seg.PerFrameFunctionalGroupsSequence, *added]
    segment = copy.deepcopy(seg.SegmentSequence[0])
    segment.SegmentNumber, segment.SegmentLabel = number, label
    segment.SegmentAlgorithmType = "MANUAL"
    for key in ("SegmentationAlgorithmIdentificationSequence", "SegmentAlgorithmName",
                "AnatomicRegionSequence"):
        if key in segment:
            del segment[key]
    seg.SegmentSequence.append(segment)
    if ohif_types:
        for item in seg.SegmentSequence:
            for key in ("SegmentedPropertyCategoryCodeSequence", "SegmentedPropertyTypeCodeSequence"):
                code = Dataset()
                code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-D0050", "SRT", "Tissue"
                setattr(item, key, [code])
    seg.NumberOfFrames = 2 * n
    seg.PixelData = np.packbits(np.concatenate([old, frames]).reshape(-1), bitorder="little").tobytes()
    return seg
