"""``vhi readers add | list | remove`` and ``vhi assign``: the people who clean, for the data manager.

``vhi readers add ID`` creates (or changes) a reader's sign-in at the cleaning station:
the password comes from a prompt, or from standard input with ``--password-stdin``,
never from the command line, and only its argon2 hash is kept (``work/.vhi/readers.sqlite``).
``vhi readers list`` shows each configured reader's sign-in and work.

``vhi assign`` shows every assignment (session, reader, role, state, due, overdue);
``--apply`` first assigns the sessions ready for cleaning, as the workflow does;
``--session KEY --from A --to B --reason "..."`` moves an assignment, recorded with who,
when and why (``--history`` shows that record).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from vhi.cli.output import text_table
from vhi.config.load import Settings, load_config_file
from vhi.errors import ConfigError, InputError

log = logging.getLogger("vhi")


def _print(rows: list[dict[str, Any]], columns: Sequence[str], as_json: bool, empty: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        sys.stdout.write(text_table(rows, columns) if rows else empty + "\n")


# --------------------------------------------------------------------------- readers
def _new_password(args: argparse.Namespace, reader: str) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for reader {reader}: ")
    if getpass.getpass("the same password again: ") != first:
        raise InputError(f"reader {reader}", "the two passwords typed differ: nothing changed")
    return first


def cmd_readers_add(args: argparse.Namespace) -> int:
    from vhi.readers.store import ReadersStore

    settings = load_config_file(args.config)
    reader = settings.reader(args.id)
    password = _new_password(args, reader.id)
    with ReadersStore.open(settings.work_dir) as store:
        existed = store.has_account(reader.id)
        store.set_password(reader.id, password)
        log.info("reader %s (%s): %s in %s", reader.id, reader.display_name,
                 "password changed" if existed else "sign-in created", store.path)
    return 0


def cmd_readers_remove(args: argparse.Namespace) -> int:
    from vhi.readers.store import ReadersStore

    settings = load_config_file(args.config)
    store = ReadersStore.open_existing(settings.work_dir)
    removed = False
    if store is not None:
        with store:
            removed = store.delete_account(args.id)
    if not removed:
        raise InputError(f"reader {args.id}", f"has no sign-in in {settings.work_dir}")
    log.info("reader %s: sign-in removed (their assignments and saves stay; `vhi assign "
             "--from %s --to ...` moves their sessions)", args.id, args.id)
    return 0


READER_COLUMNS = ["reader", "name", "sites", "sign_in", "assigned", "done", "open", "overdue",
                  "median_days_to_clean"]


def cmd_readers_list(args: argparse.Namespace) -> int:
    from vhi.readers.progress import Reading, reader_summaries
    from vhi.readers.store import ReadersStore

    settings = load_config_file(args.config)
    store = ReadersStore.open_existing(settings.work_dir)
    accounts = set()
    if store is not None:
        with store:
            accounts = {a.reader for a in store.accounts()}
    reading = Reading.of_run(settings.work_dir)
    rows = [{**s.as_row(), "sign_in": s.reader in accounts}
            for s in reader_summaries(reading, settings.readers)]
    rows += [{"reader": r, "name": "(not in the config)", "sign_in": True}
             for r in sorted(accounts - {row["reader"] for row in rows})]
    _print(rows, READER_COLUMNS, args.json, "no readers in the config (config `readers:`)")
    return 0


# --------------------------------------------------------------------------- assign
ASSIGNMENT_COLUMNS = ["session", "reader", "role", "state", "assigned", "due", "overdue"]


def _assignment_rows(settings: Settings, args: argparse.Namespace) -> list[dict[str, Any]]:
    from vhi.readers.progress import Reading, short_utc

    reading = Reading.of_run(settings.work_dir)
    rows = []
    for a in reading.assignments(session_key=args.session):
        p = reading.progress(a)
        if (args.reader and a.reader not in args.reader) or (args.site and a.site not in args.site) \
                or (args.overdue and not p.overdue):
            continue
        rows.append({"session": a.session_key, "reader": a.reader, "role": a.role, "state": p.state,
                     "assigned": short_utc(a.assigned_at), "due": short_utc(a.due_at),
                     "overdue": p.overdue, "reason": a.reason})
    return rows


def _user() -> str:
    """Who runs the command, for the assignment history."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        raise ConfigError("vhi assign", "cannot tell who you are: give --by NAME") from None


