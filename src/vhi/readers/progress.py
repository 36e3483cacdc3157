"""Where each assignment stands: to do, opened or saved; its due date; overdue or not.

A reader's assignment is **saved** once something they saved answers the session's
current proposal: a save recorded in the database (:class:`~vhi.readers.store.Save`), or
a read collected into the session's ``cleaned.json`` (its ``reads``), made after the push
that made the proposal current (:meth:`~vhi.readers.store.ReadersStore.last_push`); a
save of an earlier proposal does not count. It is **opened** once the reader opened the
session (a claim), else **to do**. It is **overdue** while not saved after its due date.

:class:`Reading` joins the database (one snapshot) and the collected reads of the work
folder at one moment ``now``: the reader columns of ``status.csv``, the worklists and the
per-reader table come from it. Nothing here writes.

``cleaned.json`` (written by the collection) carries, besides the collection's own keys:
``cleaned_by`` (reader id, XNAT user, or "" when unknown), ``cleaned_at`` (ISO-8601 UTC)
and ``reads``: one entry per reader's mask, ``{reader, role, mask, voxels, volume_ml,
saved_at, sha256, voxels_removed, voxels_added}`` (the last two against the proposal's
label >= 1 voxels; ``mask`` a file in the session's folder: ``cleaned.nii.gz`` for the
reader whose mask gives the VHI, ``cleaned_<reader>.nii.gz`` for each reader of a double read).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from vhi.config.load import ReaderConfig
from vhi.errors import InputError
from vhi.readers.store import Assignment, Save, Snapshot, current_push, parse_utc, read_snapshot, utc_iso

log = logging.getLogger(__name__)

#: An assignment's states, in order.
STATES = ("to_do", "opened", "saved")
#: The reader columns of status.csv (per session).
SESSION_COLUMNS = ["readers", "cleaned_by", "cleaned_at", "due", "overdue"]


def short_utc(value: str) -> str:
    """An ISO-8601 time as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, to the second); "" stays ""."""
    return parse_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ") if value else ""


def _iso_or_empty(value: Any) -> str:
    """A time from a file as :func:`~vhi.readers.store.utc_iso` writes it; "" if absent or
    not a time (such a read has no time to compare)."""
    try:
        return utc_iso(str(value)) if value else ""
    except InputError:
        return ""


# ----------------------------------------------------------------------------- collected reads
@dataclass(frozen=True)
class Read:
    """One reader's mask of a session, as the collection measured it (``cleaned.json``)."""

    reader: str
    role: str
    mask: str
    voxels: int | None
    volume_ml: float | None
    saved_at: str
    sha256: str
    voxels_removed: int | None
    voxels_added: int | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Read:
        def number(key: str, kind: type) -> Any:
            value = data.get(key)
            return None if value is None or value == "" else kind(value)

        return cls(reader=str(data.get("reader") or ""), role=str(data.get("role") or ""),
                   mask=str(data.get("mask") or ""), voxels=number("voxels", int),
                   volume_ml=number("volume_ml", float), saved_at=_iso_or_empty(data.get("saved_at")),
                   sha256=str(data.get("sha256") or ""), voxels_removed=number("voxels_removed", int),
                   voxels_added=number("voxels_added", int))


