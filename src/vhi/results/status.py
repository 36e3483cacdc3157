"""Per-session progress for data managers: where each session is, and why it stopped.

States, in pipeline order: ``pending`` (nothing done yet), ``pulled``, ``segmented``
(the end for a T1W-only session), ``proposed``, ``pushed``, ``awaiting_cleaning`` (the
proposal is on the source, no cleaned segmentation yet), ``cleaned`` (collected, not
measured), ``measured`` (VHI known); ``running`` (a run holds the work folder and one of
the session's steps has started in it, its log without an error, its output not yet
written), ``failed`` (a step ran and failed; the reason is the error its log ends with)
and ``skipped`` (found by the site's source at listing and not planned; the reason says
why). The state is read from the files a run leaves in ``work/`` and ``logs/`` and the
run marker (:mod:`vhi.cohort.run`), so it is true during a run, after a failed run and
after a complete one. The reader columns (who reads it, who cleaned it and when, due
date, overdue) come from the run's readers database and ``cleaned.json``
(:mod:`vhi.readers.progress`). A study or session the source found but left out of the
plan (ids that are not valid ids, ...) is a row of its own, ``skipped``, with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from vhi.cohort.layout import STALE_NOTE, Layout
from vhi.cohort.plan import PlannedSession
from vhi.cohort.run import RunMarker
from vhi.errors import InputError
from vhi.fileio import read_json
from vhi.readers.progress import SESSION_COLUMNS, Reading
from vhi.sources import Skipped

STATES = ("pending", "pulled", "segmented", "proposed", "pushed", "awaiting_cleaning",
          "cleaned", "measured", "running", "failed", "skipped")
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


def _running_in(log: Path, run: RunMarker | None) -> bool:
    """Whether the step of ``log`` runs in ``run``: its log was written since the run
    started and holds no error (an ERROR line of ours, a traceback) yet."""
    if run is None:
        return False
    try:
        started = datetime.fromisoformat(run.started).timestamp()
        if log.stat().st_mtime < started - 1.0:  # file times may be a little coarse
            return False
        lines = log.read_text(errors="replace").splitlines()
    except (OSError, ValueError):
        return False
    return not any(_LOG_ERROR.match(line) or line.startswith("Traceback (") for line in lines)


def session_status(p: PlannedSession, layout: Layout, run: RunMarker | None = None) -> dict[str, str]:
    """State, reason, failed (or running) step and its log for one planned session.

    ``run``: the run that holds the work folder now (:func:`vhi.cohort.run.active_run`), if
    any: a step it started whose log has no error yet is ``running``, not ``failed``."""
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
        if _running_in(log, run):
            row.update(state="running", step=step.log, log=str(log),
                       reason=f"{step.log} running (run of {run.started}, pid {run.pid} on {run.host})")
            return row
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


def skipped_status(s: Skipped) -> dict[str, Any]:
    """The row of what a source found and left out of the plan."""
    return {"site": s.site, "subject": s.subject, "session": s.session, "timepoint": "",
            "state": "skipped", "reason": f"{s.label}: {s.reason}", "step": "", "log": "",
            "viewer_path": "", **dict.fromkeys(SESSION_COLUMNS, ""), "overdue": False}


def status_table(plan: Sequence[PlannedSession], layout: Layout, reading: Reading | None = None, *,
                 skipped: Sequence[Skipped] = (), run: RunMarker | None = None) -> pd.DataFrame:
    """One row per planned session (every session of the sheet, none dropped), with its
    reader columns from ``reading`` (default: the run's readers database now), then one per
    study or session the sources found and skipped (``skipped``: the plan's, a
    :class:`~vhi.cohort.plan.CohortPlan`'s). ``run``: the run that holds the work folder
    now, for the ``running`` state (:func:`session_status`)."""
    reading = reading or Reading.of_run(layout.work)
    rows = []
    for p in plan:
        row = session_status(p, layout, run)
        cleaned = row["state"] in ("cleaned", "measured")
        rows.append({**row, **reading.session_columns(p.key, cleaned=cleaned)})
    rows += [skipped_status(s) for s in skipped]
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


def results_state(layout: Layout) -> dict[str, Any]:
    """What ``results/`` holds: complete results, partial ones (``partial/``), and complete
    ones of an earlier run set aside as stale (``stale/``, with its note)."""
    def written(path: Path) -> str | None:
        try:
            return datetime.fromtimestamp(path.stat().st_mtime).astimezone().isoformat(timespec="seconds")
        except OSError:
            return None

    stale = layout.stale()
    note = Path(stale.results, STALE_NOTE)
    return {"complete": written(layout.result("status")),
            "partial": written(layout.partial().result("status")),
            "stale": written(stale.result("status")),
            "stale_note": note.read_text().strip() if note.is_file() else None}


def format_notes(plan: str, run: RunMarker | None, results: Mapping[str, Any]) -> str:
    """The lines under ``vhi status``'s table: the plan's listing per site, the run that
    holds the work folder, what results/ holds."""
    lines = ["", plan]
    if run is not None:
        lines.append(f"run in progress: {run.describe()}")
    if results.get("partial"):
        lines.append(f"results/partial/: the sessions that finished, written {results['partial']} "
                     "(a run stopped, or sessions are not finished)")
    if results.get("stale"):
        lines.append("results/stale/: complete results of an earlier run, no longer current "
                     f"(see its {STALE_NOTE})")
    if results.get("complete"):
        lines.append(f"results/: complete, written {results['complete']}")
    return "\n".join(lines) + "\n"
