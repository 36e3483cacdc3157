"""The local folder source: sheets, the demo layout, fetch/push/cleaned, read-only guard."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vhi.cohort.ids import Session
from vhi.cohort.sheet import demo_sessions, read_sheet, write_sheet
from vhi.errors import ConfigError, InputError
from vhi.sources import Source, make_source
from vhi.sources.local import LocalSource


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sheet(tmp_path: Path, text: str) -> Path:
    return write(tmp_path / "sheet.csv", text.encode())


HEADER = "site,subject,session,timepoint,stir,t1w,normal_marrow\n"


def test_demo_layout_lists_the_public_sessions(data_dir: Path) -> None:
    sessions = {s.session: s for s in demo_sessions(data_dir)}
    assert len(sessions) == 11
    assert sum(s.has_stir for s in sessions.values()) == 8
    s = sessions["1003"]
    assert (s.site, s.subject, s.timepoint) == ("demo", "09", "pre")
    assert set(s.scans) == {"stir", "t1w", "reference"}
    assert set(sessions["1001"].scans) == {"t1w"}  # T1W only


def test_sheet_paths_are_relative_to_root(tmp_path: Path) -> None:
    path = sheet(tmp_path, HEADER + "a,01,s1,pre,x/s.nii.gz,/abs/t.nii.gz,\n"
                                    "a,01,s2,post,,t2.nii.gz,\n")
    s1, s2 = read_sheet(path, "a", tmp_path / "root")
    assert s1.scans == {"stir": str(tmp_path / "root" / "x/s.nii.gz"), "t1w": "/abs/t.nii.gz"}
    assert not s2.has_stir and s2.timepoint == "post"


@pytest.mark.parametrize(("prefix", "newline"), [("\ufeff", "\n"), ("", "\r\n"), ("\ufeff", "\r\n")],
                         ids=["bom", "crlf", "bom+crlf"])
def test_sheet_from_a_spreadsheet_bom_and_crlf(tmp_path: Path, prefix: str, newline: str) -> None:
    text = prefix + newline.join(["subject,session,timepoint,t1w", "007,0001,pre,t.nii.gz", ""])
    path = tmp_path / "sessions.csv"
    path.write_bytes(text.encode("utf-8"))
    (s,) = read_sheet(path, "a", tmp_path)
    assert (s.subject, s.session, s.timepoint) == ("007", "0001", "pre")
    assert s.scans == {"t1w": str(tmp_path / "t.nii.gz")}


def test_sheet_keeps_leading_zeros_and_allows_no_site_column(tmp_path: Path) -> None:
    path = sheet(tmp_path, "subject,session,timepoint,t1w\n007,0001,pre,t.nii.gz\n")
    (s,) = read_sheet(path, "a", tmp_path)
    assert (s.site, s.subject, s.session) == ("a", "007", "0001")


@pytest.mark.parametrize(("text", "named"), [
    (HEADER + "a,01,s1,pre,,t.nii.gz,\na,02,s1,pre,,t.nii.gz,\n", "duplicate session a/s1"),
    ("subject,session,timepoint,t1w,colour\n01,s1,pre,t,red\n", "colour"),
    (HEADER + "a,01,s 1,pre,,t.nii.gz,\n", "s 1"),
    (HEADER + "b,01,s1,pre,,t.nii.gz,\n", "site b is not the configured site a"),
    ("subject,session,timepoint\n01,s1,pre\n", "no t1w column"),
    (HEADER + "a,01,,pre,,t.nii.gz,\n", "session"),
])
def test_bad_sheet_is_rejected_by_name(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        read_sheet(sheet(tmp_path, text), "a", tmp_path)


def test_write_sheet_round_trip(tmp_path: Path) -> None:
    sessions = [Session("a", "01", "s1", "pre", {"stir": "/d/s.nii.gz", "t1w": "/d/t.nii.gz",
                                                 "reference": "/d/r.nii.gz"}),
                Session("a", "02", "s2", "post", {"t1w": "/d/t2.nii.gz"})]
    assert read_sheet(write_sheet(sessions, tmp_path / "s.csv"), "a", tmp_path) == sessions


@pytest.fixture
def cohort(tmp_path: Path) -> tuple[LocalSource, Session]:
    root = tmp_path / "root"
    session = Session("a", "01", "s1", "pre", {"stir": str(write(root / "stir.nii.gz", b"STIR")),
                                               "t1w": str(write(root / "t1w.nii.gz", b"T1W"))})
    source = make_source({"type": "local", "root": str(root), "outbox": str(tmp_path / "outbox"),
                          "reader_masks": {"R1": "readers/{session}.nii.gz"}}, site="a")
    assert isinstance(source, LocalSource) and isinstance(source, Source)
    return source, session


def test_fetch_scan_copies_and_hashes(cohort, tmp_path: Path) -> None:
    source, session = cohort
    info = source.fetch_scan(session, "stir", tmp_path / "w" / "stir.nii.gz")
    assert (tmp_path / "w" / "stir.nii.gz").read_bytes() == b"STIR"
    assert info["sha256"] == hashlib.sha256(b"STIR").hexdigest()
    assert info["uri"] == session.scans["stir"]


def test_fetch_missing_scan_names_the_session(cohort, tmp_path: Path) -> None:
    source, session = cohort
    with pytest.raises(InputError, match=r"session a/01/s1: no normal-marrow mask listed"):
        source.fetch_scan(session, "reference", tmp_path / "r.nii.gz")
    gone = Session("a", "01", "s1", "pre", {"t1w": str(tmp_path / "nope.nii.gz")})
    with pytest.raises(InputError, match=r"session a/01/s1: T1W .*nope.nii.gz: file not found"):
        source.fetch_scan(gone, "t1w", tmp_path / "t.nii.gz")
    assert not (tmp_path / "t.nii.gz").exists()


def test_cleaned_mask_in_the_documented_layout(cohort, tmp_path: Path) -> None:
    source, session = cohort
    assert source.find_cleaned([session]) == {}
    assert source.fetch_cleaned(session, tmp_path / "c.nii.gz") is None
    mask = write(tmp_path / "root" / "cleaned" / "a" / "01" / "s1.nii.gz", b"CLEAN")
    found = source.find_cleaned([session])[session.key]
    assert found["uri"] == str(mask) and found["size"] == 5
    info = source.fetch_cleaned(session, tmp_path / "w" / "cleaned.nii.gz")
    assert info["sha256"] == hashlib.sha256(b"CLEAN").hexdigest()
    assert mask.read_bytes() == b"CLEAN"


def test_push_goes_to_the_outbox_and_never_over_source_files(cohort, tmp_path: Path) -> None:
    source, session = cohort
    proposal = write(tmp_path / "w" / "proposal.nii.gz", b"P")
    receipt = source.push_proposal(session, {"proposal": proposal})
    pushed = tmp_path / "outbox" / "a" / "01" / "s1" / "proposal.nii.gz"
    assert pushed.read_bytes() == b"P"
    assert receipt["files"]["proposal"]["uri"] == str(pushed)
    # an outbox that is the radiologists' cleaned folder must not overwrite their file
    clash = make_source({"type": "local", "root": str(tmp_path / "root"),
                         "outbox": str(tmp_path / "root" / "cleaned"),
                         "cleaned": "cleaned/{site}/{subject}/{session}/proposal.nii.gz"},
                        site="a")
    cleaned = write(tmp_path / "root" / "cleaned" / "a" / "01" / "s1" / "proposal.nii.gz", b"R")
    with pytest.raises(InputError, match="refusing to write over a source file"):
        clash.push_proposal(session, {"proposal": proposal})
    assert cleaned.read_bytes() == b"R"


def test_reader_masks_only_where_they_exist(cohort, tmp_path: Path) -> None:
    source, session = cohort
    assert source.reader_masks(session) == {}
    mask = write(tmp_path / "root" / "readers" / "s1.nii.gz")
    assert source.reader_masks(session) == {"R1": str(mask)}


def test_spec_for_keeps_only_what_an_operation_depends_on() -> None:
    spec = {"type": "local", "root": "/r", "sheet": "demo", "outbox": "o", "cleaned": "c",
            "reader_masks": {}}
    assert LocalSource.spec_for(spec, "fetch") == {"type": "local"}
    assert set(LocalSource.spec_for(spec, "cleaned")) == {"type", "root", "cleaned"}


def test_unknown_source_type_and_bad_pattern() -> None:
    with pytest.raises(ConfigError, match="unknown source type 'ftp'"):
        make_source({"type": "ftp"}, site="a")
    with pytest.raises(ConfigError, match="may use only"):
        make_source({"type": "local", "root": "/", "cleaned": "{patient}.nii.gz"}, site="a")


def test_make_source_fills_the_schema_defaults_and_refuses_unknown_keys() -> None:
    """The schema is the one place a source's defaults are defined."""
    source = make_source({"type": "local", "root": "/r"}, site="a")
    assert isinstance(source, LocalSource)
    assert source.sheet == "demo"
    assert source.outbox == Path("outbox").absolute()
    assert source.cleaned == "cleaned/{site}/{subject}/{session}.nii.gz"
    assert source.mask_patterns == {}
    with pytest.raises(ConfigError, match="outbx"):
        make_source({"type": "local", "root": "/r", "outbx": "o"}, site="a")
