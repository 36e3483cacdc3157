"""vhi.imaging.series: a NIfTI volume as an MR DICOM series (the local cleaning station's STIR)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from vhi.errors import InputError
from vhi.imaging.dicom import dicom_to_nifti
from vhi.imaging.nifti import grid_mismatch
from vhi.imaging.seg import read_seg, write_seg
from vhi.imaging.series import SeriesIds, Window, mr_series, percentile_window, uid_from

from support.orthanc import Orthanc, needs_orthanc


def oblique(det_negative: bool = True) -> np.ndarray:
    angle = np.deg2rad(20)
    c, s = np.cos(angle), np.sin(angle)
    linear = np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]]) @ np.diag([-0.6, 0.6, 3.3])
    if not det_negative:
        linear[:, 1] *= -1
    return np.vstack([np.column_stack([linear, [10.0, -20.0, 5.0]]), [0, 0, 0, 1]])


def image(affine: np.ndarray, dtype: type = np.int16) -> nib.Nifti1Image:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 900, (12, 10, 5)).astype(dtype)
    img = nib.Nifti1Image(data, affine)
    if dtype is np.int16:
        img.header.set_slope_inter(2.5, -3.0)
    return img


IDS = SeriesIds(uid_from("study", "s"), uid_from("series", "s"), "P01", "S1", "STIR")


def test_uids_are_derived_from_their_parts():
    assert uid_from("a", "b") == uid_from("a", "b") != uid_from("a", "c")
    assert uid_from("a").startswith("2.25.") and len(uid_from("a")) <= 64


def test_dcm2niix_gives_the_volume_back_with_the_window(tmp_path):
    img = image(oblique())
    saved = tmp_path / "in.nii.gz"
    nib.save(img, saved)
    img = nib.load(saved)
    datasets = mr_series(img, IDS, Window(10.0, 610.0, "test"))
    assert [int(ds.InstanceNumber) for ds in datasets] == [1, 2, 3, 4, 5]
    assert len({str(ds.SOPInstanceUID) for ds in datasets}) == 5
    assert [str(ds.SOPInstanceUID) for ds in mr_series(img, IDS)] == [
        str(ds.SOPInstanceUID) for ds in datasets]  # the same file: the same instances
    assert (float(datasets[0].WindowCenter), float(datasets[0].WindowWidth)) == (310.0, 600.0)
    (tmp_path / "dicom").mkdir()
    for n, ds in enumerate(datasets):
        ds.save_as(tmp_path / "dicom" / f"{n}.dcm", enforce_file_format=True)
    back = nib.load(dicom_to_nifti(tmp_path / "dicom", tmp_path / "back.nii.gz", scan="test"))
    assert grid_mismatch(back, img) is None
    assert np.array_equal(back.get_fdata(), img.get_fdata())


@pytest.mark.parametrize("det_negative", [True, False])
def test_a_seg_on_the_series_lands_on_the_volumes_voxels(tmp_path, det_negative):
    img = image(oblique(det_negative), dtype=np.float32)  # float: quantised to int16
    datasets = mr_series(img, IDS)
    values = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                       for ds in datasets])
    assert np.abs(np.sort(values.ravel()) - np.sort(img.get_fdata().ravel())).max() < 0.02
    mask = img.get_fdata() > 600
    write_seg(mask, img.affine, datasets, tmp_path / "seg.dcm", algorithm_version="0", series_number=2)
    assert np.array_equal(read_seg(tmp_path / "seg.dcm", img, datasets), mask)


def test_a_sheared_grid_is_refused():
    affine = oblique()
    affine[:3, 2] = affine[:3, 0] * 3  # the slice axis along the rows
    with pytest.raises(InputError, match="sheared"):
        mr_series(image(affine), IDS)


def test_percentile_window_is_raised_to_at_least():
    values = np.arange(1001, dtype=float)
    window = percentile_window(values, 1, 99, "x")
    assert (window.low, window.high) == (10, 990)
    assert percentile_window(values, 1, 99, "x", at_least=2000).high == 2000


@needs_orthanc
def test_the_stored_instances_are_dicom_files_pydicom_reads_unforced(tmp_path):
    """The station stores the series by STOW-RS (vhi.sources.dicomweb.segs.store, through
    dicomweb-client): what Orthanc keeps must be a DICOM file, with its preamble and
    'DICM', that pydicom reads without force=True."""
    import io

    import pydicom

    from vhi.sources.dicomweb import segs
    from vhi.sources.dicomweb.client import DicomwebConnection

    spec = {"user_env": "", "password_env": "", "verify": True, "ca_bundle": "", "retries": 0,
            "backoff_s": 0.1, "timeout_s": 30}
    with Orthanc(tmp_path / "server") as orthanc:
        conn = DicomwebConnection("X", orthanc.dicomweb, spec)
        segs.store(conn, "test", IDS.study_uid, mr_series(image(oblique()), IDS), "the STIR series")
        [stored, *_] = orthanc.instance_file(IDS.study_uid, IDS.series_uid)
    ds = pydicom.dcmread(io.BytesIO(stored))
    assert stored[128:132] == b"DICM" and ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
