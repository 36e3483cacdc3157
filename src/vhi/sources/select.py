"""Which scans of a session are its STIR and its T1W: per-site rules, pure functions.

Shared by the sources that list sessions from a server: XNAT (its scans) and DICOMweb
(a study's series, as :class:`ScanRow`).

A site's ``selection`` config names, per role (``stir``, ``t1w``), regular expressions
that a scan's ``type`` or ``series_description`` must match (``match``) or must not
match (``exclude``), the scan qualities accepted (``quality``, XNAT's
usable/questionable/unusable) and how to choose among several candidates
(``choose``). Every scan gets a decision per role with the reason, so a dry run can
explain what was picked and what was rejected and why (:func:`format_report`).

Defaults (:data:`DEFAULT_RULES`) recognise the usual names: ``STIR``/``TIRM`` for the
STIR; ``T1``/``T1W`` (not T2, not a STIR) for the T1W; scouts and localisers never.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from vhi.cohort.ids import ROLE_NAMES, Session
from vhi.errors import ConfigError

log = logging.getLogger(__name__)

ROLES = ("stir", "t1w")
FIELDS = ("type", "series_description")
CHOICES = ("last", "first", "most_frames", "unique")

_NEVER = r"scout|locali[sz]er|\bloc\b|survey|calibration"
DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "stir": {"match": [r"stir", r"tirm"], "exclude": [_NEVER]},
    "t1w": {"match": [r"(?<![a-z0-9])t1(?![0-9])"], "exclude": [_NEVER, r"stir|tirm", r"t2"]},
}


@dataclass(frozen=True)
class ScanRow:
    """One scan of a session as XNAT lists it (``GET .../experiments/{E}/scans``)."""

    id: str
    type: str = ""
    series_description: str = ""
    quality: str = ""
    frames: int = 0
    uid: str = ""
    xsi_type: str = ""

    @classmethod
    def from_listing(cls, row: Mapping[str, Any]) -> ScanRow:
        try:
            frames = int(str(row.get("frames") or 0))
        except ValueError:
            frames = 0
        return cls(id=str(row.get("ID", "")), type=str(row.get("type") or ""),
                   series_description=str(row.get("series_description") or ""),
                   quality=str(row.get("quality") or ""), frames=frames,
                   uid=str(row.get("UID") or row.get("uid") or ""),
                   xsi_type=str(row.get("xsiType") or ""))

    def label(self) -> str:
        desc = self.series_description or self.type
        return f"scan {self.id} '{desc}'"


@dataclass(frozen=True)
class RoleRule:
    """How one role is recognised (compiled from config)."""

    role: str
    match: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...] = ()
    fields: tuple[str, ...] = FIELDS
    quality: tuple[str, ...] = ("usable",)
    choose: str = "last"

    @classmethod
    def from_config(cls, role: str, cfg: Mapping[str, Any] | None) -> RoleRule:
        merged = {**DEFAULT_RULES[role], **dict(cfg or {})}
        where = f"selection.{role}"

        def compile_all(key: str) -> tuple[re.Pattern[str], ...]:
            patterns = merged.get(key) or []
            if isinstance(patterns, str):
                patterns = [patterns]
            out = []
            for pattern in patterns:
                try:
                    out.append(re.compile(pattern, re.IGNORECASE))
                except re.error as exc:
                    raise ConfigError(f"{where}.{key}", f"bad regular expression {pattern!r} "
                                                        f"({exc})") from None
            return tuple(out)

        match = compile_all("match")
        if not match:
            raise ConfigError(f"{where}.match", "at least one pattern is needed")
        fields = tuple(merged.get("fields") or FIELDS)
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise ConfigError(f"{where}.fields", f"unknown field {unknown[0]!r} "
                                                 f"(known: {', '.join(FIELDS)})")
        choose = str(merged.get("choose", "last"))
        if choose not in CHOICES:
            raise ConfigError(f"{where}.choose", f"{choose!r} is not one of {', '.join(CHOICES)}")
        quality = tuple(str(q).lower() for q in (merged.get("quality") or ("usable",)))
        return cls(role, match, compile_all("exclude"), fields, quality, choose)


def compile_rules(selection: Mapping[str, Any] | None) -> dict[str, RoleRule]:
    """The rules of every role from a site's ``selection`` config (defaults filled in)."""
    selection = dict(selection or {})
    unknown = sorted(set(selection) - set(ROLES))
    if unknown:
        raise ConfigError(f"selection.{unknown[0]}", f"unknown role (known: {', '.join(ROLES)})")
    return {role: RoleRule.from_config(role, selection.get(role)) for role in ROLES}


@dataclass(frozen=True)
class Decision:
    """Why a scan was or was not taken for a role."""

    scan: ScanRow
    role: str
    picked: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"scan": self.scan.id, "type": self.scan.type,
                "series_description": self.scan.series_description,
                "quality": self.scan.quality, "frames": self.scan.frames, "role": self.role,
                "picked": self.picked, "reason": self.reason}


@dataclass(frozen=True)
class Selection:
    """The scans picked for each role of one session, and every decision on the way."""

    picked: Mapping[str, ScanRow]
    decisions: Sequence[Decision]
    problems: Mapping[str, str] = field(default_factory=dict)  # role -> why nothing was picked

    def as_dict(self) -> dict[str, Any]:
        return {"picked": {role: scan.id for role, scan in self.picked.items()},
                "problems": dict(self.problems),
                "decisions": [d.as_dict() for d in self.decisions]}


