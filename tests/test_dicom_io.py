"""DICOM series ↔ NIfTI (dcm2niix) and lesion mask ↔ DICOM SEG, on the public volumes."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from vhi.errors import InputError
from vhi.imaging.dicom import dicom_to_nifti, read_series
from vhi.imaging.seg import read_seg, write_seg

from support.dicom_series import SeriesInfo, add_segment, write_series

AFFINE_TOL_MM = 1e-3


def _series(img: nib.Nifti1Image, out: Path, *, description: str = "t2_tirm_cor_STIR",
            number: int = 5, study_uid: str | None = None,
            frame_of_reference_uid: str | None = None) -> SeriesInfo:
    return write_series(img, out, series_description=description, series_number=number,
                        study_uid=study_uid or generate_uid(), patient_id="VHI1003",
                        patient_name="VHI^1003", study_date="20190402",
                        frame_of_reference_uid=frame_of_reference_uid or generate_uid(),
                        protocol_name=description)


def _scaled_synthetic() -> nib.Nifti1Image:
    """A small int16 image with a non-trivial scale and the data's left-handed oblique affine."""
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 1400, size=(24, 20, 6), dtype=np.int16)
    theta = np.deg2rad(40)
    rot = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    lin = rot @ np.diag([-0.5952381, 0.5952381, 3.3])
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = lin, [95.2, -104.1, -141.9]
    img = nib.Nifti1Image(raw, affine)
    img.header.set_slope_inter(2.1023199558258057, 0.0)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    return nib.Nifti1Image.from_bytes(img.to_bytes())


