"""Assignment (vhi.readers.assign) and progress (vhi.readers.progress) on synthetic runs:
deterministic double reads, balance by open work, never moved by itself, stale saves."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from vhi.readers.assign import (
    assign_run,
    cleaning_target,
    double_read_draw,
    is_double_read,
    proposal_id,
    pushed_sessions,
)
from vhi.readers.progress import Reading, reader_summaries, worklist
from vhi.readers.store import ReadersStore, parse_utc

from support.readers import (
    T0,
    collect,
    planned,
    push,
    read_entry,
    readers_run,
    save,
    settings_of,
)


def keys(n: int, site: str = "a") -> list[str]:
    return [f"{site}/P{i // 2:03d}/S{i:04d}" for i in range(n)]


def current(run) -> list[tuple[str, str, str]]:
    with run.store() as store:
        return [(a.session_key, a.role, a.reader) for a in store.assignments()]


def test_a_rerun_makes_the_same_choice(tmp_path: Path) -> None:
    kwargs = {"double_read": 0.3, "readers": [{"id": r, "sites": ["a"]} for r in ("A", "B", "C")]}
    first = readers_run(tmp_path / "one", keys(40), **kwargs)
    second = readers_run(tmp_path / "two", keys(40), **kwargs)
    assert assign_run(first.settings, first.plan, first.layout, now=T0)
    assign_run(second.settings, list(reversed(second.plan)), second.layout, now=T0)
    assert current(first) == current(second)  # another machine, another plan order: the same
    before = current(first)
    assert assign_run(first.settings, first.plan, first.layout, now="2026-04-01T00:00:00Z") == []
    assert current(first) == before  # a rerun assigns nothing new and moves nothing


def test_double_reads_are_the_fraction_and_fixed_by_the_session_id() -> None:
    ids = keys(4000)
    doubles = [k for k in ids if is_double_read(k, 0.1)]
    assert 0.085 < len(doubles) / len(ids) < 0.115
    assert set(doubles) <= {k for k in ids if is_double_read(k, 0.2)}  # more reads, same ones kept
    assert not any(is_double_read(k, 0.0) for k in ids) and all(is_double_read(k, 1.0) for k in ids)
    assert double_read_draw("a/P000/S0000") == double_read_draw("a/P000/S0000")
    assert min(map(double_read_draw, ids)) >= 0 and max(map(double_read_draw, ids)) < 1


def test_double_read_sessions_get_two_readers_in_role_order(tmp_path: Path) -> None:
    run = readers_run(tmp_path, keys(60), double_read=0.25)
    assign_run(run.settings, run.plan, run.layout, now=T0)
    with run.store() as store:
        for key in keys(60):
            readers = store.readers_of(key)
            assert len(readers) == (2 if is_double_read(key, 0.25) else 1), key
            roles = [a.role for a in store.assignments(session_key=key)]
            assert roles == ["first", "second"][:len(readers)]
            assert len(set(readers)) == len(readers)


def test_balanced_by_open_work(tmp_path: Path) -> None:
    readers = [{"id": r, "sites": ["a"]} for r in ("A", "B", "C")]
    run = readers_run(tmp_path, keys(30), readers=readers)
    assign_run(run.settings, run.plan, run.layout, now=T0)
    assert Counter(r for _, _, r in current(run)) == {"A": 10, "B": 10, "C": 10}
    # ties go to the reader listed first: A, B, C, A, B, C, ...
    assert [r for _, _, r in current(run)][:6] == ["A", "B", "C", "A", "B", "C"]
    # A saves all of theirs (after the push): A has no open work, so A gets the next ones
    with run.store() as store:
        for a in store.assignments(reader="A"):
            save(store, a.session_key, "A", "2026-03-02T10:00:00Z")
    more = keys(45)[30:]
    for key in more:
        push(run.layout, key)
    new = assign_run(run.settings, [planned(k) for k in more], run.layout, now="2026-03-03T00:00:00Z")
    # A: 0 open, B and C: 10 each -> A takes 10, then ties in config order: A, B, C, A, B
    assert Counter(a.reader for a in new) == {"A": 12, "B": 2, "C": 1}


def test_balance_counts_every_site_of_a_reader(tmp_path: Path) -> None:
    readers = [{"id": "A", "sites": ["a", "b"]}, {"id": "B", "sites": ["b"]}]
    run = readers_run(tmp_path, [*keys(4, "a"), *keys(4, "b")], readers=readers, sites=("a", "b"))
    assign_run(run.settings, run.plan, run.layout, now=T0)
    # site a is A's alone (4 open sessions); at site b those weigh: B takes all four
    assert {(k[0], r) for k, _, r in current(run)} == {("a", "A"), ("b", "B")}
    assert Counter(r for _, _, r in current(run)) == {"A": 4, "B": 4}


def test_an_assignment_never_moves_by_itself(tmp_path: Path) -> None:
    run = readers_run(tmp_path, keys(6))
    assign_run(run.settings, run.plan, run.layout, now=T0)
    before = current(run)
    # A leaves the config, every assignment is overdue, and each proposal is pushed again
    later = settings_of(tmp_path, readers=[{"id": "B", "sites": ["a"]}])
    for key in keys(6):
        push(run.layout, key, pushed_at="2026-05-01T00:00:00Z", proposal="p2")
    assert assign_run(later, run.plan, run.layout, now="2026-06-01T00:00:00Z") == []
    assert current(run) == before
    with run.store() as store:
        assert store.last_push(keys(6)[0]).pushed_at.startswith("2026-05-01")  # the re-push recorded


def test_due_date_and_reason(tmp_path: Path) -> None:
    run = readers_run(tmp_path, keys(1), due_days=10)
    [a] = assign_run(run.settings, run.plan, run.layout, now=T0)
    assert (parse_utc(a.due_at) - parse_utc(a.assigned_at)).days == 10
    assert a.reason == "fewest open sessions among the readers of site a (A 0, B 0)"
    assert a.viewer_path.startswith("/segmentation?StudyInstanceUIDs=") and a.study_uid in a.viewer_path
    with run.store() as store:
        [event] = store.assignment_history()
        assert (event.kind, event.by) == ("assigned", "vhi (automatic)")


def test_only_sessions_ready_for_cleaning_are_assigned(tmp_path: Path) -> None:
    readers = [{"id": "A", "sites": ["a"]}]
    run = readers_run(tmp_path, keys(2), readers=readers, sites=("a", "b"))
    plan = [planned(keys(2)[0]), planned(keys(2)[1], cleaned=True),  # cleaned on the source
            planned("a/P9/unpushed"), planned(keys(1, "b")[0])]  # not pushed; site b: no reader
    push(run.layout, keys(1, "b")[0])
    new = assign_run(run.settings, plan, run.layout, now=T0)
    assert [a.session_key for a in new] == [keys(2)[0]]
    with run.store() as store:  # every push is recorded, assigned or not
        assert {k for k in [*keys(2), keys(1, "b")[0]] if store.last_push(k)} == {*keys(2), keys(1, "b")[0]}


def test_a_config_without_readers_assigns_nothing_and_creates_nothing(tmp_path: Path) -> None:
    run = readers_run(tmp_path, keys(3), readers=[])
    assert assign_run(run.settings, run.plan, run.layout, now=T0) == []
    assert not ReadersStore.path_in(run.layout.work).exists()


def test_the_target_of_each_source_receipt(tmp_path: Path) -> None:
    session = planned("a/01/s1").session
    dicomweb = {"source": "dicomweb", "pushed_at": T0, "viewer_path": "/segmentation?StudyInstanceUIDs=1.2",
                "seg": {"study_uid": "1.2", "series_uid": "1.2.3", "sop_uid": "1.2.3.4"},
                "files": {"seg": {"sha256": "f" * 64}}}
    t = cleaning_target(session, dicomweb)
    assert (t.study_uid, t.viewer_path, t.proposal) == ("1.2", dicomweb["viewer_path"], "1.2.3.4")
    xnat = {"source": "xnat", "pushed_at": T0, "experiment": "XNAT_E1",
            "collection": {"id": "RoiCollection_1", "uid": "2.25.7", "label": "VHI_PROPOSAL_s1"},
            "files": {"seg": {"sha256": "e" * 64}}}
    t = cleaning_target(session, xnat)
    assert (t.study_uid, t.viewer_path, t.proposal) == ("", "", "2.25.7")
    plain = {"source": "local", "pushed_at": T0, "files": {"proposal": {"sha256": "d" * 64}}}
    broken = readers_run(tmp_path, ["a/01/s2"])
    push(broken.layout, "a/01/s2", {**plain, "pushed_at": "yesterday"})
    assert pushed_sessions(broken.plan, broken.layout) == []  # warned and skipped, never fatal
    t = cleaning_target(session, plain)
    assert (t.study_uid, t.viewer_path, t.proposal) == ("", "", "d" * 64)
    assert proposal_id({}) == ""


# ----------------------------------------------------------------------------- progress
def test_progress_from_to_do_to_saved_and_stale_saves(tmp_path: Path) -> None:
    run = readers_run(tmp_path, keys(1))
    [a] = assign_run(run.settings, run.plan, run.layout, now=T0)
    key = a.session_key
    state = lambda now="2026-03-02T00:00:00Z": Reading.of_run(run.layout.work, now).progress(a)  # noqa: E731
    assert (state().state, state().overdue) == ("to_do", False)
    assert state("2026-03-16T00:00:00Z").overdue  # past the 14 days
    with run.store() as store:
        store.open_session(key, "A", now="2026-03-02T08:00:00Z")
        assert state().state == "opened" and state().opened_at.startswith("2026-03-02T08:00")
        save(store, key, "A", "2026-03-03T08:00:00Z")
    done = state("2026-04-01T00:00:00Z")
    assert (done.state, done.overdue, done.days_to_clean) == ("saved", False, pytest.approx(2 - 1 / 24))
    # a new proposal: the save answered the old one, so the assignment is open again
    push(run.layout, key, pushed_at="2026-03-10T00:00:00Z", proposal="p2")
    assign_run(run.settings, run.plan, run.layout, now="2026-03-10T00:00:00Z")
    assert state("2026-03-11T00:00:00Z").state == "opened"
    with run.store() as store:
        save(store, key, "A", "2026-03-12T00:00:00Z")
    assert state("2026-03-13T00:00:00Z").state == "saved"


def test_a_collected_read_counts_as_saved(tmp_path: Path) -> None:
    """A save the station did not see (XNAT, a PACS) counts once collected."""
    run = readers_run(tmp_path, keys(1))
    [a] = assign_run(run.settings, run.plan, run.layout, now=T0)
    collect(run.layout, a.session_key, [read_entry("A", saved_at="2026-03-04T12:00:00Z")])
    reading = Reading.of_run(run.layout.work, "2026-03-20T00:00:00Z")
    assert reading.progress(a).state == "saved" and not reading.progress(a).overdue
    columns = reading.session_columns(a.session_key, cleaned=True)
    assert columns == {"readers": "A", "cleaned_by": "A", "cleaned_at": "2026-03-05T12:00:00Z",
                       "due": "2026-03-15T09:00:00Z", "overdue": False}
    # a read of an earlier proposal (before the current push) does not
    collect(run.layout, a.session_key, [read_entry("A", saved_at="2026-02-27T12:00:00Z")])
    reading = Reading.of_run(run.layout.work, "2026-03-20T00:00:00Z")
    assert reading.progress(a).state == "to_do" and reading.progress(a).overdue
    assert reading.session_columns(a.session_key, cleaned=False)["cleaned_by"] == ""


def test_worklists_and_reader_summaries(tmp_path: Path) -> None:
    run = readers_run(tmp_path, keys(4))
    new = assign_run(run.settings, run.plan, run.layout, now=T0)
    by_reader = {r: [a.session_key for a in new if a.reader == r] for r in ("A", "B")}
    with run.store() as store:
        save(store, by_reader["A"][0], "A", "2026-03-03T09:00:00Z")
        store.open_session(by_reader["B"][1], "B", now="2026-03-02T09:00:00Z")
    collect(run.layout, by_reader["A"][0], [read_entry("A", removed=12, added=4)])
    reading = Reading.of_run(run.layout.work, "2026-03-20T00:00:00Z")
    rows = worklist(reading, "B", "https://station.example.org/")
    assert [(r["session"], r["state"], r["overdue"]) for r in rows] == [
        (by_reader["B"][0], "to_do", True), (by_reader["B"][1], "opened", True)]
    assert rows[0]["viewer_url"].startswith("https://station.example.org/segmentation?StudyInstanceUIDs=")
    assert worklist(reading, "A")[-1]["state"] == "saved"  # done last
    summary = {s.reader: s for s in reader_summaries(reading, run.settings.readers)}
    a, b = summary["A"], summary["B"]
    assert (a.name, a.assigned, a.done, a.overdue, a.median_days_to_clean) == ("Dr A", 2, 1, 1, 2.0)
    assert (a.collected, a.median_voxels_removed, a.median_voxels_added) == (1, 12.0, 4.0)
    assert (b.name, b.assigned, b.done, b.overdue, b.median_days_to_clean) == ("B", 2, 0, 2, None)
    assert b.as_row()["open"] == 2