def _matching(rule: RoleRule, scan: ScanRow, patterns: Iterable[re.Pattern[str]]) -> str | None:
    for name in rule.fields:
        value = getattr(scan, name)
        for pattern in patterns:
            if value and pattern.search(value):
                return f"{name} '{value}' matches /{pattern.pattern}/"
    return None


def _scan_order(scan: ScanRow) -> tuple[int, float, str]:
    """Acquisition order: numeric scan ids first, by value (XNAT numbers scans as acquired)."""
    try:
        return (0, float(scan.id), scan.id)
    except ValueError:
        return (1, 0.0, scan.id)


def _choose(rule: RoleRule, candidates: list[ScanRow]) -> tuple[ScanRow | None, str]:
    ordered = sorted(candidates, key=_scan_order)
    if len(ordered) == 1:
        return ordered[0], "the only candidate"
    if rule.choose == "unique":
        return None, (f"{len(ordered)} candidates ({', '.join(s.id for s in ordered)}) and the rule "
                      "is 'unique'")
    if rule.choose == "first":
        return ordered[0], f"first of {len(ordered)} candidates (rule 'first')"
    if rule.choose == "most_frames":
        best = max(ordered, key=lambda s: (s.frames, _scan_order(s)))
        return best, f"most frames ({best.frames}) of {len(ordered)} candidates (rule 'most_frames')"
    return ordered[-1], f"last of {len(ordered)} candidates (rule 'last': a repeat replaces an earlier try)"


def select_scans(scans: Sequence[ScanRow], rules: Mapping[str, RoleRule]) -> Selection:
    """Pick at most one scan per role; every scan gets a decision with its reason.

    A scan is a candidate for a role when one of the role's ``match`` patterns is found
    (case-insensitively) in one of its ``fields``, no ``exclude`` pattern is, and its
    quality is accepted (an empty quality counts as ``usable``). Among candidates the
    role's ``choose`` rule decides. One scan is never taken for two roles: the STIR is
    chosen first.
    """
    picked: dict[str, ScanRow] = {}
    decisions: list[Decision] = []
    problems: dict[str, str] = {}
    for role in ROLES:
        rule = rules[role]
        candidates: list[ScanRow] = []
        rejected: list[Decision] = []
        for scan in scans:
            taken_by = next((r for r, s in picked.items() if s.id == scan.id), None)
            hit = _matching(rule, scan, rule.match)
            if hit is None:
                rejected.append(Decision(scan, role, False, f"no {role} pattern matches "
                                         f"{' or '.join(rule.fields)}"))
                continue
            excluded = _matching(rule, scan, rule.exclude)
            if excluded:
                rejected.append(Decision(scan, role, False, f"excluded: {excluded}"))
                continue
            quality = (scan.quality or "usable").lower()
            if quality not in rule.quality:
                rejected.append(Decision(scan, role, False, f"quality '{scan.quality}' not accepted "
                                         f"({', '.join(rule.quality)})"))
                continue
            if taken_by is not None:
                rejected.append(Decision(scan, role, False, f"already picked as the {taken_by}"))
                continue
            candidates.append(scan)
        chosen, why = _choose(rule, candidates) if candidates else (None, "")
        for scan in candidates:
            if scan is chosen:
                decisions.append(Decision(scan, role, True, f"picked: {why}"))
            elif chosen is None:
                decisions.append(Decision(scan, role, False, f"ambiguous: {why}"))
            else:
                decisions.append(Decision(scan, role, False, f"candidate, not picked: scan "
                                                            f"{chosen.id} is the {why}"))
        decisions.extend(rejected)
        if chosen is not None:
            picked[role] = chosen
        else:
            problems[role] = why or ("no scan matches the rules" if not candidates else why)
    order = {s.id: n for n, s in enumerate(scans)}
    decisions.sort(key=lambda d: (ROLES.index(d.role), order.get(d.scan.id, 0)))
    return Selection(picked, decisions, problems)


def format_report(session: str, selection: Selection) -> str:
    """A few human-readable lines: what was picked for each role and why the rest was not."""
    lines = [f"{session}:"]
    for role in ROLES:
        scan = selection.picked.get(role)
        head = f"  {role.upper()}: " + (scan.label() if scan else
                                         f"NONE ({selection.problems.get(role, 'no candidate')})")
        lines.append(head)
        for d in selection.decisions:
            if d.role == role:
                mark = "+" if d.picked else "-"
                lines.append(f"    {mark} {d.scan.label()} [{d.scan.quality or '?'}]: {d.reason}")
    return "\n".join(lines)


def timepoint(pattern: re.Pattern[str] | None, label: str, date: str) -> str:
    """Group 1 (else the whole match) of ``pattern`` on the session label; else the date."""
    if pattern is not None:
        match = pattern.search(label)
        if match:
            return match.group(1) if match.groups() else match.group(0)
    return date or "unknown"


class Listed(Protocol):
    """A session as a server's listing planned it, with its scan selection."""

    @property
    def session(self) -> Session: ...

    @property
    def selection(self) -> Selection: ...


def sessions_of(plan: Iterable[Listed]) -> list[Session]:
    """Every session of the plan. One without a T1W stays and fails at its pull, so
    status.csv lists it with the reason; one without a STIR gets the disease region only."""
    sessions = []
    for item in plan:
        for role, consequence in (("t1w", "it will fail at the pull"),
                                  ("stir", "disease region only, no proposal")):
            if role not in item.selection.picked:
                log.warning("session %s: no %s (%s): %s", item.session.key, ROLE_NAMES[role],
                            item.selection.problems.get(role, "no candidate"), consequence)
        sessions.append(item.session)
    return sessions
