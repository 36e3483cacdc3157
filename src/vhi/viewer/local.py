"""The cleaning station for a folder cohort: its scans and proposals in an Orthanc of its own.

``vhi viewer --local`` gives a site with only folders the same station as a PACS site:

* **load** (:meth:`LocalStation.load`) – for every session of the local site with a
  proposal in the work folder, the STIR (read from the session's own file: the pulled
  copy in ``work/`` is temporary) is stored as an MR series (:mod:`vhi.imaging.series`)
  with a display window from the disease region's intensities (:func:`oedema_window`),
  and the proposal as the platform's BINARY SEG on it (:func:`vhi.imaging.seg.write_seg`),
  both by STOW-RS into an Orthanc the station starts (:mod:`vhi.viewer.orthanc`), with
  its storage in ``work/.vhi/station/<site>/`` so what radiologists saved survives
  between sessions of the station. UIDs come from the session and the STIR's sha256,
  and a proposal equal to the stored one is not sent again: loading again sends nothing.
* **collect** (:meth:`LocalStation.collect`) – per session, the SEG the DICOMweb source's
  rule picks (:func:`vhi.sources.dicomweb.segs.choose_cleaned`: the newest SEG without
  the platform's marks on the STIR series) is written as a NIfTI mask on the STIR's grid
  to the local source's cleaned path, atomically, and recorded
  (:class:`vhi.sources.local.StationRecord`), so the next workflow run collects it as
  any cleaned mask, with no server running. A file at the cleaned path that the station
  did not write is never replaced.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from vhi.cohort.ids import Session
from vhi.cohort.layout import Layout
from vhi.config.load import Settings
from vhi.errors import ConfigError, InputError
from vhi.fileio import atomic_path, read_json, sha256_file
from vhi.imaging.nifti import grid_mismatch, load_image, load_mask, save_nifti
from vhi.imaging.seg import write_seg
from vhi.imaging.series import SeriesIds, Window, mr_series, percentile_window, uid_from
from vhi.sources import make_source, proposal_to_push, viewer_route
from vhi.sources.dicomweb import segs
from vhi.sources.dicomweb.client import DicomwebConnection, DicomwebError
from vhi.sources.dicomweb.listing import search_all, value
from vhi.sources.local import LocalSource, StationRecord, station_study_uid
from vhi.viewer.access import Access, Awaiting
from vhi.viewer.ohif import app_config, fetch_ohif
from vhi.viewer.orthanc import OrthancServer
from vhi.viewer.server import PROXIED, StationServer

log = logging.getLogger(__name__)

#: The window: from this percentile of the STIR inside the disease region ...
WINDOW_LOW_PERCENTILE = 1.0
#: ... to this one, raised to the proposal's upper threshold (the brightest normal marrow).
WINDOW_HIGH_PERCENTILE = 99.9
#: How the station's STIR series describes itself.
STIR_DESCRIPTION = "STIR (VHI cleaning station)"
_CONNECTION = {"user_env": "", "password_env": "", "token_env": "", "verify": True, "ca_bundle": "",
               "retries": 2, "backoff_s": 0.5, "timeout_s": 120}


def station_dir(settings: Settings, site: str) -> Path:
    """Where the station of ``site`` keeps its Orthanc storage (in the run's work folder)."""
    return Path(settings.work_dir, ".vhi", "station", site)


def oedema_window(stir: np.ndarray, region: np.ndarray, upper: float | None) -> Window:
    """The display window that shows marrow oedema on this STIR.

    From the 1st percentile of the STIR inside the disease region (the iliac and sacral
    bone the reader cleans) to its 99.9th percentile, raised to the proposal's upper
    threshold (the brightest normal-marrow voxel) if that were higher. Fluid, vessels
    and fat-suppression failures outside the bone, which set the whole volume's range,
    are left out. On the 8 public scans with a normal-marrow mask this puts the normal
    marrow's Q3 at 0.15-0.58 of the window and the lower threshold at 0.26-0.75, with
    at most 12 % of the proposal's voxels at the top (white); with the whole volume's
    range the lower threshold sits at 0.15-0.25, and lesions look faint. The 99.5th
    percentile would saturate small lesions (up to 63 % of the proposal on 4386, where
    lesions are 0.8 % of the region). An empty region falls back to the whole volume.
    """
    values = stir[region > 0]
    where = "disease region"
    if values.size == 0:
        values, where = stir.ravel(), "whole volume (empty disease region)"
    return percentile_window(values, WINDOW_LOW_PERCENTILE, WINDOW_HIGH_PERCENTILE,
                             f"VHI: {where} P{WINDOW_LOW_PERCENTILE:g}-P{WINDOW_HIGH_PERCENTILE:g}",
                             at_least=upper)


class _Loopback(DicomwebConnection):
    """The station's own Orthanc: its one-run password, no proxies or netrc from the environment."""

    def __init__(self, site: str, orthanc: OrthancServer) -> None:
        super().__init__(site, orthanc.dicomweb, _CONNECTION)
        self.orthanc = orthanc

    def _session(self) -> Any:
        return self.orthanc.http()


@dataclass(frozen=True)
class Grid:
    """The STIR's voxel grid (what :func:`save_nifti` and :func:`grid_mismatch` need of an
    image), without its voxels: the station keeps one per session while it serves."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    header: Any


@dataclass
class StationSession:
    """One session as the station stores it."""

    session: Session
    stir: Path
    proposal: Path
    proposal_sidecar: Path
    region: Path
    cleaned: Path
    study_uid: str = ""
    series_uid: str = ""
    window: Window | None = None
    datasets: list[Any] = field(default_factory=list, repr=False)  # pixel data dropped once stored
    grid: Grid | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return self.session.key

    @property
    def viewer_path(self) -> str:
        return viewer_route(self.study_uid)

    def awaiting(self) -> Awaiting:
        return Awaiting(self.key, self.session.site, self.study_uid, self.viewer_path)

    def prepare(self) -> None:
        """The STIR's series (deterministic UIDs, the oedema window), in memory."""
        what = f"session {self.key}"
        stir = load_image(self.stir)
        sidecar = read_json(self.proposal_sidecar) if self.proposal_sidecar.is_file() else {}
        upper = sidecar.get("upper")
        region = load_mask(self.region)
        why = grid_mismatch(stir.img, region.img)
        if why:
            raise InputError(what, f"disease region {self.region} is not on the STIR's grid: {why}")
        self.window = oedema_window(stir.data, region.data, float(upper) if upper is not None else None)
        s = self.session
        self.study_uid = station_study_uid(s)
        self.series_uid = uid_from("stir", s.site, s.key, sha256_file(self.stir))
        ids = SeriesIds(self.study_uid, self.series_uid, patient_id=s.subject, accession=s.session,
                        description=STIR_DESCRIPTION)
        self.grid = Grid(tuple(int(n) for n in stir.img.shape[:3]), np.asarray(stir.img.affine),
                         stir.img.header)
        self.datasets = mr_series(stir.img, ids, self.window, what=f"{what}: STIR {self.stir}")

    def drop_pixels(self) -> None:
        """Keep only what SEGs need of the series (geometry, UIDs) once it is stored."""
        for ds in self.datasets:
            if "PixelData" in ds:
                del ds.PixelData

    @property
    def grid_of_seg(self) -> tuple[np.ndarray, tuple[int, int, int]]:
        if self.grid is None:
            raise RuntimeError(f"session {self.key}: not prepared")
        return self.grid.affine, self.grid.shape


@dataclass
class Outcome:
    """What the station did for one session (load or collect)."""

    key: str
    action: str  # loaded / unchanged / written / kept / none / failed ...
    detail: str = ""
    sent: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class LocalStation:
    """The cleaning station of one local site; ``start()``/``stop()`` or a context manager."""

    def __init__(self, settings: Settings, site_name: str | None = None, *,
                 storage: Path | None = None) -> None:
        sites = [s for s in settings.sites if s.source.get("type") == "local"
                 and (site_name is None or s.name == site_name)]
        if not sites:
            raise ConfigError("sites", "no local site" + (f" named {site_name}" if site_name else "")
                                       + ": `vhi viewer --local` serves a folder cohort")
        self.site = sites[0]
        source = make_source(self.site.source, site=self.site.name)
        if not isinstance(source, LocalSource):
            raise ConfigError(f"site {self.site.name}", "the local source type is not vhi.sources.local")
        self.source = source
        self.layout = Layout.from_settings(settings)
        # a password for this run only, so other users of the machine cannot read the
        # station's Orthanc directly (the viewer's proxy adds it)
        self.orthanc = OrthancServer(storage or station_dir(settings, self.site.name),
                                     users={"vhi-station": secrets.token_urlsafe(24)},
                                     name=f"VHI station {self.site.name}")
        self.conn: DicomwebConnection | None = None
        self.sessions: dict[str, StationSession] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalStation:
        self.orthanc.start()
        self.conn = _Loopback(self.site.name, self.orthanc)
        return self

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.orthanc.stop()

    def __enter__(self) -> LocalStation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def dicomweb(self) -> str:
        return self.orthanc.dicomweb

    def server(self, access: Access, *, dist: Path | None = None, **options: Any) -> StationServer:
        """OHIF in front of the station's Orthanc (not started); ``options``:
        :class:`StationServer`'s (host, port, tls, public_urls, on_stored)."""
        dist = dist or fetch_ohif()
        return StationServer(dist, self.dicomweb, self.orthanc.http(),
                             app_config((dist / "app-config.js").read_text(), dicomweb_root=PROXIED),
                             access, **options)

    def _conn(self) -> DicomwebConnection:
        if self.conn is None:
            raise RuntimeError("the station is not started")
        return self.conn

    # ------------------------------------------------------------------ sessions
    def candidates(self) -> list[StationSession]:
        """The site's sessions with a STIR and a proposal in the work folder."""
        out = []
        for s in self.source.list_sessions():
            proposal = self.layout.work_file(s, "proposal.nii.gz")
            if not s.scans.get("stir") or not proposal.is_file():
                continue
            out.append(StationSession(
                s, Path(s.scans["stir"]), proposal, self.layout.work_file(s, "proposal.json"),
                self.layout.work_file(s, "disease_region.nii.gz"), self.source.cleaned_path(s)))
        return out

    def _prepared(self, item: StationSession) -> StationSession:
        if item.key not in self.sessions:
            item.prepare()
            self.sessions[item.key] = item
        return self.sessions[item.key]

    # ------------------------------------------------------------------ load
    def _stored_sops(self, what: str, item: StationSession) -> set[str]:
        rows = search_all(self._conn(), what, "listing the station's STIR instances",
                          lambda c, **kw: c.search_for_instances(**kw), "SOPInstanceUID",
                          study_instance_uid=item.study_uid, series_instance_uid=item.series_uid,
                          fields=["SOPInstanceUID"])
        return {value(r, "SOPInstanceUID") for r in rows} - {""}

    def load_one(self, item: StationSession) -> Outcome:
        """Store one session's STIR series and proposal SEG unless already there."""
        what = f"session {item.key}"
        item = self._prepared(item)
        stored = self._stored_sops(what, item)
        missing = [ds for ds in item.datasets if str(ds.SOPInstanceUID) not in stored]
        if missing:
            segs.store(self._conn(), what, item.study_uid, missing,
                       f"the STIR series {item.series_uid}")
        proposal, version = proposal_to_push({"proposal": item.proposal, "sidecar": item.proposal_sidecar})
        why = grid_mismatch(item.grid, proposal.img)
        if why:
            raise InputError(what, f"the proposal {item.proposal} is not on the STIR's grid: {why}")
        mask = proposal.data >= 1
        sent = len(missing)
        old = segs.newest_proposal(segs.list_segs(self._conn(), what, item.study_uid), item.series_uid)
        same = old is not None and bool(np.array_equal(
            segs.decode(segs.retrieve(self._conn(), what, old), item.grid_of_seg, item.datasets), mask))
        if not same:
            with tempfile.TemporaryDirectory(prefix="vhi-station-") as tmp:
                info = write_seg(mask, item.grid.affine, item.datasets, Path(tmp) / "proposal.seg.dcm",
                                 algorithm_version=version, series_number=1001)
                segs.store(self._conn(), what, item.study_uid,
                           [pydicom.dcmread(Path(tmp) / "proposal.seg.dcm")],
                           f"the proposal SEG {info.series_instance_uid}")
            sent += 1
        item.drop_pixels()
        w = item.window
        detail = (f"STIR {len(item.datasets)} instances ({len(missing)} sent), window "
                  f"{w.low:.0f}-{w.high:.0f}; proposal {int(mask.sum())} voxels "
                  f"({'sent' if not same else 'already stored'})")
        log.info("%s: %s", what, detail)
        return Outcome(item.key, "loaded" if sent else "unchanged", detail, sent,
                       {"study_uid": item.study_uid, "stir_series_uid": item.series_uid,
                        "window_center": w.center, "window_width": w.width,
                        "proposal_voxels": int(mask.sum())})

    def load(self, items: Iterable[StationSession] | None = None) -> list[Outcome]:
        """Load every candidate session; a failing one is reported and the others go on."""
        return self._each(self.load_one, self.candidates() if items is None else items)

    # ------------------------------------------------------------------ collect
    def collect_one(self, item: StationSession) -> Outcome:
        """Write the session's newest cleaned SEG to its cleaned path, if the station may."""
        what = f"session {item.key}"
        item = self._prepared(item)
        chosen = segs.choose_cleaned(segs.list_segs(self._conn(), what, item.study_uid), item.series_uid)
        if chosen is None:
            return Outcome(item.key, "none", "no cleaned SEG saved yet")
        label = segs.label(chosen)
        segs.refuse_foreign(what, chosen)
        dest = item.cleaned
        record = StationRecord(dest)
        if dest.is_file():
            current = sha256_file(dest)
            seg = record.seg_of(current)
            if seg is None:
                log.warning("%s: %s exists and was not written by the station: kept; %s not written "
                            "(move the file away to take the station's)", what, dest, label)
                return Outcome(item.key, "kept", f"{dest} not written by the station: kept")
            if seg.get("seg_sop_instance_uid") == chosen["sop_uid"]:
                return Outcome(item.key, "unchanged", f"{dest} already holds {label}")
        data = segs.retrieve(self._conn(), what, chosen)
        try:
            mask = segs.decode(data, item.grid_of_seg, item.datasets)
        except InputError as exc:
            raise DicomwebError(what, f"{label}: {exc.cause}") from None
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp_path:
            save_nifti(mask.astype(np.uint8), item.grid, tmp_path)
            record.add(sha256_file(tmp_path), {   # recorded before the rename: a crash between is safe
                "seg_series_instance_uid": chosen["series_uid"], "seg_sop_instance_uid": chosen["sop_uid"],
                "series_description": chosen["series_description"], "when": chosen["when"],
                "study_instance_uid": item.study_uid, "voxels": int(mask.sum()),
                "station": self.orthanc.dicomweb})
        detail = f"{label}: {int(mask.sum())} voxels -> {dest}"
        log.info("%s: cleaned %s", what, detail)
        return Outcome(item.key, "written", detail, extra={"voxels": int(mask.sum()),
                                                           "seg_series_uid": chosen["series_uid"]})

    def collect(self, items: Iterable[StationSession] | None = None) -> list[Outcome]:
        """Collect every loaded session (every candidate when none was loaded)."""
        if items is None:
            items = list(self.sessions.values()) or self.candidates()
        return self._each(self.collect_one, items)

    @staticmethod
    def _each(fn: Any, items: Iterable[StationSession]) -> list[Outcome]:
        out = []
        for item in items:
            try:
                out.append(fn(item))
            except InputError as exc:  # DicomwebError included: one session, named
                log.error("%s", exc)
                out.append(Outcome(item.key, "failed", str(exc)))
        return out


def summary(outcomes: Iterable[Outcome]) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.action] = counts.get(o.action, 0) + 1
    return counts

