"""XNAT's JSON shapes: ``ResultSet`` listing rows and ``items`` single-object documents.

Listing values are always strings, as XNAT sends them.
"""

from __future__ import annotations

from typing import Any

from .model import Assessor, Experiment, Project, Resource, Scan, Store, Subject

ROI_FIELDS = ("collectionType", "name", "UID", "subjectID")

#: The columns a listing carries without ``columns=`` (protocol note §1.3). The row
#: functions below build every field the emulator knows; a strict emulator shows only
#: these unless the client names more with ``columns=`` (``ID`` and ``URI`` always).
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "projects": ("ID", "secondary_ID", "name", "description", "pi_firstname", "pi_lastname", "URI"),
    "subjects": ("ID", "project", "label", "insert_date", "insert_user", "URI"),
    "experiments": ("ID", "project", "date", "xsiType", "label", "insert_date", "URI"),
    "project_experiments": ("ID", "project", "date", "xsiType", "label", "insert_date",
                            "subject_label", "URI"),
    "subject_experiments": ("ID", "project", "date", "xsiType", "label", "insert_date",
                            "xnat:subjectassessordata/id", "URI"),
    "scans": ("ID", "type", "series_description", "quality", "note", "xsiType",
              "xnat_imagescandata_id", "URI"),
    "assessors": ("ID", "URI", "label", "xsiType", "date", "insert_date", "project", "session_ID",
                  "session_label", "xnat:imageassessordata/id"),
}


def _item(xsi_type: str, data_fields: dict[str, Any], children: list[dict[str, Any]],
          start_date: str = "") -> dict[str, Any]:
    return {
        "meta": {
            "xsi:type": xsi_type,
            "isHistory": False,
            "create_event_id": 1,
            "start_date": start_date,
        },
        "data_fields": {k: v for k, v in data_fields.items() if v not in ("", None)},
        "children": [c for c in children if c["items"]],
    }


def document(item: dict[str, Any]) -> dict[str, Any]:
    return {"items": [item]}


# ------------------------------------------------------------------ URIs
def project_uri(project: Project) -> str:
    return f"/data/projects/{project.id}"


def subject_uri(subject: Subject) -> str:
    return f"/data/projects/{subject.project}/subjects/{subject.id}"


def experiment_uri(session: Experiment) -> str:
    return f"/data/experiments/{session.id}"


def scan_uri(session: Experiment, scan: Scan) -> str:
    return f"{experiment_uri(session)}/scans/{scan.id}"


def assessor_uri(assessor: Assessor) -> str:
    return f"/data/experiments/{assessor.session_id}/assessors/{assessor.id}"


# ------------------------------------------------------------------ rows
def project_row(project: Project) -> dict[str, str]:
    return {
        "ID": project.id,
        "secondary_ID": project.secondary_id or project.id,
        "name": project.name or project.id,
        "description": project.description,
        "pi_firstname": "",
        "pi_lastname": "",
        "URI": project_uri(project),
    }


def subject_row(subject: Subject) -> dict[str, str]:
    return {
        "ID": subject.id,
        "project": subject.project,
        "label": subject.label,
        "insert_date": subject.insert_date,
        "insert_user": subject.insert_user,
        "URI": f"/data/subjects/{subject.id}",
    }


def experiment_row(session: Experiment, store: Store) -> dict[str, str]:
    subject = store.state.subjects.get(session.subject_id)
    return {
        "ID": session.id,
        "project": session.project,
        "date": session.date,
        "xsiType": session.xsi_type,
        "label": session.label,
        "insert_date": session.insert_date,
        "subject_ID": session.subject_id,
        "subject_label": subject.label if subject else "",
        "xnat:subjectassessordata/id": session.id,
        "UID": session.uid,
        "modality": session.modality,
        "URI": experiment_uri(session),
    }


def scan_row(session: Experiment, scan: Scan) -> dict[str, str]:
    return {
        "ID": scan.id,
        "type": scan.type,
        "series_description": scan.series_description,
        "quality": scan.quality,
        "note": scan.note,
        "xsiType": scan.xsi_type,
        "xnat_imagescandata_id": scan.xnat_imagescandata_id,
        "UID": scan.uid,
        "frames": str(scan.frames),
        "modality": scan.modality,
        "URI": scan_uri(session, scan),
    }


def assessor_row(assessor: Assessor, session: Experiment) -> dict[str, str]:
    return {
        "ID": assessor.id,
        "URI": assessor_uri(assessor),
        "label": assessor.label,
        "xsiType": assessor.xsi_type,
        "date": assessor.date,
        "insert_date": assessor.insert_date,
        "project": assessor.project,
        "session_ID": session.id,
        "session_label": session.label,
        "xnat:imageassessordata/id": assessor.id,
    }


