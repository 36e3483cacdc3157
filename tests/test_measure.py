"""VHI and agreement measures, on toy masks and on the readers' masks."""

from __future__ import annotations

import numpy as np
import pytest

from vhi.imaging.nifti import load_mask
from vhi.method.measure import agreement, dice, vhi_ml, volume_similarity


def test_dice_and_volume_similarity_on_toy_masks():
    a = np.zeros((4, 4, 1), bool)
    b = np.zeros((4, 4, 1), bool)
    a[0, :3] = True  # 3 voxels
    b[0, 1:] = True  # 3 voxels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert volume_similarity(a, b) == 1.0
    assert dice(np.zeros(3), np.zeros(3)) == 1.0
    ag = agreement(a, b, 0.5)
    assert (ag.voxels_a, ag.voxels_b, ag.voxels_both, ag.ml_a) == (3, 3, 2, 1.5)
    with pytest.raises(ValueError, match="different shapes"):
        agreement(a, np.zeros((2, 2, 1)), 1.0)


def test_vhi_counts_labels_one_and_two():
    labels = np.array([0, 1, 2, 2, 0])
    assert vhi_ml(labels, 0.25) == pytest.approx(0.75)


@pytest.mark.parametrize(("scan_id", "reader"), [("1003", "R11"), ("1013", "R22"), ("1234", "R12")])
def test_vhi_of_reader_masks_is_voxels_times_voxel_volume(data_dir, scan_id, reader):
    mask = load_mask(data_dir / "inflammation" / reader / f"{scan_id}_inflammation_{reader}.nii.gz")
    voxels = int(np.count_nonzero(mask.data))
    assert voxels > 0
    # 0.5952381 × 0.5952381 × 3.3 mm³ = 0.0011692 ml
    assert mask.voxel_volume_ml == pytest.approx(0.00116921768, rel=1e-5)
    assert vhi_ml(mask.data, mask.voxel_volume_ml) == pytest.approx(voxels * 0.00116921768, rel=1e-5)


def test_reader_agreement_is_modest_as_published(data_dir):
    scores = []
    for scan_id in ("1003", "1007", "1012", "1013", "1016", "1234", "3002", "4386"):
        r1 = load_mask(data_dir / "inflammation/R11" / f"{scan_id}_inflammation_R11.nii.gz").data
        r2 = load_mask(data_dir / "inflammation/R21" / f"{scan_id}_inflammation_R21.nii.gz").data
        scores.append(dice(r1, r2))
    assert min(scores) > 0.2 and max(scores) < 0.9  # METHOD.md: R1 vs R2 Dice 0.29–0.81
