"""The one rule that picks a session's cleaning (vhi.sources.cleaning), table-driven, no server.

The sources feed it what they found (tests/test_cleaning_sources.py runs the same cases
through the local station, DICOMweb and XNAT).
"""

from __future__ import annotations

import pytest

from vhi.sources.cleaning import Cleaning, PushRecord, Saved, choose_cleaning

PUSH = PushRecord(proposal="P2", pushed_at="2026-12-02T10:00:00.000000+00:00",
                  before=frozenset({"P1", "OLD"}), proposal_ids=frozenset({"P2", "P2-collection"}))


def station(ident, reader, at, answers="P2"):
    return Saved(ident, "station", f"SEG {ident}", reader=reader,
                 saved_at=f"2026-12-{at}T00:00:00.000000+00:00", answers=answers)


def found(ident, order=(), platform=False, origin="dicomweb"):
    return Saved(ident, origin, f"SEG {ident}", order=order, platform=platform)


CASES = [
    # (case, saves, assigned, vhi_role, expected reads [(reader, id)], stale ids, pending contains)
    ("nothing saved", [], [], "first", [], [], ""),
    ("a station save of the current proposal", [station("A", "alice", "03")], [], "first",
     [("alice", "A")], [], ""),
    ("a station save of an earlier proposal is stale, even when made after the re-push",
     [station("A", "alice", "03", answers="P1")], [], "first", [], ["A"], "SEG A by alice"),
    ("a save on the source that was there at the push is stale", [found("OLD", ("20261201",))], [],
     "first", [], ["OLD"], "was saved for an earlier proposal"),
    ("the proposal itself (by any of its ids) is never a save", [found("P2"), found("P2-collection")], [],
     "first", [], [], ""),
    ("an earlier proposal is neither a save nor stale", [found("P1", platform=True)], [], "first",
     [], [], ""),
    ("a new instance in the proposal's series keeping our marks is a save (OHIF 3.14 'save to current')",
     [found("N", platform=True)], [], "first", [("", "N")], [], ""),
    ("the newest of several saves after the push, by the source's order",
     [found("B", ("20261203", 2)), found("C", ("20261203", 3)), found("OLD", ("20261209",))], [], "first",
     [("", "C")], ["OLD"], ""),
    ("the station's record of a save found on the source names its reader",
     [found("A", ("20261203",)), station("A", "alice", "03")], [], "first", [("alice", "A")], [], ""),
    ("double read: the first reader's read gives the VHI, both are collected",
     [station("B", "bob", "04"), station("A", "alice", "03")], [("alice", "first"), ("bob", "second")],
     "first", [("alice", "A"), ("bob", "B")], [], ""),
    ("double read, the VHI from the second reader",
     [station("B", "bob", "04"), station("A", "alice", "03")], [("alice", "first"), ("bob", "second")],
     "second", [("bob", "B"), ("alice", "A")], [], ""),
    ("double read, only the second reader saved: waiting for the first",
     [station("B", "bob", "04")], [("alice", "first"), ("bob", "second")], "first", [], [],
     "awaiting alice's cleaning"),
    ("single read, a save that names nobody is the assigned reader's",
     [found("X", ("20261203",))], [("alice", "first")], "first", [("alice", "X")], [], ""),
    ("a save by someone not assigned does not count for the assigned reader",
     [station("M", "mallory", "03")], [("alice", "first")], "first", [], [], "awaiting alice's cleaning"),
    ("a reader's newest save answers; their older one is superseded",
     [station("A1", "alice", "03"), station("A2", "alice", "05")], [("alice", "first")], "first",
     [("alice", "A2")], [], ""),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_rule(case):
    _, saves, assigned, vhi_role, reads, stale, pending = case
    got = choose_cleaning(PUSH, saves, assigned, vhi_role)
    assert [(r.reader, r.saved.id) for r in got.reads] == reads
    assert [s.id for s in got.stale] == stale
    assert (pending in got.pending) if pending else (got.pending == "" or not reads)


def test_no_push_no_cleaning():
    assert choose_cleaning(None, [station("A", "alice", "03")]) == Cleaning()


def test_a_legacy_receipt_without_its_list_takes_any_save_but_the_proposal():
    push = PushRecord.from_receipt({"pushed_at": PUSH.pushed_at, "seg": {"sop_uid": "P2"}}, "P2")
    assert push.before is None
    got = choose_cleaning(push, [found("P2"), found("OLD", ("1",)), found("N", ("2",))])
    assert got.vhi.saved.id == "N"


def test_the_receipt_record():
    receipt = {"pushed_at": "t", "segs_before": ["a", "b"], "seg": {"sop_uid": "S", "series_uid": "x"}}
    expected = PushRecord("S", "t", frozenset({"a", "b"}), frozenset({"S"}))
    assert PushRecord.from_receipt(receipt, "S") == expected
    xnat = {"pushed_at": "t", "collections_before": [], "collection": {"id": "RC_1", "uid": "1.2"}}
    assert PushRecord.from_receipt(xnat, "1.2").proposal_ids == {"RC_1", "1.2"}
