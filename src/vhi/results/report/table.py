"""The table of every session: QC thumbnail, state, readers, VHI, proposal, reason; sortable by
any column, filterable by site, state and text, a page of rows at a time (``report.js``).

The rows travel as one JSON data block (``<script type="application/json">``, never
executed) and the script draws only the page of rows on screen: a page of 10,000
sessions opens as fast as one of 100 (a table of 10,000 rows takes the browser seconds
to lay out). Every value is formatted here, as the other tables print it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from vhi.results.report.images import KINDS
from vhi.results.report.text import esc, fmt, fmt_int, fmt_ml, order, records, session_id, viewer_link
from vhi.results.status import STATES

HEADERS = [("", "QC"), ("", "site"), ("", "subject"), ("", "session"), ("", "timepoint"),
           ("", "state"), ("", "readers"), ("", "cleaned by"), ("", "due"), ("num", "VHI (ml)"),
           ("num", "proposal (ml)"),
           ("num", "Dice cleaned vs proposal"), ("num", "removed voxels"), ("num", "added voxels"),
           ("", "reference"), ("", "reason")]
#: The fields of a row in the data block: the headers after "QC", then the QC image and
#: the one before cleaning (paths relative to the page, or ""), the session's address
#: in the cleaning station while it awaits cleaning (or ""), and "1" when it is overdue.
FIELDS = ["site", "subject", "session", "timepoint", "state", "readers", "cleaned_by", "due",
          "vhi_ml", "proposal_ml", "dice_cleaned_vs_proposal", "removed_voxels", "added_voxels",
          "reference_mode", "reason", "qc_image", "qc_before_cleaning", "viewer", "overdue"]
PAGE_ROWS = 100


def _options(values: list[str], every: str) -> str:
    return f'<option value="">{esc(every)}</option>' + "".join(
        f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)


def filters(status: pd.DataFrame) -> str:
    """Site, state and text filters and the pager (hidden until the script shows them)."""
    sites = order(status["site"])
    present = set(status["state"].astype(str))
    states = [s for s in STATES if s in present] + sorted(present - set(STATES))
    return ('<div id="filters" class="filters" hidden>'
            f'<label>site <select id="filter-site">{_options(sites, "every site")}</select></label>'
            f'<label>state <select id="filter-state">{_options(states, "every state")}</select>'
            '</label><label>text <input id="filter-text" type="search" '
            'placeholder="subject, session, reason…"></label>'
            '<span id="filter-count" class="note"></span>'
            '<span class="pager"><button id="page-prev" type="button">previous</button>'
            '<span id="page-info"></span><button id="page-next" type="button">next</button>'
            "</span></div>")


def _images(images: Mapping[str, str] | None) -> list[str]:
    if not images:
        return ["", ""]
    newest = next(k for k in KINDS if k in images)
    return [images[newest], images.get("image", "") if newest == "cleaned" else ""]


def session_rows(status: pd.DataFrame, cohort: pd.DataFrame,
                 images: Mapping[str, Mapping[str, str]],
                 viewer_url: str | None = None) -> list[list[str]]:
    """One list of :data:`FIELDS` (as printed) per session, in the status table's order."""
    measured = {session_id(r): r for r in records(cohort)}
    rows = []
    for r in records(status):
        key = session_id(r)
        m: dict[str, Any] = measured.get(key, {})
        numbers = ([fmt_ml(m["vhi_ml"]), fmt_ml(m.get("proposal_ml")),
                    fmt(m.get("dice_cleaned_vs_proposal"), 3), fmt_int(m.get("removed_voxels")),
                    fmt_int(m.get("added_voxels")), str(m.get("reference_mode") or "")]
                   if m else [""] * 6)
        readers = [str(r.get("readers") or "").replace(";", ", "), str(r.get("cleaned_by") or ""),
                   str(r.get("due") or "")[:10]]
        overdue = r.get("overdue") is True or str(r.get("overdue")) == "True"
        rows.append([str(r[k]) for k in ("site", "subject", "session", "timepoint", "state")]
                    + readers + numbers + [str(r["reason"] or "")] + _images(images.get(key))
                    + [viewer_link(r, viewer_url), "1" if overdue else ""])
    return rows


def data_block(rows: list[list[str]]) -> str:
    """The rows as JSON in a data block; ``<`` escaped so no text can close the element."""
    text = json.dumps({"fields": FIELDS, "rows": rows}, ensure_ascii=False, separators=(",", ":"))
    return ('<script type="application/json" id="session-data">'
            + text.replace("<", "\\u003c") + "</script>")


def sessions_section(status: pd.DataFrame, cohort: pd.DataFrame,
                     images: Mapping[str, Mapping[str, str]], viewer_url: str | None = None) -> str:
    """Every session of the sheet, none dropped (nothing without sessions)."""
    if status.empty:
        return ""
    head = "".join(f'<th class="{c}">{t}</th>' for c, t in HEADERS)
    return (f"<section id=sessions><h2>Every session ({len(status)})</h2>"
            '<p class="note">VHI = voxels of the cleaned mask × voxel volume, in ml (printed to '
            "2 decimals; full precision in cohort_vhi.csv). Click a column's title to sort; a "
            "thumbnail opens the QC image (the slices with the most proposal voxels: disease "
            "region yellow, proposal orange/red, cleaned mask cyan; the T1W with the U-Net's "
            f"region green). {PAGE_ROWS} rows a page.</p>"
            + filters(status)
            + f'<table id="session-table" class="sessions" data-page-rows="{PAGE_ROWS}">'
            f"<thead><tr>{head}</tr></thead><tbody></tbody></table>"
            '<noscript><p class="empty">The session table needs JavaScript; every session is '
            "in status.csv and cohort_vhi.csv.</p></noscript>"
            + data_block(session_rows(status, cohort, images, viewer_url)) + "</section>")
