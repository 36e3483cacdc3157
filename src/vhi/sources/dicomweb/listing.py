"""The studies of a DICOMweb service and their series: the plan of sessions a site gives.

Studies are found by QIDO-RS with the site's ``query`` (e.g. ``ModalitiesInStudy: MR``).
Each study is one session: its subject and session ids come from the ``subject_label``
and ``session_label`` templates of study attributes (default ``{PatientID}`` and
``{AccessionNumber}``), its timepoint from ``timepoint_pattern`` on the session id, else
the study date. A study whose ids are not valid ids is skipped, with the reason
(:class:`vhi.sources.Skipped`: a row of ``status.csv``). Its series of the accepted
modalities are the candidate scans, picked by the same per-role rules as XNAT scans
(:mod:`vhi.sources.select`): series description patterns, and among several candidates
the last, first, unique or the one with most instances (``most_frames``).

Searches (:func:`search_all`) page with ``limit``/``offset`` until a page brings nothing
more, and fail rather than return a short list: when the service says more results can
be requested (``Warning: 299``) but gives none, or lists fewer series than the study's
own count (``NumberOfStudyRelatedSeries``), as a service that caps its answers does
(Orthanc's ``LimitFindResults``). Query values are sent as written but for the characters
a URL must percent-encode (a space, ``^``, non-ASCII...): those go as the wildcard ``?``,
because some services do not decode a query value (Orthanc 1.10 takes ``%20`` and ``%2A``
literally), and the studies found are then checked against the value as written.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vhi.cohort.ids import Session, check_id
from vhi.errors import ConfigError
from vhi.sources import Skipped
from vhi.sources.dicomweb.client import DicomwebConnection, DicomwebError
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

#: Study attributes a ``subject_label``/``session_label`` template may use.
STUDY_FIELDS = ("PatientID", "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
                "StudyInstanceUID", "StudyDescription")
SERIES_FIELDS = ("SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality",
                 "NumberOfSeriesRelatedInstances", "SeriesDate", "SeriesTime")
#: Results asked for per QIDO-RS request; further pages follow with ``offset``.
PAGE = 500
#: Characters a query value keeps as written: letters, digits, the wildcards ``*`` and ``?``,
#: the list separator ``,`` and the rest of what a URL query may hold unencoded.
_AS_WRITTEN = frozenset(string.ascii_letters + string.digits + "-._~*?,:/@!$'();")
_MORE = re.compile(r"\b299\b.*additional results", re.IGNORECASE)


def _tag(keyword: str) -> str | None:
    """A keyword's (or an 8-hex-digit tag's) key in DICOM JSON."""
    from pydicom.datadict import tag_for_keyword

    if re.fullmatch(r"[0-9A-Fa-f]{8}", keyword):
        return keyword.upper()
    tag = tag_for_keyword(keyword)
    return f"{tag:08X}" if tag is not None else None


def values(item: Mapping[str, Any], keyword: str) -> list[str]:
    """Every value of one attribute of a DICOM JSON object (QIDO result), as text."""
    tag = _tag(keyword)
    element = item.get(tag) if tag is not None else None
    out = []
    for v in (element or {}).get("Value") or []:
        out.append(str(v.get("Alphabetic", "")) if isinstance(v, Mapping) else str(v))  # a person name
    return out


def value(item: Mapping[str, Any], keyword: str) -> str:
    """One attribute of a DICOM JSON object (QIDO result), by keyword, as text ("" if absent)."""
    found = values(item, keyword)
    return found[0] if found else ""


def query_value(text: str) -> str:
    """A search filter's value as sent: what a URL must percent-encode becomes ``?``."""
    return "".join(c if c in _AS_WRITTEN else "?" for c in text)


