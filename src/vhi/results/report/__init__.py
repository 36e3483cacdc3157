"""``results/report.html``: one self-contained page for data managers and imaging scientists.

Rendered from the same in-memory tables :mod:`vhi.results.tables` writes (``cohort_vhi``,
``cohort_change``, ``agreement``, ``status``) and the ``dataset_description.json``
dict; nothing is measured again. The page needs nothing outside itself: inline CSS,
plots as inline SVG drawn here, no script, no font or network request. Every string
that comes from data (ids, failure reasons, paths) goes through :func:`_e` (HTML
escaping) before it reaches the page.

Sections: the header (software, version, git commit, model bundle, date, "Research use
only"), the status of every session (counts per state and site, failed sessions with
their reasons, sessions awaiting cleaning), VHI per measured session, the proposal vs
the cleaned VHI, the change per subject between timepoints, reader agreement, and the
list of every session.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from vhi.fileio import atomic_path
from vhi.results.status import STATES

RESEARCH_USE = "Research use only, not for clinical decisions"
ML_DECIMALS = 2  # VHI and proposal volumes are printed (tables and plot labels) to 0.01 ml

STATE_COLOURS = {
    "pending": "#bdbdbd", "pulled": "#c6dbef", "segmented": "#9ecae1", "proposed": "#6baed6",
    "pushed": "#4292c6", "awaiting_cleaning": "#f0b429", "cleaned": "#a1d99b",
    "measured": "#31a354", "failed": "#d62728",
}
SITE_COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442",
                "#000000")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1b1b1b;margin:0 auto;max-width:1100px;padding:0 24px 48px}
h1{font-size:24px;margin:24px 0 4px}h2{font-size:19px;margin:32px 0 8px;
 border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:20px 0 6px}
.ruo{background:#fff4e5;border:1px solid #f0b429;border-radius:4px;padding:8px 12px;
 font-weight:600;margin:12px 0}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:8px 0}
dl.meta dt{color:#555}dl.meta dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;
 font-size:13px;word-break:break-all}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border-bottom:1px solid #e5e5e5;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5;font-weight:600}td.num,th.num{text-align:right;
 font-variant-numeric:tabular-nums}td.zero{color:#bbb}tr.total td{font-weight:600;
 border-top:2px solid #ccc}td.reason{max-width:520px;word-break:break-word}
td.path{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;color:#555;
 word-break:break-all}
.note{color:#555}.empty{color:#777;font-style:italic}
.state{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px}
.state-failed{background:#fde0e0;color:#a50f15}.state-measured{background:#e5f5e0}
.state-awaiting_cleaning{background:#fff4e5}
svg{display:block;margin:8px 0 4px;max-width:100%;height:auto}
svg text{font:11px system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 fill:#333}svg .site{font-weight:600;font-size:12px}svg .axis{stroke:#999}
svg .grid{stroke:#eee}svg .bar{fill:#3b7dd8}svg .ident{stroke:#999;stroke-dasharray:4 3}
details summary{cursor:pointer;font-weight:600;margin:8px 0}
footer{margin-top:40px;color:#777;font-size:12px}
"""


# ----------------------------------------------------------------------------- formatting
def _e(value: Any) -> str:
    """Escaped text of a data value (None and NaN print as empty)."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    return html.escape(str(value), quote=True)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def fmt_ml(value: Any) -> str:
    """A volume in ml as the report prints it everywhere (tables and plot labels)."""
    number = _number(value)
    return "–" if number is None else f"{number:.{ML_DECIMALS}f}"


def _fmt(value: Any, decimals: int) -> str:
    number = _number(value)
    return "–" if number is None else f"{number:.{decimals}f}"


def _fmt_int(value: Any) -> str:
    number = _number(value)
    return "–" if number is None else str(round(number))


def _session_id(row: Mapping[str, Any]) -> str:
    return f"{row.get('site')}/{row.get('subject')}/{row.get('session')}"


def _records(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    return [] if df is None or df.empty else df.to_dict("records")


def _order(values: Iterable[Any], first: Sequence[str] = ()) -> list[str]:
    """Distinct values as text, ``first``'s order first, the rest sorted."""
    rank = {v: i for i, v in enumerate(first)}
    return sorted({str(v) for v in values}, key=lambda v: (rank.get(v, len(rank)), v))


