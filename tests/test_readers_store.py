"""The readers database (vhi.readers.store): accounts, assignments, claims, saves, pushes;
WAL and immediate transactions under two writing processes; migration from version 1."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vhi.errors import ConfigError, InputError
from vhi.readers.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Assignment,
    ReadersStore,
    Save,
    read_snapshot,
    utc_iso,
)

from support.paths import PROJECT_ROOT

KEY = "a/01/s1"


def assignment(key: str = KEY, reader: str = "A", role: str = "first", **changes: str) -> Assignment:
    values = {"session_key": key, "site": key.partition("/")[0], "reader": reader, "role": role,
              "study_uid": "1.2.3", "viewer_path": "/segmentation?StudyInstanceUIDs=1.2.3",
              "assigned_at": "2026-03-01T09:00:00Z", "due_at": "2026-03-15T09:00:00Z",
              "reason": "fewest open sessions"}
    return Assignment(**{**values, **changes})


def save_of(store: ReadersStore, data: bytes, *, key: str = KEY, reader: str = "A",
            saved_at: str = "2026-03-02T10:00:00Z", source: str = "station") -> Save:
    return Save(session_key=key, reader=reader, saved_at=saved_at, study_uid="1.2.3",
                series_uid="1.2.3.4", sop_uid="1.2.3.4.5", sha256=hashlib.sha256(data).hexdigest(),
                size=len(data), blob=store.put_blob(data), proposal="1.2.3.9", source=source)


@pytest.fixture
def store(tmp_path: Path):
    with ReadersStore.open(tmp_path / "work") as opened:
        yield opened


def test_a_new_database_is_wal_versioned_and_private(tmp_path: Path) -> None:
    with ReadersStore.open(tmp_path / "work") as store:
        assert store.path == tmp_path / "work" / ".vhi" / "readers.sqlite"
        assert store.version == SCHEMA_VERSION == 2
    db = sqlite3.connect(tmp_path / "work" / ".vhi" / "readers.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600  # password hashes: the owner only
    with ReadersStore.open(tmp_path / "work") as again:  # opening again migrates nothing
        assert again.version == 2
    assert ReadersStore.open_existing(tmp_path / "elsewhere") is None
    assert not (tmp_path / "elsewhere").exists()


def test_passwords_are_hashed_never_stored(store: ReadersStore) -> None:
    store.set_password("A", "correct horse battery")
    assert store.has_account("A") and not store.has_account("B")
    assert store.verify_password("A", "correct horse battery")
    assert not store.verify_password("A", "correct horse batterx")
    assert not store.verify_password("B", "correct horse battery")  # unknown reader: False
    store.set_password("A", "another long secret")  # a change replaces the hash
    assert not store.verify_password("A", "correct horse battery")
    assert store.verify_password("A", "another long secret")
    [account] = store.accounts()
    assert account.reader == "A" and account.updated_at >= account.created_at
    store.close()
    stored = b"".join(p.read_bytes() for p in store.folder.iterdir() if p.is_file())
    assert b"correct horse" not in stored and b"another long" not in stored
    assert b"$argon2id$" in stored


def test_a_short_password_or_bad_reader_id_is_refused(store: ReadersStore) -> None:
    with pytest.raises(InputError, match="at least 8 characters") as caught:
        store.set_password("A", "short")
    assert "short" not in str(caught.value)  # never echoed
    with pytest.raises(ConfigError, match="not a valid id"):
        store.set_password("../A", "long enough password")
    assert store.delete_account("A") is False
    store.set_password("A", "long enough password")
    assert store.delete_account("A") and not store.verify_password("A", "long enough password")


def test_assignments_in_role_order_with_filters(store: ReadersStore) -> None:
    store.add_assignments([assignment(reader="B", role="second"), assignment(reader="A"),
                           assignment("b/02/s9", reader="B", study_uid="9.9")], by="vhi")
    assert store.readers_of(KEY) == ["A", "B"]
    assert [a.session_key for a in store.assignments(reader="B")] == [KEY, "b/02/s9"]
    assert [a.reader for a in store.assignments(site="b")] == ["B"]
    assert [a.session_key for a in store.assignments(study_uid="9.9")] == ["b/02/s9"]
    [first] = store.assignments(session_key=KEY, reader="A")
    assert first.assigned_at == "2026-03-01T09:00:00.000000+00:00"  # one format: sorts as text
    assert first.due_at == "2026-03-15T09:00:00.000000+00:00"
    assert [e.kind for e in store.assignment_history(KEY)] == ["assigned", "assigned"]


@pytest.mark.parametrize("clash", [{"reader": "A", "role": "second"}, {"reader": "C", "role": "first"}])
def test_a_session_gets_a_role_and_a_reader_once(store: ReadersStore, clash: dict) -> None:
    store.add_assignments([assignment()], by="vhi")
    with pytest.raises(InputError, match=f"session {KEY}: already assigned to A as first reader"):
        store.add_assignments([assignment("x/1/y"), assignment(**clash)], by="vhi")
    assert [a.session_key for a in store.assignments()] == [KEY]  # all or none: x/1/y not added


def test_reassign_keeps_the_history(store: ReadersStore) -> None:
    store.add_assignments([assignment(), assignment(reader="B", role="second")], by="vhi")
    moved = store.reassign(KEY, "A", "C", "A is on leave", "datamanager",
                           now="2026-03-05T08:00:00Z", due_at="2026-03-19T08:00:00Z")
    assert (moved.reader, moved.role, moved.reason) == ("C", "first", "A is on leave")
    assert moved.assigned_at.startswith("2026-03-05T08:00:00") and moved.due_at.startswith("2026-03-19")
    assert store.readers_of(KEY) == ["C", "B"]
    history = store.assignment_history(KEY)
    assert [(e.kind, e.reader, e.previous_reader, e.by, e.reason) for e in history] == [
        ("assigned", "A", "", "vhi", "fewest open sessions"),
        ("assigned", "B", "", "vhi", "fewest open sessions"),
        ("reassigned", "C", "A", "datamanager", "A is on leave")]
    kept = store.reassign(KEY, "B", "D", "second opinion elsewhere", "dm")
    assert kept.due_at == assignment().due_at.replace("Z", ".000000+00:00")  # due date stays
    with pytest.raises(InputError, match=r"is not assigned to A \(assigned to C \(first\), D \(second\)\)"):
        store.reassign(KEY, "A", "E", "why", "dm")
    with pytest.raises(InputError, match="is assigned to D already"):
        store.reassign(KEY, "C", "D", "why", "dm")
    with pytest.raises(InputError, match="needs a reason"):
        store.reassign(KEY, "C", "E", "  ", "dm")


def test_only_the_first_open_is_kept(store: ReadersStore) -> None:
    first = store.open_session(KEY, "A", now="2026-03-02T08:00:00Z")
    again = store.open_session(KEY, "A", now="2026-03-03T08:00:00Z")
    assert first == again and first.opened_at.startswith("2026-03-02T08:00:00")
    store.open_session(KEY, "B", now="2026-03-02T09:00:00Z")
    assert [c.reader for c in store.claims(KEY)] == ["A", "B"]
    assert store.claims("other/1/x") == []


def test_saves_keep_their_bytes_content_addressed(store: ReadersStore) -> None:
    data = b"DICM" + bytes(range(256)) * 10
    save = store.record_save(save_of(store, data))
    digest = hashlib.sha256(data).hexdigest()
    assert save.blob == f"segs/{digest[:2]}/{digest}.dcm"
    assert store.blob_path(save.blob).read_bytes() == data
    assert store.put_blob(data) == save.blob  # the same bytes: the same file
    assert [p.name for p in store.blob_path(save.blob).parent.iterdir()] == [f"{digest}.dcm"]
    later = store.record_save(save_of(store, b"second", reader="B", saved_at="2026-03-01T10:00:00Z",
                                      source="xnat"))
    assert [s.reader for s in store.saves(KEY)] == ["B", "A"]  # oldest first
    assert store.saves(reader="B") == [later] and later.source == "xnat"
    assert store.saves("nothing/1/x") == []


@pytest.mark.parametrize(("change", "message"), [
    ({"source": "ftp"}, "unknown save source 'ftp'"),
    ({"sha256": "abc"}, "not 64 hex digits"),
    ({"blob": "../readers.sqlite"}, "not a path under"),
    ({"blob": "/etc/passwd"}, "not a path under"),
])
def test_a_bad_save_is_refused(store: ReadersStore, change: dict, message: str) -> None:
    good = save_of(store, b"x")
    with pytest.raises(InputError, match=message):
        store.record_save(Save(**{**good.__dict__, **change}))
    assert store.saves() == []


def test_the_last_push_is_the_current_proposal(store: ReadersStore) -> None:
    assert store.last_push(KEY) is None
    store.record_push(KEY, "2026-03-01T08:00:00Z", "proposal-1")
    store.record_push(KEY, "2026-03-04T08:00:00+01:00", "proposal-2")
    store.record_push(KEY, "2026-03-01T08:00:00Z", "proposal-1")  # recorded twice: once
    last = store.last_push(KEY)
    assert last is not None and last.proposal == "proposal-2"
    assert last.pushed_at == "2026-03-04T07:00:00.000000+00:00"
    snapshot = read_snapshot(store.path.parent.parent)
    assert snapshot is not None and len(snapshot.pushes) == 2
    assert snapshot.last_push(KEY) == last
    # the same proposal pushed again unchanged: it stays current since its first push
    store.record_push(KEY, "2026-03-06T08:00:00Z", "proposal-2")
    assert store.last_push(KEY) == last
    store.record_push(KEY, "2026-03-07T08:00:00Z", "proposal-1")  # a change back: a new push
    assert store.last_push(KEY).pushed_at.startswith("2026-03-07T08:00")
    assert read_snapshot(store.path.parent.parent).last_push(KEY) == store.last_push(KEY)


def test_times_have_one_width() -> None:
    assert utc_iso("2026-03-01T09:00:00Z") == "2026-03-01T09:00:00.000000+00:00"
    assert utc_iso("2026-03-01T10:00:00.5+01:00") == "2026-03-01T09:00:00.500000+00:00"
    assert utc_iso("2026-03-01 09:00") == "2026-03-01T09:00:00.000000+00:00"  # naive = UTC
    with pytest.raises(InputError, match="not an ISO-8601"):
        utc_iso("yesterday")


# ----------------------------------------------------------------------------- migration
#: The version-1 schema as a file of that version has it, written out here (not taken from
#: MIGRATIONS), so the test proves that a real version-1 file is migrated.
V1_SCHEMA = """
CREATE TABLE accounts (reader TEXT PRIMARY KEY, password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE assignments (session_key TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('first', 'second')), reader TEXT NOT NULL,
    site TEXT NOT NULL, study_uid TEXT NOT NULL DEFAULT '', viewer_path TEXT NOT NULL DEFAULT '',
    assigned_at TEXT NOT NULL, due_at TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (session_key, role), UNIQUE (session_key, reader));
