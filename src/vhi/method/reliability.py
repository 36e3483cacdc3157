"""Agreement between two measurements of the same sessions: Bland–Altman and ICC(2,1).

Pure numpy. Used for the proposal vs the cleaned VHI and for every pair of readers.

* :func:`bland_altman` – mean difference (bias) and the 95 % limits of agreement,
  bias ± 1.96 × SD of the differences (Bland & Altman, Lancet 1986).
* :func:`icc_2_1` – intraclass correlation, two-way random effects, absolute agreement,
  single measurement: ICC(2,1) of Shrout & Fleiss (Psychol Bull 1979), from the two-way
  ANOVA mean squares. Written here rather than taken from pingouin, whose install pulls
  matplotlib, seaborn, statsmodels, scikit-learn and xarray for these few lines; it is
  checked against Shrout & Fleiss's worked example (tests/test_reliability.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LOA_Z = 1.96  # 95 % limits of agreement


@dataclass(frozen=True)
class BlandAltman:
    """Bland–Altman summary of ``a - b`` over ``n`` paired measurements."""

    n: int
    bias: float  # mean of a - b
    sd: float  # sample SD of a - b (ddof 1); NaN below two pairs
    loa_low: float
    loa_high: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pairs(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two 1-D series of one length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def bland_altman(a: Any, b: Any) -> BlandAltman:
    """Bias and 95 % limits of agreement of ``a - b`` (pairs with a missing value dropped)."""
    a, b = _pairs(a, b)
    diff = a - b
    n = int(diff.size)
    bias = float(diff.mean()) if n else math.nan
    sd = float(diff.std(ddof=1)) if n > 1 else math.nan
    return BlandAltman(n, bias, sd, bias - LOA_Z * sd, bias + LOA_Z * sd)


def icc_2_1(ratings: Any) -> float:
    """ICC(2,1) of an ``n targets × k raters`` matrix (rows with a missing value dropped).

    (MSR − MSE) / (MSR + (k − 1)·MSE + k·(MSC − MSE)/n), with MSR, MSC, MSE the rows',
    columns' and residual mean squares of the two-way ANOVA. NaN below two complete rows
    or when every rating is the same.
    """
    x = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected an n x k matrix, got shape {x.shape}")
    x = x[np.isfinite(x).all(axis=1)]
    n, k = x.shape
    if n < 2 or k < 2:
        return math.nan
    grand = x.mean()
    ss_rows = k * float(((x.mean(axis=1) - grand) ** 2).sum())
    ss_cols = n * float(((x.mean(axis=0) - grand) ** 2).sum())
    ss_error = float(((x - grand) ** 2).sum()) - ss_rows - ss_cols
    msr, msc = ss_rows / (n - 1), ss_cols / (k - 1)
    mse = ss_error / ((n - 1) * (k - 1))
    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    return math.nan if denominator == 0 else (msr - mse) / denominator
