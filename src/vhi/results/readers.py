"""The readers' tables: every collected read, every reader's work, each reader's worklist.

* ``reads.csv`` – one row per reader's mask of a collected session (``cleaned.json``'s
  ``reads``): volume, edit effort against the proposal, when it was saved and how long
  after the assignment, and for a double read the Dice of the two readers' masks;
* ``readers.csv`` – one row per reader (:func:`vhi.readers.progress.reader_summaries`);
* ``worklists/<reader>.csv`` – each reader's assignments, for sites that mail them.

Assignment, claim and due state come from the run's readers database (one snapshot,
:class:`vhi.readers.progress.Reading`); the reads from the sessions' ``cleaned.json``.
The Dice of a double read is measured here from the two masks in the session's folder:
only double-read sessions have two.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from vhi.cohort.layout import Layout
from vhi.cohort.plan import PlannedSession
from vhi.config.load import ReaderConfig
from vhi.errors import InputError
from vhi.fileio import atomic_path
from vhi.imaging.nifti import load_mask, require_same_grid
from vhi.method.measure import dice
from vhi.readers.progress import WORKLIST_COLUMNS, Reading, reader_summaries, short_utc, worklist

log = logging.getLogger(__name__)

READS_COLUMNS = [
    "site", "subject", "session", "timepoint", "reader", "role", "gives_vhi", "mask", "voxels",
    "volume_ml", "voxels_removed", "voxels_added", "saved_at", "assigned_at", "days_to_clean",
    "dice_vs_other_reader", "sha256",
]
READERS_COLUMNS = ["reader", "name", "sites", "assigned", "done", "open", "overdue",
                   "median_days_to_clean", "collected", "median_voxels_removed", "median_voxels_added"]
#: The worklists' folder, under the results folder.
WORKLISTS_DIR = "worklists"


def _pair_dice(folder: Path, masks: Sequence[str], key: str) -> float | None:
    """Dice of a double read's two masks (None, with a warning, when one cannot be read)."""
    try:
        a, b = (load_mask(folder / m) for m in masks)
        require_same_grid(a, b)
    except (InputError, OSError) as exc:
        log.warning("session %s: the double read's masks are not compared (%s)", key, exc)
        return None
    return dice(a.data, b.data)


def reads_table(plan: Sequence[PlannedSession], layout: Layout, status: pd.DataFrame,
                reading: Reading) -> pd.DataFrame:
    """One row per read of every session whose cleaning is collected (cleaned or measured)."""
    collected = {f"{r.site}/{r.subject}/{r.session}" for r in status.itertuples()
                 if r.state in ("cleaned", "measured")}
    rows = []
    for p in plan:
        found = reading.collected(p.key) if p.key in collected else None
        if found is None or not found.reads:
            continue
        pair = None
        if len(found.reads) == 2:
            pair = _pair_dice(layout.session_dir(p.session), [r.mask for r in found.reads], p.key)
        assigned = {a.reader: a for a in reading.assignments(session_key=p.key)}
        for read in found.reads:
            a = assigned.get(read.reader)
            days = None
            if a is not None and read.saved_at:
                progress = reading.progress(a)
                days = progress.days_to_clean if progress.saved_at == read.saved_at else None
            s = p.session
            rows.append({
                "site": s.site, "subject": s.subject, "session": s.session, "timepoint": s.timepoint,
                "reader": read.reader, "role": read.role, "gives_vhi": read.reader == found.cleaned_by,
                "mask": read.mask, "voxels": read.voxels, "volume_ml": read.volume_ml,
                "voxels_removed": read.voxels_removed, "voxels_added": read.voxels_added,
                "saved_at": short_utc(read.saved_at), "assigned_at": short_utc(a.assigned_at) if a else "",
                "days_to_clean": days, "dice_vs_other_reader": pair, "sha256": read.sha256})
    return pd.DataFrame(rows, columns=READS_COLUMNS)


def readers_table(reading: Reading, readers: Sequence[ReaderConfig]) -> pd.DataFrame:
    """One row per reader: assigned, done, open, overdue, days to clean, edit effort."""
    rows = [s.as_row() for s in reader_summaries(reading, readers)]
    return pd.DataFrame(rows, columns=READERS_COLUMNS)


def write_worklists(reading: Reading, readers: Sequence[ReaderConfig], folder: str | Path,
                    viewer_url: str | None = None) -> list[Path]:
    """``<folder>/<reader>.csv`` for every configured reader (an empty list has its header);
    the lists of readers no longer configured are removed."""
    folder = Path(folder)
    written = []
    for reader in readers:
        dest = folder / f"{reader.id}.csv"
        with atomic_path(dest) as tmp:
            pd.DataFrame(worklist(reading, reader.id, viewer_url), columns=WORKLIST_COLUMNS).to_csv(
                tmp, index=False)
        written.append(dest)
    if folder.is_dir():
        for stale in set(folder.glob("*.csv")) - set(written):
            stale.unlink()
    return written


def double_reads(reads: pd.DataFrame) -> pd.DataFrame:
    """The double-read sessions: per session its site, the first and second reader's
    volume (ml) and the Dice of their masks (columns site, key, a, b, dice)."""
    columns = ["site", "key", "a", "b", "dice"]
    if reads is None or reads.empty:
        return pd.DataFrame(columns=columns)
    rows: list[dict[str, Any]] = []
    for (site, subject, session), group in reads.groupby(["site", "subject", "session"], sort=True):
        roles = {str(r["role"]): r for r in group.to_dict("records")}
        if {"first", "second"} <= set(roles):
            rows.append({"site": str(site), "key": f"{site}/{subject}/{session}",
                         "a": roles["first"]["volume_ml"], "b": roles["second"]["volume_ml"],
                         "dice": roles["first"]["dice_vs_other_reader"]})
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("a", "b", "dice"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame
