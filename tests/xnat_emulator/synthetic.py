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
