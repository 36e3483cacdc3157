"""A scan's DICOM files from XNAT: one zip, checked, unpacked, converted to NIfTI.

The files of the scan's resource are listed first (name, size, MD5), then downloaded
as one zip. The zip must pass its CRC check and hold exactly the listed files, each with
the listed size and MD5; a damaged download is tried again (:class:`_Transfer`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vhi.cohort.ids import ROLE_NAMES, Session
from vhi.sources.xnat.client import XnatClient, XnatError, _Transfer
from vhi.sources.xnat.select import ROLES, ScanRow
from vhi.sources.xnat.uris import parse_scan_uri, scan_uri

log = logging.getLogger(__name__)


def download_series(client: XnatClient, session: Session, role: str, dest_dir: Path,
                    resource: str) -> dict[str, Any]:
    """Download and verify the DICOM files of the session's ``role`` scan into ``dest_dir``."""
    what = f"session {session.key}"
    name = ROLE_NAMES.get(role, role)
    exp, scan_id = parse_scan_uri(client.server, session, role)
    base = f"/data/experiments/{exp}/scans/{scan_id}"
    scan_rows = client.get_rows(what, f"reading {name} scan {scan_id}", f"/data/experiments/{exp}/scans")
    scan = next((ScanRow.from_listing(r) for r in scan_rows if str(r.get("ID")) == scan_id), None)
    if scan is None:
        raise XnatError(what, f"{name} scan {scan_id} is no longer in experiment {exp}")
    listing = client.get_rows(what, f"listing the {resource} files of {name} scan {scan_id}",
                              f"{base}/resources/{resource}/files")
    expected: dict[str, tuple[int, str]] = {}
    for row in listing:
        uri = str(row.get("URI", ""))
        rel = uri.split("/files/", 1)[1] if "/files/" in uri else str(row.get("Name", ""))
        expected[rel] = (int(str(row.get("Size") or -1)), str(row.get("digest") or ""))
    if not expected:
        raise XnatError(what, f"{name} scan {scan_id} has no files in resource {resource}")

    def fetch(conn: Any) -> dict[str, Any]:
        for old in dest_dir.iterdir():
            old.unlink()
        zip_path = dest_dir.parent / f".{dest_dir.name}.zip"
        try:
            with zip_path.open("wb") as fh:
                conn.download_stream(f"{base}/resources/{resource}/files", fh, format="zip",
                                     timeout=client.timeout_s)
            return unpack_checked(zip_path, expected, dest_dir)
        finally:
            zip_path.unlink(missing_ok=True)

    info = client.call(what, f"downloading {name} scan {scan_id}", fetch)
    return {"uri": scan_uri(client.server, exp, scan_id), "experiment": exp, "scan": scan_id,
            "series_uid": scan.uid, "series_description": scan.series_description,
            "type": scan.type, "quality": scan.quality, **info}


def unpack_checked(zip_path: Path, expected: Mapping[str, tuple[int, str]],
                   dest_dir: Path) -> dict[str, Any]:
    """Unpack the zip into ``dest_dir`` if it holds exactly the ``expected`` files (rel ->
    (size or -1, MD5 or "")); returns the SHA-256 over names and contents and the count."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise _Transfer(f"zip member {bad} fails its CRC check")
            members = [m for m in archive.infolist() if not m.is_dir()]
            found: dict[str, zipfile.ZipInfo] = {}
            for member in members:
                name = member.filename
                rel = name.split("/files/", 1)[1] if "/files/" in name else name
                found[rel] = member
            missing = sorted(set(expected) - set(found))
            extra = sorted(set(found) - set(expected))
            if missing or extra:
                raise _Transfer(f"the zip does not hold the listed files ({len(missing)} missing, "
                                f"{len(extra)} unlisted, e.g. {(missing or extra)[0]})")
            digest = hashlib.sha256()
            for n, rel in enumerate(sorted(found)):
                data = archive.read(found[rel])
                size, md5 = expected[rel]
                if size >= 0 and len(data) != size:
                    raise _Transfer(f"{rel}: {len(data)} bytes, the listing says {size}")
                if md5 and hashlib.md5(data).hexdigest() != md5:  # noqa: S324 - XNAT's digest
                    raise _Transfer(f"{rel}: MD5 differs from the listing's digest")
                digest.update(rel.encode() + b"\0" + data)
                (dest_dir / f"{n:05d}_{Path(rel).name}").write_bytes(data)
    except zipfile.BadZipFile as exc:
        raise _Transfer(f"damaged zip ({exc})") from None
    return {"sha256": digest.hexdigest(), "files": len(found)}


def _series(client: XnatClient, session: Session, role: str, work: Path,
            resource: str) -> tuple[dict[str, Any], Path]:
    folder = work / role
    folder.mkdir()
    return download_series(client, session, role, folder, resource), folder


def fetch_scan(client: XnatClient, session: Session, role: str, dest: str | os.PathLike[str],
               resource: str) -> dict[str, Any]:
    """Download the scan of ``role``, verify it and convert it (dcm2niix) to ``dest``."""
    from vhi.fileio import atomic_path
    from vhi.imaging.dicom import dicom_to_nifti

    name = ROLE_NAMES.get(role, role)
    if role not in ROLES:
        raise XnatError(f"session {session.key}", f"XNAT sources have no {role} scans")
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="vhi-xnat-") as tmp:
        info, folder = _series(client, session, role, Path(tmp), resource)
        with atomic_path(dest) as out:
            dicom_to_nifti(folder, out, scan=f"session {session.key}: {name} scan "
                                             f"{info['scan']} ({info['uri']})")
    log.info("session %s: %s scan %s '%s' (%d files, verified) -> %s", session.key, name,
             info["scan"], info["series_description"], info["files"], dest)
    return info


def stir_grid(client: XnatClient, session: Session, work: Path,
              resource: str) -> tuple[dict[str, Any], list[Any], Any]:
    """The archived STIR series: its datasets and the NIfTI grid dcm2niix makes of it."""
    import nibabel as nib

    from vhi.imaging.dicom import dicom_to_nifti, read_series

    info, folder = _series(client, session, "stir", work, resource)
    scan = f"session {session.key}: STIR scan {info['scan']}"
    nifti = dicom_to_nifti(folder, work / "stir.nii.gz", scan=scan)
    return info, read_series(folder), nib.load(nifti)
