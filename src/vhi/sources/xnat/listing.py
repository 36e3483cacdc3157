"""The MR sessions of an XNAT project and their scans: the plan of sessions a site gives.

Every MR session whose subject and session labels are valid IDs is listed with its scan
selection (:mod:`vhi.sources.select`: picked and rejected, and why); its timepoint
comes from ``timepoint_pattern`` on the session label, else the session date.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vhi.cohort.ids import Session, check_id
from vhi.errors import ConfigError
from vhi.sources import Skipped
from vhi.sources.select import (
    RoleRule,
    ScanRow,
    Selection,
    format_report,
    select_scans,
    timepoint,
)
from vhi.sources.xnat.client import XnatClient, XnatError
from vhi.sources.xnat.roi import collections_in
from vhi.sources.xnat.uris import parse_scan_uri, scan_uri

log = logging.getLogger(__name__)

SESSION_XSI = "xnat:mrSessionData"


@dataclass(frozen=True)
class ListedSession:
    """What the listing knows of one session (kept for find_cleaned in the same process)."""

    session: Session
    experiment: str
    subject: str
    date: str
    selection: Selection
    stir_uid: str = ""
    #: the session's ROI collections as the experiment's JSON gave them (None: not given)
    collections: list[dict[str, Any]] | None = None

    def report(self) -> dict[str, Any]:
        return {"session": self.session.key, "experiment": self.experiment,
                "date": self.date, "listed": bool(self.session.scans.get("t1w")),
                **self.selection.as_dict()}




def plan_sessions(client: XnatClient, *, site: str, project: str, rules: Mapping[str, RoleRule],
                  timepoint_re: re.Pattern[str] | None) -> tuple[list[ListedSession], list[Skipped]]:
    """Every MR session of the project with its scan selection (picked and rejected, why);
    and the sessions found but skipped, with why."""
    where = f"site {site} (XNAT project {project})"
    rows = client.get_rows(where, "listing the MR sessions", f"/data/projects/{project}/experiments",
                           {"xsiType": SESSION_XSI, "columns": "ID,label,subject_label,date,xsiType"})
    listed, skipped = [], []
    for row in sorted(rows, key=lambda r: (str(r.get("subject_label", "")), str(r.get("label", "")))):
        exp, label = str(row.get("ID", "")), str(row.get("label", ""))
        subject = str(row.get("subject_label", ""))
        if row.get("xsiType") not in (None, "", SESSION_XSI):
            continue
        why = []
        for name, text in (("subject", subject), ("session", label)):
            try:
                check_id(text, f"{name} label")
            except ConfigError as exc:
                why.append(str(exc))
        if why:
            skipped.append(Skipped(site, f"experiment {exp}", "; ".join(why), subject=subject,
                                   session=label))
            log.warning("%s: skipping session %s/%s: %s", where, subject, label, "; ".join(why))
            continue
        key = f"{site}/{subject}/{label}"
        doc = client.call(f"session {key}", f"reading experiment {exp}", lambda c, e=exp: c.get_json(
            f"/data/experiments/{e}", query={"format": "json"}))
        scans = scans_in(doc)
        if scans is None:  # a document without its scans: the listing has what selection needs
            scans = [ScanRow.from_listing(r) for r in client.get_rows(
                f"session {key}", "listing its scans", f"/data/experiments/{exp}/scans")]
        selection = select_scans(scans, rules)
        picked = selection.picked
        uris = {role: scan_uri(client.server, exp, scan.id) for role, scan in picked.items()}
        date = str(row.get("date") or "")
        session = Session(site, subject, label, timepoint(timepoint_re, label, date), uris)
        item = ListedSession(session, exp, subject, date, selection,
                             stir_uid=picked["stir"].uid if "stir" in picked else "",
                             collections=collections_in(doc))
        listed.append(item)
        log.info("%s", format_report(key, selection))
    return listed, skipped


def scans_in(doc: Mapping[str, Any]) -> list[ScanRow] | None:
    """The scans of an experiment's single-object JSON (``scans/scan`` children, whose
    ``data_fields`` carry ``UID`` and ``frames``, §1.4); None when it has no scan child."""
    items = [it for it in doc.get("items", []) if not it.get("meta", {}).get("isHistory")]
    children = [c for c in (items[0].get("children", []) if items else [])
                if c.get("field") == "scans/scan"]
    if not children:
        return None
    return [ScanRow.from_listing({"xsiType": scan.get("meta", {}).get("xsi:type", ""),
                                  **scan.get("data_fields", {})})
            for child in children for scan in child.get("items", [])
            if not scan.get("meta", {}).get("isHistory")]


def scan_row(client: XnatClient, session: Session, exp: str, scan_id: str,
             name: str = "") -> ScanRow:
    """One scan from its own JSON (``…/scans/{S}?format=json``: with UID and frames)."""
    from xnat.exceptions import XNATResponseError

    what = f"session {session.key}"

    def get(conn: Any) -> dict[str, Any] | None:
        try:
            return conn.get_json(f"/data/experiments/{exp}/scans/{scan_id}", query={"format": "json"})
        except XNATResponseError as exc:
            if int(getattr(exc, "status_code", 0) or 0) == 404:
                return None
            raise

    doc = client.call(what, f"reading scan {scan_id}", get)
    items = [it for it in (doc or {}).get("items", []) if not it.get("meta", {}).get("isHistory")]
    if not items:
        raise XnatError(what, f"{name + ' ' if name else ''}scan {scan_id} is no longer in "
                              f"experiment {exp}")
    return ScanRow.from_listing({"xsiType": items[0].get("meta", {}).get("xsi:type", ""),
                                 **items[0].get("data_fields", {})})




def stir_uid(client: XnatClient, session: Session, listed: ListedSession | None) -> tuple[str, str]:
    """(experiment, Series Instance UID) of the session's STIR, from ``listed`` when it is current."""
    exp, scan_id = parse_scan_uri(client.server, session, "stir")
    if listed is not None and listed.experiment == exp and listed.stir_uid:
        return exp, listed.stir_uid
    return exp, scan_row(client, session, exp, scan_id, "STIR").uid
