"""The report's plots as inline SVG (no font, no network) and the helpers every plot uses
(ticks, frames, legends, points): proposal vs cleaned VHI, VHI change per subject, sessions
by state per site. Distributions per site are :mod:`.distributions`, Bland–Altman plots
:mod:`.agreement`.

Each builder takes one of the frames of :mod:`vhi.results.tables` / :mod:`vhi.results.status`
and returns one ``<svg>`` element; every string from data is escaped (:func:`.text.esc`)
and every volume printed as the tables print it (:func:`.text.fmt_ml`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd

from vhi.results.report.text import esc, fmt_ml, number, order, records, session_id, signed_ml

STATE_COLOURS = {
    "pending": "#bdbdbd", "pulled": "#c6dbef", "segmented": "#9ecae1", "proposed": "#6baed6",
    "pushed": "#4292c6", "awaiting_cleaning": "#f0b429", "cleaned": "#a1d99b",
    "measured": "#31a354", "running": "#9e9ac8", "failed": "#d62728", "skipped": "#737373",
}
SITE_COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442",
                "#000000")


# ----------------------------------------------------------------------------- scales and axes
def nice_ticks(top: float, n: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top`` (steps of 1, 2 or 5 × 10^k)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / n
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    count = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(count + 1)]


def ticks_between(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering ``lo``..``hi`` (either sign; steps of 1, 2 or 5 × 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / n
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(first, last + 1)]


def tick_label(value: float) -> str:
    return f"{value:g}"


#: Above this many points a plot draws them as one path of dots, without a tooltip each.
MAX_TITLED_POINTS = 400


def dots(points: Sequence[tuple[float, float, str]], colour: str, radius: float = 4.0,
         css: str = "point") -> str:
    """Points (x, y, tooltip) as circles with a ``<title>`` each, or, when there are more than
    :data:`MAX_TITLED_POINTS`, as one path of round dots (a few bytes a point)."""
    if len(points) <= MAX_TITLED_POINTS:
        return "".join(f'<circle class="{css}" cx="{x:.1f}" cy="{y:.1f}" r="{radius:g}" '
                       f'fill="{colour}" fill-opacity="0.8"><title>{esc(t)}</title></circle>'
                       for x, y, t in points)
    d = "".join(f"M{x:.0f} {y:.0f}h0" for x, y, _ in points)
    return (f'<path class="{css}s" d="{d}" stroke="{colour}" stroke-opacity="0.6" '
            f'stroke-width="{2 * radius:g}" stroke-linecap="round" fill="none"/>')


def svg_doc(width: float, height: float, body: str, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{esc(label)}">'
            f"{body}</svg>")


def site_colours(sites: Iterable[Any]) -> dict[str, str]:
    return {s: SITE_COLOURS[i % len(SITE_COLOURS)] for i, s in enumerate(order(sites))}


def legend(items: Sequence[tuple[str, str]], x: float, y: float) -> str:
    out, cx = [], x
    for label, colour in items:
        out.append(f'<rect x="{cx:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{cx + 14:.1f}" y="{y:.1f}">{esc(label)}</text>')
        cx += 24 + 6.5 * len(label)
    return "".join(out)


def xy_frame(size: tuple[float, float], margin: tuple[float, float, float, float], *,
              xticks: Sequence[float], yticks: Sequence[float], xlabel: str, ylabel: str,
              xtick_labels: Sequence[str] | None = None,
              ) -> tuple[str, Callable[[float], float], Callable[[float], float]]:
    """Axes, grid and labels of an x/y plot; returns the SVG and the two coordinate maps."""
    (width, height), (m_top, m_right, m_bottom, m_left) = size, margin
    pw, ph = width - m_left - m_right, height - m_top - m_bottom
    x0, x1, y1 = xticks[0], xticks[-1], yticks[-1]
    span = (x1 - x0) or 1.0

    def sx(v: float) -> float:
        return m_left + (v - x0) / span * pw

    y0 = yticks[0]

    def sy(v: float) -> float:
        return m_top + ph - (v - y0) / ((y1 - y0) or 1.0) * ph

    parts = []
    for t in yticks:
        parts.append(f'<line class="grid" x1="{m_left:.1f}" y1="{sy(t):.1f}" x2="{m_left + pw:.1f}" '
                     f'y2="{sy(t):.1f}"/><text x="{m_left - 6:.1f}" y="{sy(t) + 4:.1f}" '
                     f'text-anchor="end">{tick_label(t)}</text>')
    for i, t in enumerate(xticks):
        text = esc(xtick_labels[i]) if xtick_labels else tick_label(t)
        parts.append(f'<line class="grid" x1="{sx(t):.1f}" y1="{m_top:.1f}" x2="{sx(t):.1f}" '
                     f'y2="{m_top + ph:.1f}"/><text x="{sx(t):.1f}" y="{m_top + ph + 16:.1f}" '
                     f'text-anchor="middle">{text}</text>')
    parts.append(f'<line class="axis" x1="{m_left:.1f}" y1="{m_top + ph:.1f}" x2="{m_left + pw:.1f}" '
                 f'y2="{m_top + ph:.1f}"/><line class="axis" x1="{m_left:.1f}" y1="{m_top:.1f}" '
                 f'x2="{m_left:.1f}" y2="{m_top + ph:.1f}"/>'
                 f'<text x="{m_left + pw / 2:.1f}" y="{height - 6:.1f}" text-anchor="middle">'
                 f'{esc(xlabel)}</text><text transform="translate(14 {m_top + ph / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{esc(ylabel)}</text>')
    return "".join(parts), sx, sy


# ----------------------------------------------------------------------------- plots
def proposal_scatter_svg(cohort: pd.DataFrame) -> str:
    """Proposal volume (x) against the cleaned VHI (y), one point per measured session
    (coloured by site); the dashed line is y = x (nothing removed or added)."""
    rows = [r for r in records(cohort)
            if number(r.get("proposal_ml")) is not None and number(r["vhi_ml"]) is not None]
    top = max((max(number(r["proposal_ml"]) or 0.0, number(r["vhi_ml"]) or 0.0) for r in rows),
              default=0.0)
    ticks = nice_ticks(top)
    colours = site_colours(r["site"] for r in rows)
    width = height = 420.0
    frame, sx, sy = xy_frame((width, height), (12, 16, 44, 56), xticks=ticks, yticks=ticks,
                             xlabel="proposal (ml)", ylabel="cleaned VHI (ml)")
    ident = (f'<line class="ident" x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(ticks[-1]):.1f}" '
             f'y2="{sy(ticks[-1]):.1f}"/>')
    points = "".join(
        dots([(sx(number(r["proposal_ml"]) or 0.0), sy(number(r["vhi_ml"]) or 0.0),
               f"{session_id(r)}: proposal {fmt_ml(r['proposal_ml'])} ml, "
               f"cleaned {fmt_ml(r['vhi_ml'])} ml")
              for r in rows if str(r["site"]) == site], colour)
        for site, colour in colours.items())
    key = legend(list(colours.items()), 64, 24) if len(colours) > 1 else ""
    return svg_doc(width, height, frame + ident + points + key, "proposal vs cleaned VHI")


def change_svg(change: pd.DataFrame, timepoints: Sequence[str] = ()) -> str:
    """VHI per subject across its measured timepoints (the chain of ``cohort_change`` rows)."""
    rows = records(change)
    timeline = order([r["timepoint_from"] for r in rows] + [r["timepoint_to"] for r in rows],
                     timepoints)
    subjects: dict[tuple[str, str], list[tuple[str, str, Any]]] = {}
    changes: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        changes.setdefault((str(r["site"]), str(r["subject"])), []).append(
            f"{r['timepoint_from']} to {r['timepoint_to']}: {signed_ml(r['change_ml'])} ml")
        chain = subjects.setdefault((str(r["site"]), str(r["subject"])), [])
        if not chain or chain[-1][1] != str(r["session_from"]):
            chain.append((str(r["timepoint_from"]), str(r["session_from"]), r["vhi_ml_from"]))
        chain.append((str(r["timepoint_to"]), str(r["session_to"]), r["vhi_ml_to"]))
    top = max((number(v) or 0.0 for chain in subjects.values() for _, _, v in chain), default=0.0)
    xs = [float(i) for i in range(len(timeline))] if len(timeline) > 1 else [0.0, 1.0]
    labels = timeline if len(timeline) > 1 else [*timeline, ""]
    width, height = 620.0, 340.0
    frame, sx, sy = xy_frame((width, height), (12, 120, 44, 56), xticks=xs,
                              yticks=nice_ticks(top), xlabel="timepoint", ylabel="VHI (ml)",
                              xtick_labels=labels)
    colours = site_colours(site for site, _ in subjects)
    index = {t: i for i, t in enumerate(timeline)}
    parts = []
    for (site, subject), chain in sorted(subjects.items()):
        pts = [(sx(index[t]), sy(number(v) or 0.0), t, s, v) for t, s, v in chain]
        colour = colours[site]
        parts.append(f'<polyline class="subject" fill="none" stroke="{colour}" stroke-width="1.5" '
                     f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y, *_ in pts)}">'
                     f"<title>{esc(site)}/{esc(subject)}: "
                     f"{esc('; '.join(changes[(site, subject)]))}</title></polyline>")
        parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"><title>'
                     f"{esc(site)}/{esc(subject)}/{esc(s)} ({esc(t)}): {fmt_ml(v)} ml</title></circle>"
                     for x, y, t, s, v in pts)
        if len(subjects) <= 30:
            x, y = pts[-1][0], pts[-1][1]
            parts.append(f'<text x="{x + 7:.1f}" y="{y + 4:.1f}">{esc(subject)}</text>')
    return svg_doc(width, height, frame + "".join(parts), "VHI change per subject")


def status_svg(counts: pd.DataFrame) -> str:
    """One 100 % stacked bar per site: its sessions by state."""
    states = [s for s in counts.columns if s != "total" and counts[s].sum() > 0]
    width, left, bar_w, row_h = 760.0, 140.0, 600.0, 24.0
    parts, y = [], 6.0
    for site, row in counts.iterrows():
        total = int(row["total"]) or 1
        x = left
        parts.append(f'<text x="{left - 8:.1f}" y="{y + 14:.1f}" text-anchor="end">'
                     f"{esc(site)} ({int(row['total'])})</text>")
        for state in states:
            n = int(row[state])
            if not n:
                continue
            w = bar_w * n / total
            parts.append(f'<rect class="segment" x="{x:.1f}" y="{y + 2:.1f}" width="{w:.1f}" '
                         f'height="17" fill="{STATE_COLOURS.get(state, "#888")}">'
                         f"<title>{esc(site)}: {n} {esc(state)}</title></rect>")
            if w > 22:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 14:.1f}" text-anchor="middle">'
                             f"{n}</text>")
            x += w
        y += row_h
    key = legend([(s, STATE_COLOURS.get(s, "#888")) for s in states], left, y + 14)
    return svg_doc(width, y + 24, "".join(parts) + key, "sessions by state and site")
