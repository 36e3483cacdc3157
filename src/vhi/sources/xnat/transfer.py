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
from pathlib import Path, PurePosixPath
from typing import Any

from vhi.cohort.ids import ROLE_NAMES, Session
from vhi.sources.select import ROLES
from vhi.sources.xnat.client import XnatClient, XnatError, _Transfer
from vhi.sources.xnat.listing import scan_row
from vhi.sources.xnat.uris import parse_scan_uri, scan_uri

log = logging.getLogger(__name__)


def download_series(client: XnatClient, session: Session, role: str, dest_dir: Path,
                    resource: str) -> dict[str, Any]:
    """Download and verify the DICOM files of the session's ``role`` scan into ``dest_dir``."""
    what = f"session {session.key}"
    name = ROLE_NAMES.get(role, role)
    exp, scan_id = parse_scan_uri(client.server, session, role)
    base = f"/data/experiments/{exp}/scans/{scan_id}"
    scan = scan_row(client, session, exp, scan_id, name)
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
    series_uid = scan.uid or _series_uid_of(dest_dir)
    return {"uri": scan_uri(client.server, exp, scan_id), "experiment": exp, "scan": scan_id,
            "series_uid": series_uid, "series_description": scan.series_description,
            "type": scan.type, "quality": scan.quality, "frames": scan.frames, **info}


def _series_uid_of(folder: Path) -> str:
    """The SeriesInstanceUID in the downloaded files (when the scan's JSON had none)."""
    import pydicom

    for path in sorted(folder.iterdir()):
        try:
            return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
        except Exception:  # noqa: BLE001, S112 - not DICOM; dcm2niix names the bad file later
            continue
    return ""


#: The largest file a scan's zip may hold (one DICOM instance; an enhanced multi-frame
#: STIR is tens of MB). A member declaring more is refused before anything is inflated.
MAX_MEMBER_BYTES = 1 << 30


def unpack_checked(zip_path: Path, expected: Mapping[str, tuple[int, str]],
                   dest_dir: Path) -> dict[str, Any]:
    """Unpack the zip into ``dest_dir`` if it holds exactly the ``expected`` files (rel ->
    (size or -1, MD5 or "")); returns the SHA-256 over names and contents and the count.

    Members are matched against the listing (name and declared size) before anything is
    inflated, then streamed to disk in blocks (never whole into memory), each checked
    against its size, MD5 and CRC as it is written.
    """
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            found = _match_members(members, expected)
            big = [m for m in found.values() if m.file_size > MAX_MEMBER_BYTES]
            if big:
                raise XnatError(str(zip_path), f"zip member {big[0].filename} declares "
                                               f"{big[0].file_size:,} bytes, more than the "
                                               f"{MAX_MEMBER_BYTES:,} a DICOM file may have")
            digest = hashlib.sha256()
            for n, rel in enumerate(sorted(found)):
                size, md5 = expected[rel]
                check = hashlib.md5()  # noqa: S324 - XNAT's digest
                written = 0
                digest.update(rel.encode() + b"\0")
                with archive.open(found[rel]) as src, \
                        (dest_dir / f"{n:05d}_{Path(rel).name}").open("wb") as out:
                    while block := src.read(1 << 20):  # the CRC is checked at the end
                        written += len(block)
                        check.update(block)
                        digest.update(block)
                        out.write(block)
                if size >= 0 and written != size:
                    raise _Transfer(f"{rel}: {written} bytes, the listing says {size}")
                if md5 and check.hexdigest() != md5:
                    raise _Transfer(f"{rel}: MD5 differs from the listing's digest")
    except zipfile.BadZipFile as exc:
        raise _Transfer(f"damaged zip ({exc})") from None
    return {"sha256": digest.hexdigest(), "files": len(found)}


def _match_members(members: list[zipfile.ZipInfo],
                   expected: Mapping[str, tuple[int, str]]) -> dict[str, zipfile.ZipInfo]:
    """Listed file (path below ``files/``) -> its zip member, wherever the zip puts it.

    The folders inside XNAT's zips are not fixed (protocol note §1.5): a member matches a
    listed file when its path ends with the listed path (else with its name) and it has
    the listed size; the MD5 is checked on reading. Every listed file must have exactly
    one member and every member one listed file."""
    by_name: dict[str, list[str]] = {}
    for rel in expected:
        by_name.setdefault(PurePosixPath(rel).name, []).append(rel)
    found: dict[str, zipfile.ZipInfo] = {}
    unlisted: list[str] = []
    for member in members:
        name = member.filename
        options = [rel for rel in by_name.get(PurePosixPath(name).name, [])
                   if rel not in found and (expected[rel][0] < 0 or expected[rel][0] == member.file_size)]
        longest = [rel for rel in options if name == rel or name.endswith("/" + rel)]
        pick = (longest or options)[:1]
        if pick:
            found[pick[0]] = member
        else:
            unlisted.append(name)
    missing = sorted(set(expected) - set(found))
    if missing or unlisted:
        raise _Transfer(f"the zip does not hold the listed files ({len(missing)} missing, "
                        f"{len(unlisted)} unlisted, e.g. {(missing or unlisted)[0]})")
    return found


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
        if role == "stir":  # what push and collect need of the series, without downloading it again
            info["dicom_headers"] = headers_of(folder)
    log.info("session %s: %s scan %s '%s' (%d files, verified) -> %s", session.key, name,
             info["scan"], info["series_description"], info["files"], dest)
    return info


#: Value representations dropped from kept headers: bulk binary data, not needed for a SEG.
_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def headers_of(folder: Path) -> list[dict[str, Any]]:
    """The series' DICOM headers as DICOM JSON (no pixel data, private or binary elements):
    what writing a SEG against the series and reading one back need."""
    from vhi.imaging.dicom import read_series

    out = []
    for ds in read_series(folder):
        ds.remove_private_tags()
        for elem in list(ds):
            if elem.VR in _BULK_VRS or elem.tag.group in (0x7FE0,):
                del ds[elem.tag]
        out.append(ds.to_json_dict(suppress_invalid_tags=True))
    return out


def datasets_from(headers: list[dict[str, Any]]) -> list[Any]:
    """The datasets :func:`headers_of` kept."""
    from pydicom import Dataset

    return [Dataset.from_json(h) for h in headers]


def stir_grid(client: XnatClient, session: Session, work: Path,
              resource: str) -> tuple[dict[str, Any], list[Any], Any]:
    """The archived STIR series: its datasets and the NIfTI grid dcm2niix makes of it."""
    import nibabel as nib

    from vhi.imaging.dicom import dicom_to_nifti, read_series

    info, folder = _series(client, session, "stir", work, resource)
    scan = f"session {session.key}: STIR scan {info['scan']}"
    nifti = dicom_to_nifti(folder, work / "stir.nii.gz", scan=scan)
    return info, read_series(folder), nib.load(nifti)
