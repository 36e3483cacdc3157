"""ROI collections of an XNAT session (``icr:roiCollectionData``, the OHIF viewer's SEGs).

Listed with what the choice of the cleaned segmentation needs (label, type, SEG UID,
insert date, referenced series); a collection's SEG file is downloaded and checked
against the catalog's MD5; the proposal is uploaded through the ROI upload API.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from vhi.cohort.ids import Session
from vhi.sources.xnat.client import ANY_STATUS, OCTET, RETRY_STATUS, XnatClient, XnatError, _Transfer

ROI_XSI = "icr:roiCollectionData"


#: Collection types the viewer saves for contours (§3.4): not a mask, so not collected.
CONTOUR_TYPES = ("RTSTRUCT", "AIM")
CONTOUR_REASON = "cleaned as contours (RTSTRUCT/AIM): save as a segmentation"


def collection_of(item: Mapping[str, Any], row: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One collection from its single-object JSON item (``data_fields``, series references),
    with the listing row's ``insert_date`` where there is one."""
    fields = item.get("data_fields", {})
    refs = [ref.get("data_fields", {}).get("seriesUID", "")
            for child in item.get("children", []) if child.get("field") == "references/seriesUID"
            for ref in child.get("items", [])]
    row = row or {}
    return {"id": str(fields.get("ID", row.get("ID", ""))),
            "label": str(fields.get("label", row.get("label", ""))),
            "type": str(fields.get("collectionType", "")),
            "name": str(fields.get("name", "")), "uid": str(fields.get("UID", "")),
            "insert_date": str(row.get("insert_date") or item.get("meta", {}).get("start_date") or ""),
            "series": [s for s in refs if s]}


def collections_in(doc: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The ROI collections of an experiment's single-object JSON (``assessors/assessor``
    children); None when the document has no assessor child at all (none, or not sent)."""
    items = [it for it in doc.get("items", []) if not it.get("meta", {}).get("isHistory")]
    if not items:
        return None
    children = [c for c in items[0].get("children", []) if c.get("field") == "assessors/assessor"]
    if not children:
        return None
    return [collection_of(a) for c in children for a in c.get("items", [])
            if a.get("meta", {}).get("xsi:type") in (None, "", ROI_XSI)
            and not a.get("meta", {}).get("isHistory")]


def list_collections(client: XnatClient, session: Session, exp: str) -> list[dict[str, Any]]:
    """Every ROI collection of the session: the assessor listing, then each one's JSON."""
    what = f"session {session.key}"
    rows = client.get_rows(what, "listing its ROI collections", f"/data/experiments/{exp}/assessors",
                           {"xsiType": ROI_XSI, "format": "json"})
    out = []
    for row in rows:
        if row.get("xsiType") not in (None, "", ROI_XSI):
            continue
        ident = str(row.get("ID", ""))
        doc = client.call(what, f"reading ROI collection {ident}", lambda c, i=ident: c.get_json(
            f"/data/experiments/{exp}/assessors/{i}", query={"format": "json"}))
        items = [it for it in doc.get("items", []) if not it.get("meta", {}).get("isHistory")]
        if items:
            out.append(collection_of(items[0], row))
    return out


def contours_only(collections: Sequence[Mapping[str, Any]], proposal_label: str,
                  stir_uid: str, before: Collection[str] | None) -> list[str]:
    """Labels of the contour collections (RTSTRUCT/AIM) on the STIR series saved since the
    push (not among ``before``, the collections there at the push), when no SEG was."""
    if before is None:
        return []
    after = [c for c in collections if c["label"] != proposal_label and c["id"] not in before
             and (not stir_uid or stir_uid in c["series"])]
    if any(c["type"] == "SEG" for c in after):
        return []
    return sorted(c["label"] for c in after if c["type"] in CONTOUR_TYPES)