@dataclass(frozen=True)
class Collected:
    """Who cleaned a session, and every reader's mask of it, from its ``cleaned.json``."""

    cleaned_by: str
    cleaned_at: str
    reads: tuple[Read, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Collected:
        reads = data.get("reads") if isinstance(data.get("reads"), list) else []
        return cls(cleaned_by=str(data.get("cleaned_by") or ""),
                   cleaned_at=_iso_or_empty(data.get("cleaned_at")),
                   reads=tuple(Read.from_dict(r) for r in reads if isinstance(r, Mapping)))

    def read_of(self, reader: str) -> Read | None:
        return next((r for r in self.reads if r.reader == reader), None)


def read_collected(session_dir: str | os.PathLike[str]) -> Collected | None:
    """The session's ``cleaned.json`` as far as readers go; None without one (an unreadable
    one is the status's to report)."""
    path = Path(session_dir, "cleaned.json")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.debug("%s: not read for the readers' progress (%s)", path, exc)
        return None
    return Collected.from_dict(data) if isinstance(data, Mapping) else None


# ----------------------------------------------------------------------------- progress
@dataclass(frozen=True)
class Progress:
    """Where one assignment stands at a moment."""

    assignment: Assignment
    state: str  # one of STATES
    opened_at: str  # the reader's first open ("" if never)
    saved_at: str  # their save answering the current proposal ("" if none)
    overdue: bool

    @property
    def done(self) -> bool:
        return self.state == "saved"

    @property
    def days_to_clean(self) -> float | None:
        """Days from the assignment to the save (None while not saved)."""
        if not self.saved_at:
            return None
        delta = parse_utc(self.saved_at) - parse_utc(self.assignment.assigned_at)
        return max(delta.total_seconds(), 0.0) / 86400.0


class Reading:
    """The readers' side of a run at one moment: the database and the collected reads.

    ``snapshot`` None (a run without a readers database) has no assignments.
    """

    def __init__(self, snapshot: Snapshot | None, work_dir: str | os.PathLike[str],
                 now: datetime | str | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.now = utc_iso(now)
        snapshot = snapshot or Snapshot((), (), (), ())
        self._assignments = snapshot.assignments
        self._by_session: dict[str, list[Assignment]] = defaultdict(list)
        for a in snapshot.assignments:
            self._by_session[a.session_key].append(a)
        self._opened = {(c.session_key, c.reader): c.opened_at for c in snapshot.claims}
        self._saves: dict[tuple[str, str], list[Save]] = defaultdict(list)
        for s in snapshot.saves:
            self._saves[(s.session_key, s.reader)].append(s)
        pushes = defaultdict(list)
        for p in snapshot.pushes:
            pushes[p.session_key].append(p)
        self._since = {key: push.pushed_at for key, mine in pushes.items()
                       if (push := current_push(mine)) is not None}
        self._collected: dict[str, Collected | None] = {}

    @classmethod
    def of_run(cls, work_dir: str | os.PathLike[str], now: datetime | str | None = None) -> Reading:
        """The run's database as of now (none: nothing assigned) and its work folder."""
        return cls(read_snapshot(work_dir), work_dir, now)

    # ------------------------------------------------------------------ lookups
    def assignments(self, *, session_key: str | None = None,
                    reader: str | None = None) -> list[Assignment]:
        """Current assignments (by session and role)."""
        found = self._by_session.get(session_key, []) if session_key is not None else self._assignments
        return [a for a in found if reader is None or a.reader == reader]

    def collected(self, session_key: str) -> Collected | None:
        if session_key not in self._collected:
            self._collected[session_key] = read_collected(self.work_dir / session_key)
        return self._collected[session_key]

    def current_since(self, session_key: str) -> str:
        """When the session's current proposal was pushed ("" if no push is recorded)."""
        return self._since.get(session_key, "")

    # ------------------------------------------------------------------ state
    def saved_at(self, session_key: str, reader: str) -> str:
        """When ``reader`` saved what answers the current proposal ("" if they have not):
        the first such save in the database or among the collected reads."""
        since = self.current_since(session_key)
        times = [s.saved_at for s in self._saves.get((session_key, reader), [])]
        collected = self.collected(session_key)
        read = collected.read_of(reader) if collected else None
        if read is not None and read.saved_at:
            times.append(read.saved_at)
        answering = sorted(t for t in times if not since or t >= since)
        return answering[0] if answering else ""

    def progress(self, a: Assignment) -> Progress:
        saved = self.saved_at(a.session_key, a.reader)
        opened = self._opened.get((a.session_key, a.reader), "")
        state = "saved" if saved else "opened" if opened else "to_do"
        return Progress(a, state, opened, saved, overdue=not saved and self.now > a.due_at)

    def session_columns(self, session_key: str, *, cleaned: bool) -> dict[str, Any]:
        """The reader columns of the session's status row (:data:`SESSION_COLUMNS`):
        its readers (first first, ";"-joined), who cleaned it and when (only while
        ``cleaned``: the status says its cleaning is collected), the earliest due date of
        its unsaved assignments (else of all), and whether any is overdue."""
        mine = [self.progress(a) for a in self.assignments(session_key=session_key)]
        collected = self.collected(session_key) if cleaned else None
        waiting = [p for p in mine if not p.done] or mine
        return {
            "readers": ";".join(p.assignment.reader for p in mine),
            "cleaned_by": collected.cleaned_by if collected else "",
            "cleaned_at": short_utc(collected.cleaned_at) if collected and collected.cleaned_at else "",
            "due": short_utc(min(p.assignment.due_at for p in waiting)) if waiting else "",
            "overdue": any(p.overdue for p in mine),
        }


# ----------------------------------------------------------------------------- per reader
WORKLIST_COLUMNS = ["session", "site", "role", "state", "assigned", "opened", "saved", "due",
                    "overdue", "viewer_url"]


def viewer_url(viewer_path: str, base: str | None) -> str:
    """Where a reader opens the session: the station's URL + the session's route, or the
    path itself when it is a whole URL (a site's own viewer, e.g. XNAT's)."""
    if viewer_path.startswith(("http://", "https://")):
        return viewer_path
    if viewer_path.startswith("/") and base:
        return base.rstrip("/") + viewer_path
    return ""


def worklist(reading: Reading, reader: str, base_url: str | None = None) -> list[dict[str, Any]]:
    """A reader's assignments as :data:`WORKLIST_COLUMNS` rows: unsaved first, by due date."""
    rows = []
    for p in (reading.progress(a) for a in reading.assignments(reader=reader)):
        a = p.assignment
        rows.append({"session": a.session_key, "site": a.site, "role": a.role, "state": p.state,
                     "assigned": short_utc(a.assigned_at), "opened": short_utc(p.opened_at),
                     "saved": short_utc(p.saved_at), "due": short_utc(a.due_at),
                     "overdue": p.overdue, "viewer_url": viewer_url(a.viewer_path, base_url)})
    return sorted(rows, key=lambda r: (r["state"] == "saved", r["due"], r["session"]))


@dataclass(frozen=True)
class ReaderSummary:
    """One reader's work: assignments, how many are saved and overdue, how long a
    cleaning took, and how much they changed the proposals (collected reads)."""

    reader: str
    name: str
    sites: tuple[str, ...]
    assigned: int
    done: int
    overdue: int
    median_days_to_clean: float | None
    collected: int  # reads measured (in cleaned.json)
    median_voxels_removed: float | None
    median_voxels_added: float | None

    def as_row(self) -> dict[str, Any]:
        return {"reader": self.reader, "name": self.name, "sites": ";".join(self.sites),
                "assigned": self.assigned, "done": self.done, "open": self.assigned - self.done,
                "overdue": self.overdue, "median_days_to_clean": self.median_days_to_clean,
                "collected": self.collected, "median_voxels_removed": self.median_voxels_removed,
                "median_voxels_added": self.median_voxels_added}


def _median(values: Iterable[float | int | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return statistics.median(kept) if kept else None


def reader_summaries(reading: Reading, readers: Sequence[ReaderConfig]) -> list[ReaderSummary]:
    """One summary per configured reader (config order), then one per reader who holds
    assignments but is no longer in the config (their work is not lost from view)."""
    known = {r.id: r for r in readers}
    extra = sorted({a.reader for a in reading.assignments()} - set(known))
    out = []
    for reader in [*known, *extra]:
        config = known.get(reader)
        progress = [reading.progress(a) for a in reading.assignments(reader=reader)]
        reads = [read for p in progress if p.done
                 and (collected := reading.collected(p.assignment.session_key)) is not None
                 and (read := collected.read_of(reader)) is not None]
        out.append(ReaderSummary(
            reader=reader, name=config.display_name if config else f"{reader} (not in the config)",
            sites=config.sites if config else tuple(sorted({p.assignment.site for p in progress})),
            assigned=len(progress), done=sum(p.done for p in progress),
            overdue=sum(p.overdue for p in progress),
            median_days_to_clean=_median(p.days_to_clean for p in progress),
            collected=len(reads), median_voxels_removed=_median(r.voxels_removed for r in reads),
            median_voxels_added=_median(r.voxels_added for r in reads)))
    return out
