"""The cohort plan: every session of every site, with what applies to it.

The plan is what the workflow is built from: STIR or T1W only, manual or automatic
reference, whether a cleaned segmentation is waiting on the source, which reader
masks exist, each scan's identity (a scan replaced at the same path is pulled again).
Making it asks every site's source (:mod:`vhi.sources`): *listing*.

The plan is a file (:class:`CohortPlan`, a versioned JSON format): the listing of a
config's sites is saved as ``work/.vhi/plans/<sites digest>.json`` by ``vhi plan`` and by
every run or dry run that lists, and read by the workflow (``plan: saved``), ``vhi
status``, ``vhi tables`` and ``vhi viewer``, which list again only when asked
(``--refresh``) or when none is saved. A site whose server cannot be reached stops the
listing naming the site, or, with ``unreachable_sites: saved``, is planned from its last
saved listing. A run keeps the plan its DAG was built from as ``work/.vhi/plan-<digest>.json``
(never changed), named by its run marker (:mod:`vhi.cohort.run`); its jobs read that one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import vhi
from vhi.cohort.ids import ID_PATTERN, Session, check_unique
from vhi.cohort.layout import QC_FILES, STEPS, Layout, Step, pull_rule
from vhi.cohort.run import STATE_DIR, RunMarker, claim, marker_path, read_marker, refuse_if_held, release
from vhi.config.load import Settings, SiteConfig
from vhi.errors import ConfigError, UnreachableError
from vhi.fileio import atomic_path
from vhi.sources import Skipped, make_source
from vhi.sources.cleaning import CleaningRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedSession:
    """A session and what the workflow does with it."""

    session: Session
    reference: str  # "manual" or "auto" (only meaningful with a STIR)
    cleaned: Mapping[str, Any] | None = None  # fingerprint of the cleaned mask on the source
    reader_masks: Mapping[str, str] = field(default_factory=dict)  # reader -> mask path
    note: str = ""  # why a cleaning on the source is not collected (e.g. contours only)
    identity: Mapping[str, Any] = field(default_factory=dict)  # role -> what changes with the scan

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

    def pulled_identity(self) -> dict[str, Any]:
        """The identity of the scans the pull job fetches (a pull rule's parameter: a scan
        replaced at the same path, with another size or time, is pulled again)."""
        return {role: self.identity[role] for role in self.pulled_roles() if role in self.identity}

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
                "reader_masks": dict(self.reader_masks), "note": self.note,
                "identity": dict(self.identity)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlannedSession:
        return cls(session=Session.from_dict(data), reference=str(data["reference"]),
                   cleaned=data.get("cleaned"),
                   reader_masks=dict(data.get("reader_masks") or {}),
                   note=str(data.get("note") or ""), identity=dict(data.get("identity") or {}))


def reference_mode(site_mode: str, session: Session) -> str:
    """``manual_if_present`` → manual where the sheet lists a mask, else auto."""
    if site_mode == "manual_if_present":
        return "manual" if session.scans.get("reference") else "auto"
    return site_mode


def list_site(site: SiteConfig, layout: Layout, record: CleaningRecord, *,
              empty_sites_ok: bool = False) -> tuple[list[PlannedSession], list[Skipped]]:
    """Ask one site's source for its sessions (and cleaned segmentations by the one cleaning
    rule with ``record``, reader masks, scan identities): the planned sessions, and what
    the source found and skipped (with the reasons). Raises
    :class:`vhi.errors.UnreachableError` when its server cannot be reached. A site whose
    source lists no session stops the plan unless its ``source.allow_empty`` says it may,
    or ``empty_sites_ok`` (the cleaning station, which lists what awaits cleaning: there it
    is a warning)."""
    source = make_source(site.source, site=site.name)
    sessions = source.list_sessions()
    skipped = source.skipped()
    if not sessions and not site.source.get("allow_empty"):
        if not empty_sites_ok:
            raise ConfigError(f"site {site.name}", _nothing_listed(skipped))
        log.warning("site %s: %s", site.name, _nothing_listed(skipped))
    check_unique(sessions, f"site {site.name}")
    cleaned = source.find_cleaned(sessions, receipts=_receipts(layout, sessions), record=record)
    planned = []
    for s in sessions:
        entry = cleaned.get(s.key) if s.has_stir else None
        note = str(entry.get("pending") or "") if entry else ""
        planned.append(PlannedSession(
            session=s,
            reference=reference_mode(site.reference, s),
            cleaned=None if note else entry,
            reader_masks=source.reader_masks(s) if s.has_stir else {},
            note=note,
            identity=source.scan_identity(s),
        ))
    return planned, skipped


def _nothing_listed(skipped: Sequence[Skipped]) -> str:
    found = (f" ({len(skipped)} found and skipped: {skipped[0].label}: {skipped[0].reason}"
             f"{'; …' if len(skipped) > 1 else ''})" if skipped else "")
    return (f"its source lists no session{found}: check its query, project or server (`vhi "
            "dicomweb-plan` / `vhi xnat-plan` show what it finds); a site that may have none "
            "sets source.allow_empty: true")


def plan_cohort(settings: Settings, *, empty_sites_ok: bool = False) -> list[PlannedSession]:
    """Every session of every site, listed now, sorted by key (no file is read or written;
    :func:`make_plan` also keeps what was skipped and when each site was listed)."""
    return list(make_plan(settings, empty_sites_ok=empty_sites_ok).sessions)


def cleaning_record(settings: Settings, layout: Layout) -> CleaningRecord:
    """The station's saves and the assignments: what the one cleaning rule decides by."""
    return CleaningRecord.of_run(layout.work, {s.name: s.double_read_vhi for s in settings.sites})


