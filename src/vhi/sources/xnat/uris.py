"""Where things are on an XNAT server: the URIs a session's scans and ROI collections get."""

from __future__ import annotations

import re

from vhi.cohort.ids import ROLE_NAMES, Session
from vhi.sources.xnat.client import XnatError

_URI_RE = re.compile(r"/data/experiments/(?P<exp>[^/]+)/scans/(?P<scan>[^/?#]+)$")


def scan_uri(server: str, experiment: str, scan_id: str) -> str:
    return f"{server}/data/experiments/{experiment}/scans/{scan_id}"


def collection_uri(server: str, project: str, ident: str) -> str:
    return f"{server}/xapi/roi/projects/{project}/collections/{ident}"


def parse_scan_uri(server: str, session: Session, role: str) -> tuple[str, str]:
    """(experiment, scan ID) of the session's ``role`` scan, which must be on ``server``."""
    uri = session.scans.get(role)
    if not uri:
        raise XnatError(f"session {session.key}", f"no {ROLE_NAMES.get(role, role)} scan "
                                                  "matched the site's selection rules "
                                                  "(`vhi xnat-plan` says why)")
    match = _URI_RE.search(uri)
    if not match or not uri.startswith(server + "/"):
        raise XnatError(f"session {session.key}", f"{uri} is not a scan of {server}")
    return match["exp"], match["scan"]
