"""The OHIF viewer plugin's ROI API (``/xapi/roi/...``): SEG, RTSTRUCT and AIM collections.

SEGs get the plugin's dependency checks (study, series, instances; §3.2). RTSTRUCT and AIM
(what the viewer saves for contours, §3.4) are stored with their referenced series;
the real plugin also stores an alternate form of each (AIM↔RTSTRUCT), which the
emulator does not make.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .behaviour import Behaviour
from .dicomio import SEG_SOP_CLASS, SegInfo, parse_aim, parse_rtstruct, parse_seg, read_header
from .model import ROI_XSI, Assessor, Experiment, Resource, Scan, Store
from .responses import HttpError, Response, as_json, binary, text
from .rest import Request

LOG = logging.getLogger(__name__)

SUPPORTED_TYPES = ("SEG", "RTSTRUCT", "AIM")
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: type -> (resource format, file extension)
FILE_KINDS = {"SEG": ("DICOM", "dcm"), "RTSTRUCT": ("DICOM", "dcm"), "AIM": ("XML", "xml")}
ROI_MODALITIES = ("MR", "CT", "PT", "US")


class RoiApi:
    """Handlers for paths below ``/xapi/roi/projects/{P}``."""

    def __init__(self, store: Store, behaviour: Behaviour | None = None) -> None:
        self.store = store
        self.behaviour = behaviour or Behaviour()
        self._instance_cache: dict[tuple[str, str, str], str | None] = {}

    def handle(self, request: Request, segments: list[str]) -> Response:
        # segments: ["projects", P, ...]
        if len(segments) < 3 or segments[0] != "projects":
            raise HttpError(404, "Unknown ROI path")
        with self.store.lock:
            project = self.store.project(segments[1])
            if project is None:
                raise HttpError(404, f"Project {segments[1]} not found")
            rest = segments[2:]
            method = request.method
            if method == "PUT" and len(rest) == 4 and rest[0] == "sessions" and rest[2] == "collections":
                response = self.put_collection(request, project.id, rest[1], rest[3])
                self.store.save()
                return response
            if method == "GET" and len(rest) == 2 and rest[0] == "collections":
                return self.get_collection(request, project.id, rest[1])
            if method == "DELETE" and len(rest) == 2 and rest[0] == "collections":
                self.delete_collection(project.id, rest[1])
                self.store.save()
                return text("", 200)
            if method == "GET" and len(rest) == 2 and rest[0] == "exists":
                found = self.find(project.id, rest[1]) is not None
                return as_json(found)
            if method == "GET" and len(rest) == 3 and rest[0] == "sessions" and rest[2] == "uididmap":
                session = self._session(project.id, rest[1])
                return as_json({s.uid: s.id for s in session.scans if s.uid})
            if (method == "GET" and len(rest) == 5 and rest[0] == "sessions"
                    and rest[2] == "scans" and rest[4] == "uids"):
                session = self._session(project.id, rest[1])
                scan = self.store.scan(session, rest[3])
                if scan is None:
                    raise HttpError(404, f"Scan {rest[3]} not found")
                return as_json(sorted(self.instance_uids(scan)))
        raise HttpError(404, "Unknown ROI path")

    # ------------------------------------------------------------------ lookups
    def _session(self, project_id: str, session_id: str) -> Experiment:
        session = self.store.state.experiments.get(session_id)
        if session is None or session.project != project_id:
            raise HttpError(404, f"Session {session_id} not found in project {project_id}")
        return session

    def _collections(self, project_id: str) -> list[Assessor]:
        return [
            a for a in self.store.state.assessors.values()
            if a.project == project_id and a.xsi_type == ROI_XSI
        ]

    def find(self, project_id: str, id_or_label: str) -> Assessor | None:
        collections = self._collections(project_id)
        by_id = next((a for a in collections if a.id == id_or_label), None)
        return by_id or next((a for a in collections if a.label == id_or_label), None)

    def instance_uids(self, scan: Scan) -> set[str]:
        """SOPInstanceUIDs of the DICOM files stored in the scan's resources."""
        uids: set[str] = set()
        for resource in scan.resources:
            for path, entry in resource.files.items():
                key = (resource.id, path, entry.digest)
                if key not in self._instance_cache:
                    header = read_header(self.store.blob_path(resource, path))
                    self._instance_cache[key] = header.sop_uid if header else None
                uid = self._instance_cache[key]
                if uid:
                    uids.add(uid)
        return uids

    # ------------------------------------------------------------------ PUT
    def put_collection(self, request: Request, project_id: str, session_id: str,
                       label: str) -> Response:
        if not request.content_type.startswith("application/octet-stream"):
            raise HttpError(415, "Content-Type must be application/octet-stream")
        kind = request.query.get("type")
        if not kind:
            raise HttpError(400, "Required request parameter 'type' is not present")
        if kind not in SUPPORTED_TYPES:
            raise HttpError(422, f"Unsupported collection type: {kind}")
        session = self._session(project_id, session_id)
        if session.modality not in ROI_MODALITIES:
            raise HttpError(422, f"{kind} not supported for modality {session.modality}")
        overwrite = request.query.get("overwrite", "false").lower() == "true"
        existing = next(
            (a for a in self._collections(project_id) if a.label == label), None
        )
        if existing is not None and existing.session_id != session.id:
            raise HttpError(409, f"ROI collection {label} exists in a different session")
        if existing is not None and not overwrite:
            raise HttpError(422, "ROI collection exists, overwrite not specified")
        try:
            seg = self._parse(kind, request.body)
        except ValueError as exc:
            raise HttpError(422, f"Invalid {kind}: {exc}") from exc
        if kind == "SEG":
            if seg.sop_class_uid != SEG_SOP_CLASS:
                raise HttpError(422, "Not a DICOM segmentation")
            missing = self.missing_dependencies(seg, session)
            if missing:
                raise HttpError(422, "Missing dependencies: " + "; ".join(missing))
        elif kind == "RTSTRUCT" and seg.sop_class_uid != RTSTRUCT_SOP_CLASS:
            raise HttpError(422, "Not a DICOM RT structure set")
        assessor = self._store_collection(
            existing, project_id=project_id, session=session, label=label, seg=seg,
            data=request.body, kind=kind,
        )
        LOG.info("stored ROI collection %s (%s) on %s", assessor.id, label, session.id)
        return text(assessor.id, 200)

    @staticmethod
    def _parse(kind: str, data: bytes) -> SegInfo:
        if kind == "SEG":
            return parse_seg(data)
        if kind == "RTSTRUCT":
            return parse_rtstruct(data)
        return parse_aim(data)

    def missing_dependencies(self, seg: SegInfo, session: Experiment) -> list[str]:
        missing: list[str] = []
        if not seg.study_uid or seg.study_uid != session.uid:
            missing.append(f"study {seg.study_uid or '<none>'} is not the session's study")
        if not seg.series_refs:
            missing.append("no referenced series")
        scans: list[Scan] = []
        for series_uid in sorted(seg.series_refs):
            scan = next((s for s in session.scans if s.uid == series_uid), None)
            if scan is None:
                missing.append(f"series {series_uid}")
            else:
                scans.append(scan)
        available: set[str] = set()
        for scan in scans:
            available |= self.instance_uids(scan)
        absent = sorted(seg.all_instance_refs - available)
        if absent and scans:
            missing.append(f"{len(absent)} referenced instance(s), e.g. {absent[0]}")
        return missing

    def _store_collection(self, existing: Assessor | None, *, project_id: str,
                          session: Experiment, label: str, seg: SegInfo,
                          data: bytes, kind: str = "SEG") -> Assessor:
        if existing is None:
            assessor = Assessor(
                id=self.store.new_roi_id(), label=label, project=project_id,
                session_id=session.id, xsi_type=ROI_XSI,
            )
            self.store.state.assessors[assessor.id] = assessor
        else:
            assessor = existing
            for resource in assessor.out_resources:
                self.store.drop_resource_files(resource)
            assessor.out_resources.clear()
        assessor.date = seg.date
        assessor.time = seg.time
        if existing is None or self.behaviour.overwrite_dates == "reset":
            assessor.insert_date = self.store.insert_date()
        assessor.fields = {
            "collectionType": kind,
            "name": seg.series_description or kind,
            "UID": seg.sop_uid,
            "subjectID": session.subject_id,
        }
        assessor.series_uids = sorted(seg.series_refs)
        fmt, ext = FILE_KINDS[kind]
        resource: Resource = self.store.new_resource(kind, format=fmt, content="EXTERNAL")
        assessor.out_resources.append(resource)
        self.store.write_file(resource, f"{label}.{ext}", data)
        return assessor

    # ------------------------------------------------------------------ GET / DELETE
    def get_collection(self, request: Request, project_id: str, id_or_label: str) -> Response:
        assessor = self.find(project_id, id_or_label)
        if assessor is None:
            raise HttpError(404, f"ROI collection {id_or_label} not found")
        kind = assessor.fields.get("collectionType", "SEG")
        wanted = request.query.get("type")
        if wanted and wanted != kind:
            raise HttpError(422, f"Cannot convert {kind} to {wanted}")
        resource = next((r for r in assessor.out_resources if r.label == kind), None)
        if resource is None or not resource.files:
            raise HttpError(404, f"No {kind} file for {id_or_label}")
        path = sorted(resource.files)[0]
        data = self.store.read_file(resource, path)
        return binary(data, name=Path(path).name)

    def delete_collection(self, project_id: str, id_or_label: str) -> None:
        assessor = self.find(project_id, id_or_label)
        if assessor is None:
            raise HttpError(404, f"ROI collection {id_or_label} not found")
        self.store.delete_assessor(assessor, remove_files=True)
