"""Files written whole or not at all, JSON sidecars and content digests.

Every output of the platform goes through :func:`atomic_path`: it is written to a
temporary name in its target folder, flushed to disk (``fsync``) and renamed into place
only when complete, and the folder is flushed after the rename, so a crash, a kill, a full
disk or a power loss leaves the previous file (or none), never half of one or an empty
file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vhi.errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it to ``dest`` only if the block succeeds.

    The temporary name keeps ``dest``'s suffixes, so writers that pick a format from the
    name (nibabel) behave the same. Before the rename the file's data reach the disk
    (``fsync``), and after it the folder's entry does: without the first a power loss can
    leave ``dest`` empty, without the second it can leave the old file or none. On failure
    the temporary file is removed and an existing ``dest`` is left untouched.
    """
    dest = Path(dest)
    if dest.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file to write", str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(dest.suffixes)
    # a writer killed outright (SIGKILL, OOM, node loss) left its temporary file behind
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.part{glob.escape(suffix)}"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".part{suffix}", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        _fsync(tmp_path)
        tmp_path.replace(dest)
        _fsync(dest.parent, folder=True)
    except OSError as exc:
        if exc.filename is None:  # a write's "No space left on device" names no file
            raise OSError(exc.errno, exc.strerror or str(exc), str(dest)) from exc
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def _fsync(path: Path, *, folder: bool = False) -> None:
    """Flush a file's (or a folder's) data to the disk. A file system that cannot flush a
    folder (some network ones refuse with EINVAL) is left as it is."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder else 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if not (folder and exc.errno in (errno.EINVAL, errno.ENOTSUP)):
            raise
    finally:
        os.close(fd)


def read_json(path: str | os.PathLike[str], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object written by the platform, with ``required`` keys present and not null.

    Raises :class:`InputError` naming the file when it cannot be read, is not a JSON object
    or lacks a key: an unreadable sidecar is a failure, never an empty record.
    """
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(path, "missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be read ({exc.__class__.__name__}: {exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc}); remove it and run again") from None
    if not isinstance(data, dict):
        raise InputError(path, "not a JSON object; remove it and run again")
    missing = [k for k in required if data.get(k) is None]
    if missing:
        raise InputError(path, f"lacks {', '.join(missing)}; remove it and run again")
    return data


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
