"""A synthetic run with readers: sessions pushed (receipts as each source writes them),
assignments, opens and saves, and collected reads (``cleaned.json`` as the collection
writes it), for the tests of vhi.readers, the status, the tables and the report."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vhi.cohort.ids import Session
from vhi.cohort.layout import Layout
from vhi.cohort.plan import PlannedSession
from vhi.config.load import Settings, resolve_config
from vhi.readers.store import ReadersStore, Save

#: "now" of the tests: assignments are made at T0, due 14 days later.
T0 = "2026-03-01T09:00:00Z"


def readers_config(root: Path, *, readers: Sequence[dict] | None = None, double_read: float = 0.0,
                   sites: Sequence[str] = ("a",), **site: Any) -> dict:
    """A config of local sites under ``root`` (work, results, logs in ``root/run``)."""
    run = root / "run"
    return {
        "work_dir": str(run / "work"), "results_dir": str(run / "results"), "logs_dir": str(run / "logs"),
        "sites": [{"name": name, "double_read": double_read if name == sites[0] else 0.0, **site,
                   "source": {"type": "local", "root": str(root / "cohort"), "station": True}}
                  for name in sites],
        "readers": list(readers if readers is not None else [
            {"id": "A", "name": "Dr A", "sites": list(sites)}, {"id": "B", "sites": list(sites)}]),
    }


def settings_of(root: Path, **kwargs: Any) -> Settings:
    return resolve_config(readers_config(root, **kwargs))


def planned(key: str, *, cleaned: bool = False) -> PlannedSession:
    site, subject, session = key.split("/")
    return PlannedSession(Session(site, subject, session, "pre", {"stir": "/x/stir.nii.gz",
                                                                  "t1w": "/x/t1w.nii.gz"}),
                          reference="auto", cleaned={"uri": "x"} if cleaned else None)


def local_receipt(key: str, pushed_at: str = T0, proposal: str = "p1") -> dict:
    """A push receipt as the local source writes it for a ``station: true`` site."""
    from vhi.sources import viewer_route
    from vhi.sources.local import station_study_uid

    site, subject, session = key.split("/")
    study = station_study_uid(Session(site, subject, session, "pre"))
    return {"source": "local", "site": site, "session": key, "pushed_at": pushed_at,
            "files": {"proposal": {"uri": f"/outbox/{key}/proposal.nii.gz",
                                   "sha256": hashlib.sha256(proposal.encode()).hexdigest()}},
            "viewer_path": viewer_route(study)}


def push(layout: Layout, key: str, receipt: dict | None = None, **kwargs: Any) -> dict:
    """Write the session's ``pushed.json``."""
    receipt = receipt or local_receipt(key, **kwargs)
    folder = Path(layout.work, key)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pushed.json").write_text(json.dumps(receipt))
    return receipt


def save(store: ReadersStore, key: str, reader: str, saved_at: str, data: bytes | None = None) -> Save:
    """Record a save of ``reader`` (its SEG bytes kept), as the station does."""
    data = data or f"SEG of {key} by {reader} at {saved_at}".encode()
    return store.record_save(Save(key, reader, saved_at, "1.2", "1.2.3", "1.2.3.4",
                                  hashlib.sha256(data).hexdigest(), len(data), store.put_blob(data),
                                  "p1", "station"))


def collect(layout: Layout, key: str, reads: Sequence[dict], *, cleaned_by: str | None = None,
            cleaned_at: str = "2026-03-05T12:00:00Z") -> dict:
    """Write ``cleaned.json`` as the collection does (only the readers' keys matter here)."""
    data = {"source": {"uri": "x", "sha256": "0" * 64}, "voxels": reads[0]["voxels"] if reads else 0,
            "vs_proposal": {"dice": 0.8}, "cleaned_by": reads[0]["reader"] if cleaned_by is None
            else cleaned_by, "cleaned_at": cleaned_at, "reads": list(reads)}
    folder = Path(layout.work, key)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cleaned.json").write_text(json.dumps(data))
    return data


def read_entry(reader: str, role: str = "first", *, mask: str = "cleaned.nii.gz", voxels: int = 100,
               voxel_ml: float = 0.00225, saved_at: str = "2026-03-04T12:00:00Z",
               removed: int = 10, added: int = 5) -> dict:
    """One entry of ``cleaned.json``'s ``reads``."""
    return {"reader": reader, "role": role, "mask": mask, "voxels": voxels,
            "volume_ml": voxels * voxel_ml, "saved_at": saved_at, "sha256": "1" * 64,
            "voxels_removed": removed, "voxels_added": added}


@dataclass(frozen=True)
class ReadersRun:
    settings: Settings
    layout: Layout
    plan: list[PlannedSession]

    def store(self) -> ReadersStore:
        return ReadersStore.open(self.layout.work)


def readers_run(root: Path, keys: Sequence[str], **kwargs: Any) -> ReadersRun:
    """Settings, layout and a plan of ``keys`` (each pushed at T0)."""
    settings = settings_of(root, **kwargs)
    layout = Layout.from_settings(settings)
    for key in keys:
        push(layout, key)
    return ReadersRun(settings, layout, [planned(k) for k in keys])
