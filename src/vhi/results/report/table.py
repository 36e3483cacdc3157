"""The table of every session: state, VHI, proposal, reason and QC thumbnail, one row
each; sortable by any column and filterable by site, state and text (``report.js``).

Rows carry ``data-site``, ``data-state`` and ``data-key`` (``site/subject/session``) for
the filters; without a script the table is complete and the controls stay hidden.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from vhi.results.report.images import thumbnail
from vhi.results.report.text import esc, fmt, fmt_int, fmt_ml, order, records, session_id
from vhi.results.status import STATES

HEADERS = [("", "QC"), ("", "site"), ("", "subject"), ("", "session"), ("", "timepoint"),
           ("", "state"), ("num", "VHI (ml)"), ("num", "proposal (ml)"),
           ("num", "Dice cleaned vs proposal"), ("num", "removed voxels"), ("num", "added voxels"),
           ("", "reference"), ("", "reason")]


def _options(values: list[str], every: str) -> str:
    return f'<option value="">{esc(every)}</option>' + "".join(
        f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)


def filters(status: pd.DataFrame) -> str:
    """Site, state and text filters (hidden until the script shows them)."""
    sites = order(status["site"])
    present = set(status["state"].astype(str))
    states = [s for s in STATES if s in present] + sorted(present - set(STATES))
    return ('<div id="filters" class="filters" hidden>'
            f'<label>site <select id="filter-site">{_options(sites, "every site")}</select></label>'
            f'<label>state <select id="filter-state">{_options(states, "every state")}</select>'
            '</label><label>text <input id="filter-text" type="search" '
            'placeholder="subject, session, reason…"></label>'
            '<span id="filter-count" class="note"></span></div>')


def sessions_section(status: pd.DataFrame, cohort: pd.DataFrame,
                     images: Mapping[str, Mapping[str, str]]) -> str:
    """Every session of the sheet, none dropped (nothing without sessions)."""
    if status.empty:
        return ""
    measured = {session_id(r): r for r in records(cohort)}
    head = "".join(f'<th class="{c}" title="sort">{t}</th>' for c, t in HEADERS)
    rows = []
    for r in records(status):
        key = session_id(r)
        m: dict[str, Any] = measured.get(key, {})
        cells = [
            ("qc", thumbnail(images.get(key), key)),
            *(("", esc(r[k])) for k in ("site", "subject", "session", "timepoint")),
            ("", f'<span class="state state-{esc(r["state"])}">{esc(r["state"])}</span>'),
            ("num vhi", fmt_ml(m["vhi_ml"]) if m else ""),
            ("num", fmt_ml(m.get("proposal_ml")) if m else ""),
            ("num", fmt(m.get("dice_cleaned_vs_proposal"), 3) if m else ""),
            ("num", fmt_int(m.get("removed_voxels")) if m else ""),
            ("num", fmt_int(m.get("added_voxels")) if m else ""),
            ("", esc(m.get("reference_mode")) if m else ""),
            ("reason", esc(r["reason"])),
        ]
        rows.append(f'<tr data-site="{esc(r["site"])}" data-state="{esc(r["state"])}" '
                    f'data-key="{esc(key)}">'
                    + "".join(f'<td class="{c}">{t}</td>' for c, t in cells) + "</tr>")
    return (f"<section id=sessions><h2>Every session ({len(status)})</h2>"
            '<p class="note">VHI = voxels of the cleaned mask × voxel volume, in ml (printed to '
            "2 decimals; full precision in cohort_vhi.csv). Click a column's title to sort; a "
            "thumbnail opens the QC image (the slices with the most proposal voxels: disease "
            "region yellow, proposal orange/red, cleaned mask cyan; the T1W with the U-Net's "
            "region green).</p>"
            + filters(status)
            + f'<table id="session-table" class="sessions"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></section>')
