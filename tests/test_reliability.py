"""Bland–Altman and ICC(2,1) (vhi.method.reliability) against values worked by hand and in print."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vhi.method.reliability import bland_altman, icc_2_1

#: Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; their ICC(2,1) is .29.
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9],
                 [6, 2, 4, 7]]


def test_icc_2_1_reproduces_shrout_and_fleiss() -> None:
    assert icc_2_1(SHROUT_FLEISS) == pytest.approx(0.2898, abs=5e-4)
    assert round(icc_2_1(SHROUT_FLEISS), 2) == 0.29


def test_icc_2_1_perfect_agreement_bias_and_missing_rows() -> None:
    x = np.array([1.0, 2.0, 4.0, 7.0])
    assert icc_2_1(np.column_stack([x, x])) == pytest.approx(1.0)
    # a constant offset is disagreement for the absolute-agreement ICC
    assert icc_2_1(np.column_stack([x, x + 1.0])) < 1.0
    with_missing = np.column_stack([[*x, 3.0], [*x, math.nan]])
    assert icc_2_1(with_missing) == pytest.approx(1.0)  # the incomplete row is dropped
    assert math.isnan(icc_2_1([[1.0, 2.0]]))  # one target: undefined


def test_bland_altman_bias_and_limits() -> None:
    a = [10.0, 12.0, 9.0, 15.0]
    b = [9.0, 11.0, 9.0, 12.0]  # differences 1, 1, 0, 3: mean 1.25, SD 1.258
    ba = bland_altman(a, b)
    sd = float(np.std([1, 1, 0, 3], ddof=1))
    assert (ba.n, ba.bias, ba.sd) == (4, 1.25, pytest.approx(sd))
    assert ba.loa_low == pytest.approx(1.25 - 1.96 * sd) and ba.loa_high == pytest.approx(1.25 + 1.96 * sd)
    one = bland_altman([2.0, math.nan], [1.0, 3.0])
    assert one.n == 1 and one.bias == 1.0 and math.isnan(one.sd)
