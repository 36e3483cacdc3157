"""Which saved segmentation is a session's cleaning: one rule for every source.

A session's cleaning is, for each reader, the **newest save made after the current
proposal was pushed** — decided from the platform's own record, never from marks a
viewer may keep or drop (OHIF strips the algorithm's identity from what it saves, and
after 3.13 it may add an instance to an existing series or replace one):

* a save the cleaning station recorded (:class:`~vhi.readers.store.Save`) answers the
  proposal that was current when it was stored (``answers``), and has a time on the
  platform's clock: it counts when it answers the current proposal (or, where that is
  unknown, when it was made at or after the push);
* a save found on the source (a SEG instance on a DICOMweb service, an ROI collection on
  XNAT) counts when it is not among the segmentations that existed when the current
  proposal was pushed (the receipt's record, :attr:`PushRecord.before`), whatever its
  series, number or description. Its own dates only order the saves made after the push.

A save that does not count is **stale** (made for an earlier proposal): it is never
collected, and the session's status names it while it waits for a new cleaning.

With readers assigned (``readers:`` in the config), each assigned reader's newest save is
their read; the VHI comes from the reader of the site's ``double_read_vhi`` role (the
first reader by default), and the session waits until that reader has saved. A save whose
reader is unknown (saved on the source, not through the station) is the read of the one
reader of a single-read session. Without assignments the newest save of anyone is the
cleaning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The receipt keys that list the segmentations present when the proposal was pushed.
BEFORE_KEYS = ("segs_before", "collections_before")


@dataclass(frozen=True)
class PushRecord:
    """What the platform recorded when it pushed the session's current proposal."""

    proposal: str  # the proposal's id: SEG SOP Instance UID, ROI collection id or UID, file sha256
    pushed_at: str  # when it became current (ISO-8601 UTC, the platform's clock)
    before: frozenset[str] | None = None  # ids of the segmentations there at the push (None: unknown)
    proposal_ids: frozenset[str] = frozenset()  # every id the proposal is known by (SOP UID, collection id)

    @classmethod
    def from_receipt(cls, receipt: Mapping[str, Any], proposal: str) -> PushRecord:
        """The record of a push receipt (``pushed.json``); ``proposal``: its proposal's id."""
        before = next((receipt[k] for k in BEFORE_KEYS if isinstance(receipt.get(k), list)), None)
        ids = {proposal}
        for part in ("seg", "collection"):
            entry = receipt.get(part) or {}
            ids |= {str(entry[k]) for k in ("sop_uid", "id", "uid") if entry.get(k)}
        return cls(proposal=proposal, pushed_at=str(receipt.get("pushed_at") or ""),
                   before=None if before is None else frozenset(str(b) for b in before),
                   proposal_ids=frozenset(i for i in ids if i))


@dataclass(frozen=True)
class Saved:
    """A segmentation someone saved for a session: from the station's record or the source."""

    id: str  # SEG SOP Instance UID, or an XNAT ROI collection's id
    origin: str  # "station" (recorded by the platform), "dicomweb" or "xnat" (found on the source)
    label: str  # how messages name it
    reader: str = ""  # who saved it ("" where unknown)
    saved_at: str = ""  # when, on the platform's clock (station records)
    answers: str = ""  # the proposal it answered (station records)
    order: tuple[Any, ...] = ()  # the source's ordering of saves without saved_at (dates, numbers)
    platform: bool = False  # carries the platform's proposal marks
    ref: Any = field(default=None, compare=False, repr=False)  # the source's own record of it


@dataclass(frozen=True)
class Read:
    """One reader's cleaning: their newest save that answers the current proposal."""

    reader: str
    role: str  # "first", "second", or "" without assignments
    saved: Saved
    by_assignment: bool = False  # reader taken from the assignment (the save names nobody)


@dataclass(frozen=True)
class Cleaning:
    """The outcome of the rule for one session."""

    reads: tuple[Read, ...] = ()  # the read the VHI comes from first
    stale: tuple[Saved, ...] = ()  # saves made for an earlier proposal, oldest first
    pending: str = ""  # why nothing is collected yet although something was saved

    @property
    def vhi(self) -> Read | None:
        return self.reads[0] if self.reads else None


def _after(saved: Saved, push: PushRecord) -> bool:
    if saved.answers:
        return saved.answers in push.proposal_ids
    if saved.saved_at:
        return saved.saved_at >= push.pushed_at
    return push.before is None or saved.id not in push.before


def _newest(saves: Sequence[Saved]) -> Saved:
    return max(saves, key=lambda s: (s.saved_at, s.order, s.id))


def _merge(saves: Sequence[Saved]) -> list[Saved]:
    """One entry per id: the station's record of a save wins over the source's listing of it."""
    by_id: dict[str, Saved] = {}
    for s in saves:
        if s.id not in by_id or (s.origin == "station" and by_id[s.id].origin != "station"):
            by_id[s.id] = s
    return list(by_id.values())


def choose_cleaning(push: PushRecord | None, saves: Sequence[Saved],
                    assigned: Sequence[tuple[str, str]] = (), vhi_role: str = "first") -> Cleaning:
    """The session's cleaning under the rule above.

    ``assigned``: (reader, role) of the session's current assignments (empty: none);
    ``vhi_role``: the role whose read gives the VHI of a double read.
    """
    if push is None:
        return Cleaning()
    mine = [s for s in _merge(saves) if s.id not in push.proposal_ids]
    after = [s for s in mine if _after(s, push)]
    stale = tuple(sorted((s for s in mine if not _after(s, push) and not s.platform),
                         key=lambda s: (s.saved_at, s.order, s.id)))
    waiting = _stale_reason(stale, push)
    if not after:
        return Cleaning(stale=stale, pending=waiting)
    if not assigned:
        newest = _newest(after)
        return Cleaning((Read(newest.reader, "", newest),), stale)
    by_reader: dict[str, list[Saved]] = {}
    for s in after:
        by_reader.setdefault(s.reader, []).append(s)
    reads = []
    for reader, role in assigned:
        if by_reader.get(reader):
            reads.append(Read(reader, role, _newest(by_reader[reader])))
        elif len(assigned) == 1 and by_reader.get(""):
            reads.append(Read(reader, role, _newest(by_reader[""]), by_assignment=True))
    roles = {role: reader for reader, role in assigned}
    vhi_reader = roles.get(vhi_role) or assigned[0][0]
    first = [r for r in reads if r.reader == vhi_reader]
    if not first:
        saved_by = ", ".join(sorted({r.reader for r in reads} | ({"an unknown reader"} if by_reader.get("")
                                                                  and len(assigned) > 1 else set())))
        reason = (f"awaiting {vhi_reader}'s cleaning (the reader the VHI comes from)"
                  + (f"; saved so far by {saved_by}" if saved_by else ""))
        return Cleaning(stale=stale, pending="; ".join(p for p in (reason, waiting) if p))
    return Cleaning(tuple(first + [r for r in reads if r.reader != vhi_reader]), stale)


def _stale_reason(stale: Sequence[Saved], push: PushRecord) -> str:
    if not stale:
        return ""
    last = stale[-1]
    who = f" by {last.reader}" if last.reader else ""
    when = f" at {last.saved_at}" if last.saved_at else ""
    more = f" (and {len(stale) - 1} earlier)" if len(stale) > 1 else ""
    return (f"{last.label}{who}{when}{more} was saved for an earlier proposal: the proposal was "
            f"pushed again ({push.pushed_at or 'time unknown'}); awaiting a cleaning of the current one")