def resource_row(resource: Resource, category: str = "", cat_id: str = "") -> dict[str, str]:
    return {
        "xnat_abstractresource_id": resource.id,
        "label": resource.label,
        "element_name": "xnat:resourceCatalog",
        "format": resource.format,
        "content": resource.content,
        "tags": resource.tags,
        "category": category,
        "cat_id": cat_id,
        "cat_desc": resource.description,
        "file_count": str(len(resource.files)),
        "file_size": str(sum(f.size for f in resource.files.values())),
    }


def file_rows(resource: Resource, resource_base_uri: str) -> list[dict[str, str]]:
    rows = []
    for path, entry in sorted(resource.files.items()):
        rows.append(
            {
                "Name": path.rsplit("/", 1)[-1],
                "Size": str(entry.size),
                "URI": f"{resource_base_uri}/resources/{resource.id}/files/{path}",
                "collection": resource.label,
                "cat_ID": resource.id,
                "digest": entry.digest,
                "file_content": entry.content,
                "file_format": entry.format,
                "file_tags": entry.tags,
            }
        )
    return rows


# ------------------------------------------------------------------ single objects
def resource_item(resource: Resource) -> dict[str, Any]:
    fields = resource_row(resource)
    fields.pop("element_name")
    return _item("xnat:resourceCatalog", fields, [])


def project_item(project: Project) -> dict[str, Any]:
    fields = {
        "ID": project.id,
        "secondary_ID": project.secondary_id or project.id,
        "name": project.name or project.id,
        "description": project.description,
    }
    return _item("xnat:projectData", fields, [])


def subject_item(subject: Subject) -> dict[str, Any]:
    fields = {"ID": subject.id, "label": subject.label, "project": subject.project}
    return _item("xnat:subjectData", fields, [], subject.insert_date)


def scan_item(session: Experiment, scan: Scan) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ID": scan.id,
        "type": scan.type,
        "UID": scan.uid,
        "series_description": scan.series_description,
        "quality": scan.quality,
        "note": scan.note,
        "frames": scan.frames,
        "modality": scan.modality,
        "project": session.project,
        "image_session_ID": session.id,
        "xnat_imagescandata_id": scan.xnat_imagescandata_id,
    }
    files = {"field": "file", "items": [resource_item(r) for r in scan.resources]}
    return _item(scan.xsi_type, fields, [files])


def assessor_item(assessor: Assessor, session: Experiment) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ID": assessor.id,
        "label": assessor.label,
        "project": assessor.project,
        "imageSession_ID": session.id,
        "date": assessor.date,
        "time": assessor.time,
        **assessor.fields,
    }
    refs = {
        "field": "references/seriesUID",
        "items": [
            _item(f"{assessor.xsi_type}_seriesUID", {"seriesUID": uid}, [])
            for uid in assessor.series_uids
        ],
    }
    outs = {"field": "out/file", "items": [resource_item(r) for r in assessor.out_resources]}
    ins = {"field": "in/file", "items": [resource_item(r) for r in assessor.in_resources]}
    return _item(assessor.xsi_type, fields, [refs, ins, outs], assessor.insert_date)


def experiment_item(session: Experiment, store: Store) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ID": session.id,
        "label": session.label,
        "project": session.project,
        "subject_ID": session.subject_id,
        "date": session.date,
        "time": session.time,
        "UID": session.uid,
        "modality": session.modality,
        "note": session.note,
        **session.fields,
    }
    scans = {"field": "scans/scan", "items": [scan_item(session, s) for s in session.scans]}
    assessors = {
        "field": "assessors/assessor",
        "items": [assessor_item(a, session) for a in store.session_assessors(session)],
    }
    resources = {"field": "resources/resource", "items": [resource_item(r) for r in session.resources]}
    return _item(session.xsi_type, fields, [scans, assessors, resources], session.insert_date)


def catalog_xml(resource: Resource) -> str:
    """What XNAT answers for ``GET .../resources/{R}?format=json``: the catalog XML."""
    entries = "".join(
        f'<cat:entry URI="{path}" ID="{path}" name="{path.rsplit("/", 1)[-1]}" digest="{f.digest}"/>'
        for path, f in sorted(resource.files.items())
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<cat:Catalog xmlns:cat="http://nrg.wustl.edu/catalog" '
        f'ID="{resource.id}"><cat:entries>{entries}</cat:entries></cat:Catalog>'
    )
