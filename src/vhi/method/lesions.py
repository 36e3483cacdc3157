"""The published lesion proposal: two STIR thresholds from a normal-marrow reference.

Hepburn et al. (PLOS ONE 2023), as their code computes it (../shared/METHOD.md):

* reference statistics: ``Q1, Q3 = percentile(values, [25, 75])`` (linear
  interpolation), ``IQR = Q3 - Q1``, ``upper = max(values)``;
* threshold search: ``lower = Q3 + m * IQR`` with ``m = 1.5``; while
  ``upper - lower >= IQR / 2`` add 0.05 to ``m`` (repeated addition, so ``m`` carries
  the float rounding of the paper, e.g. 2.4999999999999987); then, while the gap is
  ``<= 0`` (rounded to 3 decimals), take 0.05 away again;
* labels inside the disease region: ``(I >= lower) + (I >= upper)`` → 1 or 2;
* residue removal: per slice (last array axis), 8-connected components of
  label ≥ 1 with fewer than 4 pixels are dropped; kept pixels keep their label.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from vhi.errors import MethodError

M_START = 1.5
M_STEP = 0.05
#: Components with fewer pixels than this are residue (the paper's code keeps >= 4).
MIN_COMPONENT_PIXELS = 4
#: Bound on the threshold search; far beyond any real scan (the public ones need < 40 steps).
MAX_STEPS = 100_000


@dataclass(frozen=True)
class Thresholds:
    """Reference statistics and the two thresholds derived from them."""

    q1: float
    q3: float
    iqr: float
    m: float
    lower: float
    upper: float
    n_reference: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def find_thresholds(values: np.ndarray, scan: object = "scan") -> Thresholds:
    """The paper's threshold search on the reference intensities ``values``.

    Raises MethodError naming ``scan`` when the reference cannot give two thresholds
    (no voxels, no spread, or no ``m`` with ``0 < upper - lower < IQR / 2``).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise MethodError(scan, "the normal-marrow reference holds no voxels")
    q1, q3 = np.percentile(values, [25, 75])
    iqr = q3 - q1
    upper = float(values.max())
    if not iqr > 0:
        raise MethodError(scan, f"the reference intensities have no spread (IQR = {iqr:g}, "
                                f"{values.size} voxels): no threshold can be derived")
    m = M_START
    lower = q3 + m * iqr
    gap = upper - lower
    steps = 0
    while gap >= iqr / 2:
        m += M_STEP
        lower = q3 + m * iqr
        gap = upper - lower
        steps += 1
        if steps > MAX_STEPS:  # pragma: no cover - unreachable with iqr > 0
            raise MethodError(scan, "threshold search did not converge")
    while gap <= 0:
        m -= M_STEP
        lower = q3 + m * iqr
        gap = round(upper - lower, 3)
        steps += 1
        if steps > MAX_STEPS:  # pragma: no cover - unreachable with iqr > 0
            raise MethodError(scan, "threshold search did not converge")
    if not 0 < upper - lower < iqr / 2:
        raise MethodError(scan, f"no m gives 0 < upper - lower < IQR/2 (upper {upper:g}, "
                                f"Q3 {q3:g}, IQR {iqr:g})")
    return Thresholds(q1=float(q1), q3=float(q3), iqr=float(iqr), m=float(m),
                      lower=float(lower), upper=upper, n_reference=int(values.size))


def label_voxels(stir: np.ndarray, disease_region: np.ndarray, t: Thresholds) -> np.ndarray:
    """Label 1 for lower <= I < upper and 2 for I >= upper, inside the disease region."""
    labels = (stir >= t.lower).astype(np.uint8) + (stir >= t.upper)
    labels[~disease_region] = 0
    return labels


def remove_residue(labels: np.ndarray, min_pixels: int = MIN_COMPONENT_PIXELS) -> np.ndarray:
    """Drop per-slice 8-connected components of ``labels >= 1`` smaller than ``min_pixels``.

    The foreground is sparse (a few thousand of ~2.8 million voxels), so components are
    found on a graph of the foreground voxels alone: an edge joins two voxels of one
    slice (last axis) that touch in-plane, including diagonally. This gives exactly the
    components of labelling each slice with 8-connectivity, without a pass over the
    whole volume per slice.
    """
    out = np.array(labels, copy=True, order="C")
    h, w, s = out.shape
    flat = out.reshape(-1)
    idx = np.flatnonzero(flat)
    if idx.size == 0:
        return out
    i, j = idx // (w * s), (idx // s) % w
    fg = flat != 0
    heads, tails = [], []
    # Each in-plane neighbour pair once: right, and the three below.
    for di, dj in ((0, 1), (1, -1), (1, 0), (1, 1)):
        inside = (i + di < h) & (j + dj >= 0) & (j + dj < w)
        src = np.flatnonzero(inside)
        nb = idx[src] + (di * w + dj) * s
        hit = fg[nb]
        heads.append(src[hit])
        tails.append(np.searchsorted(idx, nb[hit]))
    head, tail = np.concatenate(heads), np.concatenate(tails)
    graph = coo_matrix((np.ones(head.size, dtype=np.int8), (head, tail)), shape=(idx.size, idx.size))
    _, component = connected_components(graph, directed=False)
    small = np.bincount(component)[component] < min_pixels
    flat[idx[small]] = 0
    return out


@dataclass(frozen=True)
class Proposal:
    labels: np.ndarray
    thresholds: Thresholds

    @property
    def counts(self) -> dict[str, int]:
        return {
            "label_ge1": int(np.count_nonzero(self.labels)),
            "label2": int(np.count_nonzero(self.labels == 2)),
        }


def propose(stir: np.ndarray, disease_region: np.ndarray, reference: np.ndarray,
            scan: object = "scan") -> Proposal:
    """The lesion proposal of one scan: thresholds from ``reference``, labels, residue removed.

    ``disease_region`` and ``reference`` are boolean masks on the STIR grid.
    """
    if not np.any(disease_region):
        raise MethodError(scan, "the disease region is empty")
    thresholds = find_thresholds(stir[reference], scan)
    labels = remove_residue(label_voxels(stir, disease_region, thresholds))
    return Proposal(labels, thresholds)
