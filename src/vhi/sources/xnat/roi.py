"""ROI collections of an XNAT session (``icr:roiCollectionData``, the OHIF viewer's SEGs).

Listed with what the choice of the cleaned segmentation needs (label, type, SEG UID,
insert date, referenced series); a collection's SEG file is downloaded and checked
against the catalog's MD5; the proposal is uploaded through the ROI upload API.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

from vhi.cohort.ids import Session
from vhi.sources.xnat.client import ANY_STATUS, OCTET, RETRY_STATUS, XnatClient, XnatError, _Transfer

ROI_XSI = "icr:roiCollectionData"


def list_collections(client: XnatClient, session: Session, exp: str) -> list[dict[str, Any]]:
    """Every ROI collection of the session (rows with collectionType, UID, series refs)."""
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
        if not items:
            continue
        fields = items[0].get("data_fields", {})
        refs = [ref.get("data_fields", {}).get("seriesUID", "")
                for child in items[0].get("children", [])
                if child.get("field") == "references/seriesUID"
                for ref in child.get("items", [])]
        out.append({"id": ident, "label": str(fields.get("label", row.get("label", ""))),
                    "type": str(fields.get("collectionType", "")),
                    "name": str(fields.get("name", "")), "uid": str(fields.get("UID", "")),
                    "insert_date": str(row.get("insert_date")
                                       or items[0].get("meta", {}).get("start_date", "")),
                    "series": [s for s in refs if s]})
    return out


def choose_cleaned(collections: Sequence[Mapping[str, Any]], proposal_label: str,
                   stir_uid: str) -> dict[str, Any] | None:
    """The documented rule: the newest SEG collection after the proposal, on the STIR series."""
    proposal = next((c for c in collections if c["label"] == proposal_label), None)
    if proposal is None:
        return None
    candidates = [c for c in collections
                  if c["label"] != proposal_label and c["type"] == "SEG"
                  and c["insert_date"] > proposal["insert_date"]
                  and (not stir_uid or stir_uid in c["series"])]
    if not candidates:
        return None
    return dict(max(candidates, key=lambda c: (c["insert_date"], c["label"])))


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


def put_collection(client: XnatClient, project: str, session: Session, exp: str, label: str, *,
                   data: bytes, overwrite: bool) -> tuple[int, str]:
    """PUT the SEG as collection ``label``: (HTTP status, body) of the final answer."""
    what = f"session {session.key}"
    path = f"/xapi/roi/projects/{project}/sessions/{exp}/collections/{label}"
    query = {"type": "SEG", "overwrite": "true" if overwrite else "false"}

    def put(conn: Any) -> tuple[int, str]:
        from xnat.exceptions import XNATResponseError

        response = conn.put(path, query=query, data=data, headers=OCTET,
                            accepted_status=ANY_STATUS, timeout=client.timeout_s)
        if response.status_code in RETRY_STATUS or response.status_code == 401:
            raise XNATResponseError(f"PUT {path}: HTTP {response.status_code}", response=response)
        return response.status_code, response.text.strip()

    return client.call(what, f"uploading ROI collection {label}", put)


def readback(client: XnatClient, session: Session, exp: str,
             label: str) -> tuple[dict[str, Any] | None, bytes]:
    """The collection under ``label`` and its SEG bytes; (None, b"") when there is none."""
    collection = next((c for c in list_collections(client, session, exp) if c["label"] == label), None)
    if collection is None:
        return None, b""
    return collection, collection_bytes(client, session, exp, collection)
