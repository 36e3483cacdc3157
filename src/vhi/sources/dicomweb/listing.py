"""The studies of a DICOMweb service and their series: the plan of sessions a site gives.

Studies are found by QIDO-RS with the site's ``query`` (e.g. ``ModalitiesInStudy: MR``).
Each study is one session: its subject and session ids come from the ``subject_label``
and ``session_label`` templates of study attributes (default ``{PatientID}`` and
``{AccessionNumber}``), its timepoint from ``timepoint_pattern`` on the session id, else
the study date. Its series of the accepted modalities are the candidate scans, picked by
the same per-role rules as XNAT scans (:mod:`vhi.sources.select`): series
description patterns, and among several candidates the last, first, unique or the one with
most instances (``most_frames``).
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vhi.cohort.ids import ID_PATTERN, Session
from vhi.errors import ConfigError
from vhi.sources.dicomweb.client import DicomwebConnection
from vhi.sources.dicomweb.uris import series_uri
from vhi.sources.select import (
    RoleRule,
    ScanRow,
    Selection,
    format_report,
    select_scans,
    timepoint,
)

log = logging.getLogger(__name__)

_ID_RE = re.compile(f"^{ID_PATTERN}$")
#: Study attributes a ``subject_label``/``session_label`` template may use.
STUDY_FIELDS = ("PatientID", "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
                "StudyInstanceUID", "StudyDescription")
SERIES_FIELDS = ("SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality",
                 "NumberOfSeriesRelatedInstances", "SeriesDate", "SeriesTime")


def value(item: Mapping[str, Any], keyword: str) -> str:
    """One attribute of a DICOM JSON object (QIDO result), by keyword, as text ("" if absent)."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    element = item.get(f"{tag:08X}") if tag is not None else None
    values = (element or {}).get("Value") or []
    if not values:
        return ""
    first = values[0]
    if isinstance(first, Mapping):  # a person name
        return str(first.get("Alphabetic", ""))
    return str(first)


def check_template(site: str, key: str, template: str) -> str:
    """A label template may use only :data:`STUDY_FIELDS`."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    unknown = [n for n in names if n not in STUDY_FIELDS]
    if unknown or not names:
        raise ConfigError(f"site {site} source.{key}",
                          f"{template!r}: a template of the study attributes "
                          f"{', '.join('{' + f + '}' for f in STUDY_FIELDS)}")
    return template


@dataclass(frozen=True)
class ListedStudy:
    """What the listing knows of one study (kept for push and collect in the same process)."""

    session: Session
    study_uid: str
    date: str
    selection: Selection
    series: Mapping[str, Mapping[str, str]]  # SeriesInstanceUID -> its QIDO attributes

    def report(self) -> dict[str, Any]:
        return {"session": self.session.key, "study": self.study_uid, "date": self.date,
                "listed": bool(self.session.scans.get("t1w")), **self.selection.as_dict()}


def scan_row(series: Mapping[str, str]) -> ScanRow:
    """A series as a candidate scan: its id is the series number (else its UID)."""
    try:
        frames = int(series.get("NumberOfSeriesRelatedInstances") or 0)
    except ValueError:
        frames = 0
    return ScanRow(id=series.get("SeriesNumber") or series["SeriesInstanceUID"], type="",
                   series_description=series.get("SeriesDescription", ""), quality="",
                   frames=frames, uid=series["SeriesInstanceUID"],
                   xsi_type=series.get("Modality", ""))




#: Results asked for per QIDO-RS request; further pages follow with ``offset``.
PAGE = 500


def search_all(conn: DicomwebConnection, what: str, action: str, search: Callable[..., Any],
               key: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every result of a QIDO-RS search, page by page (``limit``/``offset``), each once.

    Paging stops at a short page or at a page that brings nothing new (a service that
    ignores ``offset`` would otherwise be asked forever).
    """
    found: dict[str, dict[str, Any]] = {}
    offset = 0
    while True:
        rows = conn.call(what, action, lambda c, o=offset: search(c, limit=PAGE, offset=o, **kwargs))
        new = {value(r, key): r for r in rows if value(r, key) not in found}
        found.update(new)
        if len(rows) < PAGE or not new:
            return list(found.values())
        offset += len(rows)


def list_series(conn: DicomwebConnection, what: str, study_uid: str) -> list[dict[str, str]]:
    """Every series of a study with :data:`SERIES_FIELDS` (QIDO-RS)."""
    rows = search_all(conn, what, "listing the series of the study",
                      lambda c, **kw: c.search_for_series(**kw), "SeriesInstanceUID",
                      study_instance_uid=study_uid, fields=list(SERIES_FIELDS))
    return [{k: value(r, k) for k in SERIES_FIELDS} | {"StudyInstanceUID": study_uid} for r in rows]


def plan_studies(conn: DicomwebConnection, *, site: str, query: Mapping[str, str],
                 subject_label: str, session_label: str, modalities: Sequence[str],
                 rules: Mapping[str, RoleRule], timepoint_re: re.Pattern[str] | None) -> list[ListedStudy]:
    """Every study the query finds, with its series selection (picked and rejected, why)."""
    where = f"site {site} (DICOMweb {conn.url})"
    rows = search_all(conn, where, "searching for studies", lambda c, **kw: c.search_for_studies(**kw),
                      "StudyInstanceUID", search_filters=dict(query), fields=list(STUDY_FIELDS))
    studies = [{k: value(r, k) for k in STUDY_FIELDS} for r in rows]
    listed = []
    for study in sorted(studies, key=lambda s: (s["PatientID"], s["StudyDate"], s["StudyInstanceUID"])):
        subject, label = subject_label.format(**study), session_label.format(**study)
        if not (_ID_RE.match(label) and _ID_RE.match(subject)):
            log.warning("%s: skipping study %s: subject %r / session %r must match %s", where,
                        study["StudyInstanceUID"], subject, label, ID_PATTERN)
            continue
        key = f"{site}/{subject}/{label}"
        series = {s["SeriesInstanceUID"]: s for s in list_series(conn, f"session {key}",
                                                                  study["StudyInstanceUID"])}
        candidates = [scan_row(s) for s in series.values()
                      if s["Modality"].upper() in modalities]
        candidates.sort(key=lambda r: (_number(r.id), r.uid))
        selection = select_scans(candidates, rules)
        uris = {role: series_uri(conn.url, study["StudyInstanceUID"], scan.uid)
                for role, scan in selection.picked.items()}
        session = Session(site, subject, label, timepoint(timepoint_re, label, study["StudyDate"]), uris)
        listed.append(ListedStudy(session, study["StudyInstanceUID"], study["StudyDate"], selection,
                                  series))
        log.info("%s", format_report(key, selection))
    return listed


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")