def _log_counts(plan: Sequence[PlannedSession], skipped: Sequence[Skipped]) -> None:
    log.info("cohort plan: %d sessions, %d with STIR, %d cleaned%s", len(plan),
             sum(p.has_stir for p in plan), sum(p.cleaned is not None for p in plan),
             f"; {len(skipped)} found and skipped (status.csv says why)" if skipped else "")


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


# --------------------------------------------------------------------------- the plan file
#: What a plan file says it is, and the version of its layout: a reader refuses a file of
#: another format or a newer version (naming it), so an old vhi never misreads a new plan.
PLAN_FORMAT = "vhi-cohort-plan"
PLAN_VERSION = 1
#: The folder under the work folder with the saved listings, one per config's sites.
PLANS_DIR = "plans"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class CohortPlan:
    """The sessions of a config's sites, what was skipped, and when each site was listed.

    ``sites``: site -> ``listed_at`` (when the sessions given for it were listed),
    ``origin`` (``listed`` now, or ``saved``: an earlier listing, used because the server
    could not be reached, with the ``cause``), ``sessions`` and ``skipped`` (counts).
    ``skipped``: what the sources found and left out, and why (``status.csv``'s ``skipped``
    rows).
    """

    sites_digest: str
    sessions: tuple[PlannedSession, ...]
    skipped: tuple[Skipped, ...] = ()
    sites: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    created: str = ""

    @cached_property
    def digest(self) -> str:
        """16 hex digits: changes when any session's ids, scans or status inputs, or what was
        skipped, change (never with the listing's time)."""
        return plan_digest(self.sessions, self.skipped)

    @cached_property
    def by_key(self) -> dict[str, PlannedSession]:
        return {p.key: p for p in self.sessions}

    def site_part(self, site: str) -> tuple[list[PlannedSession], list[Skipped]] | None:
        """The sessions and skipped entries of one site; None when the site was never listed."""
        if site not in self.sites:
            return None
        return ([p for p in self.sessions if p.session.site == site],
                [s for s in self.skipped if s.site == site])

    def describe(self) -> str:
        """One line per site: sessions, skipped, when listed (and why not now)."""
        lines = []
        for name, info in self.sites.items():
            line = (f"site {name}: {info.get('sessions', 0)} sessions, {info.get('skipped', 0)} "
                    f"skipped, listed {info.get('listed_at', '?')}")
            if info.get("origin") == "saved":
                line += f" (saved listing: the server could not be reached: {info.get('cause', '')})"
            lines.append(line)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "sites_digest": self.sites_digest,
                "created": self.created, "vhi_version": vhi.__version__, "digest": self.digest,
                "sites": {k: dict(v) for k, v in self.sites.items()},
                "skipped": [s.to_dict() for s in self.skipped],
                "sessions": [p.to_dict() for p in self.sessions]}

    @classmethod
    def from_dict(cls, data: Any, where: object) -> CohortPlan:
        if not isinstance(data, Mapping) or data.get("format") != PLAN_FORMAT:
            raise ConfigError(where, f"not a cohort plan (no \"format\": \"{PLAN_FORMAT}\"); "
                                     "`vhi plan --config CONFIG --refresh` writes one")
        version = data.get("version")
        if not isinstance(version, int) or version > PLAN_VERSION or version < 1:
            raise ConfigError(where, f"cohort plan version {version!r}, this vhi "
                                     f"({vhi.__version__}) reads version {PLAN_VERSION}: use the "
                                     "vhi that wrote it, or `vhi plan --refresh` to list again")
        try:
            return cls(sites_digest=str(data["sites_digest"]),
                       sessions=tuple(PlannedSession.from_dict(r) for r in data["sessions"]),
                       skipped=tuple(Skipped.from_dict(s) for s in data.get("skipped") or ()),
                       sites={str(k): dict(v) for k, v in dict(data.get("sites") or {}).items()},
                       created=str(data.get("created") or ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(where, f"cannot read the cohort plan ({type(exc).__name__}: {exc})") from None


def save_plan(plan: CohortPlan, path: str | os.PathLike[str]) -> Path:
    """Write the plan file (atomically), compact: json's C encoder writes 10,000 sessions in
    a fraction of the time an indented file takes (``python -m json.tool`` shows it)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(plan.to_dict(), separators=(",", ":")) + "\n")
    return Path(path)


def load_plan(path: str | os.PathLike[str], settings: Settings | None = None) -> CohortPlan:
    """Read a plan file; with ``settings``, refuse one made for other sites (another config's)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), f"cannot read the cohort plan ({exc})") from None
    plan = CohortPlan.from_dict(data, path)
    if settings is not None and plan.sites_digest != settings.sites_digest:
        raise ConfigError(str(path), f"the plan of other sites (sites digest {plan.sites_digest}, "
                                     f"this config's is {settings.sites_digest}): another config's "
                                     "plan is never read; `vhi plan --config CONFIG` lists this one's")
    return plan


def saved_plan_path(settings: Settings) -> Path:
    """Where the listing of ``settings``' sites is saved: one file per set of sites."""
    return Path(settings.work_dir, STATE_DIR, PLANS_DIR, f"{settings.sites_digest}.json")


def saved_plan(settings: Settings) -> CohortPlan | None:
    """The saved listing of this config's sites; None when there is none (or it cannot be
    read, which is said)."""
    path = saved_plan_path(settings)
    if not path.is_file():
        return None
    try:
        return load_plan(path, settings)
    except ConfigError as exc:
        log.warning("%s: listed again", exc)
        return None


def make_plan(settings: Settings, saved: CohortPlan | None = None, *,
              empty_sites_ok: bool = False) -> CohortPlan:
    """List every site now. A site whose server cannot be reached stops the listing
    (:class:`UnreachableError` naming the site, the cause and what can be done), unless the
    config says ``unreachable_sites: saved`` and ``saved`` has a listing of it: then its
    sessions are those, with a warning. ``empty_sites_ok``: see :func:`list_site`."""
    layout = Layout.from_settings(settings)
    record = cleaning_record(settings, layout)
    sessions: list[PlannedSession] = []
    skipped: list[Skipped] = []
    sites: dict[str, dict[str, Any]] = {}
    for site in settings.sites:
        listed_at = _now()
        try:
            found, lost = list_site(site, layout, record, empty_sites_ok=empty_sites_ok)
            info: dict[str, Any] = {"listed_at": listed_at, "origin": "listed"}
        except UnreachableError as exc:
            found, lost, info = _saved_site(settings, site.name, saved, exc)
        sites[site.name] = {**info, "sessions": len(found), "skipped": len(lost)}
        sessions += found
        skipped += lost
    sessions.sort(key=lambda p: p.key)
    _log_counts(sessions, skipped)
    return CohortPlan(settings.sites_digest, tuple(sessions), tuple(skipped), sites, _now())


def _saved_site(settings: Settings, site: str, saved: CohortPlan | None,
                exc: UnreachableError) -> tuple[list[PlannedSession], list[Skipped], dict[str, Any]]:
    """An unreachable site's part of the saved listing, where the config allows it."""
    part = saved.site_part(site) if saved is not None else None
    if saved is None or part is None:
        raise UnreachableError(site, f"{exc.cause}; no listing of this site is saved "
                                     f"({saved_plan_path(settings)}), so it cannot be planned "
                                     "without its server") from None
    when = saved.sites[site].get("listed_at", "?")
    if settings.unreachable_sites != "saved":
        raise UnreachableError(site, f"{exc.cause}; to plan it from its listing saved at {when}, "
                                     "set unreachable_sites: saved in the config (snakemake: "
                                     "--config unreachable_sites=saved)") from None
    log.warning("site %s: server cannot be reached (%s): planned from its listing saved at %s "
                "(unreachable_sites: saved); new sessions and cleaned saves there are not seen",
                site, exc.cause, when)
    return part[0], part[1], {"listed_at": when, "origin": "saved", "cause": exc.cause}


def obtain_plan(settings: Settings, *, refresh: bool, empty_sites_ok: bool = False) -> CohortPlan:
    """The plan of ``settings``' sites: the saved listing, unless ``refresh`` or none is
    saved; then every site is listed (:func:`make_plan`) and the listing saved."""
    saved = saved_plan(settings)
    if saved is not None and not refresh:
        log.info("cohort plan: the listing saved at %s (%s; --refresh lists again)", saved.created,
                 saved_plan_path(settings))
        return saved
    plan = make_plan(settings, saved, empty_sites_ok=empty_sites_ok)
    save_plan(plan, saved_plan_path(settings))
    return plan


def run_plan_path(work: str | os.PathLike[str], plan: CohortPlan) -> Path:
    """The file a run's plan is kept in while it runs: named by the plan's digest, never
    changed, so a run's jobs read the plan their DAG was built from whatever another
    invocation lists meanwhile."""
    return Path(work, STATE_DIR, f"plan-{plan.digest}.json")


def plan_digest(plan: Sequence[PlannedSession], skipped: Sequence[Skipped] = ()) -> str:
    """A short hash of the plan: changes when any session's ids, scans or status inputs, or
    what the sources skipped, do."""
    text = json.dumps([[p.to_dict() for p in plan], [s.to_dict() for s in skipped]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def wildcard_constraints(settings: Settings) -> dict[str, str]:
    """Constraints for the {site}, {subject}, {session} wildcards, from the validated config.

    Sites are few and listed; subjects and sessions use the id pattern the sheet schema
    enforces (an alternation of thousands of ids would slow every match of the DAG).
    """
    sites = sorted(s.name for s in settings.sites)
    return {"site": "|".join(sites) or ID_PATTERN, "subject": ID_PATTERN, "session": ID_PATTERN}


# --------------------------------------------------------------------------- the workflow's plan
class WorkflowPlan:
    """The plan of one Snakemake invocation (workflow/rules/common.smk).

    Made on first use, when Snakemake builds the DAG (a run, a dry run): never when the
    Snakefile is only parsed (``--unlock``, ``--lint``), so those contact no server. The
    main process lists every site (``plan: list``) or reads the saved listing (``plan:
    saved``); a run that executes is refused first if another run holds the work folder.
    A job process (a cluster job reads the Snakefile again) reads the plan of the run that
    holds the work folder, named by its run marker and never changed while it runs.
    """

    def __init__(self, settings: Settings, *, main_process: bool, executing: Callable[[], bool],
                 config_files: Sequence[str] = ()) -> None:
        self.settings = settings
        self.work = settings.work_dir
        self.main_process = main_process
        self.executing = executing
        self.config_files = [str(Path(f).absolute()) for f in config_files]
        self.marker: RunMarker | None = None

    @cached_property
    def plan(self) -> CohortPlan:
        if not self.main_process:
            return self._run_plan()
        if self.executing():
            refuse_if_held(self.work)
        return obtain_plan(self.settings, refresh=self.settings.plan == "list")

    @cached_property
    def sessions(self) -> dict[str, PlannedSession]:
        return self.plan.by_key

    def _run_plan(self) -> CohortPlan:
        marker = read_marker(self.work)
        if marker is None:
            raise ConfigError(marker_path(self.work), "no run holds this work folder, so this job "
                                                      "cannot know its run's plan (a job process reads it "
                                                      "from the run marker its run wrote when it started)")
        return load_plan(marker_path(self.work).with_name(marker.plan))

    def start(self) -> None:
        """The run starts (``onstart``): take the work folder (or stop, naming the run that
        holds it) and keep the plan its jobs read; older runs' plan files are removed."""
        path = run_plan_path(self.work, self.plan)
        marker = RunMarker.this_process(self.config_files, path.name)
        claim(self.work, marker)
        self.marker = marker
        if not path.is_file():
            save_plan(self.plan, path)
        for old in path.parent.glob("plan-*.json"):
            if old != path:
                old.unlink(missing_ok=True)
        path.with_name("latest").unlink(missing_ok=True)  # the run-plan pointer of earlier versions

    def finish(self) -> None:
        """The run ends (``onsuccess``, ``onerror``): give the work folder back."""
        if self.marker is not None:
            release(self.work, self.marker)
            self.marker = None
