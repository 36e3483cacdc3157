"""Lesion masks ↔ DICOM SEG, for pushing proposals to XNAT/OHIF and reading edits back.

Conventions
-----------
* Masks live on the STIR NIfTI grid that :func:`vhi.imaging.dicom.dicom_to_nifti` made from
  the source series: ``mask[i, j, k]``, slices along the last axis, with the NIfTI
  affine (RAS+, nibabel) mapping voxel indices to millimetres.
* DICOM geometry is LPS+. A SEG frame pixel ``(row r, column c)`` lies at
  ``IPP + c·Δcol·rowcos + r·Δrow·colcos`` (``PixelSpacing = [Δrow, Δcol]``); mapped to
  RAS and through the inverse NIfTI affine it must land on integer voxel indices.
  Every frame↔slice correspondence here is derived that way, from geometry, never
  from the order of instances or frames (dcm2niix flips rows and sorts slices; see
  :mod:`vhi.imaging.dicom`).
* Written SEGs are BINARY, uncompressed explicit VR little endian (the XNAT ROI plugin
  cannot read RLE), one segment, one frame per source instance (empty frames kept so
  that an empty proposal is still a valid SEG), per-frame references to the source
  SOP instances, ContentQualification RESEARCH, and a series description that says
  the object is an AI proposal for research use.
* Reading accepts SEGs from the OHIF viewer as well: frames in any order, frames located
  by PlanePositionSequence or, lacking that, by the source instance they reference (SOP
  Instance UID), BINARY, FRACTIONAL or LABELMAP.
* What is measured of a SEG with several segments (:func:`inflammation_segments`): the
  inflammation segments, those whose segmented property type is Inflammation (SCT
  409774005, what the platform writes) or whose label begins with "Inflammation" (OHIF
  keeps the label of the proposal's segment when a reader edits it, but writes every
  segment's type as "Tissue"). Other segments (a note, another finding) are left out and
  named in the log; a SEG with several segments none of which is an inflammation segment
  is refused, naming them. A SEG with one segment is that segment, whatever its name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

import vhi
from vhi.errors import InputError
from vhi.fileio import atomic_path
from vhi.imaging.nifti import GRID_TOLERANCE_VOXELS

log = logging.getLogger(__name__)

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])

#: SOP classes read as segmentations: Segmentation Storage and Label Map Segmentation Storage.
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")

#: Appended to a series description that does not already say what the object is.
PROPOSAL_MARK = "AI proposal, research use"

#: The marks of a SEG this platform wrote. A source recognises its own proposals by
#: them (:func:`is_platform_seg`) and never replaces a SEG without them.
PLATFORM_MANUFACTURER = "VHI platform"
PLATFORM_CONTENT_LABEL = "VHI_PROPOSAL"
#: How a proposal SEG describes itself and the algorithm that made it.
PROPOSAL_SERIES_DESCRIPTION = "VHI inflammation (AI proposal, research use)"
PROPOSAL_ALGORITHM_NAME = "VHI two-threshold lesion proposal"

_CONTENT_DESCRIPTION = "AI proposal for research use only; not for clinical use"


@dataclass(frozen=True)
class SegInfo:
    """Identifiers of a written SEG."""

    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    referenced_series_uid: str
    number_of_frames: int


@dataclass(frozen=True)
class _Plane:
    """Geometry of one 2-D frame: LPS position of pixel (0, 0), cosines, spacing, matrix."""

    position: np.ndarray
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    spacing: tuple[float, float]  # (between rows, between columns)
    rows: int
    columns: int


def _floats(values: object, n: int, what: object, name: str) -> np.ndarray:
    try:
        out = np.asarray([float(v) for v in values], dtype=np.float64)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as exc:
        raise InputError(what, f"malformed {name} ({exc})") from exc
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise InputError(what, f"malformed {name}: {values}")
    return out


def _plane_of_image(ds: Dataset, what: object) -> _Plane:
    for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if key not in ds:
            raise InputError(what, f"source instance {ds.get('SOPInstanceUID', '?')} lacks {key}")
    iop = _floats(ds.ImageOrientationPatient, 6, what, "ImageOrientationPatient")
    spacing = _floats(ds.PixelSpacing, 2, what, "PixelSpacing")
    return _Plane(_floats(ds.ImagePositionPatient, 3, what, "ImagePositionPatient"),
                  iop[:3], iop[3:], (float(spacing[0]), float(spacing[1])),
                  int(ds.Rows), int(ds.Columns))


def _voxel_indices(plane: _Plane, affine: np.ndarray, shape: tuple[int, int, int],
                   what: object, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer voxel indices (each rows×columns) of every pixel of ``plane`` on the NIfTI grid.

    Raises InputError when the plane's pixels are not voxels of the grid (another
    orientation, pixel size, offset or field of view).
    """
    to_voxel = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    lin = to_voxel[:3, :3] @ LPS_FROM_RAS
    origin = to_voxel[:3, :3] @ (LPS_FROM_RAS @ plane.position) + to_voxel[:3, 3]
    step_c = lin @ (plane.row_cosine * plane.spacing[1])     # one column to the right
    step_r = lin @ (plane.column_cosine * plane.spacing[0])  # one row down
    int_c, int_r, int_o = np.rint(step_c), np.rint(step_r), np.rint(origin)
    far = origin + (plane.columns - 1) * step_c + (plane.rows - 1) * step_r
    int_far = int_o + (plane.columns - 1) * int_c + (plane.rows - 1) * int_r
    error = max(float(np.abs(origin - int_o).max()), float(np.abs(far - int_far).max()))
    unit = (np.abs(int_c).sum() == 1 and np.abs(int_r).sum() == 1
            and float(np.abs(int_c) @ np.abs(int_r)) == 0)
    if not unit or error > GRID_TOLERANCE_VOXELS:
        raise InputError(what, f"{label} does not lie on the voxel grid of the image "
                               f"(pixel steps {np.round(step_c, 3)} / {np.round(step_r, 3)} voxels, "
                               f"offset {error:.3f} voxels): different geometry")
    rr, cc = np.meshgrid(np.arange(plane.rows), np.arange(plane.columns), indexing="ij")
    idx = [(int_o[a] + int_c[a] * cc + int_r[a] * rr).astype(np.intp) for a in range(3)]
    for a in range(3):
        if idx[a].min() < 0 or idx[a].max() >= shape[a]:
            raise InputError(what, f"{label} reaches outside the image grid {tuple(shape)} "
                                   f"(axis {a}: {idx[a].min()}..{idx[a].max()}): different geometry")
    return idx[0], idx[1], idx[2]