def _table(headers: Sequence[tuple[str, str]], rows: Iterable[Sequence[tuple[str, str]]],
           row_attrs: Iterable[str] | None = None) -> str:
    """An HTML table from (class, already-escaped text) cells."""
    head = "".join(f'<th class="{c}">{t}</th>' for c, t in headers)
    attrs = iter(row_attrs) if row_attrs is not None else None
    body = "".join(
        f"<tr{next(attrs) if attrs else ''}>"
        + "".join(f'<td class="{c}">{t}</td>' for c, t in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ids(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [("", _e(row.get(k))) for k in ("site", "subject", "session", "timepoint")]


ID_HEADERS = [("", "site"), ("", "subject"), ("", "session"), ("", "timepoint")]


# ----------------------------------------------------------------------------- SVG plots
def _nice_ticks(top: float, n: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top`` (steps of 1, 2 or 5 × 10^k)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / n
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    count = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(count + 1)]


def _tick_label(value: float) -> str:
    return f"{value:g}"


def _svg(width: float, height: float, body: str, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{_e(label)}">'
            f"{body}</svg>")


def _site_colours(sites: Iterable[Any]) -> dict[str, str]:
    return {s: SITE_COLOURS[i % len(SITE_COLOURS)] for i, s in enumerate(_order(sites))}


def _legend(items: Sequence[tuple[str, str]], x: float, y: float) -> str:
    out, cx = [], x
    for label, colour in items:
        out.append(f'<rect x="{cx:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{cx + 14:.1f}" y="{y:.1f}">{_e(label)}</text>')
        cx += 24 + 6.5 * len(label)
    return "".join(out)


def vhi_bars_svg(cohort: pd.DataFrame, timepoints: Sequence[str] = ()) -> str:
    """Horizontal bars: VHI of every measured session, grouped by site; one ``class="bar"``
    rect per session, labelled with its VHI as the tables print it."""
    rows = _records(cohort)
    rank = {t: i for i, t in enumerate(timepoints)}
    rows.sort(key=lambda r: (str(r["site"]), str(r["subject"]),
                             rank.get(str(r["timepoint"]), len(rank)), str(r["timepoint"]),
                             str(r["session"])))
    width, left, right, top, row_h, site_h = 760.0, 230.0, 70.0, 8.0, 18.0, 22.0
    plot_w = width - left - right
    ticks = _nice_ticks(max((_number(r["vhi_ml"]) or 0.0 for r in rows), default=0.0))
    scale = plot_w / ticks[-1]
    sites = _order(r["site"] for r in rows)
    body, y = [], top
    for site in sites:
        body.append(f'<text class="site" x="4" y="{y + 15:.1f}">site {_e(site)}</text>')
        y += site_h
        for r in (r for r in rows if str(r["site"]) == site):
            ml = _number(r["vhi_ml"]) or 0.0
            label = f"{r['subject']} / {r['session']} ({r['timepoint']})"
            body.append(
                f'<text x="{left - 6:.1f}" y="{y + 13:.1f}" text-anchor="end">{_e(label)}</text>'
                f'<rect class="bar" x="{left:.1f}" y="{y + 3:.1f}" width="{ml * scale:.2f}" '
                f'height="12"><title>{_e(_session_id(r))}: {fmt_ml(r["vhi_ml"])} ml</title></rect>'
                f'<text class="value" x="{left + ml * scale + 4:.1f}" y="{y + 13:.1f}">'
                f'{fmt_ml(r["vhi_ml"])}</text>')
            y += row_h
    bottom = y + 4
    grid = "".join(
        f'<line class="grid" x1="{left + t * scale:.1f}" y1="{top:.1f}" x2="{left + t * scale:.1f}" '
        f'y2="{bottom:.1f}"/><text x="{left + t * scale:.1f}" y="{bottom + 14:.1f}" '
        f'text-anchor="middle">{_tick_label(t)}</text>' for t in ticks)
    axis = (f'<line class="axis" x1="{left:.1f}" y1="{top:.1f}" x2="{left:.1f}" y2="{bottom:.1f}"/>'
            f'<text x="{left + plot_w / 2:.1f}" y="{bottom + 30:.1f}" text-anchor="middle">'
            f"VHI (ml)</text>")
    return _svg(width, bottom + 38, grid + axis + "".join(body), "VHI per measured session")


def _xy_frame(size: tuple[float, float], margin: tuple[float, float, float, float], *,
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

    def sy(v: float) -> float:
        return m_top + ph - v / y1 * ph

    parts = []
    for t in yticks:
        parts.append(f'<line class="grid" x1="{m_left:.1f}" y1="{sy(t):.1f}" x2="{m_left + pw:.1f}" '
                     f'y2="{sy(t):.1f}"/><text x="{m_left - 6:.1f}" y="{sy(t) + 4:.1f}" '
                     f'text-anchor="end">{_tick_label(t)}</text>')
    for i, t in enumerate(xticks):
        text = _e(xtick_labels[i]) if xtick_labels else _tick_label(t)
        parts.append(f'<line class="grid" x1="{sx(t):.1f}" y1="{m_top:.1f}" x2="{sx(t):.1f}" '
                     f'y2="{m_top + ph:.1f}"/><text x="{sx(t):.1f}" y="{m_top + ph + 16:.1f}" '
                     f'text-anchor="middle">{text}</text>')
    parts.append(f'<line class="axis" x1="{m_left:.1f}" y1="{m_top + ph:.1f}" x2="{m_left + pw:.1f}" '
                 f'y2="{m_top + ph:.1f}"/><line class="axis" x1="{m_left:.1f}" y1="{m_top:.1f}" '
                 f'x2="{m_left:.1f}" y2="{m_top + ph:.1f}"/>'
                 f'<text x="{m_left + pw / 2:.1f}" y="{height - 6:.1f}" text-anchor="middle">'
                 f'{_e(xlabel)}</text><text transform="translate(14 {m_top + ph / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{_e(ylabel)}</text>')
    return "".join(parts), sx, sy


def proposal_scatter_svg(cohort: pd.DataFrame) -> str:
    """Proposal volume (x) against the cleaned VHI (y), one point per measured session;
    the dashed line is y = x (nothing removed or added)."""
    rows = [r for r in _records(cohort)
            if _number(r.get("proposal_ml")) is not None and _number(r["vhi_ml"]) is not None]
    top = max((max(_number(r["proposal_ml"]) or 0.0, _number(r["vhi_ml"]) or 0.0) for r in rows),
              default=0.0)
    ticks = _nice_ticks(top)
    colours = _site_colours(r["site"] for r in rows)
    width = height = 420.0
    frame, sx, sy = _xy_frame((width, height), (12, 16, 44, 56), xticks=ticks, yticks=ticks,
                              xlabel="proposal (ml)", ylabel="cleaned VHI (ml)")
    ident = (f'<line class="ident" x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(ticks[-1]):.1f}" '
             f'y2="{sy(ticks[-1]):.1f}"/>')
    points = "".join(
        f'<circle class="point" cx="{sx(_number(r["proposal_ml"]) or 0):.1f}" '
        f'cy="{sy(_number(r["vhi_ml"]) or 0):.1f}" r="4" fill="{colours[str(r["site"])]}" '
        f'fill-opacity="0.8"><title>{_e(_session_id(r))}: proposal {fmt_ml(r["proposal_ml"])} ml, '
        f'cleaned {fmt_ml(r["vhi_ml"])} ml</title></circle>' for r in rows)
    legend = _legend(list(colours.items()), 64, 24) if len(colours) > 1 else ""
    return _svg(width, height, frame + ident + points + legend, "proposal vs cleaned VHI")


def change_svg(change: pd.DataFrame, timepoints: Sequence[str] = ()) -> str:
    """VHI per subject across its measured timepoints (the chain of ``cohort_change`` rows)."""
    rows = _records(change)
    order = _order([r["timepoint_from"] for r in rows] + [r["timepoint_to"] for r in rows],
                   timepoints)
    subjects: dict[tuple[str, str], list[tuple[str, str, Any]]] = {}
    for r in rows:
        chain = subjects.setdefault((str(r["site"]), str(r["subject"])), [])
        if not chain or chain[-1][1] != str(r["session_from"]):
            chain.append((str(r["timepoint_from"]), str(r["session_from"]), r["vhi_ml_from"]))
        chain.append((str(r["timepoint_to"]), str(r["session_to"]), r["vhi_ml_to"]))
    top = max((_number(v) or 0.0 for chain in subjects.values() for _, _, v in chain), default=0.0)
    xs = [float(i) for i in range(len(order))] if len(order) > 1 else [0.0, 1.0]
    labels = order if len(order) > 1 else [*order, ""]
    width, height = 620.0, 340.0
    frame, sx, sy = _xy_frame((width, height), (12, 120, 44, 56), xticks=xs,
                              yticks=_nice_ticks(top), xlabel="timepoint", ylabel="VHI (ml)",
                              xtick_labels=labels)
    colours = _site_colours(site for site, _ in subjects)
    index = {t: i for i, t in enumerate(order)}
    parts = []
    for (site, subject), chain in sorted(subjects.items()):
        pts = [(sx(index[t]), sy(_number(v) or 0.0), t, s, v) for t, s, v in chain]
        colour = colours[site]
        parts.append(f'<polyline class="subject" fill="none" stroke="{colour}" stroke-width="1.5" '
                     f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y, *_ in pts)}">'
                     f"<title>{_e(site)}/{_e(subject)}</title></polyline>")
        parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"><title>'
                     f"{_e(site)}/{_e(subject)}/{_e(s)} ({_e(t)}): {fmt_ml(v)} ml</title></circle>"
                     for x, y, t, s, v in pts)
        if len(subjects) <= 30:
            x, y = pts[-1][0], pts[-1][1]
            parts.append(f'<text x="{x + 7:.1f}" y="{y + 4:.1f}">{_e(subject)}</text>')
    return _svg(width, height, frame + "".join(parts), "VHI change per subject")


def status_svg(counts: pd.DataFrame) -> str:
    """One 100 % stacked bar per site: its sessions by state."""
    states = [s for s in counts.columns if s != "total" and counts[s].sum() > 0]
    width, left, bar_w, row_h = 760.0, 140.0, 600.0, 24.0
    parts, y = [], 6.0
    for site, row in counts.iterrows():
        total = int(row["total"]) or 1
        x = left
        parts.append(f'<text x="{left - 8:.1f}" y="{y + 14:.1f}" text-anchor="end">'
                     f"{_e(site)} ({int(row['total'])})</text>")
        for state in states:
            n = int(row[state])
            if not n:
                continue
            w = bar_w * n / total
            parts.append(f'<rect class="segment" x="{x:.1f}" y="{y + 2:.1f}" width="{w:.1f}" '
                         f'height="17" fill="{STATE_COLOURS.get(state, "#888")}">'
                         f"<title>{_e(site)}: {n} {_e(state)}</title></rect>")
            if w > 22:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 14:.1f}" text-anchor="middle">'
                             f"{n}</text>")
            x += w
        y += row_h
    legend = _legend([(s, STATE_COLOURS.get(s, "#888")) for s in states], left, y + 14)
    return _svg(width, y + 24, "".join(parts) + legend, "sessions by state and site")


