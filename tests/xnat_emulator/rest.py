"""The ``/data`` REST API: listings, single objects, creation, upload, download, deletion."""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from pathlib import Path

from . import views
from .archives import build_zip, unpack
from .behaviour import Behaviour
from .dicomio import read_header
from .model import (
    SCAN_XSI,
    SESSION_XSI,
    Assessor,
    Experiment,
    Project,
    Resource,
    Scan,
    Store,
    Subject,
)
from .paths import Target, resolve, resource_list
from .responses import HttpError, Response, as_json, binary, result_set, text

LOG = logging.getLogger(__name__)

RESERVED_QUERY = frozenset(
    {"format", "columns", "limit", "offset", "sortBy", "sortOrder", "XNAT_CSRF", "req_format",
     "removeFiles", "overwrite", "extract", "inbody", "content", "tags", "event_reason"}
)
ALWAYS_COLUMNS = ("ID", "URI")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes = b""
    content_type: str = ""
    user: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def flag(self, name: str) -> bool:
        if name not in self.query:
            return False
        return self.query[name].lower() in ("true", "1", "yes", "")


def _field_values(query: dict[str, str]) -> dict[str, str]:
    """``xnat:mrScanData/type=T1`` and ``type=T1`` both give ``{"type": "T1"}``."""
    values: dict[str, str] = {}
    for key, value in query.items():
        if key in RESERVED_QUERY or key == "xsiType":
            continue
        name = key.rsplit("/", 1)[-1] if "/" in key else key
        values[name] = value
    return values


