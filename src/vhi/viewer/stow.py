"""What a STOW-RS request through the station stores: its DICOM instances, read from the body.

The station reads every instance of a ``multipart/related; type="application/dicom"``
body before passing it on, so it can refuse what a reader may not store (another
study; anything but a segmentation) and record what was saved (its UIDs and the
sha256 of its bytes) whatever the DICOMweb service does with it later.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass

from vhi.viewer.dicomweb_routes import Refused

#: What the station lets a reader store: DICOM Segmentation objects.
STORABLE_MODALITIES = frozenset({"SEG"})
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


@dataclass(frozen=True)
class StowPart:
    """One instance of a STOW-RS body."""

    data: bytes
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    series_description: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _boundary(content_type: str) -> str:
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "multipart/related":
        raise Refused(415, "STOW-RS takes multipart/related bodies only")
    found = _BOUNDARY.search(content_type)
    if not found:
        raise Refused(400, "multipart/related body without a boundary")
    return found.group(1) or found.group(2)


def split_parts(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related body: (headers with lower-case names, content)."""
    delimiter = b"--" + _boundary(content_type).encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise Refused(400, "malformed multipart/related body (no closing boundary)")
    parts = []
    for chunk in chunks[1:-1]:
        head, sep, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise Refused(400, "malformed multipart/related part (no header end)")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, content.removesuffix(b"\r\n")))
    return parts


def read_stow(content_type: str, body: bytes) -> list[StowPart]:
    """Every DICOM instance of a STOW-RS body; :class:`Refused` (400/415) for what is none."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    out = []
    for headers, content in split_parts(content_type, body):
        kind = headers.get("content-type", "application/dicom").split(";", 1)[0].strip().lower()
        if kind != "application/dicom":
            raise Refused(415, f"STOW-RS part of type {kind}: only application/dicom instances")
        try:
            ds = pydicom.dcmread(io.BytesIO(content), stop_before_pixels=True)
        except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
            raise Refused(400, f"a STOW-RS part is not a DICOM instance ({type(exc).__name__})") from None
        out.append(StowPart(content, str(ds.get("StudyInstanceUID", "")),
                            str(ds.get("SeriesInstanceUID", "")), str(ds.get("SOPInstanceUID", "")),
                            str(ds.get("Modality", "")).upper(), str(ds.get("SeriesDescription", ""))))
    if not out:
        raise Refused(400, "STOW-RS body without instances")
    return out


def check_storable(parts: list[StowPart], study_in_path: str, allowed: frozenset[str] | None) -> None:
    """Refuse (403) a body with an instance that is no SEG, that names no study, or whose
    study is not the one in the path or not one the reader may write to (``allowed``;
    None: any study of the site)."""
    for part in parts:
        if part.modality not in STORABLE_MODALITIES:
            raise Refused(403, f"the station stores segmentations only (instance {part.sop_uid} "
                               f"is {part.modality or 'without a modality'})")
        if not part.study_uid or (study_in_path and part.study_uid != study_in_path):
            raise Refused(403, f"instance {part.sop_uid} is not of study {study_in_path or '?'}")
        if allowed is not None and part.study_uid not in allowed:
            raise Refused(403, f"study {part.study_uid} is not assigned to you")