def matches(pattern: str, found: Sequence[str]) -> bool:
    """Whether one of an attribute's values matches a filter as written: DICOM wildcard
    matching (``*`` any run, ``?`` one character), a comma-separated list matching any of
    its items, letter case ignored (as many services match)."""
    alternatives = [re.escape(item).replace(r"\*", ".*").replace(r"\?", ".")
                    for item in pattern.split(",")]
    regex = re.compile("|".join(f"(?:{a})" for a in alternatives), re.IGNORECASE | re.DOTALL)
    return any(regex.fullmatch(v) for v in found)


def _page(conn: DicomwebConnection, what: str, action: str, path: str,
          params: Sequence[tuple[str, str]]) -> tuple[list[Any], bool]:
    """One QIDO-RS answer: its results and whether it says more can be requested."""
    query = "&".join(f"{k}={v}" for k, v in params)
    answer = conn.http_session().get(f"{conn.url}/{path}?{query}", timeout=conn.timeout_s,
                                     headers={"Accept": "application/dicom+json, application/json"})
    answer.raise_for_status()
    warning = answer.headers.get("Warning", "")
    if warning and not _MORE.search(warning):
        log.warning("%s: %s: the service warns: %s", what, action, warning)
    try:
        rows = answer.json() if answer.content else []
    except ValueError:
        raise DicomwebError(what, f"{action}: the answer is not DICOM JSON (Content-Type "
                                  f"{answer.headers.get('Content-Type', '?')})") from None
    rows = [rows] if isinstance(rows, dict) else rows
    if not isinstance(rows, list):
        raise DicomwebError(what, f"{action}: the answer is not a list of DICOM JSON objects")
    return rows, bool(_MORE.search(warning))


def search_all(conn: DicomwebConnection, what: str, action: str, path: str, key: str, *,
               filters: Mapping[str, str] | None = None, fields: Sequence[str] = (),
               expected: int | None = None, counted: str = "",
               until_empty: bool = True) -> list[dict[str, Any]]:
    """Every result of a QIDO-RS search of ``path`` (``studies``, ``studies/{uid}/series``,
    ...), each once (by ``key``), page by page (``limit``/``offset``) until a page brings
    nothing more, or ``expected`` results (a count the service gave, ``counted`` naming it).
    ``until_empty=False``: a page shorter than asked, without Warning 299, ends it too (one
    request less, where a cap is ruled out otherwise).

    Raises DicomwebError when the service says more results can be requested (Warning:
    299) but gives none, or when it lists fewer than ``expected``: a short list is a
    silently short cohort, never an answer. ``filters`` are sent as :func:`query_value`
    makes them and the results checked against them as written (:func:`matches`).
    """
    filters = dict(filters or {})
    sent = {k: query_value(v) for k, v in filters.items()}
    recheck = {k: v for k, v in filters.items() if sent[k] != v}
    base = [*sent.items(), *(("includefield", f) for f in dict.fromkeys([*fields, *filters]))]
    found: dict[str, dict[str, Any]] = {}
    offset, more = 0, False
    while expected is None or len(found) < expected:
        rows, more = conn.call(what, action, lambda c, o=offset: _page(
            conn, what, action, path, [*base, ("limit", str(PAGE)), ("offset", str(o))]))
        new = {k: r for r in rows if (k := value(r, key)) and k not in found}
        found.update(new)
        if not new:  # the end (or a service that ignores offset and repeats itself)
            break
        if not until_empty and len(rows) < PAGE and not more:
            break
        offset += len(rows)
    if more and (expected is None or len(found) < expected):
        raise DicomwebError(what, f"{action}: the service says more results can be requested "
                                  f"(Warning: 299) but gives none after the {len(found)} found "
                                  "(it does not page with offset): the list would be incomplete")
    if expected is not None and len(found) < expected:
        raise DicomwebError(what, f"{action}: the service lists {len(found)} of the {expected} "
                                  f"{counted}: it caps the results of a search (e.g. Orthanc's "
                                  "LimitFindResults); raise that limit on the service")
    rows = list(found.values())
    if recheck:
        kept = [r for r in rows if all(matches(v, values(r, k)) or not values(r, k)
                                       for k, v in recheck.items())]
        if len(kept) < len(rows):
            log.info("%s: %s: %d result(s) matched %s only with ? for the characters a URL "
                     "encodes: left out", what, action, len(rows) - len(kept), recheck)
        rows = kept
    return rows


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



