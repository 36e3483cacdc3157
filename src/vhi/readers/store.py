"""The run's readers database: accounts, assignments, claims, saves and pushes.

One SQLite file per run folder, ``<work_dir>/.vhi/readers.sqlite`` (the standard
library's :mod:`sqlite3`; no server). The workflow (assignment, collection) and the
cleaning station (sign-in, opens, saves) write it at the same time, so:

* WAL journal: readers never block the writer, nor the writer them. WAL needs every
  process that opens the file on one machine (a shared-memory index beside it), so the
  station and the workflow's main process run on the same host; never on NFS between hosts.
* every write is one ``BEGIN IMMEDIATE`` transaction (the write lock taken at its start,
  so two writers queue instead of failing half-way), with a busy timeout of
  :data:`BUSY_TIMEOUT_S`; nothing is read-modify-written outside one;
* ``PRAGMA user_version`` is the schema version; :data:`MIGRATIONS` takes a file of any
  earlier version forward in one transaction when it is opened, and a file of a newer
  version is refused.

Passwords are hashed with argon2id (argon2-cffi's :class:`~argon2.PasswordHasher`,
RFC 9106's low-memory profile) and never stored, logged or echoed. Times are ISO-8601
UTC strings of one width (:func:`utc_iso`), so they sort as text. The SEG bytes a reader
saved are kept content-addressed beside the database (:meth:`ReadersStore.put_blob`), so
a save deleted or replaced on a PACS can be restored.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import astuple, dataclass, fields, replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from vhi.cohort.ids import check_id
from vhi.errors import ConfigError, InputError
from vhi.fileio import atomic_path

log = logging.getLogger(__name__)

#: The database and the saved SEGs live in this folder of the work folder.
STORE_DIR = ".vhi"
STORE_FILE = "readers.sqlite"
SEGS_DIR = "segs"
#: How long a write waits for another process's transaction before it fails.
BUSY_TIMEOUT_S = 30.0
#: An assignment's role: the first reader's mask gives the VHI unless the site says second.
ROLES = ("first", "second")
#: Where a save was recorded: the station's DICOMweb proxy, or collection from a source.
SAVE_SOURCES = ("station", "xnat", "dicomweb", "local")
MIN_PASSWORD_LENGTH = 8
_SHA256 = re.compile(r"[0-9a-f]{64}")

#: The schema, one script per version: MIGRATIONS[i] takes a version-i file to version i+1.
#: Statements are separated by ";" (none inside a string), each run in one transaction.
MIGRATIONS: tuple[str, ...] = (
    # 1: accounts, current assignments and their history, first opens, saves
    """
    CREATE TABLE accounts (
        reader TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE assignments (
        session_key TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('first', 'second')),
        reader TEXT NOT NULL,
        site TEXT NOT NULL,
        study_uid TEXT NOT NULL DEFAULT '',
        viewer_path TEXT NOT NULL DEFAULT '',
        assigned_at TEXT NOT NULL,
        due_at TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (session_key, role),
        UNIQUE (session_key, reader)
    );
    CREATE INDEX assignments_by_reader ON assignments (reader);
    CREATE INDEX assignments_by_study ON assignments (study_uid);
    CREATE TABLE assignment_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_key TEXT NOT NULL,
        role TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('assigned', 'reassigned')),
        reader TEXT NOT NULL,
        previous_reader TEXT NOT NULL DEFAULT '',
        at TEXT NOT NULL,
        by TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX assignment_events_by_session ON assignment_events (session_key);
    CREATE TABLE claims (
        session_key TEXT NOT NULL,
        reader TEXT NOT NULL,
        opened_at TEXT NOT NULL,
        PRIMARY KEY (session_key, reader)
    );
    CREATE TABLE saves (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_key TEXT NOT NULL,
        reader TEXT NOT NULL,
        saved_at TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        series_uid TEXT NOT NULL,
        sop_uid TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        blob TEXT NOT NULL,
        proposal TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX saves_by_session ON saves (session_key, saved_at)
    """,
    # 2: what each push made the current proposal; where a save was recorded
    """
    CREATE TABLE pushes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_key TEXT NOT NULL,
        pushed_at TEXT NOT NULL,
        proposal TEXT NOT NULL,
        UNIQUE (session_key, pushed_at, proposal)
    );
    ALTER TABLE saves ADD COLUMN source TEXT NOT NULL DEFAULT 'station'
        CHECK (source IN ('station', 'xnat', 'dicomweb', 'local'))
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def utc_iso(value: datetime | str | None = None) -> str:
    """``value`` (now when None; naive = UTC) as ISO-8601 UTC with microseconds: one width,
    so these strings sort in time order."""
    if value is None:
        moment = datetime.now(UTC)
    elif isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            raise InputError(f"time {value!r:.60}", "not an ISO-8601 date and time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_utc(value: str) -> datetime:
    """A time written by :func:`utc_iso` (or any ISO-8601 string) as an aware datetime."""
    return datetime.fromisoformat(utc_iso(value))


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Account:
    """A reader's sign-in (the hash stays in the database)."""

    reader: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class Assignment:
    """A reader's current assignment to a session, as ``role`` (first or second reader)."""

    session_key: str
    site: str
    reader: str
    role: str
    study_uid: str
    viewer_path: str
    assigned_at: str
    due_at: str
    reason: str


@dataclass(frozen=True)
class AssignmentEvent:
    """One line of a session's assignment history: assigned, or moved from one reader to another."""

    id: int
    session_key: str
    role: str
    kind: str  # "assigned" or "reassigned"
    reader: str
    previous_reader: str
    at: str
    by: str
    reason: str


@dataclass(frozen=True)
class Claim:
    """The first time a reader opened a session."""

    session_key: str
    reader: str
    opened_at: str


@dataclass(frozen=True)
class Save:
    """A segmentation a reader saved: the SEG instance, its bytes (``blob``, relative to
    the store's folder) and the proposal it answers (the proposal's SOP Instance UID or
    sha256); ``source`` says where it was recorded."""

    session_key: str
    reader: str
    saved_at: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sha256: str
    size: int
    blob: str
    proposal: str
    source: str


@dataclass(frozen=True)
class Push:
    """A proposal made current for a session (the proposal's SOP Instance UID or sha256)."""

    session_key: str
    pushed_at: str
    proposal: str


@dataclass(frozen=True)
class Snapshot:
    """Everything but the accounts, read in one transaction (what the results tables use)."""

    assignments: tuple[Assignment, ...]
    claims: tuple[Claim, ...]
    saves: tuple[Save, ...]
    pushes: tuple[Push, ...]

    def last_push(self, session_key: str) -> Push | None:
        """As :meth:`ReadersStore.last_push`."""
        return current_push([p for p in self.pushes if p.session_key == session_key])


def current_push(pushes: Sequence[Push]) -> Push | None:
    """The push that made the current proposal current: the first of the latest pushes of
    one proposal (pushing an unchanged proposal again does not make earlier saves stale)."""
    ordered = sorted(pushes, key=lambda p: p.pushed_at)
    if not ordered:
        return None
    first = len(ordered) - 1
    while first > 0 and ordered[first - 1].proposal == ordered[-1].proposal:
        first -= 1
    return ordered[first]


_Record = TypeVar("_Record")


def _columns(cls: type) -> str:
    return ", ".join(f.name for f in fields(cls))


def _select(cls: type, table: str, filters: Sequence[tuple[str, object]] = (),
            order: str = "") -> tuple[str, list[object]]:
    """A SELECT of a record's columns from ``table``, with ``column = ?`` for each filter
    whose value is not None. Table and column names come from this module, never from data."""
    where = [(column, value) for column, value in filters if value is not None]
    sql = f"SELECT {_columns(cls)} FROM {table}"  # noqa: S608 - names from the dataclass
    if where:
        sql += " WHERE " + " AND ".join(f"{column} = ?" for column, _ in where)
    return sql + (f" ORDER BY {order}" if order else ""), [value for _, value in where]


def _insert(cls: type, table: str) -> str:
    """An INSERT of every column of a record (names from the dataclass)."""
    marks = ", ".join("?" for _ in fields(cls))
    return f"INSERT INTO {table} ({_columns(cls)}) VALUES ({marks})"  # noqa: S608 - as _select


def _rows(cls: type[_Record], cursor: sqlite3.Cursor) -> list[_Record]:
    return [cls(*row) for row in cursor.fetchall()]


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4: RFC 9106's low-memory profile


@cache
def _dummy_hash() -> str:
    """A hash no password matches: verified for an unknown reader, so a wrong name takes
    as long as a wrong password."""
    return _hasher().hash(os.urandom(16).hex())


# ----------------------------------------------------------------------------- the store
class ReadersStore:
    """The readers database of one run folder. Use :meth:`open`; a context manager.

    One connection, shared by the threads of a process under a lock; every process opens
    its own. Methods that write run in one ``BEGIN IMMEDIATE`` transaction; several calls
    made inside :meth:`transaction` share one.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._lock = threading.RLock()
        self._depth = 0

    # ------------------------------------------------------------------ opening
    @classmethod
    def path_in(cls, work_dir: str | os.PathLike[str]) -> Path:
        """Where the database of the run folder ``work_dir`` is."""
        return Path(work_dir, STORE_DIR, STORE_FILE)

    @classmethod
    def open(cls, work_dir: str | os.PathLike[str]) -> ReadersStore:
        """The database of ``work_dir``, created or migrated to :data:`SCHEMA_VERSION`."""
        path = cls.path_in(work_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # only its owner reads the password hashes
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        try:
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as exc:
            raise InputError(path, f"cannot open the readers database ({exc})") from None
        store = cls(path, connection)
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise InputError(path, f"the readers database cannot use WAL (journal mode {mode}; "
                                       "a network file system?)")
            connection.execute("PRAGMA synchronous = FULL")
            store._migrate()
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise InputError(path, f"not a readers database, or damaged ({exc})") from None
        except BaseException:
            connection.close()
            raise
        return store

    @classmethod
    def open_existing(cls, work_dir: str | os.PathLike[str]) -> ReadersStore | None:
        """The database of ``work_dir`` if the run has one (for readers of it, such as the
        results tables: nothing is created), else None."""
        return cls.open(work_dir) if cls.path_in(work_dir).is_file() else None

    def _migrate(self) -> None:
        if self.version == SCHEMA_VERSION:  # the usual case: no write lock taken to find out
            return
        with self.transaction():  # another process may be migrating too: look again, locked
            version = self.version
            if version > SCHEMA_VERSION:
                raise ConfigError(self.path, f"readers database of schema version {version}, made by "
                                             f"a newer vhi (this one reads up to {SCHEMA_VERSION})")
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number + 1}")
            if version == 0:
                log.info("readers database %s created (schema version %d)", self.path, SCHEMA_VERSION)
            elif version < SCHEMA_VERSION:
                log.info("readers database %s: schema version %d migrated to %d", self.path, version,
                         SCHEMA_VERSION)

    @property
    def version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @property
    def folder(self) -> Path:
        """The folder the database and the saved SEGs (``segs/``) are in."""
        return self.path.parent

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ReadersStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction (committed at the end, rolled back on an
        error); calls made inside it join it."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # busy beyond the timeout, read-only file
                raise InputError(self.path, f"cannot write the readers database ({exc})") from None
            self._depth = 1
            try:
                yield self._db
            except BaseException:
                self._depth = 0
                self._db.execute("ROLLBACK")
                raise
            self._depth = 0
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """Several reads that see one state of the database (a deferred transaction: no
        lock that stops a writer in WAL mode)."""
        with self._lock:
            if self._depth:
                yield self._db
                return
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    # ------------------------------------------------------------------ accounts
    def set_password(self, reader_id: str, password: str) -> None:
        """Create the reader's sign-in, or change its password (only the argon2 hash is kept)."""
        check_id(reader_id, "reader")
        if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
            raise InputError(f"reader {reader_id}",
                             f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        hashed = _hasher().hash(password)
        now = utc_iso()
        with self.transaction() as db:
            db.execute("INSERT INTO accounts (reader, password_hash, created_at, updated_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (reader) DO UPDATE SET "
                       "password_hash = excluded.password_hash, updated_at = excluded.updated_at",
                       (reader_id, hashed, now, now))

    def verify_password(self, reader_id: str, password: str) -> bool:
        """Whether ``password`` is the reader's (argon2's constant-time check; an unknown
        reader costs the same and is False). A hash made with weaker parameters than
        today's is replaced on a successful sign-in."""
        with self._lock:
            row = self._db.execute("SELECT password_hash FROM accounts WHERE reader = ?",
                                   (reader_id,)).fetchone()
        hasher = _hasher()
        try:
            hasher.verify(row[0] if row else _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            return False
        if row is None:
            return False
        if hasher.check_needs_rehash(row[0]):
            with self.transaction() as db:
                db.execute("UPDATE accounts SET password_hash = ?, updated_at = ? WHERE reader = ?",
                           (hasher.hash(password), utc_iso(), reader_id))
        return True

    def has_account(self, reader_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM accounts WHERE reader = ?",
                                    (reader_id,)).fetchone() is not None

    def accounts(self) -> list[Account]:
        with self._lock:
            return _rows(Account, self._db.execute(
                "SELECT reader, created_at, updated_at FROM accounts ORDER BY reader"))

    def delete_account(self, reader_id: str) -> bool:
        """Remove the reader's sign-in (their assignments and saves stay); False if none."""
        with self.transaction() as db:
            return db.execute("DELETE FROM accounts WHERE reader = ?", (reader_id,)).rowcount > 0

    # ------------------------------------------------------------------ assignments
    def assignments(self, *, reader: str | None = None, site: str | None = None,
                    session_key: str | None = None, study_uid: str | None = None) -> list[Assignment]:
        """The current assignments matching every filter given, by session and role."""
        sql, args = _select(Assignment, "assignments", (
            ("reader", reader), ("site", site), ("session_key", session_key), ("study_uid", study_uid)),
            "session_key, role")
        with self._lock:
            return _rows(Assignment, self._db.execute(sql, args))

    def readers_of(self, session_key: str) -> list[str]:
        """The readers assigned to the session, first reader first."""
        return [a.reader for a in self.assignments(session_key=session_key)]

    def add_assignments(self, assignments: Sequence[Assignment], *, by: str) -> list[Assignment]:
        """Record new assignments (and an ``assigned`` event each), all or none; a session
        that has any assignment already is refused."""
        added = []
        with self.transaction() as db:
            for given in assignments:
                if given.role not in ROLES:
                    raise InputError(f"session {given.session_key}", f"unknown reader role {given.role!r}")
                check_id(given.reader, "reader")
                taken = db.execute("SELECT reader, role FROM assignments WHERE session_key = ? "
                                   "AND (role = ? OR reader = ?)",
                                   (given.session_key, given.role, given.reader)).fetchone()
                if taken is not None:
                    raise InputError(f"session {given.session_key}",
                                     f"already assigned to {taken[0]} as {taken[1]} reader")
                a = replace(given, assigned_at=utc_iso(given.assigned_at), due_at=utc_iso(given.due_at))
                db.execute(_insert(Assignment, "assignments"), astuple(a))
                self._event(AssignmentEvent(0, a.session_key, a.role, "assigned", a.reader, "",
                                            a.assigned_at, by, a.reason))
                added.append(a)
        return added

    def reassign(self, session_key: str, old_reader: str, new_reader: str, reason: str, by: str,
                 *, now: datetime | str | None = None, due_at: datetime | str | None = None,
                 ) -> Assignment:
        """Move the session's assignment from ``old_reader`` to ``new_reader`` (same role),
        recorded with who, when and why; the due date is ``due_at`` or stays."""
        check_id(new_reader, "reader")
        if not reason.strip():
            raise InputError(f"session {session_key}", "a reassignment needs a reason")
        if not by.strip():
            raise InputError(f"session {session_key}", "a reassignment needs who made it")
        when = utc_iso(now)
        with self.transaction() as db:
            current = self.assignments(session_key=session_key)
            mine = next((a for a in current if a.reader == old_reader), None)
            if mine is None:
                held = ", ".join(f"{a.reader} ({a.role})" for a in current) or "nobody"
                raise InputError(f"session {session_key}",
                                 f"is not assigned to {old_reader} (assigned to {held})")
            if any(a.reader == new_reader for a in current):
                raise InputError(f"session {session_key}", f"is assigned to {new_reader} already")
            moved = replace(mine, reader=new_reader, assigned_at=when, reason=reason,
                            due_at=utc_iso(due_at) if due_at is not None else mine.due_at)
            db.execute("UPDATE assignments SET reader = ?, assigned_at = ?, due_at = ?, reason = ? "
                       "WHERE session_key = ? AND role = ?",
                       (moved.reader, moved.assigned_at, moved.due_at, moved.reason, session_key,
                        moved.role))
            self._event(AssignmentEvent(0, session_key, moved.role, "reassigned", new_reader,
                                        old_reader, when, by, reason))
        return moved

    def _event(self, event: AssignmentEvent) -> None:
        """Add ``event`` to the history (its id is given by the database)."""
        self._db.execute("INSERT INTO assignment_events (session_key, role, kind, reader, "
                         "previous_reader, at, by, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         astuple(event)[1:])

    def assignment_history(self, session_key: str | None = None) -> list[AssignmentEvent]:
        """Every assignment event (of one session), oldest first."""
        sql, args = _select(AssignmentEvent, "assignment_events", (("session_key", session_key),), "id")
        with self._lock:
            return _rows(AssignmentEvent, self._db.execute(sql, args))

    # ------------------------------------------------------------------ claims
    def open_session(self, session_key: str, reader: str,
                     now: datetime | str | None = None) -> Claim:
        """Record that ``reader`` opened the session (only the first open is kept)."""
        check_id(reader, "reader")
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO claims (session_key, reader, opened_at) VALUES (?, ?, ?)",
                       (session_key, reader, utc_iso(now)))
            sql, args = _select(Claim, "claims", (("session_key", session_key), ("reader", reader)))
            row = db.execute(sql, args).fetchone()
        return Claim(*row)

    def claims(self, session_key: str | None = None) -> list[Claim]:
        """Who opened the session (every session's opens when None), first open first."""
        sql, args = _select(Claim, "claims", (("session_key", session_key),), "opened_at, reader")
        with self._lock:
            return _rows(Claim, self._db.execute(sql, args))

    # ------------------------------------------------------------------ saves
    def record_save(self, save: Save) -> Save:
        """Record a reader's save (its bytes already kept by :meth:`put_blob`)."""
        what = f"session {save.session_key}"
        if save.source not in SAVE_SOURCES:
            raise InputError(what, f"unknown save source {save.source!r} (known: {', '.join(SAVE_SOURCES)})")
        if not _SHA256.fullmatch(save.sha256):
            raise InputError(what, f"save sha256 {save.sha256!r:.80} is not 64 hex digits")
        self.blob_path(save.blob)  # refuses a path outside segs/
        save = replace(save, saved_at=utc_iso(save.saved_at), size=int(save.size))
        with self.transaction() as db:
            db.execute(_insert(Save, "saves"), astuple(save))
        return save

    def saves(self, session_key: str | None = None, reader: str | None = None) -> list[Save]:
        """The saves recorded (of a session, of a reader), oldest first."""
        sql, args = _select(Save, "saves", (("session_key", session_key), ("reader", reader)),
                            "saved_at, id")
        with self._lock:
            return _rows(Save, self._db.execute(sql, args))

    def put_blob(self, data: bytes) -> str:
        """Keep ``data`` (a SEG's bytes) as ``segs/<sha[:2]>/<sha>.dcm`` beside the database,
        written whole or not at all; the path relative to :attr:`folder`."""
        digest = hashlib.sha256(data).hexdigest()
        rel = f"{SEGS_DIR}/{digest[:2]}/{digest}.dcm"
        path = self.folder / rel
        if path.is_file() and path.stat().st_size == len(data) and \
                hashlib.sha256(path.read_bytes()).hexdigest() == digest:
            return rel
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return rel

    def blob_path(self, rel: str) -> Path:
        """The file of a kept SEG (``rel`` as :meth:`put_blob` returned it)."""
        segs = (self.folder / SEGS_DIR).resolve()
        path = (self.folder / rel).resolve()
        if not path.is_relative_to(segs) or path == segs:
            raise InputError(f"saved SEG {rel!r:.200}", f"not a path under {self.folder / SEGS_DIR}")
        return path

    # ------------------------------------------------------------------ pushes
    def record_push(self, session_key: str, pushed_at: datetime | str, proposal: str) -> Push:
        """Record that ``proposal`` became the session's current proposal at ``pushed_at``
        (recording the same push again changes nothing)."""
        push = Push(session_key, utc_iso(pushed_at), str(proposal))
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO pushes (session_key, pushed_at, proposal) VALUES (?, ?, ?)",
                       (push.session_key, push.pushed_at, push.proposal))
        return push

    def last_push(self, session_key: str) -> Push | None:
        """The session's current proposal and when it became current (a save after that time
        answers it), or None: the latest push, or the first of the latest pushes when the
        same proposal was pushed again unchanged."""
        return current_push(self._pushes(session_key))

    # ------------------------------------------------------------------ everything at once
    def snapshot(self) -> Snapshot:
        """Assignments, claims, saves and pushes as of one moment."""
        with self._reading():
            return Snapshot(assignments=tuple(self.assignments()), claims=tuple(self.claims()),
                            saves=tuple(self.saves()), pushes=tuple(self._pushes()))

    def _pushes(self, session_key: str | None = None) -> list[Push]:
        sql, args = _select(Push, "pushes", (("session_key", session_key),), "pushed_at, id")
        with self._lock:
            return _rows(Push, self._db.execute(sql, args))


def read_snapshot(work_dir: str | os.PathLike[str]) -> Snapshot | None:
    """The run's readers database as of now (opened and closed again), or None when the run
    has none (no readers configured, no station used)."""
    store = ReadersStore.open_existing(work_dir)
    if store is None:
        return None
    with store:
        return store.snapshot()


__all__ = [
    "MIGRATIONS", "ROLES", "SAVE_SOURCES", "SCHEMA_VERSION", "Account", "Assignment",
    "AssignmentEvent", "Claim", "Push", "ReadersStore", "Save", "Snapshot", "current_push",
    "parse_utc", "read_snapshot", "utc_iso",
]