def _pick(values: dict[str, str], *names: str) -> str | None:
    lowered = {k.lower(): v for k, v in values.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def _filter_rows(rows: list[dict[str, str]], query: dict[str, str],
                 use_columns: bool = True, defaults: tuple[str, ...] | None = None) -> list[dict[str, str]]:
    """Apply field filters (with wildcards) and, for search-backed listings, ``columns``.

    Filters see every field. Without ``columns=`` a row keeps the ``defaults`` (the
    documented default columns; all fields when None); with it, ``ID``, ``URI`` and the
    named columns. XNAT ignores ``columns`` on resource and file listings; so does the emulator."""
    filters = {k: v for k, v in query.items() if k not in RESERVED_QUERY}
    kept = [
        row for row in rows
        if all(fnmatch.fnmatchcase(row.get(k, ""), v) for k, v in filters.items() if k in row)
    ]
    columns = query.get("columns")
    if not use_columns:
        return kept
    if columns:
        wanted = [c for c in columns.split(",") if c]
        return [{k: row[k] for k in (*ALWAYS_COLUMNS, *wanted) if k in row} for row in kept]
    if defaults is not None:
        return [{k: row[k] for k in defaults if k in row} for row in kept]
    return kept


class RestApi:
    """Handlers for ``/data`` paths; ``segments`` exclude the ``/data[/archive]`` prefix."""

    def __init__(self, store: Store, behaviour: Behaviour | None = None) -> None:
        self.store = store
        self.behaviour = behaviour or Behaviour()

    # ------------------------------------------------------------------ entry point
    def handle(self, request: Request, segments: list[str]) -> Response:
        with self.store.lock:
            target = resolve(self.store, segments)
            method = request.method
            if method == "GET":
                return self._get(request, target)
            if method in ("PUT", "POST"):
                response = self._put(request, target)
            elif method == "DELETE":
                response = self._delete(request, target)
            else:
                raise HttpError(405, f"Method {method} not allowed")
            self.store.save()
            return response

    # ------------------------------------------------------------------ GET
    def _get(self, request: Request, target: Target) -> Response:
        kind = target.kind
        if kind in ("files", "file"):
            return self._get_files(request, target)
        if kind in ("projects", "subjects", "experiments", "scans", "assessors", "resources"):
            rows = self._rows(target)
            rows = _filter_rows(rows, request.query, use_columns=kind != "resources",
                                defaults=self._defaults(target))
            return result_set(rows, kind.capitalize())
        if kind == "resource":
            if target.resource is None:
                raise HttpError(404, f"Resource {target.ident} not found")
            return Response(body=views.catalog_xml(target.resource).encode(),
                            content_type="text/xml;charset=UTF-8")
        if kind == "scan" and target.scan_selector and target.scan is None:
            raise HttpError(404, f"Scan {target.ident} not found")
        return as_json(views.document(self._item(target)))

    def _defaults(self, target: Target) -> tuple[str, ...] | None:
        """The default columns of a listing (None: every field, a lax emulator)."""
        if not self.behaviour.strict:
            return None
        kind = target.kind
        if kind == "experiments" and target.subject is not None:
            kind = "subject_experiments"
        elif kind == "experiments" and target.project is not None:
            kind = "project_experiments"
        return views.DEFAULT_COLUMNS.get(kind)

    def _item(self, target: Target) -> dict:
        if target.kind == "project" and target.project:
            return views.project_item(target.project)
        if target.kind == "subject" and target.subject:
            return views.subject_item(target.subject)
        if target.kind == "experiment" and target.session:
            return views.experiment_item(target.session, self.store)
        if target.kind == "scan" and target.session and target.scan:
            return views.scan_item(target.session, target.scan)
        if target.kind == "assessor" and target.session and target.assessor:
            return views.assessor_item(target.assessor, target.session)
        raise HttpError(404, f"{target.kind} {target.ident} not found")

    def _rows(self, target: Target) -> list[dict[str, str]]:
        state = self.store.state
        kind = target.kind
        if kind == "projects":
            return [views.project_row(p) for p in state.projects.values()]
        if kind == "subjects":
            return [
                views.subject_row(s) for s in state.subjects.values()
                if target.project is None or s.project == target.project.id
            ]
        if kind == "experiments":
            return [
                views.experiment_row(e, self.store) for e in state.experiments.values()
                if (target.project is None or e.project == target.project.id)
                and (target.subject is None or e.subject_id == target.subject.id)
            ]
        if kind == "scans":
            assert target.session is not None
            return [views.scan_row(target.session, s) for s in target.session.scans]
        if kind == "assessors":
            assert target.session is not None
            return [
                views.assessor_row(a, target.session)
                for a in self.store.session_assessors(target.session)
            ]
        category, cat_id = self._category(target)
        return [views.resource_row(r, category, cat_id) for r in resource_list(target)]

    @staticmethod
    def _category(target: Target) -> tuple[str, str]:
        if target.assessor is not None:
            return "assessors", target.assessor.id
        if target.scan is not None:
            return "scans", target.scan.id
        return "resources", ""

    # ------------------------------------------------------------------ files
    def _file_sets(self, target: Target) -> list[tuple[Resource, str, str]]:
        """(resource, its base URI, folder inside a zip) for every resource in scope."""
        if target.resource is not None:
            return [self._file_set(target, target.resource)]
        if target.kind == "resource":
            raise HttpError(404, f"Resource {target.ident} not found")
        if target.scan_selector is not None:
            if not target.scans:
                raise HttpError(404, f"Scan {target.scan_selector} not found")
            assert target.session is not None
            session = target.session
            return [
                (r, views.scan_uri(session, s), self._scan_folder(session, s))
                for s in target.scans for r in s.resources
            ]
        if target.assessor is not None:
            lists = {"in": target.assessor.in_resources, "out": target.assessor.out_resources}
            return [
                self._file_set(target, r, io)
                for io, resources in lists.items() if target.io in (None, io)
                for r in resources
            ]
        sets = [self._file_set(target, r) for r in resource_list(target)]
        if target.kind == "experiment" and target.session is not None:
            session = target.session
            sets.extend(
                (r, views.scan_uri(session, s), self._scan_folder(session, s))
                for s in session.scans for r in s.resources
            )
        return sets

    @staticmethod
    def _scan_folder(session: Experiment, scan: Scan) -> str:
        kind = "".join(c if c.isalnum() or c in "-_." else "_" for c in scan.type)
        return f"{session.label}/scans/{scan.id}-{kind}" if kind else f"{session.label}/scans/{scan.id}"

    def _file_set(self, target: Target, resource: Resource, io: str | None = None
                  ) -> tuple[Resource, str, str]:
        if target.assessor is not None:
            assert target.session is not None
            side = io or ("in" if resource in target.assessor.in_resources else "out")
            base = f"{views.assessor_uri(target.assessor)}/{side}"
            folder = f"{target.session.label}/assessors/{target.assessor.label}/{side}"
        elif target.scan is not None and target.session is not None:
            base = views.scan_uri(target.session, target.scan)
            folder = self._scan_folder(target.session, target.scan)
        elif target.session is not None:
            base = views.experiment_uri(target.session)
            folder = target.session.label
        elif target.subject is not None:
            base = views.subject_uri(target.subject)
            folder = target.subject.label
        else:
            assert target.project is not None
            base = views.project_uri(target.project)
            folder = target.project.id
        return resource, base, folder

    def _get_files(self, request: Request, target: Target) -> Response:
        sets = self._file_sets(target)
        if target.kind == "file":
            if target.resource is None:
                raise HttpError(404, "Resource not found")
            entry = target.resource.files.get(target.file_path)
            if entry is None:
                raise HttpError(404, f"File {target.file_path} not found")
            data = self.store.read_file(target.resource, target.file_path)
            return binary(data, name=target.file_path.rsplit("/", 1)[-1])
        if request.query.get("format") == "zip":
            flat = self.behaviour.zip_layout == "flat"
            entries: list[tuple[str, Path]] = [
                (path.rsplit("/", 1)[-1] if flat else f"{folder}/resources/{r.label}/files/{path}",
                 self.store.blob_path(r, path))
                for r, _base, folder in sets for path in sorted(r.files)
            ]
            return binary(build_zip(entries), "application/zip", name="download.zip")
        rows = [row for r, base, _folder in sets for row in views.file_rows(r, base)]
        return result_set(_filter_rows(rows, request.query, use_columns=False), "Files")

    # ------------------------------------------------------------------ PUT / POST
    def _put(self, request: Request, target: Target) -> Response:
        kind = target.kind
        handlers = {
            "project": self._put_project,
            "subject": self._put_subject,
            "experiment": self._put_experiment,
            "scan": self._put_scan,
            "assessor": self._put_assessor,
            "resource": self._put_resource,
            "file": self._put_file,
        }
        handler = handlers.get(kind)
        if handler is None:
            raise HttpError(405, f"{request.method} not supported on {kind}")
        return handler(request, target)

    def _put_project(self, request: Request, target: Target) -> Response:
        values = _field_values(request.query)
        project = target.project
        created = project is None
        if project is None:
            assert target.ident is not None
            project = Project(id=target.ident)
            self.store.state.projects[project.id] = project
        project.name = _pick(values, "name") or project.name or project.id
        project.description = _pick(values, "description") or project.description
        project.secondary_id = _pick(values, "secondary_ID") or project.secondary_id
        return text(project.id, 201 if created else 200)

    def _put_subject(self, request: Request, target: Target) -> Response:
        subject = target.subject
        if subject is not None:
            return text(subject.id, 200)
        if target.project is None:
            raise HttpError(400, "A new subject needs a project in the path")
        label = _pick(_field_values(request.query), "label") or target.ident or ""
        subject = Subject(
            id=self.store.new_subject_id(),
            label=label,
            project=target.project.id,
            insert_date=self.store.insert_date(),
            insert_user=request.user,
        )
        self.store.state.subjects[subject.id] = subject
        return text(subject.id, 201)

    def _put_experiment(self, request: Request, target: Target) -> Response:
        values = _field_values(request.query)
        session = target.session
        created = session is None
        if session is None:
            if target.project is None or target.subject is None:
                raise HttpError(400, "A new experiment needs a project and subject in the path")
            session = Experiment(
                id=self.store.new_experiment_id(),
                label=_pick(values, "label") or target.ident or "",
                project=target.project.id,
                subject_id=target.subject.id,
                xsi_type=request.query.get("xsiType", SESSION_XSI),
                insert_date=self.store.insert_date(),
            )
            self.store.state.experiments[session.id] = session
        known = {"label", "date", "time", "uid", "modality", "note", "id", "project", "subject_id"}
        session.label = _pick(values, "label") or session.label
        session.date = _pick(values, "date") or session.date
        session.time = _pick(values, "time") or session.time
        session.uid = _pick(values, "UID") or session.uid
        session.modality = _pick(values, "modality") or session.modality
        session.note = _pick(values, "note") or session.note
        session.fields.update({k: v for k, v in values.items() if k.lower() not in known})
        if request.flag("pullDataFromHeaders") or request.flag("triggerPipelines"):
            self.pull_headers(session)
        return text(session.id, 201 if created else 200)

    def pull_headers(self, session: Experiment) -> None:
        """Fill the session and scan UIDs from the stored DICOM headers."""
        for scan in session.scans:
            for resource in scan.resources:
                for path in sorted(resource.files):
                    header = read_header(self.store.blob_path(resource, path))
                    if header is None:
                        continue
                    scan.uid = scan.uid or header.series_uid
                    scan.series_description = scan.series_description or header.series_description
                    session.uid = session.uid or header.study_uid
                    break
            scan.frames = sum(len(r.files) for r in scan.resources if r.label == "DICOM")

    def _put_scan(self, request: Request, target: Target) -> Response:
        if target.session is None or target.ident is None:
            raise HttpError(400, "Scans need an experiment")
        if target.scan_selector and ("," in target.ident or target.ident == "ALL"):
            raise HttpError(400, "Cannot create several scans at once")
        values = _field_values(request.query)
        scan = next((s for s in target.session.scans if s.id == target.ident), None)
        created = scan is None
        if scan is None:
            scan = Scan(
                id=target.ident,
                xsi_type=request.query.get("xsiType", SCAN_XSI),
                xnat_imagescandata_id=str(self.store.next_counter("scan")),
            )
            target.session.scans.append(scan)
        scan.type = _pick(values, "type") or scan.type
        scan.series_description = _pick(values, "series_description") or scan.series_description
        scan.quality = _pick(values, "quality") or scan.quality
        scan.note = _pick(values, "note") or scan.note
        scan.uid = _pick(values, "UID") or scan.uid
        scan.modality = _pick(values, "modality") or scan.modality
        frames = _pick(values, "frames")
        if frames is not None and frames.isdigit():
            scan.frames = int(frames)
        return text(scan.id, 201 if created else 200)

    def _put_assessor(self, request: Request, target: Target) -> Response:
        if target.session is None:
            raise HttpError(400, "Assessors need an experiment")
        if target.assessor is not None:
            return text(target.assessor.id, 200)
        xsi_type = request.query.get("xsiType")
        if not xsi_type:
            raise HttpError(400, "xsiType is required to create an assessor")
        values = _field_values(request.query)
        assessor = Assessor(
            id=self.store.new_experiment_id(),
            label=_pick(values, "label") or target.ident or "",
            project=target.session.project,
            session_id=target.session.id,
            xsi_type=xsi_type,
            insert_date=self.store.insert_date(),
        )
        self.store.state.assessors[assessor.id] = assessor
        return text(assessor.id, 201)

    def _put_resource(self, request: Request, target: Target) -> Response:
        resource = target.resource
        if resource is None:
            resource = self._create_resource(target, target.ident or "")
        for attr in ("format", "content", "tags"):
            value = request.query.get(attr)
            if value is not None:
                setattr(resource, attr, value)
        if "description" in request.query:
            resource.description = request.query["description"]
        return text(resource.id, 200)

    def _create_resource(self, target: Target, label: str) -> Resource:
        if target.assessor is not None:
            resources = (
                target.assessor.in_resources if target.io == "in" else target.assessor.out_resources
            )
        else:
            resources = resource_list(target)
        resource = self.store.new_resource(label)
        resources.append(resource)
        return resource

    def _put_file(self, request: Request, target: Target) -> Response:
        resource = target.resource
        if resource is None:
            if target.kind == "file" and target.ident is None:
                raise HttpError(400, "Files must be uploaded into a resource")
            resource = self._create_resource(target, target.ident or "")
        data = self._upload_body(request)
        path = target.file_path
        attrs = {
            "content": request.query.get("content", ""),
            "format": request.query.get("format", ""),
            "tags": request.query.get("tags", ""),
        }
        members = unpack(path, data) if request.flag("extract") else None
        if members is None:
            members = [(path, data)]
        overwrite = request.flag("overwrite")
        clashes = [name for name, _ in members if name in resource.files]
        if clashes and not overwrite:
            raise HttpError(409, f"File(s) already exist: {', '.join(clashes[:5])}")
        for name, payload in members:
            try:
                self.store.write_file(resource, name, payload, **attrs)
            except ValueError as exc:
                raise HttpError(400, str(exc)) from exc
        return text("", 200)

    @staticmethod
    def _upload_body(request: Request) -> bytes:
        if request.content_type.startswith("multipart/form-data"):
            raise HttpError(415, "The emulator accepts in-body (raw) uploads only")
        return request.body

    # ------------------------------------------------------------------ DELETE
    def _delete(self, request: Request, target: Target) -> Response:
        remove_files = "removeFiles" in request.query
        state = self.store.state
        kind = target.kind
        if kind == "file" and target.resource is not None:
            if target.file_path not in target.resource.files:
                raise HttpError(404, f"File {target.file_path} not found")
            self.store.delete_file(target.resource, target.file_path)
        elif kind == "resource" and target.resource is not None:
            self._delete_resource(target, target.resource)
        elif kind == "assessor" and target.assessor is not None:
            self.store.delete_assessor(target.assessor, remove_files=True)
        elif kind == "scan" and target.scan is not None and target.session is not None:
            for resource in target.scan.resources:
                self.store.drop_resource_files(resource)
            target.session.scans.remove(target.scan)
        elif kind == "experiment" and target.session is not None:
            self.store.delete_experiment(target.session, remove_files=True)
        elif kind == "subject" and target.subject is not None:
            for session in [e for e in state.experiments.values()
                            if e.subject_id == target.subject.id]:
                self.store.delete_experiment(session, remove_files=True)
            del state.subjects[target.subject.id]
        elif kind == "project" and target.project is not None:
            self._delete_project(target.project)
        else:
            raise HttpError(404, f"{kind} {target.ident or ''} not found")
        LOG.debug("deleted %s %s (removeFiles=%s)", kind, target.ident, remove_files)
        return text("", 200)

    def _delete_resource(self, target: Target, resource: Resource) -> None:
        self.store.drop_resource_files(resource)
        for resources in self._owner_lists(target):
            if resource in resources:
                resources.remove(resource)

    @staticmethod
    def _owner_lists(target: Target) -> list[list[Resource]]:
        if target.assessor is not None:
            return [target.assessor.in_resources, target.assessor.out_resources]
        return [resource_list(target)]

    def _delete_project(self, project: Project) -> None:
        state = self.store.state
        for session in [e for e in state.experiments.values() if e.project == project.id]:
            self.store.delete_experiment(session, remove_files=True)
        for sid in [s.id for s in state.subjects.values() if s.project == project.id]:
            del state.subjects[sid]
        for resource in project.resources:
            self.store.drop_resource_files(resource)
        del state.projects[project.id]