def list_series(conn: DicomwebConnection, what: str, study_uid: str,
                expected: int | None = None) -> list[dict[str, str]]:
    """Every series of a study with :data:`SERIES_FIELDS` (QIDO-RS); ``expected``: the
    study's NumberOfStudyRelatedSeries, when the study search gave it. Without it (the SEGs
    of a planned study) a short page ends the listing: the plan checked the study's series
    against its count, so a cap of the service below them is ruled out."""
    rows = search_all(conn, what, "listing the series of the study", f"studies/{study_uid}/series",
                      "SeriesInstanceUID", fields=SERIES_FIELDS, expected=expected,
                      counted="series of the study (NumberOfStudyRelatedSeries)", until_empty=False)
    return [{k: value(r, k) for k in SERIES_FIELDS} | {"StudyInstanceUID": study_uid} for r in rows]


def _count(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _id_problem(name: str, text: str, template: str) -> str | None:
    """Why ``text`` (made by ``template``) cannot be a subject or session id; None if it can."""
    try:
        check_id(text, name)
    except ConfigError as exc:
        return f"{name} id from {template} is empty" if not text else (
            f"{name} id {text!r} from {template} is {exc.cause}")
    return None


def plan_studies(conn: DicomwebConnection, *, site: str, query: Mapping[str, str],
                 subject_label: str, session_label: str, modalities: Sequence[str],
                 rules: Mapping[str, RoleRule],
                 timepoint_re: re.Pattern[str] | None) -> tuple[list[ListedStudy], list[Skipped]]:
    """Every study the query finds, with its series selection (picked and rejected, why);
    and the studies found but skipped, with why."""
    where = f"site {site} (DICOMweb {conn.url})"
    rows = search_all(conn, where, "searching for studies", "studies", "StudyInstanceUID",
                      filters=query, fields=(*STUDY_FIELDS, "NumberOfStudyRelatedSeries"))
    studies = [{k: value(r, k) for k in (*STUDY_FIELDS, "NumberOfStudyRelatedSeries")} for r in rows]
    listed, skipped = [], []
    for study in sorted(studies, key=lambda s: (s["PatientID"], s["StudyDate"], s["StudyInstanceUID"])):
        uid = study["StudyInstanceUID"]
        subject, label = subject_label.format(**study), session_label.format(**study)
        why = [w for w in (_id_problem("subject", subject, subject_label),
                           _id_problem("session", label, session_label)) if w]
        try:
            tp = timepoint(timepoint_re, label, study["StudyDate"])
            if not why:
                check_id(tp, "timepoint")
        except ConfigError as exc:
            why.append(f"timepoint: {exc}")
        if why:
            skipped.append(Skipped(site, f"study {uid}", "; ".join(why), subject=subject, session=label))
            log.warning("%s: skipping study %s: %s", where, uid, "; ".join(why))
            continue
        key = f"{site}/{subject}/{label}"
        series = {s["SeriesInstanceUID"]: s for s in list_series(
            conn, f"session {key}", uid, _count(study["NumberOfStudyRelatedSeries"]))}
        candidates = [scan_row(s) for s in series.values()
                      if s["Modality"].upper() in modalities]
        candidates.sort(key=lambda r: (_number(r.id), r.uid))
        selection = select_scans(candidates, rules)
        uris = {role: series_uri(conn.url, uid, scan.uid) for role, scan in selection.picked.items()}
        session = Session(site, subject, label, tp, uris)
        listed.append(ListedStudy(session, uid, study["StudyDate"], selection, series))
        log.info("%s", format_report(key, selection))
    return listed, skipped


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")

