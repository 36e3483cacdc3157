"""Where things are on a DICOMweb service: the URIs of a session's series and instances."""

from __future__ import annotations

import re

from vhi.cohort.ids import ROLE_NAMES, Session
from vhi.sources.dicomweb.client import DicomwebError

_URI_RE = re.compile(r"/studies/(?P<study>[0-9.]+)/series/(?P<series>[0-9.]+)$")


def series_uri(root: str, study_uid: str, series_uid: str) -> str:
    return f"{root}/studies/{study_uid}/series/{series_uid}"


def instance_uri(root: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{series_uri(root, study_uid, series_uid)}/instances/{sop_uid}"


def parse_series_uri(root: str, session: Session, role: str) -> tuple[str, str]:
    """(study UID, series UID) of the session's ``role`` series, which must be under ``root``."""
    uri = session.scans.get(role)
    if not uri:
        raise DicomwebError(f"session {session.key}", f"no {ROLE_NAMES.get(role, role)} series "
                                                      "matched the site's selection rules "
                                                      "(`vhi dicomweb-plan` says why)")
    match = _URI_RE.search(uri)
    if not match or not uri.startswith(root + "/"):
        raise DicomwebError(f"session {session.key}", f"{uri} is not a series of {root}")
    return match["study"], match["series"]