def collection_bytes(client: XnatClient, session: Session, exp: str,
                     collection: Mapping[str, Any]) -> bytes:
    """The SEG file of a collection, checked against the catalog's MD5 where it has one."""
    ident = collection["id"]
    what = f"session {session.key}"
    files = client.get_rows(what, f"listing the files of ROI collection {ident}",
                            f"/data/experiments/{exp}/assessors/{ident}/files")
    row = next((r for r in files if r.get("collection") == collection.get("type", "SEG")), None)
    if row is None:
        raise XnatError(what, f"ROI collection {ident} ({collection['label']}) has no SEG file")
    digest = str(row.get("digest") or "")

    def fetch(conn: Any) -> bytes:
        buffer = io.BytesIO()
        conn.download_stream(str(row["URI"]), buffer, timeout=client.timeout_s)
        data = buffer.getvalue()
        if digest and hashlib.md5(data).hexdigest() != digest:  # noqa: S324 - XNAT's digest
            raise _Transfer(f"{row.get('Name')}: MD5 differs from the catalog's digest")
        return data

    return client.call(what, f"downloading ROI collection {ident}", fetch)


def csrf_token(conn: Any) -> str:
    """The session's CSRF token (``GET /data/auth?CSRF=true``), "" when the server gives none.

    Whether XNAT checks it for scripted clients is not known (protocol note §6.1); sending
    it costs one GET per upload and is harmless where it is not checked."""
    response = conn.get("/data/auth", query={"CSRF": "true"}, accepted_status=ANY_STATUS)
    if response.status_code != 200:
        return ""
    match = re.search(r"XNAT_CSRF=([A-Za-z0-9_-]+)", response.text)
    return match.group(1) if match else ""


def put_collection(client: XnatClient, project: str, session: Session, exp: str, label: str, *,
                   data: bytes, overwrite: bool) -> tuple[int, str]:
    """PUT the SEG as collection ``label``: (HTTP status, body) of the final answer."""
    what = f"session {session.key}"
    path = f"/xapi/roi/projects/{project}/sessions/{exp}/collections/{label}"
    query = {"type": "SEG", "overwrite": "true" if overwrite else "false"}

    def put(conn: Any) -> tuple[int, str]:
        from xnat.exceptions import XNATResponseError

        token = csrf_token(conn)
        response = conn.put(path, query={**query, **({"XNAT_CSRF": token} if token else {})},
                            data=data, headers=OCTET,
                            accepted_status=ANY_STATUS, timeout=client.timeout_s)
        if response.status_code in RETRY_STATUS or response.status_code == 401:
            raise XNATResponseError(f"PUT {path}: HTTP {response.status_code}", response=response)
        return response.status_code, response.text.strip()

    return client.call(what, f"uploading ROI collection {label}", put)


def experiment_doc(client: XnatClient, session: Session, exp: str) -> dict[str, Any]:
    """The experiment's single-object JSON: its scans and assessors in one request."""
    return client.call(f"session {session.key}", f"reading experiment {exp}",
                       lambda c: c.get_json(f"/data/experiments/{exp}", query={"format": "json"}))


def session_collections(client: XnatClient, session: Session, exp: str,
                        doc: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every ROI collection of the session, from the experiment's JSON (``doc``, read when not
    given); where that has no assessor child, from the assessor listing (one more request)."""
    found = collections_in(doc if doc is not None else experiment_doc(client, session, exp))
    return found if found is not None else list_collections(client, session, exp)


def readback(client: XnatClient, session: Session, exp: str,
             label: str) -> tuple[dict[str, Any] | None, bytes, list[dict[str, Any]]]:
    """The collection under ``label``, its SEG bytes ((None, b"") when there is none) and
    every collection of the session."""
    collections = session_collections(client, session, exp)
    collection = next((c for c in collections if c["label"] == label), None)
    if collection is None:
        return None, b"", collections
    return collection, collection_bytes(client, session, exp, collection), collections