# ----------------------------------------------------------------------------- sections
def state_counts(status: pd.DataFrame) -> pd.DataFrame:
    """Sessions per state (columns, pipeline order; ``total`` last) and site (rows)."""
    extra = sorted(set(status["state"].astype(str)) - set(STATES)) if len(status) else []
    columns = [*STATES, *extra]
    if status.empty:
        return pd.DataFrame(columns=[*columns, "total"], dtype=int)
    counts = (pd.crosstab(status["site"].astype(str), status["state"].astype(str))
              .reindex(columns=columns, fill_value=0))
    counts["total"] = counts.sum(axis=1)
    counts.index.name = "site"
    return counts.astype(int)


def _header(description: Mapping[str, Any], cohort: pd.DataFrame) -> str:
    generated = (description.get("GeneratedBy") or [{}])[0]
    when = description.get("GeneratedAt") or datetime.now(UTC).isoformat()
    with contextlib.suppress(ValueError):
        when = datetime.fromisoformat(str(when)).strftime("%Y-%m-%d %H:%M %Z").strip()
    bundle = description.get("ModelBundle")
    measured_with = sorted({f"{r.get('model_bundle')} {r.get('model_version')}"
                            for r in _records(cohort) if r.get("model_bundle")})
    items = [
        ("software", f"{generated.get('Name', 'vhi')} {generated.get('Version', '')}".strip()),
        ("git commit", generated.get("GitCommit") or "not a git checkout"),
        ("model bundle", bundle or "–"),
        *([("model (measured sessions)", ", ".join(measured_with))] if measured_with else []),
        ("sites", ", ".join(str(s) for s in description.get("Sites", [])) or "–"),
        ("sessions in the sheet", description.get("Sessions", "–")),
        ("generated", when),
    ]
    meta = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return (f"<header><h1>VHI cohort report</h1>"
            f'<p class="ruo">{_e(RESEARCH_USE)}</p><dl class="meta">{meta}</dl></header>')


