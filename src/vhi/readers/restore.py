"""``vhi restore``: put a reader's recorded saves back on the DICOMweb service, byte for byte.

The cleaning station keeps the bytes of every segmentation stored through it
(:meth:`~vhi.readers.store.ReadersStore.put_blob`). A save that was deleted from the
service (or never arrived) is stored again from those bytes, exactly as the reader's
browser sent them (a raw STOW-RS body, not re-encoded). A save still on the service is
left as it is; one whose bytes there differ is reported, never replaced.
"""

from __future__ import annotations

import hashlib
import io
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from vhi.readers.store import ReadersStore, Save
from vhi.sources.dicomweb.client import DicomwebConnection, DicomwebError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restored:
    """What :func:`restore_saves` did with one save."""

    save: Save
    action: str  # "present", "restored", "differs", "damaged"
    detail: str = ""


def _on_service(conn: DicomwebConnection, what: str, save: Save) -> bytes | None:
    """The instance's bytes on the service, or None when it is not there."""
    rows = conn.call(what, f"looking for SEG {save.sop_uid}", lambda c: c.search_for_instances(
        study_instance_uid=save.study_uid, search_filters={"SOPInstanceUID": save.sop_uid}))
    if not rows:
        return None
    ds = conn.call(what, f"retrieving SEG {save.sop_uid}", lambda c: c.retrieve_instance(
        save.study_uid, save.series_uid, save.sop_uid))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _store_raw(conn: DicomwebConnection, what: str, save: Save, data: bytes) -> None:
    """One STOW-RS request with ``data`` as the body's only part, unchanged."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
               "Accept": "application/dicom+json"}
    url = f"{conn.url}/studies/{save.study_uid}"

    def post(_: object) -> None:
        answer = conn.http_session().post(url, data=body, headers=headers, timeout=conn.timeout_s)
        answer.raise_for_status()
        failed = (answer.json() if answer.content else {}).get("00081198", {}).get("Value", [])
        if failed:
            raise DicomwebError(what, f"the service refused SEG {save.sop_uid} (STOW-RS FailedSOPSequence)")

    conn.call(what, f"storing SEG {save.sop_uid} again (STOW-RS)", post)


def restore_saves(store: ReadersStore, conn: DicomwebConnection, saves: Sequence[Save]) -> list[Restored]:
    """Store again every save in ``saves`` that is missing from the service."""
    out = []
    for save in saves:
        what = f"session {save.session_key}"
        data = store.blob_path(save.blob).read_bytes() if store.blob_path(save.blob).is_file() else b""
        if hashlib.sha256(data).hexdigest() != save.sha256:
            out.append(Restored(save, "damaged", f"the kept copy {save.blob} is missing or damaged"))
            log.error("%s: %s", what, out[-1].detail)
            continue
        there = _on_service(conn, what, save)
        if there is None:
            _store_raw(conn, what, save, data)
            out.append(Restored(save, "restored", f"SEG {save.sop_uid} stored again ({len(data)} bytes)"))
        elif hashlib.sha256(there).hexdigest() == save.sha256 or _same_dataset(there, data):
            out.append(Restored(save, "present", f"SEG {save.sop_uid} is on the service"))
        else:
            out.append(Restored(save, "differs", f"SEG {save.sop_uid} is on the service with other "
                                                 "content: not replaced (delete it there to restore)"))
        log.info("%s: %s", what, out[-1].detail)
    return out


def _same_dataset(a: bytes, b: bytes) -> bool:
    """The same DICOM content (the service may re-encode the file meta on retrieval)."""
    import pydicom

    def body(data: bytes) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        buffer = io.BytesIO()
        ds.save_as(buffer, implicit_vr=False, little_endian=True)
        return buffer.getvalue()

    try:
        return body(a) == body(b)
    except (ValueError, OSError, EOFError):
        return False
