"""Automatic normal-marrow reference: the STIR voxels a reader would call normal bone marrow.

In the paper a reader draws a region of normal marrow on every STIR and the two
thresholds come from its intensities (``vhi.method.lesions.find_thresholds``: lower = Q3 + m·IQR,
upper = max). :func:`auto_reference` replaces that drawing with robust statistics of the
marrow intensity distribution inside the disease region (iliac + sacral bone):

1. **Interior.** The disease region is eroded in-plane by one voxel (3×3, per slice,
   slices along the last axis) to drop its boundary layer, where cortex, joint space
   and soft tissue share voxels with marrow (partial volume). If nothing is left (a
   very thin region) the disease region itself is used.
2. **Marrow peak and width.** Normal marrow is the main mode of the interior's
   intensity histogram; inflammation is a bright one-sided tail (up to a third of the
   region on the public data) and sclerosis/cortex residue a dark one. A fixed point
   of two robust estimates, started from the median and the scaled MAD, gives the peak
   ``centre`` and the width ``spread`` (σ):

   * centre ← Gaussian-kernel mean shift with bandwidth ``BANDWIDTH``·σ (the densest
     intensity, not the median, which the inflamed tail pulls up);
   * σ ← MAD about the centre of the voxels within ``CORE_HALF_WIDTH``·σ of it, divided
     by the MAD of a standard normal truncated at the same half-width (so a Gaussian
     peak gives its own σ back, while the tails beyond the core do not count).
3. **Reference.** Interior voxels with ``centre − CUT·σ ≤ I ≤ centre + CUT·σ``. The
   upper cut matters most, because the paper's upper threshold is the reference's
   maximum and its lower threshold ends just below it.

Everything is relative to the scan's own centre and σ, so the intensity scale of a
scan (1234 is ~3× darker than the others, no scale factor) does not matter.
Deterministic: no random numbers, no per-scan fitting.

How the constants were chosen (few, round, global, never per scan): the design
(erosion → robust peak → symmetric cut) was fixed first; then a handful of round values
were compared on the eight public scans with a manual normal-marrow mask
(``benchmarks/validate_reference.py``), so these are **not** independent of the
validation data and should be re-checked on a new site's first readers' references:

* ``EROSION_VOXELS = 1`` – the one-voxel partial-volume layer; 0–3 all work, 1 was best;
* ``CORE_HALF_WIDTH = 1.5`` – the core of the peak in σ: narrow enough that a third of
  inflamed voxels on one side barely moves it, wide enough for a stable MAD (1.0–2.0
  work; 2.0 lets the heavily inflamed 1013 drift to +17 % on the lower threshold);
* ``BANDWIDTH = 0.5`` – the mean-shift kernel, half a σ (0.4–0.6 work);
* ``CUT = 2.5`` – where normal marrow ends: 2.5σ keeps ~99 % of a Gaussian peak; readers'
  regions end at 2.8–5.3 of *their* σ, which is 1.5–2× narrower than the whole-bone σ
  (2.4–2.6 work; 3.0 puts thresholds ~5 % too high).

The stats dict (``AutoReference.stats``) holds, as plain JSON types:
``method``, ``n_voxels``, ``n_disease_region``, ``n_interior``, ``interior_eroded``,
``fraction_of_disease_region``, ``centre``, ``spread``, ``spread_relative``, ``cut_low``,
``cut_high``, ``median``, ``q1``, ``q3``, ``min``, ``max``, ``fraction_above_cut``,
``fraction_below_cut``, ``per_slice_voxels``, ``slices_used``, ``iterations`` and
``constants``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import norm

from vhi.errors import MethodError

log = logging.getLogger(__name__)

METHOD_NAME = "robust-marrow-peak/1"
#: In-plane erosion of the disease region (voxels) before any statistics.
EROSION_VOXELS = 1
#: Half-width (in σ) of the core of the marrow peak used to measure σ.
CORE_HALF_WIDTH = 1.5
#: Mean-shift kernel bandwidth (in σ) that locates the peak.
BANDWIDTH = 0.5
#: The reference keeps intensities within this many σ of the peak.
CUT = 2.5
#: Fewer reference voxels than this is no reference (readers draw 1,000-8,000).
MIN_REFERENCE_VOXELS = 100

MAD_TO_SIGMA = 1.0 / norm.ppf(0.75)
#: MAD of a standard normal truncated to [-CORE_HALF_WIDTH, CORE_HALF_WIDTH].
_TRUNCATED_MAD = float(norm.ppf(0.5 + (2.0 * norm.cdf(CORE_HALF_WIDTH) - 1.0) / 4.0))
_MAX_ITERATIONS = 200
_MAX_SHIFT_ITERATIONS = 1000
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class AutoReference:
    """An automatic normal-marrow reference: the voxels used and what a reader needs to judge it."""

    mask: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """Median of values ``x`` with counts ``w`` (x sorted ascending); the lower middle on ties."""
    cum = np.cumsum(w)
    return float(x[int(np.searchsorted(cum, 0.5 * cum[-1]))])


def _weighted_mad(x: np.ndarray, w: np.ndarray, centre: float) -> float:
    dev = np.abs(x - centre)
    order = np.argsort(dev, kind="stable")
    return _weighted_median(dev[order], w[order])


def _mean_shift(x: np.ndarray, w: np.ndarray, start: float, bandwidth: float) -> float:
    """The density peak reached from ``start`` by Gaussian-kernel mean shift."""
    c = start
    for _ in range(_MAX_SHIFT_ITERATIONS):
        k = w * np.exp(-0.5 * ((x - c) / bandwidth) ** 2)
        total = float(k.sum())
        if total <= 0:  # start far from every value (cannot happen from the median)
            return c
        c_new = float(np.dot(k, x) / total)
        if abs(c_new - c) <= _TOLERANCE * bandwidth:
            return c_new
        c = c_new
    return c


def marrow_peak(values: np.ndarray, scan: object = "scan") -> tuple[float, float, int]:
    """Centre and σ of the main peak of ``values`` (see the module docstring), and iterations.

    Raises MethodError naming ``scan`` when the values have no spread.
    """
    x, counts = np.unique(np.asarray(values, dtype=np.float64), return_counts=True)
    w = counts.astype(np.float64)
    if x.size < 2:
        raise MethodError(scan, f"the STIR is uniform inside the disease region (every voxel "
                                f"is {x[0]:g}): no normal-marrow spread to estimate")
    centre = _weighted_median(x, w)
    sigma = MAD_TO_SIGMA * _weighted_mad(x, w, centre)
    iterations = 0
    converged = False
    while not converged and iterations < _MAX_ITERATIONS:
        if not sigma > 0:
            raise MethodError(scan, "the STIR intensities inside the disease region have no "
                                    "spread (more than half the voxels share one value)")
        c_new = _mean_shift(x, w, centre, BANDWIDTH * sigma)
        core = np.abs(x - c_new) <= CORE_HALF_WIDTH * sigma
        s_new = _weighted_mad(x[core], w[core], c_new) / _TRUNCATED_MAD
        converged = (abs(c_new - centre) <= _TOLERANCE * sigma
                     and abs(s_new - sigma) <= _TOLERANCE * sigma)
        centre, sigma = c_new, s_new
        iterations += 1
    if not converged:  # pragma: no cover - a fixed point comes in < 20 iterations on real scans
        log.warning("%s: marrow peak estimate did not converge in %d iterations",
                    scan, _MAX_ITERATIONS)
    if not sigma > 0:
        raise MethodError(scan, "the STIR intensities inside the disease region have no spread")
    return centre, sigma, iterations


def _interior(disease_region: np.ndarray) -> tuple[np.ndarray, bool]:
    if EROSION_VOXELS <= 0:
        return disease_region, False
    size = 2 * EROSION_VOXELS + 1
    eroded = ndimage.binary_erosion(disease_region, structure=np.ones((size, size, 1), bool))
    if not eroded.any():
        return disease_region, False
    return eroded, True


def auto_reference(stir: np.ndarray, disease_region: np.ndarray, scan: object = "scan"
                   ) -> AutoReference:
    """Estimate the normal-marrow reference of one STIR from its disease region.

    ``stir`` is the STIR (float, scale factor applied), ``disease_region`` a mask on the
    same grid (nonzero = inside), slices along the last axis. Returns the boolean mask
    of the reference voxels and its statistics (keys in the module docstring); pass
    ``mask`` to ``vhi.method.lesions.propose`` as the reference.

    Raises MethodError naming ``scan`` for an empty disease region, a STIR without
    spread inside it, or too few normal-marrow voxels left after exclusion.
    """
    stir = np.asarray(stir)
    region = np.asarray(disease_region) > 0
    if stir.shape != region.shape:
        raise MethodError(scan, f"STIR shape {stir.shape} differs from the disease region's "
                                f"{region.shape}")
    if stir.ndim != 3:
        raise MethodError(scan, f"expected 3-D volumes, got shape {stir.shape}")
    n_region = int(np.count_nonzero(region))
    if n_region == 0:
        raise MethodError(scan, "the disease region is empty: no bone marrow to take a "
                                "normal-marrow reference from")
    interior, eroded = _interior(region)
    values = stir[interior].astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise MethodError(scan, "the STIR holds NaN or infinite values inside the disease region")
    centre, sigma, iterations = marrow_peak(values, scan)
    cut_low, cut_high = centre - CUT * sigma, centre + CUT * sigma
    mask = interior & (stir >= cut_low) & (stir <= cut_high)
    kept = stir[mask].astype(np.float64)
    if kept.size < MIN_REFERENCE_VOXELS:
        raise MethodError(scan, f"no normal marrow left after exclusion: {kept.size} voxels "
                                f"within {cut_low:g}..{cut_high:g} (at least "
                                f"{MIN_REFERENCE_VOXELS} needed; disease region {n_region} "
                                f"voxels)")
    q1, median, q3 = np.percentile(kept, [25, 50, 75])
    per_slice = np.count_nonzero(mask, axis=(0, 1))
    stats: dict[str, Any] = {
        "method": METHOD_NAME,
        "n_voxels": int(kept.size),
        "n_disease_region": n_region,
        "n_interior": int(values.size),
        "interior_eroded": bool(eroded),
        "fraction_of_disease_region": kept.size / n_region,
        "centre": centre,
        "spread": sigma,
        "spread_relative": sigma / centre if centre else float("nan"),
        "cut_low": cut_low,
        "cut_high": cut_high,
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(kept.min()),
        "max": float(kept.max()),
        "fraction_above_cut": float(np.count_nonzero(values > cut_high)) / values.size,
        "fraction_below_cut": float(np.count_nonzero(values < cut_low)) / values.size,
        "per_slice_voxels": [int(n) for n in per_slice],
        "slices_used": int(np.count_nonzero(per_slice)),
        "iterations": iterations,
        "constants": {"erosion_voxels": EROSION_VOXELS, "core_half_width": CORE_HALF_WIDTH,
                      "bandwidth": BANDWIDTH, "cut": CUT,
                      "min_reference_voxels": MIN_REFERENCE_VOXELS},
    }
    log.info("%s: automatic reference %d voxels (%.1f %% of the disease region), centre %.4g, "
             "spread %.4g, cuts %.4g..%.4g", scan, kept.size, 100 * kept.size / n_region,
             centre, sigma, cut_low, cut_high)
    return AutoReference(mask=mask, stats=stats)
