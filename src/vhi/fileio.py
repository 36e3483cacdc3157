"""Files written whole or not at all, JSON sidecars and content digests.

Every output of the platform goes through :func:`atomic_path`: it is written to a
temporary name in its target folder and renamed into place only when complete, so a
crash, a kill or a full disk leaves the previous file (or none), never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it to ``dest`` only if the block succeeds.

    The temporary name keeps ``dest``'s suffixes, so writers that pick a format from the
    name (nibabel) behave the same. On failure the temporary file is removed and an
    existing ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(dest.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".part{suffix}", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        tmp_path.replace(dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def save_json(obj: Any, dest: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return Path(dest)


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``x.nii.gz`` → ``x.json`` (the provenance sidecar of an output)."""
    path = Path(path)
    name = path.name
    for ext in (".nii.gz", ".nii", ".seg.dcm", ".dcm"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def copy_hashed(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> dict[str, Any]:
    """Copy ``src`` to ``dest`` atomically; return the source's sha256 and size."""
    digest = hashlib.sha256()
    size = 0
    with atomic_path(dest) as tmp, Path(src).open("rb") as fin, tmp.open("wb") as fout:
        while block := fin.read(1 << 20):
            digest.update(block)
            fout.write(block)
            size += len(block)
    return {"sha256": digest.hexdigest(), "size": size}
