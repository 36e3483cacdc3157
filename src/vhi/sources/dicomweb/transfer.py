"""A series from a DICOMweb service: WADO-RS, verified, converted to NIfTI with dcm2niix.

The instances of the series are listed by QIDO-RS first; the WADO-RS retrieval must give
exactly those instances (a short or damaged retrieval is tried again). The series must
then be complete: its slices evenly spaced along the slice normal and its instance
numbers without a hole, so a series with an instance missing on the server is refused
by name rather than converted into a volume with a slice missing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vhi.cohort.ids import ROLE_NAMES, Session
from vhi.sources.dicomweb.client import DicomwebConnection, DicomwebError, _Damaged
from vhi.sources.dicomweb.listing import search_all, value
from vhi.sources.dicomweb.uris import parse_series_uri, series_uri

log = logging.getLogger(__name__)

#: A gap between neighbouring slices this much wider than the usual spacing is a missing slice.
GAP_FACTOR = 1.5
ROLES = ("stir", "t1w")


def _check_complete(datasets: list[Any], what: str, label: str) -> None:
    """Refuse a series with a slice missing (uneven spacing or a hole in the instance numbers)."""
    if len(datasets) < 2:
        return
    iop = np.asarray([float(v) for v in datasets[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    positions = np.sort([float(np.asarray([float(v) for v in ds.ImagePositionPatient]) @ normal)
                         for ds in datasets])
    steps = np.diff(positions)
    usual = float(np.median(steps))
    if usual > 0 and float(steps.max()) > GAP_FACTOR * usual:
        at = int(np.argmax(steps))
        raise DicomwebError(what, f"{label} is incomplete: {float(steps[at]):.2f} mm between slices "
                                  f"{at + 1} and {at + 2} where the spacing is {usual:.2f} mm "
                                  "(an instance is missing on the server)")
    numbers = sorted(int(ds.InstanceNumber) for ds in datasets if "InstanceNumber" in ds)
    if len(numbers) == len(datasets) and numbers[-1] - numbers[0] + 1 != len(numbers):
        raise DicomwebError(what, f"{label} is incomplete: instance numbers {numbers[0]}..{numbers[-1]} "
                                  f"but {len(numbers)} instances (an instance is missing on the server)")


def download_series(conn: DicomwebConnection, session: Session, role: str,
                    dest_dir: Path) -> dict[str, Any]:
    """Retrieve and verify the instances of the session's ``role`` series into ``dest_dir``."""
    what = f"session {session.key}"
    name = ROLE_NAMES.get(role, role)
    study, series = parse_series_uri(conn.url, session, role)
    label = f"{name} series {series}"
    rows = search_all(conn, what, f"listing the instances of {label}",
                      f"studies/{study}/series/{series}/instances", "SOPInstanceUID",
                      fields=("SOPInstanceUID", "InstanceNumber"))
    expected = {value(r, "SOPInstanceUID") for r in rows} - {""}
    if not expected:
        raise DicomwebError(what, f"{label} has no instances on the service")

    def fetch(client: Any) -> list[Any]:
        try:
            datasets = client.retrieve_series(study, series)
        except ValueError as exc:  # dicomweb-client: the answer is not multipart/related
            raise DicomwebError(what, f"retrieving {label}: the service's answer is not DICOM "
                                      f"(WADO-RS multipart/related): {exc}") from None
        got = {str(ds.SOPInstanceUID) for ds in datasets}
        if got > expected:
            raise DicomwebError(what, f"retrieving {label}: WADO-RS gave {len(got)} instances "
                                      f"where the search lists {len(expected)}: the service caps "
                                      "the results of a search (e.g. Orthanc's LimitFindInstances); "
                                      "raise that limit on the service")
        if got != expected or len(datasets) != len(expected):
            raise _Damaged(f"WADO-RS gave {len(datasets)} instances, QIDO-RS lists {len(expected)} "
                           f"({len(expected - got)} missing, {len(got - expected)} unlisted)")
        return datasets

    datasets = conn.call(what, f"retrieving {label}", fetch)
    _check_complete(datasets, what, label)
    digest = hashlib.sha256()
    for n, ds in enumerate(sorted(datasets, key=lambda d: str(d.SOPInstanceUID))):
        path = dest_dir / f"{n:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        digest.update(str(ds.SOPInstanceUID).encode() + b"\0" + path.read_bytes())
    first = datasets[0]
    return {"uri": series_uri(conn.url, study, series), "study_uid": study, "series_uid": series,
            "series_description": str(first.get("SeriesDescription", "")),
            "series_number": str(first.get("SeriesNumber", "")), "instances": len(datasets),
            "sha256": digest.hexdigest()}


def _series(conn: DicomwebConnection, session: Session, role: str,
            work: Path) -> tuple[dict[str, Any], Path]:
    folder = work / role
    folder.mkdir()
    return download_series(conn, session, role, folder), folder


def fetch_scan(conn: DicomwebConnection, session: Session, role: str,
               dest: str | os.PathLike[str]) -> dict[str, Any]:
    """Retrieve the series of ``role``, verify it and convert it (dcm2niix) to ``dest``."""
    from vhi.fileio import atomic_path
    from vhi.imaging.dicom import dicom_to_nifti

    name = ROLE_NAMES.get(role, role)
    if role not in ROLES:
        raise DicomwebError(f"session {session.key}", f"DICOMweb sources have no {name} series")
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="vhi-dicomweb-") as tmp:
        info, folder = _series(conn, session, role, Path(tmp))
        with atomic_path(dest) as out:
            dicom_to_nifti(folder, out, scan=f"session {session.key}: {name} series "
                                             f"{info['series_uid']} ({info['uri']})")
    log.info("session %s: %s series '%s' (%d instances, verified) -> %s", session.key, name,
             info["series_description"], info["instances"], dest)
    return info


def stir_grid(conn: DicomwebConnection, session: Session,
              work: Path) -> tuple[dict[str, Any], list[Any], Any]:
    """The STIR series on the service: its datasets and the NIfTI grid dcm2niix makes of it."""
    import nibabel as nib

    from vhi.imaging.dicom import dicom_to_nifti, read_series

    info, folder = _series(conn, session, "stir", work)
    nifti = dicom_to_nifti(folder, work / "stir.nii.gz",
                           scan=f"session {session.key}: STIR series {info['series_uid']}")
    return info, read_series(folder), nib.load(nifti)
