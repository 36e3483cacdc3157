"""In-memory XNAT data model with a JSON snapshot and file blobs on disk.

Layout of the state folder::

    <root>/state.json                 every object's metadata (rewritten after each change)
    <root>/files/<resource_id>/<path> the bytes of each file of a resource catalog

All mutation goes through :class:`Store` while holding ``Store.lock``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import secrets
import shutil
import string
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

SESSION_XSI = "xnat:mrSessionData"
SCAN_XSI = "xnat:mrScanData"
ROI_XSI = "icr:roiCollectionData"


@dataclass
class FileEntry:
    size: int
    digest: str
    content: str = ""
    format: str = ""
    tags: str = ""


@dataclass
class Resource:
    id: str
    label: str
    format: str = ""
    content: str = ""
    tags: str = ""
    description: str = ""
    files: dict[str, FileEntry] = field(default_factory=dict)


@dataclass
class Scan:
    id: str
    xsi_type: str = SCAN_XSI
    type: str = ""
    series_description: str = ""
    quality: str = "usable"
    note: str = ""
    uid: str = ""
    frames: int = 0
    modality: str = "MR"
    xnat_imagescandata_id: str = ""
    resources: list[Resource] = field(default_factory=list)


@dataclass
class Assessor:
    id: str
    label: str
    project: str
    session_id: str
    xsi_type: str = ROI_XSI
    date: str = ""
    time: str = ""
    insert_date: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    series_uids: list[str] = field(default_factory=list)
    in_resources: list[Resource] = field(default_factory=list)
    out_resources: list[Resource] = field(default_factory=list)


@dataclass
class Experiment:
    id: str
    label: str
    project: str
    subject_id: str
    xsi_type: str = SESSION_XSI
    date: str = ""
    time: str = ""
    uid: str = ""
    modality: str = "MR"
    note: str = ""
    insert_date: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    scans: list[Scan] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)


@dataclass
class Subject:
    id: str
    label: str
    project: str
    insert_date: str = ""
    insert_user: str = ""
    resources: list[Resource] = field(default_factory=list)


@dataclass
class Project:
    id: str
    name: str = ""
    secondary_id: str = ""
    description: str = ""
    resources: list[Resource] = field(default_factory=list)


@dataclass
class State:
    projects: dict[str, Project] = field(default_factory=dict)
    subjects: dict[str, Subject] = field(default_factory=dict)
    experiments: dict[str, Experiment] = field(default_factory=dict)
    assessors: dict[str, Assessor] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)


def now_iso() -> str:
    """Server time as XNAT prints insert dates, with milliseconds."""
    return dt.datetime.now().isoformat(sep=" ", timespec="milliseconds")


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - XNAT's catalog digest is MD5


def _resources_from(raw: list[dict[str, Any]]) -> list[Resource]:
    result = []
    for item in raw:
        files = {path: FileEntry(**entry) for path, entry in item.pop("files", {}).items()}
        result.append(Resource(**item, files=files))
    return result


def _state_from_dict(raw: dict[str, Any]) -> State:
    state = State(counters=dict(raw.get("counters", {})))
    for pid, item in raw.get("projects", {}).items():
        item["resources"] = _resources_from(item.get("resources", []))
        state.projects[pid] = Project(**item)
    for sid, item in raw.get("subjects", {}).items():
        item["resources"] = _resources_from(item.get("resources", []))
        state.subjects[sid] = Subject(**item)
    for eid, item in raw.get("experiments", {}).items():
        item["resources"] = _resources_from(item.get("resources", []))
        scans = []
        for scan in item.pop("scans", []):
            scan["resources"] = _resources_from(scan.get("resources", []))
            scans.append(Scan(**scan))
        state.experiments[eid] = Experiment(**item, scans=scans)
    for aid, item in raw.get("assessors", {}).items():
        item["in_resources"] = _resources_from(item.get("in_resources", []))
        item["out_resources"] = _resources_from(item.get("out_resources", []))
        state.assessors[aid] = Assessor(**item)
    return state


class Store:
    """The emulator's archive: metadata plus file blobs under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.blob_root = self.root / "files"
        self.blob_root.mkdir(exist_ok=True)
        self.lock = threading.RLock()
        self._last_insert = ""
        state_file = self.root / "state.json"
        if state_file.is_file():
            self.state = _state_from_dict(json.loads(state_file.read_text()))
            LOG.info("loaded emulator state from %s", state_file)
        else:
            self.state = State()

    # ---------------------------------------------------------------- persistence
    def save(self) -> None:
        with self.lock:
            tmp = self.root / "state.json.tmp"
            tmp.write_text(json.dumps(dataclasses.asdict(self.state), indent=1))
            tmp.replace(self.root / "state.json")

    # ---------------------------------------------------------------- identifiers
    def next_counter(self, name: str) -> int:
        with self.lock:
            value = self.state.counters.get(name, 0) + 1
            self.state.counters[name] = value
            return value

    def new_subject_id(self) -> str:
        return f"XNAT_S{self.next_counter('subject'):05d}"

    def new_experiment_id(self) -> str:
        return f"XNAT_E{self.next_counter('experiment'):05d}"

    @staticmethod
    def new_roi_id() -> str:
        alphabet = string.ascii_letters + string.digits
        return "RoiCollection_" + "".join(secrets.choice(alphabet) for _ in range(20))

    def new_resource(self, label: str, **attrs: str) -> Resource:
        return Resource(id=str(self.next_counter("resource")), label=label, **attrs)

    def insert_date(self) -> str:
        """A server timestamp that strictly increases between calls."""
        with self.lock:
            stamp = now_iso()
            while stamp <= self._last_insert:
                stamp = (
                    dt.datetime.fromisoformat(self._last_insert) + dt.timedelta(milliseconds=1)
                ).isoformat(sep=" ", timespec="milliseconds")
            self._last_insert = stamp
            return stamp

    # ---------------------------------------------------------------- lookups
    def project(self, ident: str) -> Project | None:
        return self.state.projects.get(ident)

    def subject(self, ident: str, project: str | None = None) -> Subject | None:
        found = self.state.subjects.get(ident)
        if found is not None and (project is None or found.project == project):
            return found
        if project is None:
            return None
        return next(
            (s for s in self.state.subjects.values() if s.project == project and s.label == ident),
            None,
        )

    def experiment(self, ident: str, project: str | None = None) -> Experiment | None:
        found = self.state.experiments.get(ident)
        if found is not None and (project is None or found.project == project):
            return found
        if project is None:
            return None
        return next(
            (e for e in self.state.experiments.values() if e.project == project and e.label == ident),
            None,
        )

    def assessor(self, ident: str, session: Experiment) -> Assessor | None:
        found = self.state.assessors.get(ident)
        if found is not None and found.session_id == session.id:
            return found
        return next(
            (a for a in self.session_assessors(session) if a.label == ident),
            None,
        )

    def session_assessors(self, session: Experiment) -> list[Assessor]:
        return [a for a in self.state.assessors.values() if a.session_id == session.id]

    @staticmethod
    def scan(session: Experiment, ident: str) -> Scan | None:
        by_id = next((s for s in session.scans if s.id == ident), None)
        return by_id or next((s for s in session.scans if s.type == ident), None)

    @staticmethod
    def resource(resources: list[Resource], ident: str) -> Resource | None:
        by_id = next((r for r in resources if r.id == ident), None)
        return by_id or next((r for r in resources if r.label == ident), None)

    # ---------------------------------------------------------------- file blobs
    def blob_path(self, resource: Resource, path: str) -> Path:
        base = (self.blob_root / resource.id).resolve()
        target = (base / path).resolve()
        if base not in target.parents:
            raise ValueError(f"file path escapes its resource: {path!r}")
        return target

    def write_file(
        self, resource: Resource, path: str, data: bytes, **attrs: str
    ) -> FileEntry:
        target = self.blob_path(resource, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        entry = FileEntry(size=len(data), digest=md5_bytes(data), **attrs)
        resource.files[path] = entry
        return entry

    def read_file(self, resource: Resource, path: str) -> bytes:
        return self.blob_path(resource, path).read_bytes()

    def delete_file(self, resource: Resource, path: str) -> None:
        self.blob_path(resource, path).unlink(missing_ok=True)
        resource.files.pop(path, None)

    def drop_resource_files(self, resource: Resource) -> None:
        shutil.rmtree(self.blob_root / resource.id, ignore_errors=True)
        resource.files.clear()

    # ---------------------------------------------------------------- deletion
    def delete_experiment(self, session: Experiment, remove_files: bool) -> None:
        for assessor in self.session_assessors(session):
            self.delete_assessor(assessor, remove_files)
        for resource in self.experiment_resources(session):
            if remove_files:
                self.drop_resource_files(resource)
        del self.state.experiments[session.id]

    def delete_assessor(self, assessor: Assessor, remove_files: bool) -> None:
        if remove_files:
            for resource in assessor.in_resources + assessor.out_resources:
                self.drop_resource_files(resource)
        del self.state.assessors[assessor.id]

    @staticmethod
    def experiment_resources(session: Experiment) -> list[Resource]:
        result = list(session.resources)
        for scan in session.scans:
            result.extend(scan.resources)
        return result
