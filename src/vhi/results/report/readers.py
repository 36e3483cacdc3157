"""The readers section: each reader's work (assigned, done, open, overdue, days to clean,
edit effort) and the sessions overdue, from ``readers.csv`` and ``status.csv``. The
agreement of the double reads is in :mod:`.agreement`.
"""

from __future__ import annotations

import pandas as pd

from vhi.results.report.text import esc, fmt, fmt_int, html_table, records, session_id

#: Overdue sessions listed by name (the rest: filter the session table or status.csv).
OVERDUE_LISTED = 50

HEADERS = [("", "reader"), ("", "name"), ("", "sites"), ("num", "assigned"), ("num", "done"),
           ("num", "open"), ("num", "overdue"), ("num", "median days to clean"),
           ("num", "reads measured"), ("num", "median voxels removed"), ("num", "median voxels added")]


def readers_section(readers: pd.DataFrame | None, status: pd.DataFrame) -> str:
    """Per reader: their assignments and how far they are; then the overdue sessions.
    Nothing when the run has no readers."""
    rows = records(readers)
    if not rows:
        return ""
    table = [[("", esc(r["reader"])), ("", esc(r["name"])), ("", esc(str(r["sites"]).replace(";", ", "))),
              ("num", fmt_int(r["assigned"])), ("num", fmt_int(r["done"])), ("num", fmt_int(r["open"])),
              ("num" + (" overdue" if (r["overdue"] or 0) > 0 else ""), fmt_int(r["overdue"])),
              ("num", fmt(r["median_days_to_clean"], 1)), ("num", fmt_int(r["collected"])),
              ("num", fmt_int(r["median_voxels_removed"])), ("num", fmt_int(r["median_voxels_added"]))]
             for r in rows]
    out = ["<section id=readers><h2>Readers</h2>",
           '<p class="note">Per reader: sessions assigned (a double-read session counts for both '
           "readers), done (saved for the current proposal), open, overdue (open past the due "
           "date); days from the assignment to the save; edit effort as the voxels the reader "
           "removed from and added to the proposal (reads measured so far). Per read: "
           "reads.csv; per reader: readers.csv; each reader's list: worklists/.</p>",
           html_table(HEADERS, table, css="readers")]
    overdue = [r for r in records(status) if r.get("overdue") is True or str(r.get("overdue")) == "True"]
    out.append(f"<h3>Overdue sessions ({len(overdue)})</h3>")
    if overdue:
        out.append(html_table(
            [("", "session"), ("", "state"), ("", "readers"), ("", "due")],
            ([("", esc(session_id(r))), ("", esc(r["state"])),
              ("", esc(str(r.get("readers") or "").replace(";", ", "))), ("", esc(r.get("due")))]
             for r in overdue[:OVERDUE_LISTED])))
        if len(overdue) > OVERDUE_LISTED:
            out.append(f'<p class="note">{len(overdue) - OVERDUE_LISTED} more: status.csv, column '
                       "overdue.</p>")
    else:
        out.append('<p class="empty">None.</p>')
    out.append("</section>")
    return "".join(out)
