"""Session sheets: the CSV a site lists its sessions in, and the demo cohort's layout."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from vhi.cohort.ids import Session, check_unique
from vhi.config.schema import SHEET_SCHEMA, validate
from vhi.errors import ConfigError
from vhi.fileio import atomic_path

SHEET_COLUMNS = ("site", "subject", "session", "timepoint", "stir", "t1w", "normal_marrow")
#: sheet column -> scan role
SHEET_ROLES = {"stir": "stir", "t1w": "t1w", "normal_marrow": "reference"}


def _resolve(root: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (root / path))


def read_sheet(path: str | os.PathLike[str], site: str, root: str | os.PathLike[str]) -> list[Session]:
    """Read and validate a session sheet (CSV); paths relative to ``root``.

    Every row is validated against the sheet schema shipped in the package; an unknown
    column, a bad id or a duplicate session is a ConfigError naming it.
    """
    path, root = Path(path), Path(root)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = [str(h).strip() for h in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(path, f"cannot read the session sheet ({exc})") from exc
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise ConfigError(path, f"column {duplicates[0]!r} appears more than once")
    if not rows:
        raise ConfigError(path, "the session sheet has no sessions")
    if "t1w" not in header:
        raise ConfigError(path, "the session sheet has no t1w column")
    sessions = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        record = {str(k).strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if None in row:
            raise ConfigError(f"{path} line {number}", "more cells than columns")
        record = {k: v for k, v in record.items() if v}
        validate(record, SHEET_SCHEMA, f"{path} line {number}")
        if record.get("site", site) != site:
            raise ConfigError(f"{path} line {number}",
                              f"site {record['site']} is not the configured site {site}")
        scans = {role: _resolve(root, record[column])
                 for column, role in SHEET_ROLES.items() if record.get(column)}
        sessions.append(Session(site, record["subject"], record["session"], record["timepoint"],
                                scans))
    check_unique(sessions, path)
    return sessions


def demo_sessions(root: str | os.PathLike[str], site: str = "demo") -> list[Session]:
    """The public bone-MRI data as a cohort: ``cohort.csv`` plus the files present.

    Subject = the paper's subject number (two digits), session = scan id, timepoint
    pre/post; STIR, T1W and normal-marrow masks where the files exist.
    """
    root = Path(root)
    table = root / "cohort.csv"
    try:
        with table.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(table, f"cannot read the demo cohort table ({exc})") from exc
    sessions = []
    for row in rows:
        scan = row["scan_id"].strip()
        files = {"stir": root / "stir" / f"{scan}_STIR.nii.gz",
                 "t1w": root / "t1w" / f"{scan}_T1W.nii.gz",
                 "reference": root / "normal_marrow" / f"{scan}_normal_marrow.nii.gz"}
        scans = {role: str(p) for role, p in files.items() if p.is_file()}
        if not scans:
            continue
        sessions.append(Session(site, f"{int(row['subject']):02d}", scan,
                                row["timepoint"].strip(), scans))
    check_unique(sessions, table)
    return sessions


def write_sheet(sessions: Sequence[Session], dest: str | os.PathLike[str]) -> Path:
    """Write sessions as a sheet (absolute paths), atomically."""
    with atomic_path(dest) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SHEET_COLUMNS)
        writer.writeheader()
        for s in sessions:
            writer.writerow({"site": s.site, "subject": s.subject, "session": s.session,
                             "timepoint": s.timepoint, "stir": s.scans.get("stir", ""),
                             "t1w": s.scans.get("t1w", ""),
                             "normal_marrow": s.scans.get("reference", "")})
    return Path(dest)
