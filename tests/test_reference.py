"""The automatic normal-marrow reference: bars on the public data, errors, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vhi.errors import MethodError
from vhi.method.lesions import propose
from vhi.method.reference import auto_reference

from reference_validation import summarise, validate

#: The public scans with a manual normal-marrow mask.
VALIDATION_SCANS = ("1003", "1007", "1012", "1013", "1016", "1234", "3002", "4386")

STATS_KEYS = {
    "method", "n_voxels", "n_disease_region", "n_interior", "interior_eroded",
    "fraction_of_disease_region", "centre", "spread", "spread_relative", "cut_low",
    "cut_high", "median", "q1", "q3", "min", "max", "fraction_above_cut",
    "fraction_below_cut", "per_slice_voxels", "slices_used", "iterations", "constants",
}


def _synthetic(seed: int = 0, inflamed: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A 64x64x6 'bone' block: marrow N(400, 40) with a bright inflamed patch N(800, 80)."""
    rng = np.random.default_rng(seed)
    shape = (64, 64, 6)
    stir = rng.normal(60.0, 10.0, shape)  # background
    region = np.zeros(shape, bool)
    region[8:56, 8:56, :] = True
    stir[region] = rng.normal(400.0, 40.0, int(region.sum()))
    patch = np.zeros(shape, bool)
    width = round(48 * inflamed)
    patch[8:8 + width, 8:56, :] = True
    stir[patch] = rng.normal(800.0, 80.0, int(patch.sum()))
    return np.round(stir), region


# --- the public data -------------------------------------------------------------------

@pytest.fixture(scope="module")
def comparisons(data_dir):
    return validate(data_dir)


def test_validation_covers_the_eight_scans(comparisons):
    assert [c.scan for c in comparisons] == list(VALIDATION_SCANS)
    for c in comparisons:
        assert c.n_reference_auto >= 1000
        assert c.voxels_auto > 0


def test_lower_threshold_bars(comparisons):
    s = summarise(comparisons)
    table = {c.scan: round(c.lower_rel_diff, 3) for c in comparisons}
    assert s["median_abs_lower_rel_diff"] <= 0.05, table
    assert s["max_abs_lower_rel_diff"] <= 0.15, table


def test_proposal_dice_auto_vs_manual_bar(comparisons):
    s = summarise(comparisons)
    assert s["median_dice_auto_vs_manual"] >= 0.85, {
        c.scan: round(c.dice_auto_vs_manual, 3) for c in comparisons}


def test_reader_dice_bar(comparisons):
    """Per scan mean Dice over R11, R12, R21, R22; then the median over scans."""
    s = summarise(comparisons)
    assert s["median_reader_dice_auto"] >= s["median_reader_dice_manual"] - 0.02


def test_real_scan_stats_are_json_and_mask_inside_region(data_dir):
    import nibabel as nib

    stir = nib.load(data_dir / "stir" / "4386_STIR.nii.gz").get_fdata()
    region = nib.load(data_dir / "disease_region" / "4386_disease_region.nii.gz").get_fdata() > 0
    ref = auto_reference(stir, region, "4386")
    assert set(ref.stats) == STATS_KEYS
    json.dumps(ref.stats)
    assert ref.mask.dtype == bool and ref.mask.shape == stir.shape
    assert not np.any(ref.mask & ~region)
    assert sum(ref.stats["per_slice_voxels"]) == ref.stats["n_voxels"] == int(ref.mask.sum())
    assert ref.stats["cut_low"] <= ref.stats["min"] <= ref.stats["max"] <= ref.stats["cut_high"]


# --- synthetic arrays ----------------------------------------------------------------

def test_peak_recovered_despite_inflamed_tail():
    stir, region = _synthetic(inflamed=0.3)
    ref = auto_reference(stir, region, "synthetic")
    assert ref.stats["centre"] == pytest.approx(400.0, rel=0.03)
    assert ref.stats["spread"] == pytest.approx(40.0, rel=0.1)
    assert ref.stats["cut_high"] < 600  # the inflamed patch is not normal marrow
    proposal = propose(stir, region, ref.mask, "synthetic")
    inflamed = np.zeros_like(region)
    inflamed[8:22, 8:56, :] = True
    hit = np.count_nonzero((proposal.labels > 0) & inflamed) / np.count_nonzero(inflamed)
    assert hit > 0.95


def test_deterministic_and_scale_free():
    stir, region = _synthetic(seed=3)
    a = auto_reference(stir, region, "s")
    b = auto_reference(stir.copy(), region.copy(), "s")
    assert np.array_equal(a.mask, b.mask)
    assert a.stats == b.stats
    c = auto_reference(stir * 3.0, region, "s")  # another intensity scale, same relative picture
    assert np.array_equal(a.mask, c.mask)
    assert c.stats["centre"] == pytest.approx(3.0 * a.stats["centre"])


def test_empty_disease_region_names_scan():
    stir, region = _synthetic()
    with pytest.raises(MethodError, match=r"^scan-empty: .*disease region is empty"):
        auto_reference(stir, np.zeros_like(region), "scan-empty")


def test_uniform_stir_names_scan():
    _, region = _synthetic()
    with pytest.raises(MethodError, match=r"^scan-flat: .*uniform"):
        auto_reference(np.full(region.shape, 250.0), region, "scan-flat")


def test_no_spread_when_most_voxels_equal():
    stir, region = _synthetic()
    stir[region] = 300.0
    stir[8:12, 8:12, 0] = 900.0  # a few bright voxels do not make a spread
    with pytest.raises(MethodError, match=r"^scan-mostly-flat: .*no spread"):
        auto_reference(stir, region, "scan-mostly-flat")


def test_no_normal_marrow_left_names_scan():
    stir, _ = _synthetic()
    tiny = np.zeros(stir.shape, bool)
    tiny[20:30, 20:30, 2] = True  # 100 voxels, 64 after erosion: too few to be a reference
    with pytest.raises(MethodError, match=r"^scan-tiny: no normal marrow left after exclusion"):
        auto_reference(stir, tiny, "scan-tiny")


def test_shape_mismatch_is_refused():
    stir, region = _synthetic()
    with pytest.raises(MethodError, match="shape"):
        auto_reference(stir[:-1], region, "scan-shape")
