"""The cohort plan: every session of every site, with what applies to it.

The plan is what the workflow is built from: STIR or T1W only, manual or automatic
reference, whether a cleaned segmentation is waiting on the source, which reader
masks exist. Making it asks every site's source (:mod:`vhi.sources`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vhi.cohort.ids import ID_PATTERN, Session, check_unique
from vhi.cohort.layout import QC_FILES, STEPS, Layout, Step, pull_rule
from vhi.config.load import Settings
from vhi.errors import ConfigError
from vhi.fileio import atomic_path, save_json
from vhi.sources import make_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedSession:
    """A session and what the workflow does with it."""

    session: Session
    reference: str  # "manual" or "auto" (only meaningful with a STIR)
    cleaned: Mapping[str, Any] | None = None  # fingerprint of the cleaned mask on the source
    reader_masks: Mapping[str, str] = field(default_factory=dict)  # reader -> mask path
    note: str = ""  # why a cleaning on the source is not collected (e.g. contours only)

    @property
    def key(self) -> str:
        return self.session.key

    @property
    def has_stir(self) -> bool:
        return self.session.has_stir

    def steps(self) -> list[Step]:
        """The steps that apply to this session, in pipeline order."""
        names = [f"{role}.json" for role in self.pulled_roles()] + ["disease_region.json"]
        if self.has_stir:
            names += ["proposal.json", "pushed.json"]
            if self.reader_masks:
                names.append("agreement.json")
            if self.cleaned is not None:
                names += ["cleaned.json", "vhi.json"]
        return [STEPS[n] for n in names]

    def pulled_roles(self) -> tuple[str, ...]:
        """The scans this session's pull job fetches, in order (:data:`vhi.cohort.layout.PULL_RULES`)."""
        if not self.has_stir:
            return ("t1w",)
        return ("t1w", "stir", "reference") if self.reference == "manual" else ("t1w", "stir")

    def pull_rule(self) -> str:
        """The rule that pulls this session's scans (one job; workflow/rules/pull.smk)."""
        return pull_rule(self.pulled_roles())

    def final_files(self) -> list[str]:
        """Work files the cohort tables read for this session."""
        return [step.marker for step in self.steps() if step.marker != "reference.json"]

    def qc_files(self) -> list[str]:
        """The QC images this session gets (:data:`vhi.cohort.layout.QC_FILES`)."""
        names = [QC_FILES["image"], QC_FILES["slices"]]
        if self.has_stir and self.cleaned is not None:
            names.append(QC_FILES["cleaned"])
        return names

    def to_dict(self) -> dict[str, Any]:
        return {**self.session.to_dict(), "reference": self.reference,
                "cleaned": dict(self.cleaned) if self.cleaned else None,
                "reader_masks": dict(self.reader_masks), "note": self.note}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlannedSession:
        return cls(session=Session.from_dict(data), reference=str(data["reference"]),
                   cleaned=data.get("cleaned"),
                   reader_masks=dict(data.get("reader_masks") or {}),
                   note=str(data.get("note") or ""))


def reference_mode(site_mode: str, session: Session) -> str:
    """``manual_if_present`` → manual where the sheet lists a mask, else auto."""
    if site_mode == "manual_if_present":
        return "manual" if session.scans.get("reference") else "auto"
    return site_mode


def plan_cohort(settings: Settings) -> list[PlannedSession]:
    """Every session of every site, sorted by key, with what applies to it."""
    plan = []
    layout = Layout.from_settings(settings)
    for site in settings.sites:
        source = make_source(site.source, site=site.name)
        sessions = source.list_sessions()
        check_unique(sessions, f"site {site.name}")
        cleaned = source.find_cleaned(sessions, receipts=_receipts(layout, sessions))
        for s in sessions:
            entry = cleaned.get(s.key) if s.has_stir else None
            note = str(entry.get("pending") or "") if entry else ""
            plan.append(PlannedSession(
                session=s,
                reference=reference_mode(site.reference, s),
                cleaned=None if note else entry,
                reader_masks=source.reader_masks(s) if s.has_stir else {},
                note=note,
            ))
    plan.sort(key=lambda p: p.key)
    log.info("cohort plan: %d sessions, %d with STIR, %d cleaned", len(plan),
             sum(p.has_stir for p in plan), sum(p.cleaned is not None for p in plan))
    return plan


def _receipts(layout: Layout, sessions: Sequence[Session]) -> dict[str, dict[str, Any]]:
    """The push receipts (``pushed.json``) of the sessions that have one."""
    found = {}
    for s in sessions:
        path = layout.work_file(s, "pushed.json")
        try:
            found[s.key] = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("session %s: unreadable push receipt %s (%s)", s.key, path, exc)
    return found


#: Where a run's plans are kept, under the work folder: ``plan-<digest>.json`` files,
#: never changed once written, and ``latest`` naming the plan of the last run started.
PLAN_DIR = ".vhi"
#: The environment variable that tells a job process which plan its run was built from.
PLAN_ENV = "VHI_PLAN"


def save_plan(plan: Sequence[PlannedSession], path: str | os.PathLike[str]) -> None:
    """Write the plan (atomically)."""
    save_json([p.to_dict() for p in plan], path)


def load_plan(path: str | os.PathLike[str]) -> list[PlannedSession]:
    """Read a saved plan."""
    try:
        records = json.loads(Path(path).read_text())
        return [PlannedSession.from_dict(r) for r in records]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(str(path), f"cannot read the cohort plan ({exc})") from None


def run_plan_path(work: str | os.PathLike[str], plan: Sequence[PlannedSession]) -> Path:
    """The file a run's plan is kept in: named by the plan's digest, so a run's jobs read
    the plan their DAG was built from whatever another invocation plans meanwhile."""
    return Path(work, PLAN_DIR, f"plan-{plan_digest(plan)}.json")


def save_run_plan(plan: Sequence[PlannedSession], work: str | os.PathLike[str]) -> Path:
    """Keep the plan of a run that starts (never called by a dry run or lint) and mark it
    as the latest, which ``vhi tables`` reads instead of asking every source again."""
    path = run_plan_path(work, plan)
    if not path.is_file():
        save_plan(plan, path)
    latest = path.with_name("latest")
    with atomic_path(latest) as tmp:
        tmp.write_text(path.name + "\n")
    return path


def load_latest_plan(work: str | os.PathLike[str]) -> list[PlannedSession] | None:
    """The plan of the last run started in ``work``; None when no run has started there."""
    latest = Path(work, PLAN_DIR, "latest")
    try:
        name = latest.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(str(latest), f"cannot read the latest plan's name ({exc})") from None
    return load_plan(latest.with_name(name))


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