def _source_series_uid(source_datasets: Sequence[Dataset], what: object) -> str:
    if not source_datasets:
        raise InputError(what, "no source DICOM instances given")
    uids = {str(ds.SeriesInstanceUID) for ds in source_datasets}
    if len(uids) != 1:
        raise InputError(what, f"source instances come from {len(uids)} series, expected one")
    for ds in source_datasets:
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise InputError(what, "multi-frame source images are not supported")
    return uids.pop()


def _proposal_description(description: str) -> str:
    text = description.strip()
    low = text.lower()
    if not ("proposal" in low and "research" in low):
        text = f"{text} ({PROPOSAL_MARK})" if text else PROPOSAL_MARK
    if len(text) > 64:
        raise ValueError(f"series description longer than 64 characters: {text!r}")
    return text


def is_platform_seg(ds: Dataset) -> bool:
    """Whether a SEG (its header is enough) carries the marks this platform writes."""
    return (str(ds.get("ContentLabel", "")) == PLATFORM_CONTENT_LABEL
            and str(ds.get("Manufacturer", "")) == PLATFORM_MANUFACTURER)


def write_seg(mask: np.ndarray, nifti_affine: np.ndarray, source_datasets: Sequence[Dataset],
              dest: str | os.PathLike[str], *, algorithm_version: str, series_number: int,
              algorithm_name: str = PROPOSAL_ALGORITHM_NAME,
              series_description: str = PROPOSAL_SERIES_DESCRIPTION,
              segment_label: str = "Inflammation (AI proposal)") -> SegInfo:
    """Write ``mask`` (bool, or labels where ≥ 1 is lesion) as a BINARY DICOM SEG at ``dest``.

    ``mask`` is on the NIfTI grid (``nifti_affine``, RAS+) that dicom_to_nifti produced
    from ``source_datasets`` (one single-frame series, any order). Each source
    instance becomes one frame; its pixels are looked up in ``mask`` through the
    instance's geometry (IPP/IOP/PixelSpacing, LPS) and the inverse NIfTI affine. An
    empty mask gives a valid SEG whose frames are all empty. ``series_description``
    gets " (AI proposal, research use)" appended unless it mentions both "proposal"
    and "research"; it must fit 64 characters. The file is written atomically.

    Raises InputError when the source instances do not cover the mask grid exactly once
    (another series, geometry or field of view).
    """
    dest = Path(dest)
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise InputError(dest.name, f"mask must be 3-D, got shape {mask.shape}")
    if mask.dtype != bool:
        if not np.all(np.isfinite(mask)):
            raise InputError(dest.name, "mask holds NaN or infinite values")
        mask = mask >= 1
    affine = np.asarray(nifti_affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"nifti_affine must be 4×4, got {affine.shape}")
    series_uid = _source_series_uid(source_datasets, dest.name)
    description = _proposal_description(series_description)

    frames = []
    covered = np.zeros(mask.shape, dtype=np.uint16)
    for ds in source_datasets:
        label = f"source instance {ds.SOPInstanceUID}"
        ii, jj, kk = _voxel_indices(_plane_of_image(ds, dest.name), affine, mask.shape,
                                    dest.name, label)
        frames.append(mask[ii, jj, kk])
        covered[ii, jj, kk] += 1
    if not np.all(covered == 1):
        missing, twice = int(np.sum(covered == 0)), int(np.sum(covered > 1))
        raise InputError(dest.name, f"the source instances do not cover the mask grid exactly once "
                                    f"({missing} voxels uncovered, {twice} covered twice)")
    pixel_array = np.stack(frames).astype(np.uint8)

    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.DCM.ArtificialIntelligence, version=algorithm_version)
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=segment_label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Inflammation,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[codes.SCT.SacroiliacJoint],
    )
    seg = hd.seg.Segmentation(
        source_images=list(source_datasets),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=PLATFORM_MANUFACTURER,
        manufacturer_model_name="vhi",
        software_versions=f"vhi {vhi.__version__}; {algorithm_name} {algorithm_version}",
        device_serial_number="none",
        content_description=_CONTENT_DESCRIPTION,
        content_label=PLATFORM_CONTENT_LABEL,
        content_creator_name="VHI^Platform",
        transfer_syntax_uid=ExplicitVRLittleEndian,
        omit_empty_frames=False,
        series_description=description,
        content_qualification=hd.ContentQualificationValues.RESEARCH,
    )
    with atomic_path(dest) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    info = SegInfo(
        sop_instance_uid=str(seg.SOPInstanceUID),
        series_instance_uid=str(seg.SeriesInstanceUID),
        study_instance_uid=str(seg.StudyInstanceUID),
        referenced_series_uid=series_uid,
        number_of_frames=int(seg.NumberOfFrames),
    )
    log.info("wrote SEG %s: %d frames, %d lesion voxels, referencing series %s",
             dest.name, info.number_of_frames, int(mask.sum()), series_uid)
    return info


