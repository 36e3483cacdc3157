"""A folder cohort: sessions from a sheet, proposals to an outbox, cleaned masks from a layout.

Config (``sites[].source`` with ``type: local``)::

    root:    the cohort folder (sheet paths and the patterns below are relative to it)
    sheet:   a CSV session sheet, or ``demo`` for the public bone-MRI layout
    outbox:  proposals go to outbox/{site}/{subject}/{session}/proposal.nii.gz (+ .json)
    cleaned: where radiologists save cleaned masks, default
             cleaned/{site}/{subject}/{session}.nii.gz (relative to root)
    reader_masks: reader name -> pattern of independent reader masks (agreement only)
    station: the site cleans at the local cleaning station (``vhi viewer --local``); push
             receipts then carry the session's address there (``viewer_path``)

Everything under ``root`` is read only to this source: a fetch copies, a push refuses
any destination that is a listed scan, a reader mask or a cleaned mask. (The local
cleaning station, :mod:`vhi.viewer.local`, writes the masks saved in OHIF to the cleaned
paths and records them: :class:`StationRecord`.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from vhi.cohort.ids import ROLE_NAMES, Session
from vhi.cohort.sheet import demo_sessions, read_sheet
from vhi.errors import ConfigError, InputError
from vhi.fileio import copy_hashed, save_json, sha256_file
from vhi.imaging.series import uid_from
from vhi.sources import Source, viewer_route


class _OutboxRecord:
    """The sha256 of every file version this source wrote into one outbox folder
    (``.vhi-pushed.json``), so a push replaces its own files and never someone else's."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".vhi-pushed.json"
        try:
            self.hashes: dict[str, list[str]] = json.loads(self.path.read_text())
        except FileNotFoundError:
            self.hashes = {}
        except (OSError, ValueError) as exc:
            raise InputError(self.path, f"cannot read the outbox record ({exc})") from None

    def wrote(self, target: Path, sha256: str) -> bool:
        return sha256 in self.hashes.get(target.name, [])

    def add(self, target: Path, sha256: str) -> None:
        if not self.wrote(target, sha256):
            self.hashes.setdefault(target.name, []).append(sha256)
            save_json(self.hashes, self.path)


def station_study_uid(session: Session) -> str:
    """The Study Instance UID the local cleaning station gives a session (the same every time)."""
    return uid_from("study", session.site, session.subject, session.session)


class StationRecord:
    """What the local cleaning station (``vhi viewer --local``) wrote at one cleaned path.

    Kept beside the cleaned mask as ``.<name>.vhi-station.json``: the sha256 of every
    version the station wrote and the SEG each came from, so the station replaces only
    its own files (never a mask someone saved there by hand) and ``cleaned.json`` names
    the SEG series the radiologist saved.
    """

    def __init__(self, cleaned: Path) -> None:
        self.cleaned = Path(cleaned)
        self.path = self.cleaned.with_name(f".{self.cleaned.name}.vhi-station.json")
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            self.data = {"written": {}}
        except (OSError, ValueError) as exc:
            raise InputError(self.path, f"cannot read the station record ({exc})") from None

    def seg_of(self, sha256: str) -> dict[str, Any] | None:
        """The SEG the station wrote this file version from, or None (not the station's)."""
        return self.data["written"].get(sha256)

    def add(self, sha256: str, seg: Mapping[str, Any]) -> None:
        self.data["written"][sha256] = dict(seg)
        save_json(self.data, self.path)


