"""Per-session progress for data managers: where each session is, and why it stopped.

States, in pipeline order: ``pending`` (nothing done yet), ``pulled``, ``segmented``
(the end for a T1W-only session), ``proposed``, ``pushed``, ``awaiting_cleaning`` (the
proposal is on the source, no cleaned segmentation yet), ``cleaned`` (collected, not
measured), ``measured`` (VHI known), and ``failed`` (a step ran and failed; the reason
is the error its log ends with). The state is read from the files a run leaves in
``work/`` and ``logs/``, so it is true after a failed run as after a complete one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from vhi.cohort.layout import Layout
from vhi.cohort.plan import PlannedSession

STATES = ("pending", "pulled", "segmented", "proposed", "pushed", "awaiting_cleaning",
          "cleaned", "measured", "failed")
COLUMNS = ["site", "subject", "session", "timepoint", "state", "reason", "step", "log"]

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
           "state": "pending", "reason": "", "step": "", "log": ""}
    not_run = None
    for step in p.steps():
        if layout.work_file(s, step.marker).is_file():
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
        row.update(state="awaiting_cleaning",
                   reason="proposal pushed; no cleaned segmentation on the source yet"
                   + _viewer_hint(layout.work_file(s, "pushed.json")))
    return row


def _viewer_hint(receipt: Path) -> str:
    """Where the cleaning station opens the session, for a source that has one (DICOMweb)."""
    try:
        path = json.loads(receipt.read_text()).get("viewer_path", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return f"; open it in `vhi viewer` at {path}" if path else ""


def status_table(plan: Sequence[PlannedSession], layout: Layout) -> pd.DataFrame:
    """One row per planned session (every session of the sheet, none dropped)."""
    return pd.DataFrame([session_status(p, layout) for p in plan], columns=COLUMNS, dtype=object)