def _status_section(status: pd.DataFrame, cohort: pd.DataFrame) -> str:
    out = ["<section id=status><h2>Status of every session</h2>"]
    if status.empty:
        return out[0] + '<p class="empty">No sessions in the sheet.</p></section>'
    counts = state_counts(status)
    shown = [s for s in counts.columns if s != "total"]
    totals = counts.sum(axis=0)
    summary = ", ".join(f"{int(totals[s])} {s.replace('_', ' ')}" for s in shown if totals[s])
    out.append(f"<p>{len(status)} sessions at {len(counts)} site(s): {_e(summary)}.</p>")
    out.append(status_svg(counts))

    def cells(row: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [("num" + ("" if row[s] else " zero"), str(int(row[s])))
                for s in [*shown, "total"]]

    table_rows = [[("", _e(site)), *cells(row)] for site, row in counts.iterrows()]
    attrs = [f' data-site="{_e(site)}"' for site in counts.index]
    if len(counts) > 1:
        table_rows.append([("", "all sites"), *cells(totals)])
        attrs.append(' class="total" data-site=""')
    out.append(_table([("", "site"), *[("num", _e(s)) for s in shown], ("num", "total")],
                      table_rows, attrs))

    failed = [r for r in _records(status) if r["state"] == "failed"]
    out.append(f"<h3>Failed sessions ({len(failed)})</h3>")
    if failed:
        out.append(_table([*ID_HEADERS, ("", "step"), ("", "reason"), ("", "log")],
                          ([*_ids(r), ("", _e(r["step"])), ("reason", _e(r["reason"])),
                            ("path", _e(r["log"]))] for r in failed)))
    else:
        out.append('<p class="empty">None.</p>')
    waiting = [r for r in _records(status) if r["state"] == "awaiting_cleaning"]
    out.append(f"<h3>Awaiting cleaning ({len(waiting)})</h3>")
    if waiting:
        out.append('<p class="note">The proposal is on the source; a radiologist has not '
                   "saved a cleaned segmentation yet. The next run collects it.</p>")
        out.append(_table(ID_HEADERS, (_ids(r) for r in waiting)))
    else:
        out.append('<p class="empty">None.</p>')
    out.append("</section>")
    return "".join(out)


def _vhi_section(cohort: pd.DataFrame, timepoints: Sequence[str]) -> str:
    out = [f"<section id=vhi><h2>VHI per measured session ({len(cohort)})</h2>"]
    if cohort.empty:
        return out[0] + '<p class="empty">No session is measured yet: no VHI to show.</p></section>'
    out.append(f'<p class="note">VHI = voxels of the cleaned mask × voxel volume, in ml '
               f"(printed to {ML_DECIMALS} decimals; full precision in cohort_vhi.csv).</p>")
    out.append(vhi_bars_svg(cohort, timepoints))
    out.append("<h3>Machine proposal vs cleaned VHI</h3>"
               '<p class="note">Points below the dashed line: the radiologist removed more than '
               "they added.</p>")
    out.append(proposal_scatter_svg(cohort))
    headers = [*ID_HEADERS, ("num", "VHI (ml)"), ("num", "proposal (ml)"), ("num", "VHI voxels"),
               ("num", "Dice cleaned vs proposal"), ("num", "removed voxels"),
               ("num", "added voxels"), ("", "reference")]
    rows = ([*_ids(r), ("num", fmt_ml(r["vhi_ml"])), ("num", fmt_ml(r.get("proposal_ml"))),
             ("num", _fmt_int(r.get("vhi_voxels"))),
             ("num", _fmt(r.get("dice_cleaned_vs_proposal"), 3)),
             ("num", _fmt_int(r.get("removed_voxels"))), ("num", _fmt_int(r.get("added_voxels"))),
             ("", _e(r.get("reference_mode")))]
            for r in _records(cohort))
    attrs = (f' data-session="{_e(_session_id(r))}"' for r in _records(cohort))
    out.append(_table(headers, rows, attrs))
    out.append("</section>")
    return "".join(out)


def _change_section(change: pd.DataFrame, timepoints: Sequence[str]) -> str:
    out = [f"<section id=change><h2>Change per subject ({len(change)} pairs)</h2>"]
    if change.empty:
        return out[0] + ('<p class="empty">No subject has two measured timepoints yet: '
                         "no change to show.</p></section>")
    out.append(change_svg(change, timepoints))
    out.append(_table(
        [("", "site"), ("", "subject"), ("", "from"), ("", "to"), ("num", "VHI from (ml)"),
         ("num", "VHI to (ml)"), ("num", "change (ml)"), ("num", "change (%)")],
        ([("", _e(r["site"])), ("", _e(r["subject"])),
          ("", f"{_e(r['timepoint_from'])} ({_e(r['session_from'])})"),
          ("", f"{_e(r['timepoint_to'])} ({_e(r['session_to'])})"),
          ("num", fmt_ml(r["vhi_ml_from"])), ("num", fmt_ml(r["vhi_ml_to"])),
          ("num", fmt_ml(r["change_ml"])), ("num", _fmt(r["change_percent"], 1))]
         for r in _records(change))))
    out.append("</section>")
    return "".join(out)


def _agreement_section(agreement: pd.DataFrame) -> str:
    if agreement is None or agreement.empty:
        return ""
    rows = []
    for reader, group in agreement.groupby("reader", sort=True):
        dice = pd.to_numeric(group["dice"], errors="coerce")
        vs = pd.to_numeric(group["volume_similarity"], errors="coerce")
        rows.append([("", _e(reader)), ("num", str(len(group))), ("num", _fmt(dice.mean(), 3)),
                     ("num", _fmt(dice.median(), 3)), ("num", _fmt(dice.min(), 3)),
                     ("num", _fmt(vs.mean(), 3))])
    return ("<section id=agreement><h2>Machine proposal vs reader masks</h2>"
            '<p class="note">Per reader, over the sessions with their mask (per session: '
            "agreement.csv).</p>"
            + _table([("", "reader"), ("num", "sessions"), ("num", "mean Dice"),
                      ("num", "median Dice"), ("num", "min Dice"),
                      ("num", "mean volume similarity")], rows)
            + "</section>")


def _sessions_section(status: pd.DataFrame, cohort: pd.DataFrame) -> str:
    if status.empty:
        return ""
    vhi = {(str(r["site"]), str(r["subject"]), str(r["session"])): r["vhi_ml"]
           for r in _records(cohort)}
    rows = ([*_ids(r), ("", f'<span class="state state-{_e(r["state"])}">{_e(r["state"])}</span>'),
             ("num", fmt_ml(vhi[k]) if (k := (str(r["site"]), str(r["subject"]),
                                             str(r["session"]))) in vhi else ""),
             ("reason", _e(r["reason"]))] for r in _records(status))
    return (f"<section id=sessions><details><summary>Every session ({len(status)})</summary>"
            + _table([*ID_HEADERS, ("", "state"), ("num", "VHI (ml)"), ("", "reason")], rows)
            + "</details></section>")


# ----------------------------------------------------------------------------- the page
def render_report(*, cohort: pd.DataFrame, change: pd.DataFrame, agreement: pd.DataFrame,
                  status: pd.DataFrame, description: Mapping[str, Any],
                  timepoints: Sequence[str] = ()) -> str:
    """The whole report as one HTML document (pure: the tables in, a string out).

    ``cohort``, ``change``, ``agreement`` and ``status`` are the frames of
    :mod:`vhi.results.tables` / :mod:`vhi.results.status`; ``description`` the ``dataset_description.json``
    dict; ``timepoints`` the config's order of timepoints (for the change plot's axis).
    """
    body = "".join([
        _header(description, cohort),
        _status_section(status, cohort),
        _vhi_section(cohort, timepoints),
        _change_section(change, timepoints),
        _agreement_section(agreement),
        _sessions_section(status, cohort),
        f"<footer>{_e(RESEARCH_USE)}. Generated by vhi from results/cohort_vhi.csv, "
        "cohort_change.csv, agreement.csv and status.csv (docs/output.md).</footer>",
    ])
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width,initial-scale=1">'
            "<meta http-equiv=Content-Security-Policy "
            "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
            f"<title>VHI cohort report</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>\n")


def write_report(dest: str | os.PathLike[str], **tables: Any) -> Path:
    """Render (:func:`render_report`, same keyword arguments) and write ``dest`` atomically."""
    text = render_report(**tables)
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return dest