def _functional_item(seg: Dataset, per_frame: Dataset | None, name: str) -> Dataset | None:
    for groups in (per_frame, seg.get("SharedFunctionalGroupsSequence", [None])[0]):
        if groups is not None and name in groups and len(groups[name].value):
            return groups[name][0]
    return None


def _referenced_sops(per_frame: Dataset | None) -> list[str]:
    uids = []
    if per_frame is None:
        return uids
    for derivation in per_frame.get("DerivationImageSequence", []):
        for source in derivation.get("SourceImageSequence", []):
            if "ReferencedSOPInstanceUID" in source:
                uids.append(str(source.ReferencedSOPInstanceUID))
    return uids


#: Segmented property types that make a segment an inflammation segment: SCT Inflammation
#: (what :func:`write_seg` writes) and its SNOMED RT code.
INFLAMMATION_TYPES = frozenset({("SCT", "409774005"), ("SRT", "M-40000")})


def _segment_name(item: Dataset) -> str:
    number = item.get("SegmentNumber", "?")
    kind = item.get("SegmentedPropertyTypeCodeSequence")
    meaning = str(kind[0].get("CodeMeaning", "")) if kind else ""
    return f"{number} '{item.get('SegmentLabel', '')}'" + (f" ({meaning})" if meaning else "")