CREATE INDEX assignments_by_reader ON assignments (reader);
CREATE INDEX assignments_by_study ON assignments (study_uid);
CREATE TABLE assignment_events (id INTEGER PRIMARY KEY AUTOINCREMENT, session_key TEXT NOT NULL,
    role TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('assigned', 'reassigned')),
    reader TEXT NOT NULL, previous_reader TEXT NOT NULL DEFAULT '', at TEXT NOT NULL,
    by TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '');
CREATE INDEX assignment_events_by_session ON assignment_events (session_key);
CREATE TABLE claims (session_key TEXT NOT NULL, reader TEXT NOT NULL, opened_at TEXT NOT NULL,
    PRIMARY KEY (session_key, reader));
CREATE TABLE saves (id INTEGER PRIMARY KEY AUTOINCREMENT, session_key TEXT NOT NULL,
    reader TEXT NOT NULL, saved_at TEXT NOT NULL, study_uid TEXT NOT NULL, series_uid TEXT NOT NULL,
    sop_uid TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, blob TEXT NOT NULL,
    proposal TEXT NOT NULL DEFAULT '');
CREATE INDEX saves_by_session ON saves (session_key, saved_at);
PRAGMA user_version = 1;
"""


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "work" / ".vhi" / "readers.sqlite"
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    digest = "ab" * 32
    db.execute("INSERT INTO saves (session_key, reader, saved_at, study_uid, series_uid, sop_uid, "
               "sha256, size, blob, proposal) VALUES (?, 'A', '2026-01-02T00:00:00.000000+00:00', "
               "'1.2', '1.2.3', '1.2.3.4', ?, 10, ?, 'p1')", (KEY, digest, f"segs/ab/{digest}.dcm"))
    db.execute("INSERT INTO assignments VALUES (?, 'first', 'A', 'a', '1.2', '/v', "
               "'2026-01-01T00:00:00.000000+00:00', '2026-01-15T00:00:00.000000+00:00', 'r')", (KEY,))
    db.commit()
    db.close()
    with ReadersStore.open(tmp_path / "work") as store:
        assert store.version == 2
        [save] = store.saves(KEY)
        assert (save.reader, save.sha256, save.proposal, save.source) == ("A", digest, "p1", "station")
        assert store.readers_of(KEY) == ["A"]
        store.record_push(KEY, "2026-01-01T00:00:00Z", "p1")  # the table version 2 added
        assert store.last_push(KEY) is not None


def test_the_version_1_schema_of_the_test_is_the_first_migration(tmp_path: Path) -> None:
    """The file the migration test builds is what version 1 of the code made."""
    def tables(db: sqlite3.Connection) -> dict[str, list[tuple]]:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                          "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {n: [r[1:3] for r in db.execute(f"PRAGMA table_info({n})")] for n in names}

    written, first = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    written.executescript(V1_SCHEMA)
    first.executescript(MIGRATIONS[0])
    assert tables(written) == tables(first)


def test_a_database_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ".vhi" / "readers.sqlite"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ConfigError, match="made by a newer vhi"):
        ReadersStore.open(tmp_path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ".vhi" / "readers.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(InputError, match="not a readers database"):
        ReadersStore.open(tmp_path)


# ----------------------------------------------------------------------------- two writers
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from vhi.readers.store import ReadersStore, Save
    work, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    go = Path(work, "go")
    while not go.exists():
        time.sleep(0.01)
    with ReadersStore.open(work) as store:
        for i in range(count):
            data = f"{name}-{i}".encode()
            blob = store.put_blob(data)
            with store.transaction():  # read, then write on what was read: nothing may be lost
                n = len(store.saves())
                store.record_save(Save(f"a/01/{name}{i}", name, "2026-03-01T00:00:00Z", "1", "2",
                                       str(n), __import__("hashlib").sha256(data).hexdigest(),
                                       len(data), blob, "p", "station"))
            store.open_session(f"a/01/{name}{i}", name)
            store.record_push(f"a/01/{name}{i}", "2026-03-01T00:00:00Z", f"p{i}")
""")


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    """A workflow run and the station write the same database at once: every write of both
    lands, and a read-modify-write inside a transaction never sees a stale count."""
    work, count = tmp_path / "work", 60
    ReadersStore.open(work).close()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(work), name, str(count)], env=env,
                                stderr=subprocess.PIPE, text=True) for name in ("A", "B")]
    (work / "go").touch()
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    with ReadersStore.open(work) as store:
        saves = store.saves()
        assert len(saves) == 2 * count
        # each save recorded the number of saves it saw: 0, 1, ..., 2n-1, none twice
        assert sorted(int(s.sop_uid) for s in saves) == list(range(2 * count))
        assert len(store.claims()) == 2 * count
        assert len(read_snapshot(work).pushes) == 2 * count
        assert all(store.blob_path(s.blob).read_bytes() == f"{s.reader}-{s.session_key[6:]}".encode()
                   for s in saves)
