"""Direct seeding of the archive (no HTTP): projects, subjects, sessions, DICOM scans.

The session UID is the StudyInstanceUID and each scan UID the SeriesInstanceUID
of the stored files, as XNAT sets them when it archives DICOM.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .dicomio import Header, read_header
from .model import SCAN_XSI, SESSION_XSI, Experiment, Project, Scan, Store, Subject

LOG = logging.getLogger(__name__)


def ensure_project(store: Store, project_id: str, name: str = "") -> Project:
    project = store.project(project_id)
    if project is None:
        project = Project(id=project_id, name=name or project_id)
        store.state.projects[project_id] = project
    return project


def ensure_subject(store: Store, project_id: str, label: str) -> Subject:
    ensure_project(store, project_id)
    subject = store.subject(label, project_id)
    if subject is None:
        subject = Subject(
            id=store.new_subject_id(), label=label, project=project_id,
            insert_date=store.insert_date(), insert_user="admin",
        )
        store.state.subjects[subject.id] = subject
    return subject


def ensure_session(store: Store, project_id: str, subject_label: str, label: str, *,
                   xsi_type: str = SESSION_XSI, uid: str = "", date: str = "",
                   modality: str = "MR") -> Experiment:
    subject = ensure_subject(store, project_id, subject_label)
    session = store.experiment(label, project_id)
    if session is None:
        session = Experiment(
            id=store.new_experiment_id(), label=label, project=project_id,
            subject_id=subject.id, xsi_type=xsi_type, uid=uid, date=date,
            modality=modality, insert_date=store.insert_date(),
        )
        store.state.experiments[session.id] = session
    return session


def _series_headers(dicom_dir: Path) -> list[tuple[Path, Header]]:
    found = []
    for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        header = read_header(path)
        if header is None:
            LOG.debug("skipping non-DICOM file %s", path)
            continue
        found.append((path, header))
    if not found:
        raise ValueError(f"no DICOM files in {dicom_dir}")
    series = {h.series_uid for _, h in found}
    if len(series) != 1:
        raise ValueError(f"{dicom_dir} holds {len(series)} series; one scan needs exactly one")
    return found


def add_dicom_scan(store: Store, session: Experiment, scan_id: str, dicom_dir: Path, *,
                   type: str = "", quality: str = "usable",
                   series_description: str = "", resource_label: str = "DICOM") -> Scan:
    """Store one series as scan ``scan_id`` with a ``DICOM`` resource."""
    files = _series_headers(dicom_dir)
    first = files[0][1]
    studies = {h.study_uid for _, h in files}
    if len(studies) != 1:
        raise ValueError(f"{dicom_dir} mixes studies {sorted(studies)}")
    if session.uid and session.uid != first.study_uid:
        raise ValueError(
            f"series in {dicom_dir} belongs to study {first.study_uid}, "
            f"session {session.label} is {session.uid}"
        )
    session.uid = first.study_uid
    if not session.date and len(first.study_date) == 8:
        d = first.study_date
        session.date = f"{d[:4]}-{d[4:6]}-{d[6:]}"
    if any(s.id == scan_id for s in session.scans):
        raise ValueError(f"scan {scan_id} already exists in {session.label}")
    description = series_description or first.series_description
    scan = Scan(
        id=str(scan_id), xsi_type=SCAN_XSI, type=type or description or str(scan_id),
        series_description=description, quality=quality, uid=first.series_uid,
        frames=len(files), modality=first.modality or "MR",
        xnat_imagescandata_id=str(store.next_counter("scan")),
    )
    resource = store.new_resource(resource_label, format="DICOM", content="RAW")
    for path, _header in files:
        store.write_file(resource, path.relative_to(dicom_dir).as_posix(), path.read_bytes(),
                         format="DICOM", content="RAW")
    scan.resources.append(resource)
    session.scans.append(scan)
    return scan


def seed_session(store: Store, project: str, subject: str, session: str,
                 scans: dict[str, Path], **kwargs: str) -> Experiment:
    """Create (or reuse) project/subject/session and add one scan per DICOM folder."""
    experiment = ensure_session(store, project, subject, session, **kwargs)
    for scan_id, folder in scans.items():
        add_dicom_scan(store, experiment, scan_id, Path(folder))
    return experiment