def _is_inflammation(item: Dataset) -> bool:
    kind = item.get("SegmentedPropertyTypeCodeSequence")
    if kind and (str(kind[0].get("CodingSchemeDesignator", "")),
                 str(kind[0].get("CodeValue", ""))) in INFLAMMATION_TYPES:
        return True
    return str(item.get("SegmentLabel", "")).strip().lower().startswith("inflammation")


def inflammation_segments(seg: Dataset, what: object) -> dict[int, str]:
    """The segments of a SEG that are measured (number -> how messages name it).

    One segment: that one. Several: those of type Inflammation or labelled
    "Inflammation…" (see the module docstring); none of them is an InputError that names
    every segment.
    """
    items = list(seg.get("SegmentSequence", []))
    try:
        segments = {int(item.SegmentNumber): item for item in items}
    except (AttributeError, TypeError, ValueError):
        raise InputError(what, "a segment of the SEG has no valid SegmentNumber") from None
    if len(segments) != len(items):
        raise InputError(what, f"the SEG describes {len(items)} segments with only {len(segments)} "
                               "distinct segment numbers")
    if len(segments) <= 1:
        return {n: _segment_name(item) for n, item in segments.items()}
    chosen = {n: _segment_name(item) for n, item in segments.items() if _is_inflammation(item)}
    if not chosen:
        names = ", ".join(_segment_name(item) for item in segments.values())
        raise InputError(what, f"the SEG has {len(segments)} segments and none is the inflammation "
                               f"segment (segments {names}): save the cleaned inflammation as one "
                               "segment labelled 'Inflammation…' (the proposal's segment keeps "
                               "that label), or as the SEG's only segment")
    return chosen


def _frame_values(seg: Dataset, what: object) -> np.ndarray:
    """The frames' pixel values, (frames, rows, columns)."""
    n_frames = int(getattr(seg, "NumberOfFrames", 1) or 0)
    if n_frames == 0 or "PixelData" not in seg:
        return np.zeros((0, int(seg.Rows), int(seg.Columns)), dtype=np.uint8)
    try:
        pixels = seg.pixel_array
    except Exception as exc:  # pydicom raises many types for bad pixel data
        raise InputError(what, f"cannot decode the SEG pixel data ({exc})") from exc
    return pixels.reshape(n_frames, int(seg.Rows), int(seg.Columns))


