"""Distributions per site as inline SVG: box plots and histograms.

What the report draws instead of one bar per session, so a chart keeps its size at
thousands of sessions: one row per site (box, whiskers at 1.5 × IQR, median; each
session as a point while a site has few), and a histogram per site on shared bins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vhi.results.report.svg import dots, svg_doc, tick_label, ticks_between
from vhi.results.report.text import esc, fmt

#: A site with at most this many sessions shows each as a point on its box.
MAX_POINTS_PER_SITE = 200
HIST_BINS = 20

Group = tuple[str, Sequence[float], Sequence[str]]  # (label, values, tooltip per value)


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    return x[np.isfinite(x)]


#: Both charts: total width, the margin left of the plot (site names), right of it, above it.
WIDTH, LEFT, RIGHT, TOP = 760.0, 170.0, 24.0, 6.0


def _rows_axis(groups: Sequence[Group], row_h: float, xlabel: str,
               ) -> tuple[str, list[float], float, float, float]:
    """The shared value axis of a chart with one row of ``row_h`` per group: its SVG,
    ticks, first tick, pixels per unit and the plot's bottom."""
    every = np.concatenate([_finite(v) for _, v, _ in groups]) if groups else np.zeros(0)
    lo, hi = (min(0.0, float(every.min())), float(every.max())) if every.size else (0.0, 1.0)
    bottom = TOP + row_h * len(groups)
    return (*_axis(lo, hi, bottom, xlabel), bottom)


def _axis(lo: float, hi: float, bottom: float, xlabel: str) -> tuple[str, list[float], float, float]:
    left, width, top = LEFT, WIDTH - LEFT - RIGHT, TOP
    ticks = ticks_between(lo, hi)
    x0, x1 = ticks[0], ticks[-1]
    scale = width / ((x1 - x0) or 1.0)
    parts = [f'<line class="grid" x1="{left + (t - x0) * scale:.1f}" y1="{top:.1f}" '
             f'x2="{left + (t - x0) * scale:.1f}" y2="{bottom:.1f}"/><text '
             f'x="{left + (t - x0) * scale:.1f}" y="{bottom + 14:.1f}" text-anchor="middle">'
             f"{tick_label(t)}</text>" for t in ticks]
    parts.append(f'<line class="axis" x1="{left:.1f}" y1="{bottom:.1f}" x2="{left + width:.1f}" '
                 f'y2="{bottom:.1f}"/><text x="{left + width / 2:.1f}" y="{bottom + 30:.1f}" '
                 f'text-anchor="middle">{esc(xlabel)}</text>')
    return "".join(parts), ticks, x0, scale


def box_svg(groups: Sequence[Group], *, xlabel: str, label: str, colours: dict[str, str],
            decimals: int = 2) -> str:
    """One horizontal box plot per group (site): quartiles, median, whiskers to the last
    value within 1.5 × IQR; every value as a point while a group has at most
    :data:`MAX_POINTS_PER_SITE`, else only those beyond the whiskers."""
    left, top, row_h = LEFT, TOP, 36.0
    axis, _, x0, scale, bottom = _rows_axis(groups, row_h, xlabel)
    sx = lambda v: left + (v - x0) * scale  # noqa: E731
    parts = []
    for i, (name, values, tips) in enumerate(groups):
        y = top + i * row_h + row_h / 2
        x = _finite(values)
        colour = colours.get(name, "#555")
        parts.append(f'<text x="{left - 8:.1f}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{esc(name)} (n={x.size})</text>")
        if not x.size:
            continue
        q1, med, q3 = (float(v) for v in np.percentile(x, [25, 50, 75]))
        iqr = q3 - q1
        low, high = float(x[x >= q1 - 1.5 * iqr].min()), float(x[x <= q3 + 1.5 * iqr].max())
        summary = (f"{name}: n={x.size}, median {fmt(med, decimals)}, "
                   f"IQR {fmt(q1, decimals)}–{fmt(q3, decimals)}, range {fmt(x.min(), decimals)}–"
                   f"{fmt(x.max(), decimals)}")
        parts.append(
            f'<line class="whisker" x1="{sx(low):.1f}" y1="{y:.1f}" x2="{sx(high):.1f}" y2="{y:.1f}"/>'
            f'<rect class="box" x="{sx(q1):.1f}" y="{y - 10:.1f}" width="{max(sx(q3) - sx(q1), 1):.1f}" '
            f'height="20" fill="{colour}" fill-opacity="0.25" stroke="{colour}">'
            f"<title>{esc(summary)}</title></rect>"
            f'<line class="median" x1="{sx(med):.1f}" y1="{y - 10:.1f}" x2="{sx(med):.1f}" '
            f'y2="{y + 10:.1f}" stroke="{colour}"/>')
        keep = [(v, t) for v, t in zip(values, tips, strict=True) if np.isfinite(v)]
        if len(keep) > MAX_POINTS_PER_SITE:
            keep = [(v, t) for v, t in keep if v < low or v > high]
        # a fixed spread across the row (golden-ratio steps), so the page is reproducible
        parts.append(dots([(sx(v), y - 8 + 16 * ((j * 0.618034) % 1.0), t)
                           for j, (v, t) in enumerate(keep)], colour, 2.5))
    return svg_doc(WIDTH, bottom + 38, axis + "".join(parts), label)


def histogram_svg(groups: Sequence[Group], *, xlabel: str, label: str,
                  colours: dict[str, str]) -> str:
    """A histogram per group (site) on shared bins, stacked, each scaled to its own peak."""
    left, top, row_h = LEFT, TOP, 56.0
    axis, ticks, x0, scale, bottom = _rows_axis(groups, row_h, xlabel)
    edges = np.linspace(ticks[0], ticks[-1], HIST_BINS + 1)
    parts = []
    for i, (name, values, _) in enumerate(groups):
        base = top + (i + 1) * row_h - 4
        counts, _ = np.histogram(_finite(values), bins=edges)
        peak = max(int(counts.max()), 1) if counts.size else 1
        colour = colours.get(name, "#555")
        parts.append(f'<text x="{left - 8:.1f}" y="{base - row_h / 2 + 8:.1f}" text-anchor="end">'
                     f"{esc(name)}</text>")
        for n, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
            if not n:
                continue
            h = (row_h - 10) * int(n) / peak
            parts.append(f'<rect class="hbar" x="{left + (a - x0) * scale:.1f}" y="{base - h:.1f}" '
                         f'width="{max((b - a) * scale - 1, 1):.1f}" height="{h:.1f}" fill="{colour}">'
                         f"<title>{esc(name)}: {int(n)} in {a:g}–{b:g}</title></rect>")
    return svg_doc(WIDTH, bottom + 38, axis + "".join(parts), label)
