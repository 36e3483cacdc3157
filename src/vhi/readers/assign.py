"""Which reader(s) clean each session that is ready for cleaning.

A session is ready for cleaning once its proposal is pushed (``pushed.json`` in its work
folder) and its source has no cleaning of it yet. Each ready session without an
assignment gets one reader among those who read its site (config ``readers[].sites``),
two for the site's ``double_read`` fraction:

* **which** sessions are double-read is decided from the session id alone
  (:func:`double_read_draw`: sha256 of ``site/subject/session`` as a fraction), so every
  run, on any machine, makes the same choice;
* **who**: the readers of the site with the fewest open assignments (not yet saved, at
  any site), ties to the reader listed first in the config; sessions are taken in key
  order, each assignment counted before the next, so the same state gives the same result;
* an assignment never moves by itself (not when a reader leaves the config, is overdue,
  or the proposal is pushed again): the data manager moves it (``vhi assign --from --to``);
* ``due_at`` = the assignment time + the site's ``due_days``.

The workflow assigns in its cohort gather (:func:`assign_run`, called by
``build_cohort_tables`` and the error handler after a failed run: once every push of the
run is done, one process, sessions in key order) and ``vhi assign --apply`` does the
same by hand. Every push receipt is also recorded as the session's push
(:meth:`~vhi.readers.store.ReadersStore.record_push`), so a save can be told from one
of an earlier proposal. A config without ``readers:`` assigns nothing and creates no database.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from vhi.cohort.ids import Session
from vhi.cohort.layout import Layout
from vhi.cohort.plan import PlannedSession
from vhi.config.load import Settings
from vhi.errors import InputError
from vhi.readers.progress import Reading
from vhi.readers.store import ROLES, Assignment, ReadersStore, parse_utc, utc_iso
from vhi.sources.local import station_study_uid

log = logging.getLogger(__name__)

#: Who the history names for assignments the platform makes.
ASSIGNED_BY = "vhi (automatic)"


@dataclass(frozen=True)
class CleaningTarget:
    """A pushed session: where a reader opens it, and which proposal they answer."""

    session_key: str
    site: str
    study_uid: str  # the study the reader may open ("" where the station does not serve it)
    viewer_path: str  # the station's OHIF route, or a whole URL of the site's own viewer
    pushed_at: str
    proposal: str  # the proposal's SEG SOP Instance UID (DICOMweb, XNAT) or sha256 (local)


def proposal_id(receipt: Mapping[str, Any]) -> str:
    """What identifies the pushed proposal in a push receipt: the SEG's SOP Instance UID
    (DICOMweb), the ROI collection's UID (XNAT: the SEG's SOP Instance UID), else the
    sha256 of the pushed proposal file (local)."""
    seg, collection = receipt.get("seg") or {}, receipt.get("collection") or {}
    if seg.get("sop_uid"):
        return str(seg["sop_uid"])
    if collection.get("uid"):
        return str(collection["uid"])
    files = receipt.get("files") or {}
    chosen = files.get("proposal") or next(iter(files.values()), {})
    return str(chosen.get("sha256") or "")


def cleaning_target(session: Session, receipt: Mapping[str, Any]) -> CleaningTarget:
    """The :class:`CleaningTarget` of a session from its push receipt (``pushed.json``)."""
    study = str((receipt.get("seg") or {}).get("study_uid") or receipt.get("study_uid") or "")
    path = str(receipt.get("viewer_path") or "")
    if not study and receipt.get("source") == "local" and path:  # a station: true site
        study = station_study_uid(session)
    return CleaningTarget(session_key=session.key, site=session.site, study_uid=study,
                          viewer_path=path, pushed_at=utc_iso(receipt.get("pushed_at") or None),
                          proposal=proposal_id(receipt))


def pushed_sessions(plan: Sequence[PlannedSession], layout: Layout,
                    ) -> list[tuple[PlannedSession, CleaningTarget]]:
    """The planned sessions with a push receipt, in key order (an unreadable receipt is
    skipped with a warning: the status reports the session)."""
    found = []
    for p in sorted(plan, key=lambda p: p.key):
        if not p.has_stir:
            continue
        path = layout.work_file(p.session, "pushed.json")
        try:
            receipt = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            log.warning("session %s: push receipt %s not read for assignment (%s)", p.key, path, exc)
            continue
        if not isinstance(receipt, Mapping) or not receipt.get("pushed_at"):
            continue
        try:
            found.append((p, cleaning_target(p.session, receipt)))
        except InputError as exc:  # a pushed_at that is not a time
            log.warning("session %s: push receipt %s not used for assignment (%s)", p.key, path, exc)
    return found


def double_read_draw(session_key: str) -> float:
    """The session's fixed draw in [0, 1): the first 64 bits of sha256(session key)."""
    digest = hashlib.sha256(session_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_double_read(session_key: str, fraction: float) -> bool:
    """Whether two readers clean the session, at a site that double-reads ``fraction``."""
    return double_read_draw(session_key) < fraction


def open_work(reading: Reading) -> Counter[str]:
    """Each reader's open assignments (not saved), at every site."""
    return Counter(a.reader for a in reading.assignments() if not reading.progress(a).done)


def choose_readers(candidates: Sequence[str], open_counts: Mapping[str, int], count: int) -> list[str]:
    """The ``count`` candidates with the fewest open assignments, ties to the one listed first."""
    ranked = sorted(candidates, key=lambda r: (open_counts.get(r, 0), candidates.index(r)))
    return ranked[:count]


def assign_sessions(settings: Settings, targets: Sequence[CleaningTarget], store: ReadersStore,
                    *, now: datetime | str | None = None, by: str = ASSIGNED_BY) -> list[Assignment]:
    """Assign every target session that has no assignment yet (in key order); returns the
    new assignments. One transaction: the open work counted is the work assigned."""
    now = utc_iso(now)
    new: list[Assignment] = []
    with store.transaction():
        reading = Reading(store.snapshot(), store.folder.parent, now)
        counts = open_work(reading)
        taken = {a.session_key for a in reading.assignments()}
        for target in sorted(targets, key=lambda t: t.session_key):
            candidates = settings.readers_of(target.site)
            if target.session_key in taken or not candidates:
                continue
            site = settings.site(target.site)
            double = is_double_read(target.session_key, site.double_read)
            chosen = choose_readers(candidates, counts, 2 if double else 1)
            before = ", ".join(f"{r} {counts.get(r, 0)}" for r in candidates)
            due = parse_utc(now) + timedelta(days=site.due_days)
            for role, reader in zip(ROLES, chosen, strict=False):
                new.append(Assignment(
                    session_key=target.session_key, site=target.site, reader=reader, role=role,
                    study_uid=target.study_uid, viewer_path=target.viewer_path, assigned_at=now,
                    due_at=utc_iso(due),
                    reason=(f"{'double read: ' if double else ''}fewest open sessions among the "
                            f"readers of site {target.site} ({before})")))
                counts[reader] += 1
            taken.add(target.session_key)
        store.add_assignments(new, by=by)
    return new


def record_pushes(store: ReadersStore, targets: Sequence[CleaningTarget]) -> None:
    """Record each target's push (the same push again changes nothing)."""
    with store.transaction():
        for t in targets:
            if t.proposal:
                store.record_push(t.session_key, t.pushed_at, t.proposal)


def assign_run(settings: Settings, plan: Sequence[PlannedSession], layout: Layout, *,
               now: datetime | str | None = None) -> list[Assignment]:
    """What the workflow does once its pushes are done: record every push, and assign each
    session ready for cleaning (pushed, no cleaning on its source yet) that has no reader.

    Without ``readers:`` in the config nothing is assigned, and no database is created
    (one the station made still gets the pushes)."""
    store = (ReadersStore.open(layout.work) if settings.readers
             else ReadersStore.open_existing(layout.work))
    if store is None:
        return []
    with store:
        pushed = pushed_sessions(plan, layout)
        record_pushes(store, [t for _, t in pushed])
        if not settings.readers:
            return []
        ready = [t for p, t in pushed if p.cleaned is None]
        new = assign_sessions(settings, ready, store, now=now)
    if new:
        per_reader = Counter(a.reader for a in new)
        log.info("assigned %d session(s) for cleaning: %s", len({a.session_key for a in new}),
                 ", ".join(f"{r} {n}" for r, n in sorted(per_reader.items())))
    unread = sorted({t.site for t in ready} - {s for r in settings.readers for s in r.sites})
    if unread:
        log.warning("no reader reads site(s) %s: their sessions are not assigned (config readers)",
                    ", ".join(unread))
    return new
