"""Cohort identifiers, the session sheet, the on-disk layout and the cohort plan.

A session is identified by ``site/subject/session``; its scans are named by role
(``stir``, ``t1w``, ``reference`` = the manual normal-marrow mask) and located by a
URI the session's source understands (for the local source: an absolute path).

The *plan* is what the workflow is built from: every session of every site with what
applies to it (STIR or T1W only, manual or automatic reference, whether a cleaned
segmentation is waiting on the source, which reader masks exist). File and log names
live in :class:`Layout` and :data:`STEPS` so the workflow and the status table agree.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vhi.config import SHEET_SCHEMA, ConfigError, Settings, validate
from vhi.imaging import atomic_path, save_json

log = logging.getLogger(__name__)

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]*"
ROLES = ("stir", "t1w", "reference")
SHEET_COLUMNS = ("site", "subject", "session", "timepoint", "stir", "t1w", "normal_marrow")
#: sheet column -> scan role
SHEET_ROLES = {"stir": "stir", "t1w": "t1w", "normal_marrow": "reference"}


@dataclass(frozen=True)
class Session:
    """One imaging session and where its scans are (role -> URI or path)."""

    site: str
    subject: str
    session: str
    timepoint: str
    scans: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.site}/{self.subject}/{self.session}"

    @property
    def has_stir(self) -> bool:
        return bool(self.scans.get("stir"))

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "subject": self.subject, "session": self.session,
                "timepoint": self.timepoint, "scans": dict(self.scans)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Session:
        try:
            return cls(site=str(data["site"]), subject=str(data["subject"]),
                       session=str(data["session"]), timepoint=str(data["timepoint"]),
                       scans={str(k): str(v) for k, v in dict(data.get("scans", {})).items() if v})
        except KeyError as exc:
            raise ConfigError("session record", f"missing {exc.args[0]}") from None

    @classmethod
    def from_json(cls, text: str) -> Session:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError("session record", f"not JSON ({exc})") from None


def check_unique(sessions: Iterable[Session], where: object) -> None:
    """A session id may appear once per site; the error names the session."""
    seen: dict[tuple[str, str], Session] = {}
    for s in sessions:
        other = seen.get((s.site, s.session))
        if other is not None:
            raise ConfigError(where, f"duplicate session {s.site}/{s.session} "
                                     f"(subjects {other.subject} and {s.subject})")
        seen[(s.site, s.session)] = s


# --------------------------------------------------------------------------- sheets
def _resolve(root: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (root / path))


def read_sheet(path: str | os.PathLike[str], site: str, root: str | os.PathLike[str]) -> list[Session]:
    """Read and validate a session sheet (CSV); paths relative to ``root``.

    Every row is validated against ``workflow/schemas/sheet.schema.yaml``; an unknown
    column, a bad id or a duplicate session is a ConfigError naming it.
    """
    path, root = Path(path), Path(root)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
            header = rows[0].keys() if rows else []
    except OSError as exc:
        raise ConfigError(path, f"cannot read the session sheet ({exc})") from exc
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
        with table.open(newline="") as fh:
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


# --------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Step:
    """One per-session step: its rule, log name, the file that marks it done, its state."""

    rule: str
    log: str
    marker: str
    state: str


STEPS: dict[str, Step] = {s.log: s for s in (
    Step("pull_scan", "pull_scan_t1w", "t1w.json", "pulled"),
    Step("pull_scan", "pull_scan_stir", "stir.json", "pulled"),
    Step("pull_scan", "pull_scan_reference", "reference.json", "pulled"),
    Step("segment_disease_region", "segment_disease_region", "disease_region.json", "segmented"),
    Step("propose_lesions", "propose_lesions", "proposal.json", "proposed"),
    Step("push_proposal", "push_proposal", "pushed.json", "pushed"),
    Step("measure_agreement", "measure_agreement", "agreement.json", "pushed"),
    Step("collect_cleaned", "collect_cleaned", "cleaned.json", "cleaned"),
    Step("measure_vhi", "measure_vhi", "vhi.json", "measured"),
)}

RESULT_FILES = {
    "cohort_vhi": "cohort_vhi.csv",
    "cohort_vhi_parquet": "cohort_vhi.parquet",
    "cohort_change": "cohort_change.csv",
    "agreement": "agreement.csv",
    "status": "status.csv",
    "description": "dataset_description.json",
    "report": "report.html",
}


@dataclass(frozen=True)
class Layout:
    """Where every file of a run goes."""

    work: str
    logs: str
    results: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Layout:
        return cls(settings.work_dir, settings.logs_dir, settings.results_dir)

    # Snakemake patterns ({site}/{subject}/{session} wildcards)
    def work_pattern(self, name: str) -> str:
        return f"{self.work}/{{site}}/{{subject}}/{{session}}/{name}"

    def log_pattern(self, name: str) -> str:
        return f"{self.logs}/{{site}}/{{subject}}/{{session}}/{name}.log"

    def benchmark_pattern(self, name: str) -> str:
        return f"{self.logs}/{{site}}/{{subject}}/{{session}}/{name}.benchmark.tsv"

    # concrete paths
    def session_dir(self, s: Session) -> Path:
        return Path(self.work, s.site, s.subject, s.session)

    def work_file(self, s: Session, name: str) -> Path:
        return self.session_dir(s) / name

    def log_file(self, s: Session, name: str) -> Path:
        return Path(self.logs, s.site, s.subject, s.session, f"{name}.log")

    def result(self, key: str) -> Path:
        return Path(self.results, RESULT_FILES[key])


# --------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class PlannedSession:
    """A session and what the workflow does with it."""

    session: Session
    reference: str  # "manual" or "auto" (only meaningful with a STIR)
    cleaned: Mapping[str, Any] | None = None  # fingerprint of the cleaned mask on the source
    readers: Mapping[str, str] = field(default_factory=dict)  # reader -> mask path

    @property
    def key(self) -> str:
        return self.session.key

    @property
    def has_stir(self) -> bool:
        return self.session.has_stir

    def steps(self) -> list[Step]:
        """The steps that apply to this session, in pipeline order."""
        names = ["pull_scan_t1w", "segment_disease_region"]
        if self.has_stir:
            names[1:1] = ["pull_scan_stir"] + (["pull_scan_reference"]
                                                if self.reference == "manual" else [])
            names += ["propose_lesions", "push_proposal"]
            if self.readers:
                names.append("measure_agreement")
            if self.cleaned is not None:
                names += ["collect_cleaned", "measure_vhi"]
        return [STEPS[n] for n in names]

    def final_files(self) -> list[str]:
        """Work files the cohort tables read for this session."""
        return [step.marker for step in self.steps() if step.log != "pull_scan_reference"]

    def to_dict(self) -> dict[str, Any]:
        return {**self.session.to_dict(), "reference": self.reference,
                "cleaned": dict(self.cleaned) if self.cleaned else None,
                "readers": dict(self.readers)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlannedSession:
        return cls(session=Session.from_dict(data), reference=str(data["reference"]),
                   cleaned=data.get("cleaned"), readers=dict(data.get("readers") or {}))


def reference_mode(site_mode: str, session: Session) -> str:
    """``manual_if_present`` → manual where the sheet lists a mask, else auto."""
    if site_mode == "manual_if_present":
        return "manual" if session.scans.get("reference") else "auto"
    return site_mode


def plan_cohort(settings: Settings) -> list[PlannedSession]:
    """Every session of every site, sorted by key, with what applies to it."""
    from vhi.sources import make_source

    plan = []
    for site in settings.sites:
        source = make_source(site.source, site=site.name)
        sessions = source.list_sessions()
        check_unique(sessions, f"site {site.name}")
        cleaned = source.find_cleaned(sessions)
        for s in sessions:
            plan.append(PlannedSession(
                session=s,
                reference=reference_mode(site.reference, s),
                cleaned=cleaned.get(s.key) if s.has_stir else None,
                readers=source.reader_masks(s) if s.has_stir else {},
            ))
    plan.sort(key=lambda p: p.key)
    log.info("cohort plan: %d sessions, %d with STIR, %d cleaned", len(plan),
             sum(p.has_stir for p in plan), sum(p.cleaned is not None for p in plan))
    return plan


def save_plan(plan: Sequence[PlannedSession], path: str | os.PathLike[str]) -> None:
    """Write the plan for the workflow's job processes (atomically)."""
    save_json([p.to_dict() for p in plan], path)


def load_plan(path: str | os.PathLike[str]) -> list[PlannedSession]:
    """The plan the main Snakemake process made: jobs on a cluster re-read the Snakefile,
    and must neither ask every source again (an XNAT login and listing per job) nor see
    a plan that changed since the DAG was built."""
    try:
        records = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the cohort plan of this run ({exc})") from None
    return [PlannedSession.from_dict(r) for r in records]


def plan_digest(plan: Sequence[PlannedSession]) -> str:
    """A short hash of the plan: changes when any session's ids, scans or status inputs do."""
    text = json.dumps([p.to_dict() for p in plan], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def wildcard_constraints(plan: Sequence[PlannedSession]) -> dict[str, str]:
    """Constraints for the {site}, {subject}, {session} wildcards, from the validated plan.

    Sites are few and listed; subjects and sessions use the id pattern the sheet schema
    enforces (an alternation of thousands of ids would slow every match of the DAG).
    """
    sites = sorted({p.session.site for p in plan})
    return {"site": "|".join(sites) or ID_PATTERN, "subject": ID_PATTERN, "session": ID_PATTERN}