def _frame_masks(seg: Dataset, per_frame: list[Dataset], measured: set[int] | None,
                 what: object) -> tuple[np.ndarray, dict[int, int]]:
    """Per frame, the pixels of the ``measured`` segments (None: of every segment), and the
    pixels set per segment number.

    BINARY and FRACTIONAL frames each belong to one segment (SegmentIdentificationSequence,
    per frame or shared; in a SEG of one segment, every frame is its); LABELMAP pixels hold
    the segment number.
    """
    values = _frame_values(seg, what)
    kind = str(seg.get("SegmentationType", "BINARY")).upper()
    if kind == "LABELMAP":
        numbers, counts = np.unique(values[values > 0], return_counts=True)
        on = values > 0 if measured is None else np.isin(values, sorted(measured))
        return on, {int(n): int(c) for n, c in zip(numbers, counts, strict=True)}
    if kind == "FRACTIONAL":
        on = values.astype(np.float64) >= float(seg.get("MaximumFractionalValue", 255) or 255) / 2
    else:
        on = values > 0
    described = {int(item.SegmentNumber) for item in seg.get("SegmentSequence", [])}
    pixels: dict[int, int] = {}
    for f in range(len(on)):
        ident = _functional_item(seg, per_frame[f] if per_frame else None, "SegmentIdentificationSequence")
        if len(described) <= 1:  # every frame is the one segment's
            number = next(iter(described), 1)
        elif ident is not None and "ReferencedSegmentNumber" in ident:
            number = int(ident.ReferencedSegmentNumber)
            if number not in described:
                raise InputError(what, f"frame {f + 1} belongs to segment {number}, which the SEG "
                                       "does not describe (SegmentSequence)")
        else:
            raise InputError(what, f"frame {f + 1} names no segment (SegmentIdentificationSequence) "
                                   "in a SEG with several segments")
        pixels[number] = pixels.get(number, 0) + int(on[f].sum())
        if measured is not None and number not in measured:
            on[f] = False
    return on, pixels


def _check_references(seg: Dataset, source_datasets: Sequence[Dataset], series_uid: str,
                      path: Path) -> None:
    referenced = [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])
                  if "SeriesInstanceUID" in item]
    if referenced and series_uid not in referenced:
        raise InputError(path, f"the SEG references series {', '.join(referenced)}, "
                               f"not the source series {series_uid}")
    seg_for = seg.get("FrameOfReferenceUID")
    src_for = source_datasets[0].get("FrameOfReferenceUID")
    if seg_for and src_for and str(seg_for) != str(src_for):
        raise InputError(path, f"the SEG's frame of reference {seg_for} is not the source "
                               f"series' {src_for}")


def _frame_plane(seg: Dataset, groups: Dataset | None, label: str, *, by_sop: dict[str, Dataset],
                 series_uid: str, path: Path) -> _Plane:
    """Geometry of one SEG frame: its plane position, else its referenced source instance."""
    sops = _referenced_sops(groups)
    foreign = [uid for uid in sops if uid not in by_sop]
    if foreign:
        raise InputError(path, f"{label} references instance {foreign[0]}, which is not in "
                               f"the source series {series_uid}")
    position = _functional_item(seg, groups, "PlanePositionSequence")
    orientation = _functional_item(seg, groups, "PlaneOrientationSequence")
    measures = _functional_item(seg, groups, "PixelMeasuresSequence")
    if position is not None and orientation is not None and measures is not None:
        iop = _floats(orientation.ImageOrientationPatient, 6, path, "ImageOrientationPatient")
        spacing = _floats(measures.PixelSpacing, 2, path, "PixelSpacing")
        return _Plane(_floats(position.ImagePositionPatient, 3, path, "ImagePositionPatient"),
                      iop[:3], iop[3:], (float(spacing[0]), float(spacing[1])),
                      int(seg.Rows), int(seg.Columns))
    if not sops:
        raise InputError(path, f"{label} has neither a plane position nor a source instance "
                               "reference: cannot place it")
    source = by_sop[sops[0]]
    if (int(source.Rows), int(source.Columns)) != (int(seg.Rows), int(seg.Columns)):
        raise InputError(path, f"{label} is {seg.Rows}×{seg.Columns} but its source "
                               f"instance is {source.Rows}×{source.Columns}")
    return _plane_of_image(source, path)


