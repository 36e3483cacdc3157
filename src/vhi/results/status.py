"""Per-session progress for data managers: where each session is, and why it stopped.

States, in pipeline order: ``pending`` (nothing done yet), ``pulled``, ``segmented``
(the end for a T1W-only session), ``proposed``, ``pushed``, ``awaiting_cleaning`` (the
proposal is on the source, no cleaned segmentation yet), ``cleaned`` (collected, not
measured), ``measured`` (VHI known), and ``failed`` (a step ran and failed; the reason
is the error its log ends with). The state is read from the files a run leaves in
``work/`` and ``logs/``, so it is true after a failed run as after a complete one. The
reader columns (who reads it, who cleaned it and when, due date, overdue) come from the
run's readers database and ``cleaned.json`` (:mod:`vhi.readers.progress`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from vhi.cohort.layout import Layout
from vhi.cohort.plan import PlannedSession
from vhi.errors import InputError
from vhi.fileio import read_json
from vhi.readers.progress import SESSION_COLUMNS, Reading

STATES = ("pending", "pulled", "segmented", "proposed", "pushed", "awaiting_cleaning",
          "cleaned", "measured", "failed")
COLUMNS = ["site", "subject", "session", "timepoint", "state", "reason", "step", "log",
           "viewer_path", *SESSION_COLUMNS]

_LOG_ERROR = re.compile(r"^\S+ \S+ (?:ERROR|CRITICAL) [\w.]+: (?P<msg>.*)$")


def log_error(path: Path) -> str | None:
    """Why a step whose output is missing failed: the last ERROR line of the vhi logger,
    else the log's last line (a traceback's exception, a shell error); None when the log
    is absent or empty."""
    try:
        lines = [line.rstrip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return None
    errors = [m.group("msg") for line in lines if (m := _LOG_ERROR.match(line))]
    if errors:
        return errors[-1]
    # No ERROR line of ours: the last line says why (a traceback's exception, or the
    # shell's "vhi: command not found"); an empty log says nothing.
    return next((line.strip() for line in reversed(lines) if line.strip()), None)


def session_status(p: PlannedSession, layout: Layout) -> dict[str, str]:
    """State, reason, failed step and its log for one planned session."""
    s = p.session
    row = {"site": s.site, "subject": s.subject, "session": s.session, "timepoint": s.timepoint,
           "state": "pending", "reason": "", "step": "", "log": "",
           "viewer_path": ""}
    not_run = None
    for step in p.steps():
        marker = layout.work_file(s, step.marker)
        if marker.is_file():
            try:
                read_json(marker, step.required)
            except InputError as exc:
                row.update(state="failed", step=step.log, reason=str(exc),
                           log=str(layout.log_file(s, step.log)))
                return row
            if step.log != "measure_agreement" and not_run is None:
                row["state"] = step.state
            continue
        log = layout.log_file(s, step.log)
        error = log_error(log)
        if error is not None or log.is_file():
            row.update(state="failed", step=step.log, log=str(log),
                       reason=error or "no output and no error in the log (interrupted?)")
            return row
        not_run = not_run or step
    if not_run is not None:
        row.update(step=not_run.log, reason=f"{not_run.log} not run yet")
    elif not p.has_stir:
        row["reason"] = "T1W only: disease region only"
    elif p.cleaned is None:
        path = _viewer_path(layout.work_file(s, "pushed.json"))
        row.update(state="awaiting_cleaning", viewer_path=path,
                   reason=(p.note or "proposal pushed; no cleaned segmentation on the source yet")
                   + (f"; open it in `vhi viewer` at {path}" if path else ""))
    return row


def _viewer_path(receipt: Path) -> str:
    """Where the cleaning station opens the session (its OHIF route), for a source that
    has one (DICOMweb); "" for one that has none."""
    try:
        path = json.loads(receipt.read_text()).get("viewer_path", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return path if isinstance(path, str) and path.startswith("/") else ""


def status_table(plan: Sequence[PlannedSession], layout: Layout,
                 reading: Reading | None = None) -> pd.DataFrame:
    """One row per planned session (every session of the sheet, none dropped), with its
    reader columns from ``reading`` (default: the run's readers database now)."""
    reading = reading or Reading.of_run(layout.work)
    rows = []
    for p in plan:
        row = session_status(p, layout)
        cleaned = row["state"] in ("cleaned", "measured")
        rows.append({**row, **reading.session_columns(p.key, cleaned=cleaned)})
    return pd.DataFrame(rows, columns=COLUMNS, dtype=object)


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


def counts_summary(counts: pd.DataFrame) -> dict[str, Any]:
    """:func:`state_counts` for scripts: per site and over all sites, every state (zeros too)."""
    columns = list(counts.columns)
    per_site = {str(site): {c: int(row[c]) for c in columns} for site, row in counts.iterrows()}
    total = {c: int(counts[c].sum()) for c in columns}
    return {"states": [c for c in columns if c != "total"], "sites": per_site, "total": total}


def format_counts(counts: pd.DataFrame) -> str:
    """:func:`state_counts` as a plain-text table for the terminal: the states that occur,
    one row per site, an "all sites" row when there are several."""
    if counts.empty:
        return "no sessions\n"
    shown = [c for c in counts.columns if c == "total" or counts[c].sum() > 0]
    table = counts[shown].copy()
    if len(table) > 1:
        table.loc["all sites"] = table.sum(axis=0)
    header = ["site", *shown]
    body = [[str(site), *(str(int(v)) for v in row)] for site, row in table.iterrows()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    return "\n".join(line(r) for r in [header, *body]) + "\n"