class LocalSource(Source):
    """Sessions of one site in a local folder."""

    SPEC_KEYS: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "list": ("root", "sheet", "reader_masks"),
        "fetch": (),  # scans are located by the absolute paths in the session record
        "push": ("root", "outbox", "cleaned", "reader_masks", "station"),
        "cleaned": ("root", "cleaned"),
    }

    def __init__(self, site: str, spec: Mapping[str, Any]) -> None:
        super().__init__(site, spec)
        # root is required by the config; an operation that needs none (fetch: the session
        # record holds absolute paths) gets a spec without it
        self.root = Path(spec.get("root", ".")).expanduser().absolute()
        self.sheet = spec["sheet"]
        self.outbox = Path(spec["outbox"]).expanduser().absolute()
        self.cleaned = spec["cleaned"]
        self.mask_patterns = dict(spec["reader_masks"])  # reader -> pattern
        self.station = bool(spec.get("station", False))
        for key, pattern in [("cleaned", self.cleaned), *self.mask_patterns.items()]:
            try:
                pattern.format(site="s", subject="s", session="s")
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(f"site {site} source {key}",
                                  f"pattern {pattern!r} may use only {{site}}, {{subject}}, "
                                  f"{{session}} ({exc!r})") from None

    # ------------------------------------------------------------------ paths
    def _pattern_path(self, pattern: str, session: Session) -> Path:
        rel = pattern.format(site=session.site, subject=session.subject, session=session.session)
        return self.root / Path(rel).expanduser()  # an absolute pattern replaces root

    def cleaned_path(self, session: Session) -> Path:
        return self._pattern_path(self.cleaned, session)

    def outbox_dir(self, session: Session) -> Path:
        return self.outbox / session.site / session.subject / session.session

    def _protected(self, session: Session) -> set[Path]:
        """Files this source must never write: scans, cleaned and reader masks."""
        paths = [Path(p) for p in session.scans.values()]
        paths.append(self.cleaned_path(session))
        paths += [self._pattern_path(p, session) for p in self.mask_patterns.values()]
        return {p.resolve() for p in paths}

    def _guard(self, dest: str | os.PathLike[str], session: Session) -> None:
        if Path(dest).resolve() in self._protected(session):
            raise InputError(dest, f"session {session.key}: refusing to write over a source file "
                                   "(scan, reader or cleaned mask)")

    # ------------------------------------------------------------------ protocol
    def list_sessions(self) -> list[Session]:
        if self.sheet == "demo":
            return demo_sessions(self.root, self.site)
        return read_sheet(Path(self.sheet).expanduser(), self.site, self.root)

    def fetch_scan(self, session: Session, role: str, dest: str | os.PathLike[str]) -> dict[str, Any]:
        uri = session.scans.get(role)
        if not uri:
            raise InputError(f"session {session.key}",
                             f"no {ROLE_NAMES.get(role, role)} listed for this session")
        src = Path(uri)
        if not src.is_file():
            raise InputError(f"session {session.key}",
                             f"{ROLE_NAMES.get(role, role)} {src}: file not found")
        self._guard(dest, session)
        return {"uri": str(src), **copy_hashed(src, dest)}

    def push_proposal(self, session: Session, files: Mapping[str, Path],
                      context: Mapping[str, Path] | None = None) -> dict[str, Any]:
        outdir = self.outbox_dir(session)
        written = _OutboxRecord(outdir)
        pushed = {}
        for role, path in files.items():
            target = outdir / Path(path).name
            self._guard(target, session)
            new = sha256_file(path)
            if target.is_file() and (old := sha256_file(target)) != new and not written.wrote(target, old):
                raise InputError(target, f"session {session.key}: changed since the platform wrote "
                                         f"it (a radiologist's save?): kept, not replaced by the new "
                                         f"proposal. Save cleaned masks to {self.cleaned_path(session)}; "
                                         f"move or delete this file, then run again")
            written.add(target, new)  # recorded before the copy: a crash in between is safe
            pushed[role] = {"uri": str(target), **copy_hashed(Path(path), target)}
        receipt = {"source": "local", "site": session.site, "session": session.key,
                   "files": pushed, "cleaned_expected_at": str(self.cleaned_path(session)),
                   "pushed_at": datetime.now(UTC).isoformat()}
        if self.station:  # where `vhi viewer --local` opens it
            receipt["viewer_path"] = viewer_route(station_study_uid(session))
        return receipt

    def find_cleaned(self, sessions: Sequence[Session],
                     receipts: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        found = {}
        for s in sessions:
            path = self.cleaned_path(s)
            try:
                st = path.stat()
            except OSError:
                continue
            found[s.key] = {"uri": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        return found

    def fetch_cleaned(self, session: Session, dest: str | os.PathLike[str],
                      context: Mapping[str, Path] | None = None) -> dict[str, Any] | None:
        src = self.cleaned_path(session)
        if not src.is_file():
            return None
        self._guard(dest, session)
        st = src.stat()
        info = {"uri": str(src), "mtime_ns": st.st_mtime_ns, **copy_hashed(src, dest)}
        seg = StationRecord(src).seg_of(info["sha256"])
        if seg is not None:  # saved in OHIF at the local cleaning station
            info.update({"written_by": "vhi viewer --local",
                         **{k: seg[k] for k in ("seg_series_instance_uid", "seg_sop_instance_uid",
                                                "series_description", "when") if k in seg}})
        return info

    def reader_masks(self, session: Session) -> dict[str, str]:
        masks = {}
        for name, pattern in self.mask_patterns.items():
            path = self._pattern_path(pattern, session)
            if path.is_file():
                masks[name] = str(path)
        return masks
