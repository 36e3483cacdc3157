"""Which requests the station's DICOMweb proxy passes on: the DICOMweb routes only, by name.

The proxy never forwards a path as the browser wrote it. :func:`parse` takes the raw
request path (still percent-encoded), refuses anything that is not a plain DICOMweb
route — dot segments, encoded separators or dots, backslashes, empty segments,
parameters — and returns a :class:`Route`: what kind of request it is, the UIDs in it,
and the upstream path rebuilt from the validated parts. Everything else is refused
(403) by the caller.

Allowed, under ``/dicom-web/``:

* QIDO-RS (GET): ``studies``, ``series``, ``instances``, ``studies/{study}/series``,
  ``studies/{study}/instances``, ``studies/{study}/series/{series}/instances``;
* WADO-RS (GET): a study, series or instance, its ``metadata``, ``rendered`` or
  ``thumbnail``; ``frames/{list}`` (and their ``rendered``) of an instance; and the
  service's bulk-data URIs of an instance (``bulk/{tag}/...``, as Orthanc writes them);
* STOW-RS (POST): ``studies`` or ``studies/{study}`` with a ``multipart/related`` body
  (a browser cannot send that type cross-site without a CORS preflight, which the
  station never answers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Where the station serves DICOMweb (OHIF's qido/wado root).
ROOT = "/dicom-web"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_FRAMES = re.compile(r"^[0-9]+(,[0-9]+)*$")
_BULK_PART = re.compile(r"^([0-9A-Fa-f]{8}|[0-9]{1,6})$")
#: A segment may hold only these characters (UIDs, frame lists, keywords, tags).
_SEGMENT = re.compile(r"^[A-Za-z0-9.,]+$")
_RESOURCE_TAILS = {"metadata", "rendered", "thumbnail"}


class Refused(Exception):  # noqa: N818 - a refusal, not an error of the station
    """A request the proxy does not pass on; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Route:
    """One allowed DICOMweb request."""

    kind: str  # "qido", "wado" or "stow"
    path: str  # the upstream path below the DICOMweb root, rebuilt from validated parts
    study_uid: str = ""  # the study in the path ("" for a search or STOW across studies)
    series_uid: str = ""
    sop_uid: str = ""


def _uid(text: str, what: str) -> str:
    if len(text) > 64 or not _UID.match(text):
        raise Refused(403, f"not a DICOM UID as the {what}")
    return text


def parse(method: str, raw_path: str) -> Route:
    """The route of a request to ``/dicom-web/...``; :class:`Refused` for anything else.

    ``raw_path`` is the path as sent (percent-encoded, without the query string).
    """
    if not (raw_path == ROOT or raw_path.startswith(ROOT + "/")):
        raise Refused(404, "not a DICOMweb path")
    tail = raw_path[len(ROOT) + 1:]
    parts = tail.split("/") if tail else []
    if parts and parts[-1] == "":  # one trailing slash is tolerated (some clients add it)
        parts = parts[:-1]
    if any(not _SEGMENT.match(p) or p in (".", "..") or p.startswith(".") for p in parts):
        raise Refused(403, "only plain DICOMweb paths (no dot segments, encoded characters "
                           "or empty segments)")
    if method in ("GET", "HEAD"):
        return _read(parts)
    if method == "POST":
        if parts == ["studies"]:
            return Route("stow", "studies")
        if len(parts) == 2 and parts[0] == "studies":
            study = _uid(parts[1], "study")
            return Route("stow", f"studies/{study}", study)
        raise Refused(403, "STOW-RS only to /studies or /studies/{study}")
    raise Refused(405, f"method {method} is not allowed")


def _read(parts: list[str]) -> Route:
    """QIDO-RS and WADO-RS routes (GET/HEAD)."""
    if parts in (["studies"], ["series"], ["instances"]):
        return Route("qido", parts[0])
    if len(parts) < 2 or parts[0] != "studies":
        raise Refused(403, "not a DICOMweb route")
    study = _uid(parts[1], "study")
    rest = parts[2:]
    path = ["studies", study]
    route = {"study_uid": study}
    if rest in (["series"], ["instances"]):
        return Route("qido", "/".join(path + rest), study)
    if rest and rest[0] == "series" and len(rest) >= 2:
        route["series_uid"] = _uid(rest[1], "series")
        path += ["series", route["series_uid"]]
        rest = rest[2:]
        if rest == ["instances"]:
            return Route("qido", "/".join(path + rest), **route)
        if rest and rest[0] == "instances" and len(rest) >= 2:
            route["sop_uid"] = _uid(rest[1], "instance")
            path += ["instances", route["sop_uid"]]
            rest = rest[2:]
            if rest and rest[0] == "frames" and len(rest) in (2, 3):
                if not _FRAMES.match(rest[1]) or (len(rest) == 3 and rest[2] != "rendered"):
                    raise Refused(403, "not a frame list")
                return Route("wado", "/".join(path + rest), **route)
            if rest and rest[0] == "bulk" and 2 <= len(rest) <= 9:
                if not all(_BULK_PART.match(p) for p in rest[1:]):
                    raise Refused(403, "not a bulk-data URI")
                return Route("wado", "/".join(path + rest), **route)
    if rest == [] or (len(rest) == 1 and rest[0] in _RESOURCE_TAILS):
        return Route("wado", "/".join(path + rest), **route)
    raise Refused(403, "not a DICOMweb route")
