"""Zip responses and ``extract=true`` uploads."""

from __future__ import annotations

import gzip
import io
import logging
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

LOG = logging.getLogger(__name__)


def build_zip(entries: Iterable[tuple[str, Path]]) -> bytes:
    """A zip of ``(name inside the zip, file on disk)`` pairs, deflated."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname, path in entries:
            archive.write(path, arcname)
    return buffer.getvalue()


def _safe(name: str) -> str | None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not name or name.endswith("/"):
        return None
    return str(path)


def unpack(name: str, data: bytes) -> list[tuple[str, bytes]] | None:
    """Members of a .zip/.tar/.tar.gz/.tgz/.gz upload, or None when ``name`` is no archive."""
    lower = name.lower()
    members: list[tuple[str, bytes]] = []
    if lower.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                safe = _safe(info.filename)
                if safe and not info.is_dir():
                    members.append((safe, archive.read(info)))
        return members
    if lower.endswith((".tar", ".tar.gz", ".tgz")):
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive.getmembers():
                safe = _safe(member.name)
                handle = archive.extractfile(member) if member.isfile() else None
                if safe and handle is not None:
                    members.append((safe, handle.read()))
        return members
    if lower.endswith(".gz"):
        return [(PurePosixPath(name).name[:-3], gzip.decompress(data))]
    return None