@pytest.fixture(scope="module", params=["synthetic", "demo"])
def stir_1003(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[nib.Nifti1Image, Path, Path]:
    """1003 STIR: its DICOM series and dicom_to_nifti's output (shared by the SEG tests).

    Two tiers: a synthetic oblique stand-in (always) and the public volume (with ../shared)."""
    if request.param == "demo":
        data_dir = request.getfixturevalue("data_dir")
    else:
        from xnat_emulator.synthetic_demo import write_synthetic_demo

        data_dir = write_synthetic_demo(tmp_path_factory.mktemp("synthetic_demo"))
    img = nib.load(data_dir / "stir" / "1003_STIR.nii.gz")
    base = tmp_path_factory.mktemp("stir_1003")
    _series(img, base / "dicom")
    nifti = dicom_to_nifti(base / "dicom", base / "stir.nii.gz", scan="1003_STIR")
    return img, base / "dicom", nifti


# --- (a) NIfTI → DICOM → dcm2niix round trip ------------------------------------------------

@pytest.mark.parametrize("name", ["stir/1003_STIR", "stir/1012_STIR", "t1w/4386_T1W"])
def test_round_trip_real_volumes(data_dir: Path, tmp_path: Path, name: str) -> None:
    img = nib.load(data_dir / f"{name}.nii.gz")
    info = _series(img, tmp_path / "dicom", description="T1 TSE COR" if "T1W" in name else "COR STIR")
    assert len(info.files) == img.shape[2] == len(set(info.sop_uids))
    out = nib.load(dicom_to_nifti(tmp_path / "dicom", tmp_path / "out.nii.gz", scan=name))
    assert out.shape == img.shape
    assert np.array_equal(out.get_fdata(), img.get_fdata())
    assert np.abs(out.affine - img.affine).max() < AFFINE_TOL_MM
    assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(img.affine)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.nii.gz.")] == []


def test_round_trip_keeps_scale_and_ignores_instance_order(tmp_path: Path) -> None:
    img = _scaled_synthetic()
    info = _series(img, tmp_path / "dicom")
    first = pydicom.dcmread(info.files[0])
    assert first.Modality == "MR" and first.SOPClassUID == pydicom.uid.MRImageStorage
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert float(first.RescaleSlope) == pytest.approx(2.1023199558258057)
    # Scanners do not promise InstanceNumber order along the normal: reverse it.
    for n, path in enumerate(reversed(info.files), start=1):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = n
        ds.save_as(path)
    out = nib.load(dicom_to_nifti(tmp_path / "dicom", tmp_path / "out.nii.gz", scan="synthetic"))
    assert np.array_equal(out.get_fdata(), img.get_fdata())
    assert np.abs(out.affine - img.affine).max() < AFFINE_TOL_MM
    # read_series orders instances like the NIfTI slice axis.
    series = read_series(tmp_path / "dicom")
    raw = np.asanyarray(img.dataobj.get_unscaled())
    for k, ds in enumerate(series):
        assert np.array_equal(ds.pixel_array, raw[:, ::-1, k].T)


def test_write_series_refuses_layout_dcm2niix_never_writes(tmp_path: Path) -> None:
    img = _scaled_synthetic()
    flipped = nib.Nifti1Image(np.asanyarray(img.dataobj.get_unscaled())[::-1],
                              img.affine @ np.diag([-1.0, 1, 1, 1]))
    with pytest.raises(ValueError, match="det > 0"):
        _series(flipped, tmp_path / "dicom")


# --- (b) DICOM SEG ---------------------------------------------------------------------------

def _proposal(img: nib.Nifti1Image) -> np.ndarray:
    """A proposal-like label image: bright STIR voxels inside a box, labels 1 and 2."""
    data = img.get_fdata()
    labels = np.zeros(img.shape, dtype=np.uint8)
    nx, ny, nz = img.shape[:3]  # the box 90:250, 120:220 of a 336 × 336 slice, scaled
    box = (slice(nx * 90 // 336, nx * 250 // 336), slice(ny * 120 // 336, ny * 220 // 336),
           slice(5, min(18, nz)))
    inside = np.zeros(img.shape, dtype=bool)
    inside[box] = True
    labels[inside & (data > np.percentile(data[box], 80))] = 1
    labels[inside & (data > np.percentile(data[box], 95))] = 2
    return labels


def test_seg_round_trip(stir_1003: tuple[nib.Nifti1Image, Path, Path], tmp_path: Path) -> None:
    _, dicom, nifti_path = stir_1003
    nifti = nib.load(nifti_path)
    labels = _proposal(nifti)
    assert labels.any()
    source = read_series(dicom)
    info = write_seg(labels, nifti.affine, source, tmp_path / "proposal.seg.dcm",
                     algorithm_name="VHI threshold", algorithm_version="1.0",
                     series_description="VHI inflammation", series_number=901)
    seg = pydicom.dcmread(tmp_path / "proposal.seg.dcm")
    assert seg.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert "AI proposal" in seg.SeriesDescription and "research" in seg.SeriesDescription
    assert seg.ContentQualification == "RESEARCH"
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert seg.SegmentSequence[0].SegmentAlgorithmName == "VHI threshold"
    assert info.referenced_series_uid == seg.ReferencedSeriesSequence[0].SeriesInstanceUID \
        == source[0].SeriesInstanceUID
    assert info.study_instance_uid == source[0].StudyInstanceUID
    assert info.number_of_frames == len(source) == int(seg.NumberOfFrames)
    sops = {ds.SOPInstanceUID for ds in source}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert ref in sops
    back = read_seg(tmp_path / "proposal.seg.dcm", nifti, source)
    assert back.dtype == bool
    assert np.array_equal(back, labels >= 1)
    # Given the source instances in any order, the SEG is the same mask.
    shuffled = source[::2] + source[1::2]
    write_seg(labels >= 1, nifti.affine, shuffled, tmp_path / "shuffled.seg.dcm",
              algorithm_name="VHI threshold", algorithm_version="1.0",
              series_description="VHI inflammation AI proposal, research use", series_number=902)
    back = read_seg(tmp_path / "shuffled.seg.dcm", (nifti.affine, nifti.shape), source[::-1])
    assert np.array_equal(back, labels >= 1)


def test_seg_viewer_style_frames_by_sop_uid_and_several_segments(
        stir_1003: tuple[nib.Nifti1Image, Path, Path], tmp_path: Path) -> None:
    """An edited SEG as a viewer may write it: two segments, frames shuffled, no plane positions."""
    _, dicom, nifti_path = stir_1003
    nifti = nib.load(nifti_path)
    labels = _proposal(nifti)
    source = read_series(dicom)
    parts = []
    for label in (1, 2):
        write_seg(labels == label, nifti.affine, source, tmp_path / f"{label}.seg.dcm",
                  algorithm_name="x", algorithm_version="1", series_description="edit",
                  series_number=903)
        parts.append(pydicom.dcmread(tmp_path / f"{label}.seg.dcm"))
    seg = parts[0]
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "SegmentIdentificationSequence" in shared:
        del shared.SegmentIdentificationSequence
    frames = np.concatenate([p.pixel_array.astype(bool) for p in parts])
    groups = []
    for number, part in enumerate(parts, start=1):
        for item in part.PerFrameFunctionalGroupsSequence:
            ident = pydicom.Dataset()
            ident.ReferencedSegmentNumber = number
            item.SegmentIdentificationSequence = [ident]
            del item.PlanePositionSequence
            groups.append(item)
    order = np.random.default_rng(3).permutation(len(frames))
    seg.PerFrameFunctionalGroupsSequence = [groups[i] for i in order]
    seg.NumberOfFrames = len(order)
    seg.PixelData = np.packbits(frames[order].reshape(-1), bitorder="little").tobytes()
    second = copy.deepcopy(seg.SegmentSequence[0])
    second.SegmentNumber = 2
    second.SegmentLabel = "Inflammation (edited)"
    seg.SegmentSequence.append(second)
    seg.save_as(tmp_path / "edited.seg.dcm")
    back = read_seg(tmp_path / "edited.seg.dcm", nifti, source)
    assert np.array_equal(back, labels >= 1)


def _proposal_seg(nifti: nib.Nifti1Image, source: list, path: Path) -> pydicom.Dataset:
    write_seg(_proposal(nifti) >= 1, nifti.affine, source, path, algorithm_name="VHI",
              algorithm_version="1.0", series_description="VHI inflammation", series_number=910)
    return pydicom.dcmread(path)


def test_seg_extra_segment_is_left_out_and_named(
        stir_1003: tuple[nib.Nifti1Image, Path, Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A reader's second segment (a note, another finding) in an OHIF save: only the
    inflammation segment (the proposal's label, kept by OHIF; its type rewritten to
    "Tissue") is measured, and the log names what was left out."""
    _, dicom, nifti_path = stir_1003
    nifti = nib.load(nifti_path)
    source = read_series(dicom)
    seg = _proposal_seg(nifti, source, tmp_path / "p.seg.dcm")
    inflammation = read_seg(tmp_path / "p.seg.dcm", nifti, source)
    note = np.zeros((int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns)), bool)
    note[3:6, :7, :9] = True  # 189 pixels, outside the proposal's box
    add_segment(seg, note, "Segment 2").save_as(tmp_path / "two.seg.dcm")
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"
    caplog.set_level("WARNING")
    back = read_seg(tmp_path / "two.seg.dcm", nifti, source)
    assert np.array_equal(back, inflammation) and int(back.sum()) == int((_proposal(nifti) >= 1).sum())
    assert ("measuring segment 1 'Inflammation (AI proposal)' (Tissue); left out (not "
            "inflammation): 2 'Segment 2' (Tissue) with 189 pixels") in caplog.text


def test_seg_with_several_segments_none_inflammation_is_refused(
        stir_1003: tuple[nib.Nifti1Image, Path, Path], tmp_path: Path) -> None:
    _, dicom, nifti_path = stir_1003
    nifti = nib.load(nifti_path)
    source = read_series(dicom)
    seg = _proposal_seg(nifti, source, tmp_path / "p.seg.dcm")
    seg.SegmentSequence[0].SegmentLabel = "Segment 1"
    extra = np.zeros((int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns)), bool)
    extra[0, 0, 0] = True
    add_segment(seg, extra, "erosion?").save_as(tmp_path / "two.seg.dcm")
    with pytest.raises(InputError, match=r"two.seg.dcm: the SEG has 2 segments and none is the "
                                         r"inflammation segment \(segments 1 'Segment 1' \(Tissue\), "
                                         r"2 'erosion\?' \(Tissue\)\)"):
        read_seg(tmp_path / "two.seg.dcm", nifti, source)
    # one segment is measured whatever its name
    one = _proposal_seg(nifti, source, tmp_path / "one.seg.dcm")
    one.SegmentSequence[0].SegmentLabel = "Segment 1"
    one.save_as(tmp_path / "one.seg.dcm")
    assert int(read_seg(tmp_path / "one.seg.dcm", nifti, source).sum()) == int((_proposal(nifti) >= 1).sum())


def test_seg_labelmap_measures_the_inflammation_label(
        stir_1003: tuple[nib.Nifti1Image, Path, Path], tmp_path: Path) -> None:
    """A Label Map Segmentation (OHIF's default save): pixel values are segment numbers."""
    _, dicom, nifti_path = stir_1003
    nifti = nib.load(nifti_path)
    source = read_series(dicom)
    seg = _proposal_seg(nifti, source, tmp_path / "p.seg.dcm")
    inflammation = read_seg(tmp_path / "p.seg.dcm", nifti, source)
    shape = (int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    values = seg.pixel_array.reshape(shape).astype(np.uint8)
    values[3:6, :7, :9] = 2
    add_segment(seg, np.zeros_like(values, bool), "Segment 2")
    seg.NumberOfFrames = len(values)
    seg.PerFrameFunctionalGroupsSequence = seg.PerFrameFunctionalGroupsSequence[:len(values)]
    for item in [*seg.PerFrameFunctionalGroupsSequence, *seg.SharedFunctionalGroupsSequence]:
        if "SegmentIdentificationSequence" in item:
            del item.SegmentIdentificationSequence
    seg.SOPClassUID = seg.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.7"
    seg.SegmentationType = "LABELMAP"
    seg.BitsAllocated, seg.BitsStored, seg.HighBit = 8, 8, 7
    seg.PixelData = values.tobytes()
    seg.save_as(tmp_path / "labelmap.seg.dcm")
    assert np.array_equal(read_seg(tmp_path / "labelmap.seg.dcm", nifti, source), inflammation)


def test_seg_empty_mask_is_valid(stir_1003: tuple[nib.Nifti1Image, Path, Path], tmp_path: Path) -> None:
    _, dicom, nifti_path = stir_1003
    nifti = nib.load(nifti_path)
    source = read_series(dicom)
    info = write_seg(np.zeros(nifti.shape, dtype=np.uint16), nifti.affine, source,
                     tmp_path / "empty.seg.dcm", algorithm_name="VHI", algorithm_version="1.0",
                     series_description="VHI proposal (research use)", series_number=905)
    assert info.number_of_frames == len(source)
    seg = hd.seg.segread(tmp_path / "empty.seg.dcm")
    assert seg.SegmentationType == "BINARY"
    back = read_seg(tmp_path / "empty.seg.dcm", nifti, source)
    assert back.shape == nifti.shape and not back.any()


def test_seg_against_another_series_or_geometry_is_refused(
        stir_1003: tuple[nib.Nifti1Image, Path, Path], tmp_path: Path) -> None:
    img, dicom, nifti_path = stir_1003
    nifti = nib.load(nifti_path)
    source = read_series(dicom)
    write_seg(_proposal(nifti), nifti.affine, source, tmp_path / "p.seg.dcm",
              algorithm_name="VHI", algorithm_version="1.0",
              series_description="VHI inflammation", series_number=906)
    other = read_series(_series(img, tmp_path / "other", description="t1_tse_cor").files[0].parent)
    with pytest.raises(InputError, match="references series") as err:
        read_seg(tmp_path / "p.seg.dcm", nifti, other)
    assert "p.seg.dcm" in str(err.value)
    shifted = nifti.affine.copy()
    shifted[:3, 3] += shifted[:3, 0] * 0.5  # half a voxel along i
    with pytest.raises(InputError, match="different geometry"):
        read_seg(tmp_path / "p.seg.dcm", (shifted, nifti.shape), source)
    with pytest.raises(InputError, match="different geometry"):
        write_seg(_proposal(nifti), shifted, source, tmp_path / "bad.seg.dcm",
                  algorithm_name="VHI", algorithm_version="1.0",
                  series_description="VHI inflammation", series_number=907)
    assert not (tmp_path / "bad.seg.dcm").exists()


# --- (c) bad input ----------------------------------------------------------------------------

def _small_series(tmp_path: Path, name: str = "dicom", **kwargs: object) -> SeriesInfo:
    return _series(_scaled_synthetic(), tmp_path / name, **kwargs)  # type: ignore[arg-type]


def _assert_refused(dicom_dir: Path, dest: Path, match: str) -> None:
    with pytest.raises(InputError, match=match) as err:
        dicom_to_nifti(dicom_dir, dest, scan="S1_STIR")
    assert err.value.what == "S1_STIR"
    assert not dest.exists()
    assert list(dest.parent.glob(f".{dest.name}.*")) == []


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    info = _small_series(tmp_path)
    data = info.files[2].read_bytes()
    info.files[2].write_bytes(data[: len(data) - 300])
    _assert_refused(tmp_path / "dicom", tmp_path / "out" / "s.nii.gz", "truncated|corrupt")
    info.files[2].write_bytes(data[:200])
    _assert_refused(tmp_path / "dicom", tmp_path / "out" / "s.nii.gz", "corrupt|not a DICOM")


def test_two_series_in_one_folder_are_refused(tmp_path: Path) -> None:
    study, frame = generate_uid(), generate_uid()
    _small_series(tmp_path, "dicom", description="COR STIR", number=5, study_uid=study,
                  frame_of_reference_uid=frame)
    second = _small_series(tmp_path, "second", description="COR T1", number=6, study_uid=study,
                           frame_of_reference_uid=frame)
    for path in second.files:
        shutil.copy(path, tmp_path / "dicom" / f"T1_{path.name}")
    _assert_refused(tmp_path / "dicom", tmp_path / "out" / "s.nii.gz", "2 series")
    with pytest.raises(InputError, match="2 series"):
        read_series(tmp_path / "dicom")


def test_empty_folder_and_non_dicom_are_refused(tmp_path: Path) -> None:
    (tmp_path / "dicom").mkdir()
    _assert_refused(tmp_path / "dicom", tmp_path / "out" / "s.nii.gz", "no files")
    _assert_refused(tmp_path / "missing", tmp_path / "out" / "s.nii.gz", "not found")
    (tmp_path / "dicom" / "notes.txt").write_text("not an image\n")
    _assert_refused(tmp_path / "dicom", tmp_path / "out" / "s.nii.gz", "not a DICOM file")


def test_failure_leaves_existing_dest_untouched(tmp_path: Path) -> None:
    info = _small_series(tmp_path)
    dest = tmp_path / "out" / "s.nii.gz"
    dicom_to_nifti(tmp_path / "dicom", dest, scan="S1_STIR")
    before = dest.read_bytes()
    info.files[0].write_bytes(b"garbage")
    with pytest.raises(InputError, match="S1_STIR"):
        dicom_to_nifti(tmp_path / "dicom", dest, scan="S1_STIR")
    assert dest.read_bytes() == before


def test_several_echoes_and_non_image_objects_are_refused(tmp_path: Path) -> None:
    img = _scaled_synthetic()
    study, frame, series = generate_uid(), generate_uid(), generate_uid()
    info = write_series(img, tmp_path / "dicom", series_description="T2 DE", series_number=7,
                        study_uid=study, patient_id="P", patient_name="P^Q",
                        study_date="20200101", frame_of_reference_uid=frame, series_uid=series)
    for path in info.files:
        ds = pydicom.dcmread(path)
        ds.EchoNumbers, ds.EchoTime = 2, 90
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(tmp_path / "dicom" / f"E2_{path.name}")
    _assert_refused(tmp_path / "dicom", tmp_path / "out" / "s.nii.gz", "several echoes")

    sr = pydicom.dcmread(info.files[0])
    del sr.PixelData
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = pydicom.uid.BasicTextSRStorage
    sr.Modality = "SR"
    (tmp_path / "report").mkdir()
    sr.save_as(tmp_path / "report" / "sr.dcm")
    _assert_refused(tmp_path / "report", tmp_path / "out" / "s.nii.gz", "not an image series")
