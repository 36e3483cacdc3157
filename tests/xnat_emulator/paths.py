"""Resolving ``/data[/archive]/...`` paths to objects of the archive."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import Assessor, Experiment, Project, Resource, Scan, Store, Subject
from .responses import HttpError

COLLECTIONS = ("projects", "subjects", "experiments", "scans", "assessors", "resources")
SINGULAR = {
    "projects": "project",
    "subjects": "subject",
    "experiments": "experiment",
    "scans": "scan",
    "assessors": "assessor",
    "resources": "resource",
}


@dataclass
class Target:
    """What a path points at. ``kind`` is a collection name (listing), a singular
    name (one object, which may be missing: then ``ident`` holds its name), or
    ``files``/``file``."""

    kind: str = "root"
    ident: str | None = None
    project: Project | None = None
    subject: Subject | None = None
    session: Experiment | None = None
    scans: list[Scan] = field(default_factory=list)
    scan_selector: str | None = None
    assessor: Assessor | None = None
    io: str | None = None
    resource: Resource | None = None
    file_path: str = ""

    @property
    def scan(self) -> Scan | None:
        return self.scans[0] if len(self.scans) == 1 and self.scan_selector != "ALL" else None

    def owner_kind(self) -> str:
        """The innermost object above a resources collection."""
        if self.assessor is not None:
            return "assessor"
        if self.scans:
            return "scan"
        if self.session is not None:
            return "experiment"
        if self.subject is not None:
            return "subject"
        if self.project is not None:
            return "project"
        return "root"


def _allowed(collection: str, target: Target) -> bool:
    owner = target.owner_kind()
    return {
        "projects": owner == "root",
        "subjects": owner in ("root", "project"),
        "experiments": owner in ("root", "project", "subject"),
        "scans": owner == "experiment",
        "assessors": owner == "experiment",
        "resources": owner in ("project", "subject", "experiment", "scan", "assessor"),
    }[collection]


def _lookup(store: Store, collection: str, ident: str, target: Target) -> object | None:
    project_id = target.project.id if target.project else None
    if collection == "experiments":
        found = store.experiment(ident, project_id)
        if found is not None and target.subject is not None and found.subject_id != target.subject.id:
            return None
        return found
    lookups = {
        "projects": lambda: store.project(ident),
        "subjects": lambda: store.subject(ident, project_id),
        "assessors": lambda: store.assessor(ident, target.session) if target.session else None,
        "resources": lambda: store.resource(resource_list(target), ident),
    }
    if collection not in lookups:
        raise HttpError(404, f"Unknown collection {collection}")
    return lookups[collection]()


def resource_list(target: Target) -> list[Resource]:
    """The resource list a ``.../resources`` segment refers to (in/out for assessors)."""
    if target.assessor is not None:
        sides = {
            "in": target.assessor.in_resources,
            "out": target.assessor.out_resources,
            None: target.assessor.out_resources + target.assessor.in_resources,
        }
        return sides[target.io]
    if target.scans:
        if target.scan is None:
            raise HttpError(400, "Resources need a single scan")
        return target.scan.resources
    if target.session is not None:
        return target.session.resources
    if target.subject is not None:
        return target.subject.resources
    if target.project is not None:
        return target.project.resources
    raise HttpError(404, "No resource owner")


def _select_scans(session: Experiment, selector: str) -> list[Scan]:
    if selector == "ALL":
        return list(session.scans)
    chosen: list[Scan] = []
    for part in selector.split(","):
        chosen.extend(s for s in session.scans if part in (s.id, s.type) and s not in chosen)
    return chosen


def _assign(target: Target, collection: str, obj: object) -> None:
    if collection == "projects":
        assert isinstance(obj, Project)
        target.project = obj
    elif collection == "subjects":
        assert isinstance(obj, Subject)
        target.subject = obj
    elif collection == "experiments":
        assert isinstance(obj, Experiment)
        target.session = obj
    elif collection == "assessors":
        assert isinstance(obj, Assessor)
        target.assessor = obj
    elif collection == "resources":
        assert isinstance(obj, Resource)
        target.resource = obj


def resolve(store: Store, segments: list[str]) -> Target:
    """Walk the path segments; a missing object is only allowed in the last position."""
    target = Target()
    i = 0
    while i < len(segments):
        name = segments[i]
        if name == "files":
            if target.owner_kind() == "root":
                raise HttpError(404, "files need an owner")
            target.file_path = "/".join(segments[i + 1 :])
            target.kind = "file" if target.file_path else "files"
            return target
        if name in ("in", "out") and target.kind == "assessor":
            target.io = name
            i += 1
            continue
        if name not in COLLECTIONS or not _allowed(name, target):
            raise HttpError(404, f"Unknown path element {name!r}")
        if i + 1 >= len(segments):
            target.kind = name
            return target
        ident = segments[i + 1]
        last = i + 2 >= len(segments)
        target.kind = SINGULAR[name]
        target.ident = ident
        if name == "scans":
            assert target.session is not None
            target.scan_selector = ident
            target.scans = _select_scans(target.session, ident)
            if not target.scans and not last:
                raise HttpError(404, f"Scan {ident} not found")
        else:
            found = _lookup(store, name, ident, target)
            if found is None:
                if not last:
                    raise HttpError(404, f"{SINGULAR[name].capitalize()} {ident} not found")
                return target
            _assign(target, name, found)
            if name == "experiments" and target.project is None:
                target.project = store.project(target.session.project) if target.session else None
        i += 2
    return target