def read_seg(path: str | os.PathLike[str],
             grid: nib.spatialimages.SpatialImage | tuple[np.ndarray, Sequence[int]],
             source_datasets: Sequence[Dataset]) -> np.ndarray:
    """Decode a DICOM SEG (ours or the OHIF viewer's) to a bool mask on the NIfTI grid.

    ``grid`` is the STIR NIfTI image, or ``(affine, shape)`` (RAS+ affine, 3-D shape);
    ``source_datasets`` is the series the SEG was drawn on. The result is the union of
    the inflammation segments (:func:`inflammation_segments`), indexed ``[i, j, k]`` like
    the NIfTI array; other segments are left out and named in the log. Each frame is placed
    by its PlanePositionSequence (with the plane orientation and pixel measures of
    the SEG) or, where that is missing, by the geometry of the source instance it
    references by SOP Instance UID.

    Raises InputError naming ``path`` for an unreadable file, an object that is not a
    SEG, a SEG that references another series, frame of reference or instances not in
    ``source_datasets``, frames that do not lie on the grid (different geometry), and
    several segments none of which is an inflammation segment.
    """
    path = Path(path)
    if isinstance(grid, nib.spatialimages.SpatialImage):
        affine, shape = np.asarray(grid.affine, dtype=np.float64), tuple(grid.shape[:3])
    else:
        affine, shape = np.asarray(grid[0], dtype=np.float64), tuple(int(s) for s in grid[1])
    if affine.shape != (4, 4) or len(shape) != 3:
        raise ValueError("grid must be a 3-D NIfTI image or (4×4 affine, 3-D shape)")
    series_uid = _source_series_uid(source_datasets, path)
    by_sop = {str(ds.SOPInstanceUID): ds for ds in source_datasets}

    try:
        seg = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types on damaged files
        raise InputError(path, f"cannot read as DICOM ({type(exc).__name__}: {exc})") from exc
    if str(seg.get("SOPClassUID", "")) not in SEG_SOP_CLASSES and seg.get("Modality") != "SEG":
        raise InputError(path, f"not a DICOM SEG (SOP class {seg.get('SOPClassUID', '?')}, "
                               f"modality {seg.get('Modality', '?')})")

    _check_references(seg, source_datasets, series_uid, path)

    measured = inflammation_segments(seg, path)
    per_frame = list(seg.get("PerFrameFunctionalGroupsSequence", []))
    n_frames = int(getattr(seg, "NumberOfFrames", 1) or 0) if "PixelData" in seg else 0
    if per_frame and len(per_frame) != n_frames:
        raise InputError(path, f"{len(per_frame)} per-frame functional groups for "
                               f"{n_frames} frames")
    frames, pixels = _frame_masks(seg, per_frame, set(measured) or None, path)
    left_out = {n: c for n, c in pixels.items() if measured and n not in measured and c}
    if left_out:
        names = {int(item.SegmentNumber): _segment_name(item) for item in seg.get("SegmentSequence", [])}
        log.warning("%s: measuring segment %s; left out (not inflammation): %s", path.name,
                    ", ".join(measured.values()),
                    ", ".join(f"{names.get(n, n)} with {c} pixels" for n, c in sorted(left_out.items())))
    out = np.zeros(shape, dtype=bool)
    for f, frame in enumerate(frames):
        plane = _frame_plane(seg, per_frame[f] if per_frame else None, f"frame {f + 1}", by_sop=by_sop,
                             series_uid=series_uid, path=path)
        ii, jj, kk = _voxel_indices(plane, affine, shape, path, f"frame {f + 1}")
        out[ii, jj, kk] |= frame
    log.info("read SEG %s: %d frames, %d voxels set", path.name, len(frames), int(out.sum()))
    return out