def _reassign(settings: Settings, args: argparse.Namespace) -> None:
    from vhi.readers.store import ReadersStore

    store = ReadersStore.open_existing(settings.work_dir)
    if store is None:
        raise InputError(settings.work_dir, "no readers database: nothing is assigned in this run yet")
    reader = settings.reader(args.to)
    with store:
        current = store.assignments(session_key=args.session)
        if not current:
            raise InputError(f"session {args.session}", "is not assigned (`vhi assign` lists the "
                                                        "assignments)")
        site = current[0].site
        if site not in reader.sites:
            raise ConfigError(f"reader {reader.id}", f"does not read site {site} (config readers[].sites)")
        now = datetime.now(UTC)
        moved = store.reassign(args.session, args.from_reader, reader.id, args.reason, args.by or _user(),
                               now=now,
                               due_at=now + timedelta(days=settings.site(site).due_days))
    log.info("session %s: %s reader %s -> %s (%s), due %s", moved.session_key, moved.role,
             args.from_reader, moved.reader, moved.reason, moved.due_at)


def cmd_assign(args: argparse.Namespace) -> int:
    moving = [args.from_reader, args.to, args.reason]
    if any(moving) and not (all(moving) and args.session):
        raise ConfigError("vhi assign", "moving an assignment needs --session, --from, --to and --reason")
    settings = load_config_file(args.config)
    if args.apply:
        from vhi.cli.cohort import _saved_or_new_plan
        from vhi.cohort.layout import Layout
        from vhi.readers.assign import assign_run

        if not settings.readers:
            raise ConfigError(args.config, "no readers: nothing to assign (config `readers:`)")
        new = assign_run(settings, _saved_or_new_plan(settings, args), Layout.from_settings(settings))
        log.info("%d new assignment(s)", len(new))
    if all(moving):
        _reassign(settings, args)
    if args.history:
        _print_history(settings, args)
        return 0
    _print(_assignment_rows(settings, args), ASSIGNMENT_COLUMNS, args.json, "no assignments")
    return 0


def _print_history(settings: Settings, args: argparse.Namespace) -> None:
    from vhi.readers.progress import short_utc
    from vhi.readers.store import ReadersStore

    store = ReadersStore.open_existing(settings.work_dir)
    events = []
    if store is not None:
        with store:
            events = store.assignment_history(args.session)
    rows = [{"at": short_utc(e.at), "session": e.session_key, "role": e.role, "event": e.kind,
             "reader": e.reader, "from": e.previous_reader, "by": e.by, "reason": e.reason}
            for e in events]
    _print(rows, ["at", "session", "role", "event", "reader", "from", "by", "reason"], args.json,
           "no assignments")


# --------------------------------------------------------------------------- parser
def register(sub: Any) -> None:
    """Add ``readers`` and ``assign`` to the ``vhi`` parser's sub-parsers."""
    p = sub.add_parser("readers", help="the readers' sign-ins at the cleaning station, and their work")
    readers = p.add_subparsers(dest="readers_command", required=True, metavar="ACTION")
    q = readers.add_parser("add", help="create a reader's sign-in, or change its password")
    q.add_argument("id", help="the reader's id (config readers[].id)")
    q.add_argument("--config", required=True, type=Path)
    q.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input instead of a prompt")
    q.set_defaults(func=cmd_readers_add)
    q = readers.add_parser("remove", help="remove a reader's sign-in (assignments and saves stay)")
    q.add_argument("id")
    q.add_argument("--config", required=True, type=Path)
    q.set_defaults(func=cmd_readers_remove)
    q = readers.add_parser("list", help="each reader: sites, sign-in, assigned, done, open, overdue")
    q.add_argument("--config", required=True, type=Path)
    q.add_argument("--json", action="store_true", help="JSON for scripts instead of a table")
    q.set_defaults(func=cmd_readers_list)

    p = sub.add_parser("assign", help="show the readers' assignments; assign ready sessions "
                                      "(--apply); move one (--session --from --to --reason)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--apply", action="store_true",
                   help="first assign every session ready for cleaning, as the workflow does")
    p.add_argument("--plan", type=Path, help="with --apply: a saved cohort plan (default: the last run's)")
    p.add_argument("--refresh", action="store_true",
                   help="with --apply: ask every source for its sessions again")
    p.add_argument("--session", help="one session (site/subject/session)")
    p.add_argument("--from", dest="from_reader", metavar="READER", help="move the session from this reader")
    p.add_argument("--to", metavar="READER", help="... to this reader (who must read the session's site)")
    p.add_argument("--reason", help="why (kept in the session's assignment history)")
    p.add_argument("--by", help="who moves it (default: your user name)")
    p.add_argument("--reader", action="append", default=[], help="only this reader's (repeatable)")
    p.add_argument("--site", action="append", default=[], help="only this site's (repeatable)")
    p.add_argument("--overdue", action="store_true", help="only overdue assignments")
    p.add_argument("--history", action="store_true",
                   help="the assignment history (of --session) instead of the current assignments")
    p.add_argument("--json", action="store_true", help="JSON for scripts instead of a table")
    p.set_defaults(func=cmd_assign)
