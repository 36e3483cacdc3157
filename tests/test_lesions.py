"""The published threshold rule and residue removal, against the paper's own values."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from vhi.errors import MethodError
from vhi.imaging.nifti import load_image, load_mask
from vhi.method.lesions import (
    MIN_COMPONENT_PIXELS,
    find_thresholds,
    label_voxels,
    propose,
    remove_residue,
)


def _reference_rows(data_dir):
    with (data_dir / "reference_values.csv").open() as fh:
        return list(csv.DictReader(fh))


def _scan(data_dir, scan_id):
    stir = load_image(data_dir / "stir" / f"{scan_id}_STIR.nii.gz")
    region = load_mask(data_dir / "disease_region" / f"{scan_id}_disease_region.nii.gz").data == 1
    normal = load_mask(data_dir / "normal_marrow" / f"{scan_id}_normal_marrow.nii.gz").data == 1
    return stir, region, normal


def test_thresholds_and_counts_equal_the_papers_code(data_dir):
    rows = _reference_rows(data_dir)
    assert {r["scan_id"] for r in rows} == {"1003", "1007", "1012", "1013"}
    for row in rows:
        stir, region, normal = _scan(data_dir, row["scan_id"])
        proposal = propose(stir.data, region, normal, row["scan_id"])
        t = proposal.thresholds
        for key in ("q1", "q3", "iqr", "lower", "upper"):
            assert getattr(t, key) == pytest.approx(float(row[key]), rel=1e-6), (row["scan_id"], key)
        assert t.m == pytest.approx(float(row["m_final"]), abs=1e-9)
        assert proposal.counts == {"label_ge1": int(row["proposal_voxels_label_ge1"]),
                                   "label2": int(row["proposal_voxels_label2"])}
        assert stir.voxel_volume_ml == pytest.approx(float(row["voxel_volume_ml"]), rel=1e-6)


def test_m_carries_the_rounding_of_repeated_addition(data_dir):
    stir, _, normal = _scan(data_dir, "1003")
    t = find_thresholds(stir.data[normal])
    assert t.m == 2.4999999999999987  # 1.5 + 20 × 0.05 by repeated addition, as the paper
    assert 0 < t.upper - t.lower < t.iqr / 2


def test_other_public_scans_satisfy_the_rule(data_dir):
    for scan_id in ("1016", "1234", "3002", "4386"):
        stir, region, normal = _scan(data_dir, scan_id)
        proposal = propose(stir.data, region, normal, scan_id)
        t = proposal.thresholds
        assert 0 < t.upper - t.lower < t.iqr / 2
        assert t.lower == pytest.approx(t.q3 + t.m * t.iqr)
        assert t.upper == stir.data[normal].max()
        labels = proposal.labels
        assert not np.any(labels[~region])
        assert np.all(stir.data[labels == 2] >= t.upper)
        inside = labels == 1
        assert np.all((stir.data[inside] >= t.lower) & (stir.data[inside] < t.upper))


def test_lower_search_steps_down_when_gap_is_negative():
    # Q1 = 1, Q3 = 3, IQR = 2, max = 5: 3 + 1.5*2 = 6 > 5, so m must go down to 0.95 (gap 0.1 > 0).
    values = np.array([0, 1, 1, 2, 3, 3, 3, 5], dtype=float)
    t = find_thresholds(values)
    assert t.q1 == pytest.approx(1.0) and t.q3 == pytest.approx(3.0)
    assert 0 < t.upper - t.lower < t.iqr / 2
    assert t.m < 1.5


@pytest.mark.parametrize(("values", "cause"), [
    (np.array([]), "no voxels"),
    (np.full(50, 7.0), "no spread"),
])
def test_threshold_errors_name_the_scan(values, cause):
    with pytest.raises(MethodError, match=f"scan-x: .*{cause}"):
        find_thresholds(values, "scan-x")


def test_labels_use_greater_or_equal_at_both_thresholds():
    from vhi.method.lesions import Thresholds

    t = Thresholds(q1=0, q3=0, iqr=1, m=1.5, lower=10.0, upper=20.0, n_reference=1)
    stir = np.array([[[9.999, 10.0, 19.999, 20.0]]])
    region = np.ones_like(stir, dtype=bool)
    assert label_voxels(stir, region, t).tolist() == [[[0, 1, 1, 2]]]
    region[0, 0, 3] = False
    assert label_voxels(stir, region, t).tolist() == [[[0, 1, 1, 0]]]


def test_residue_removal_is_per_slice_8_connected_keeping_4_pixels():
    labels = np.zeros((8, 8, 2), dtype=np.uint8)
    # slice 0: a diagonal chain of 4 pixels (8-connected) is kept, keeping its labels
    for i, lab in enumerate((1, 2, 1, 2)):
        labels[i, i, 0] = lab
    # slice 0: an isolated 3-pixel blob is dropped
    labels[6, 5:8, 0] = 1
    # slice 1: 3 pixels, stacked over slice 0's chain: not connected across slices → dropped
    labels[0:3, 0, 1] = 1
    out = remove_residue(labels)
    assert out[:, :, 0].sum() == 6 and out[[0, 1, 2, 3], [0, 1, 2, 3], 0].tolist() == [1, 2, 1, 2]
    assert not out[6, :, 0].any()
    assert not out[:, :, 1].any()
    assert MIN_COMPONENT_PIXELS == 4


def test_residue_removal_matches_a_per_slice_loop(data_dir):
    from scipy import ndimage

    stir, region, normal = _scan(data_dir, "1013")
    labels = label_voxels(stir.data, region, find_thresholds(stir.data[normal]))
    expected = labels.copy()
    for k in range(labels.shape[2]):
        comp, n = ndimage.label(labels[:, :, k] > 0, structure=np.ones((3, 3)))
        for c in range(1, n + 1):
            if np.count_nonzero(comp == c) < 4:
                expected[:, :, k][comp == c] = 0
    np.testing.assert_array_equal(remove_residue(labels), expected)


def test_empty_disease_region_is_an_error():
    stir = np.random.default_rng(0).normal(100, 10, (8, 8, 2))
    with pytest.raises(MethodError, match="s1: the disease region is empty"):
        propose(stir, np.zeros_like(stir, dtype=bool), np.ones_like(stir, dtype=bool), "s1")
