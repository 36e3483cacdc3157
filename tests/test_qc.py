"""QC images per session (vhi.results.qc): the slice choice, the display turn, the PNG, and
what the synthetic cohort's steps (workflow/rules/qc.smk's commands) leave in work/."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from vhi.cli import main
from vhi.results.qc import QcSlices, choose_slices, cut_slices, render_qc
from vhi.results.qc.slices import display_for

from support.results import SyntheticCohort

MAX_PNG_BYTES = 150_000


def test_slices_with_the_most_voxels_ties_to_the_lower_index_in_slice_order() -> None:
    mask = np.zeros((4, 4, 6), dtype=np.uint8)
    mask[0, :, 4] = 1  # 4 voxels
    mask[:2, :2, 1] = 1  # 4 voxels
    mask[:, :, 2] = 1  # 16
    mask[0, 0, 5] = 1  # 1
    assert choose_slices(mask) == [1, 2, 4]
    assert choose_slices(mask, 1) == [2]
    assert choose_slices(np.zeros((2, 2, 2))) == [0, 1]  # fewer slices than asked


def test_display_puts_superior_up_and_the_patients_right_on_the_left() -> None:
    # the demo's axes: 0 towards the left, 1 towards superior, 2 towards posterior (coronal)
    affine = np.array([[-0.6, 0, 0, 0], [0, 0, -3.3, 0], [0, 0.6, 0, 0], [0, 0, 0, 1]])
    assert nib.aff2axcodes(affine) == ("L", "S", "P")
    d = display_for(affine, (0.6, 0.6, 3.3))
    plane = np.zeros((5, 4))  # axis 0 (L) x axis 1 (S)
    plane[0, 3] = 1  # the patient's rightmost, most superior voxel
    shown = d.turn(plane)
    assert shown.shape == (4, 5) and shown[0, 0] == 1  # top left of the image
    assert d.edges == ("S", "I", "R", "L")


def test_qc_image_from_arrays_marks_the_proposal_and_the_cleaned_mask() -> None:
    shape = (40, 40, 5)
    t1w = np.full(shape, 100.0)
    region = np.zeros(shape, np.uint8)
    region[5:35, 5:35, :] = 1
    proposal = np.zeros(shape, np.uint8)
    proposal[10:14, 10:14, 3] = 2
    proposal[20:22, 20:22, 1] = 1
    stir = np.random.default_rng(0).normal(300, 20, shape)
    qc = cut_slices("a/01/s1", t1w=t1w, region=region, img=nib.Nifti1Image(t1w, np.eye(4)),
                    stir=stir, proposal=proposal)
    assert qc.slices.tolist() == [0, 1, 3]  # 16 and 4 voxels, then the first empty slice
    assert qc.t1w_slice == 1 and qc.modality == "STIR"
    with_cleaned = np.asarray(render_qc(qc, cleaned=qc.proposal > 0))
    without = np.asarray(render_qc(qc))
    cyan = (with_cleaned == (0, 229, 255)).all(axis=2)
    assert cyan.sum() > 0 and not (without == (0, 229, 255)).all(axis=2).any()
    assert with_cleaned.shape[1] > 4 * 100  # three slices and the T1W


@pytest.mark.parametrize("session", ["s1", "s2", "s3"])
def test_the_steps_leave_small_qc_images(synthetic_cohort: SyntheticCohort, session: str) -> None:
    p = synthetic_cohort.planned(session)
    folder = synthetic_cohort.layout.session_dir(p.session)
    for name in p.qc_files():
        assert (folder / name).is_file(), name
    image = Image.open(folder / "qc.png")
    assert image.format == "PNG" and image.mode == "P"  # palette-coded
    assert (folder / "qc.png").stat().st_size <= MAX_PNG_BYTES
    qc = QcSlices.load(folder / "qc_slices.npz")
    assert qc.session == p.key
    assert qc.modality == ("STIR" if p.has_stir else "T1W")
    if session == "s1":  # cleaned: drawn again with the cleaned mask, on the same slices
        assert (folder / "qc_cleaned.png").stat().st_size <= MAX_PNG_BYTES
        design = synthetic_cohort.designs[session]
        counts = np.count_nonzero(design.proposal().reshape(-1, 3), axis=0)
        assert qc.slices.tolist() == sorted(np.argsort(-counts, kind="stable")[:3].tolist())


def test_qc_cleaned_refuses_a_mask_on_another_grid(synthetic_cohort: SyntheticCohort, tmp_path) -> None:
    p = synthetic_cohort.planned("s1")
    slices = synthetic_cohort.layout.work_file(p.session, "qc_slices.npz")
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 1), np.uint8), np.eye(4)), small)
    assert main(["qc-cleaned", "--slices", str(slices), "--cleaned", str(small),
                 "--out", str(tmp_path / "x.png")]) != 0
    assert not (tmp_path / "x.png").exists()
