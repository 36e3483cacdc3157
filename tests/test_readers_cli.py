"""``vhi readers add | list | remove`` and ``vhi assign`` on a synthetic run."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import yaml

from vhi.cli import main
from vhi.cohort.plan import save_run_plan
from vhi.errors import EXIT_INPUT
from vhi.readers.store import ReadersStore

from support.readers import readers_config, readers_run

KEYS = ["a/01/s1", "a/01/s2", "a/02/s3"]
SECRET = "a long secret password"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    run = readers_run(tmp_path, KEYS, readers=[{"id": "A", "name": "Dr A", "sites": ["a"]},
                                               {"id": "B", "sites": ["a"]},
                                               {"id": "C", "sites": ["a"]}])
    save_run_plan(run.plan, run.layout.work)  # the plan of "the last run", which --apply reuses
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(readers_config(tmp_path, readers=[
        {"id": "A", "name": "Dr A", "sites": ["a"]}, {"id": "B", "sites": ["a"]},
        {"id": "C", "sites": ["a"]}])))
    return path


def store_of(tmp_path: Path) -> ReadersStore:
    return ReadersStore.open(tmp_path / "run" / "work")


def test_readers_add_from_stdin_keeps_only_a_hash(config: Path, tmp_path: Path, monkeypatch,
                                                  caplog, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    with caplog.at_level(logging.DEBUG, logger="vhi"):
        assert main(["readers", "add", "A", "--config", str(config), "--password-stdin"]) == 0
    assert "reader A (Dr A): sign-in created" in caplog.text
    with store_of(tmp_path) as store:
        assert store.verify_password("A", SECRET) and not store.verify_password("B", SECRET)
    out = capsys.readouterr()
    assert SECRET not in caplog.text + out.out + out.err
    monkeypatch.setattr("sys.stdin", io.StringIO("another secret here\n"))
    with caplog.at_level(logging.INFO, logger="vhi"):
        assert main(["readers", "add", "A", "--config", str(config), "--password-stdin"]) == 0
    assert "reader A (Dr A): password changed" in caplog.text


def test_readers_add_prompts_twice(config: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    typed = iter([SECRET, SECRET])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(typed))
    assert main(["readers", "add", "B", "--config", str(config)]) == 0
    with store_of(tmp_path) as store:
        assert store.verify_password("B", SECRET)
    typed = iter([SECRET, SECRET + "x"])
    assert main(["readers", "add", "C", "--config", str(config)]) == EXIT_INPUT
    assert "the two passwords typed differ: nothing changed" in caplog.text
    with store_of(tmp_path) as store:
        assert not store.has_account("C")


def test_readers_add_refuses_an_unknown_reader_a_short_password_and_argv(config: Path, monkeypatch,
                                                                        caplog) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    assert main(["readers", "add", "Z", "--config", str(config), "--password-stdin"]) == EXIT_INPUT
    assert "reader Z: not in the config's readers (known: A, B, C)" in caplog.text
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["readers", "add", "A", "--config", str(config), "--password-stdin"]) == EXIT_INPUT
    assert "at least 8 characters" in caplog.text
    with pytest.raises(SystemExit):  # no way to put a password on the command line
        main(["readers", "add", "A", "--config", str(config), "--password", SECRET])


def test_assign_apply_then_list_reassign_and_history(config: Path, tmp_path: Path, capsys, caplog) -> None:
    assert main(["assign", "--config", str(config), "--apply", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["session"], r["reader"], r["role"], r["state"], r["overdue"]) for r in rows] == [
        ("a/01/s1", "A", "first", "to_do", False), ("a/01/s2", "B", "first", "to_do", False),
        ("a/02/s3", "C", "first", "to_do", False)]
    assert main(["assign", "--config", str(config), "--session", "a/01/s1", "--from", "A", "--to", "B",
                 "--reason", "A is on leave", "--by", "dm", "--json"]) == 0
    [row] = [r for r in json.loads(capsys.readouterr().out) if r["session"] == "a/01/s1"]
    assert (row["reader"], row["reason"]) == ("B", "A is on leave")
    assert main(["assign", "--config", str(config), "--history", "--session", "a/01/s1", "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(e["event"], e["reader"], e["from"], e["by"], e["reason"]) for e in history] == [
        ("assigned", "A", "", "vhi (automatic)",
         "fewest open sessions among the readers of site a (A 0, B 0, C 0)"),
        ("reassigned", "B", "A", "dm", "A is on leave")]
    assert main(["assign", "--config", str(config), "--reader", "B"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["session", "reader", "role", "state", "assigned", "due", "overdue"]
    assert [line.split()[:3] for line in lines[1:]] == [["a/01/s1", "B", "first"], ["a/01/s2", "B", "first"]]


def test_a_move_is_checked(config: Path, tmp_path: Path, caplog) -> None:
    assert main(["assign", "--config", str(config), "--apply"]) == 0
    assert main(["assign", "--config", str(config), "--session", "a/01/s1", "--from", "A",
                 "--to", "B"]) == EXIT_INPUT
    assert "needs --session, --from, --to and --reason" in caplog.text
    assert main(["assign", "--config", str(config), "--session", "a/01/s1", "--from", "B",
                 "--to", "C", "--reason", "x"]) == EXIT_INPUT
    assert "session a/01/s1: is not assigned to B (assigned to A (first))" in caplog.text
    assert main(["assign", "--config", str(config), "--session", "a/01/s1", "--from", "A",
                 "--to", "Q", "--reason", "x"]) == EXIT_INPUT
    assert "reader Q: not in the config's readers" in caplog.text
    assert main(["assign", "--config", str(config), "--session", "x/1/y", "--from", "A",
                 "--to", "B", "--reason", "x"]) == EXIT_INPUT
    assert "session x/1/y: is not assigned" in caplog.text


def test_readers_list_shows_sign_ins_and_work(config: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    assert main(["readers", "add", "C", "--config", str(config), "--password-stdin"]) == 0
    assert main(["assign", "--config", str(config), "--apply"]) == 0
    capsys.readouterr()
    assert main(["readers", "list", "--config", str(config), "--json"]) == 0
    rows = {r["reader"]: r for r in json.loads(capsys.readouterr().out)}
    assert [(r["name"], r["sign_in"], r["assigned"], r["open"]) for r in rows.values()] == [
        ("Dr A", False, 1, 1), ("B", False, 1, 1), ("C", True, 1, 1)]
    assert main(["readers", "remove", "C", "--config", str(config)]) == 0
    assert main(["readers", "list", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["reader", "name", "sites", "sign_in"]
    assert lines[3].split()[:4] == ["C", "C", "a", "no"]
