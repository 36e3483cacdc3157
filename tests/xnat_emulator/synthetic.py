"""Tiny synthetic MR series and SEGs for the emulator's own tests (not the demo data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

TEST_USERS = {"alice": "secret-alice-pw", "bob": "secret-bob-pw"}
PROJECT = "VHI_TEST"


@dataclass(frozen=True)
class SeriesInfo:
    folder: Path
    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]
    files: tuple[Path, ...]


def write_mr_series(folder: Path, *, study_uid: str | None = None, rows: int = 8,
                    cols: int = 8, slices: int = 4, series_number: int = 1,
                    description: str = "STIR_cor", seed: int = 0) -> SeriesInfo:
    """Write ``slices`` single-frame MR images of one series (random pixels) into ``folder``."""
    from support.dicom_series import write_series

    study_uid = study_uid or generate_uid()
    pixels = np.random.default_rng(seed).integers(0, 1000, (cols, rows, slices)).astype(np.int16)
    img = nib.Nifti1Image(pixels, np.diag([-1.0, 1.0, 1.0, 1.0]))  # dcm2niix's handedness
    written = write_series(img, folder, series_description=description,
                           series_number=series_number, study_uid=study_uid,
                           patient_id="EMU001", patient_name="Synthetic^Emulator",
                           study_date="20240102", frame_of_reference_uid=generate_uid())
    return SeriesInfo(folder, study_uid, written.series_uid, tuple(written.sop_uids),
                      tuple(written.files))


def build_seg(series: SeriesInfo, *, description: str = "AI proposal",
              study_uid: str | None = None) -> bytes:
    """A BINARY DICOM SEG (uncompressed) over ``series``, built with highdicom.

    ``study_uid`` overrides the SEG's StudyInstanceUID (to build a mismatching SEG).
    """
    import io  # highdicom is slow to import; only SEG-building tests pay for it

    import highdicom as hd

    sources = [pydicom.dcmread(p) for p in series.files]
    mask = np.zeros((len(sources), sources[0].Rows, sources[0].Columns), dtype=bool)
    mask[:, 2:5, 2:5] = True
    algorithm = hd.AlgorithmIdentificationSequence(
        name="emulator-test",
        version="0.1",
        family=hd.sr.CodedConcept("123109", "DCM", "Manual Processing"),
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=hd.sr.CodedConcept(
            "49755003", "SCT", "Morphologically Altered Structure"
        ),
        segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="VHI",
        manufacturer_model_name="emulator-test",
        software_versions="0.1",
        device_serial_number="0",
        series_description=description,
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    if study_uid is not None:
        seg.StudyInstanceUID = study_uid
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class SyntheticStudy:
    """Two series of one study (seeded as scans 1 and 2 of SESS1) and a second study."""

    scan1: SeriesInfo
    scan2: SeriesInfo
    other_study: SeriesInfo
    unarchived: SeriesInfo  # same study as SESS1, never uploaded


def build_rtstruct(series: SeriesInfo, *, label: str = "Lesion contours") -> bytes:
    """A minimal RT structure set over ``series`` (one square contour on its first image),
    as the viewer's contour export makes (the ROI plugin stores it as an RTSTRUCT collection)."""
    import io

    from pydicom.dataset import Dataset, FileMetaDataset

    first = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = first.StudyInstanceUID, generate_uid()
    ds.PatientID, ds.PatientName = first.PatientID, first.PatientName
    ds.StructureSetLabel, ds.StructureSetDate, ds.StructureSetTime = label, "20240102", "101010"
    image = Dataset()
    image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = first.SOPClassUID, first.SOPInstanceUID
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = series.series_uid
    ref_series.ContourImageSequence = [image]
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = [ref_series]
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 1, label
    roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
    ds.StructureSetROISequence = [roi]
    x, y, z = (float(v) for v in first.ImagePositionPatient)
    contour = Dataset()
    contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", 4
    contour.ContourData = [x, y, z, x + 2, y, z, x + 2, y + 2, z, x, y + 2, z]
    contour.ContourImageSequence = [image]
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ContourSequence = [contour]
    ds.ROIContourSequence = [roi_contour]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def build_aim(series: SeriesInfo) -> bytes:
    """A minimal AIM 4 ImageAnnotationCollection on ``series`` (the viewer's other contour form)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ImageAnnotationCollection xmlns="gme://caCORE.caCORE/4.4/edu.northwestern.radiology.AIM">'
        f'<uniqueIdentifier root="{generate_uid()}"/><imageAnnotations><ImageAnnotation>'
        f'<imageReferenceEntityCollection><ImageReferenceEntity><imageStudy>'
        f'<instanceUid root="{series.study_uid}"/><imageSeries>'
        f'<instanceUid root="{series.series_uid}"/></imageSeries></imageStudy>'
        '</ImageReferenceEntity></imageReferenceEntityCollection></ImageAnnotation>'
        '</imageAnnotations></ImageAnnotationCollection>'
    ).encode()
