"""Reading a running ``vhi viewer``'s announcement, and signing in to a station (tests of
the station and the viewer)."""

from __future__ import annotations

import io
import subprocess
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import requests

from support.dicom_series import write_series

#: The synthetic series' grid (tests of the station that need no anatomy).
SHAPE = (16, 16, 4)
AFFINE = np.diag([-1.0, 1.0, 2.0, 1.0])


def announced_url(proc: subprocess.Popen, label: str) -> tuple[str, str]:
    """Read ``vhi viewer``'s stderr up to its "cleaning station" line; return that line
    and the URL it gives for ``label`` (``site C`` or ``local site s1``)."""
    line = ""
    while "cleaning station" not in line:
        line = proc.stderr.readline()
        assert line, "vhi viewer exited early"
    assert f"{label}: http" in line, line
    return line, line.split(f"{label}: ", 1)[1].split("/ ", 1)[0]


def announced_links(proc: subprocess.Popen, sessions: int) -> dict[str, str]:
    """``vhi viewer``'s stdout announcement: key -> URL, ``worklist`` first, then one line
    per session awaiting cleaning (``sessions`` of them, as its stderr line says)."""
    links: dict[str, str] = {}
    for _ in range(sessions + 1):
        line = proc.stdout.readline()
        assert line, "vhi viewer exited early"
        key, _, url = line.rstrip("\n").partition("\t")
        links[key] = url
    assert "worklist" in links, links
    return links


def token_session(url: str, *, verify: bool | str = True) -> requests.Session:
    """A client signed in to a single-user station through its printed token URL."""
    session = requests.Session()
    session.trust_env = False
    session.verify = verify
    answer = session.get(url, timeout=30, allow_redirects=False)
    assert answer.status_code == 303, (answer.status_code, answer.text[:200])
    return session


def signin_url(server, access, target: str = "/") -> str:
    """The token URL of an in-process station (:class:`vhi.viewer.access.SingleUser`)."""
    return access.signin_url(server.url, target)


def synthetic_series(folder: Path, study_uid: str, *, patient: str = "P1") -> list[Path]:
    """A small MR series of ``study_uid`` as DICOM files (what a station's study holds)."""
    data = (np.arange(int(np.prod(SHAPE))).reshape(SHAPE) % 97).astype(np.int16)
    info = write_series(nib.Nifti1Image(data, AFFINE), folder, series_description="STIR", series_number=3,
                        study_uid=study_uid, patient_id=patient, patient_name=f"Test^{patient}",
                        study_date="20260101", frame_of_reference_uid=study_uid + ".1")
    return info.files


def reader_seg(series_files: list[Path], tmp: Path, *, voxels: int = 16,
               description: str = "Corrected by reader") -> bytes:
    """A reader's SEG on a synthetic series, as OHIF stores it (the platform's writer, its
    marks replaced): ``voxels`` voxels in slice 1."""
    from vhi.imaging.seg import write_seg

    datasets = [pydicom.dcmread(f) for f in series_files]
    mask = np.zeros(SHAPE, bool)
    mask.flat[np.flatnonzero(np.ones(SHAPE[:2]))[:voxels] * SHAPE[2] + 1] = True
    path = tmp / f"seg-{uuid.uuid4().hex}.dcm"
    write_seg(mask, AFFINE, datasets, path, algorithm_version="t", series_number=99)
    ds = pydicom.dcmread(path)
    ds.SeriesDescription = description
    ds.Manufacturer = "OHIF"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart(*instances: bytes, kind: str = "application/dicom") -> tuple[bytes, str]:
    """A STOW-RS body of ``instances`` and its content type."""
    b = uuid.uuid4().hex
    body = b"".join(f"--{b}\r\nContent-Type: {kind}\r\n\r\n".encode() + data + b"\r\n" for data in instances)
    return body + f"--{b}--\r\n".encode(), f'multipart/related; type="application/dicom"; boundary={b}'
