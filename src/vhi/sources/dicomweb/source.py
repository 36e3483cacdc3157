"""The DICOMweb source: :class:`DicomwebSource`, the Source protocol for one DICOMweb service.

It composes the connection (:mod:`~vhi.sources.dicomweb.client`), the listing
(:mod:`~vhi.sources.dicomweb.listing`), series retrieval (:mod:`~vhi.sources.dicomweb.transfer`)
and the SEGs of a study (:mod:`~vhi.sources.dicomweb.segs`); the push of a proposal and
the collection of the cleaned segmentation are here.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pydicom

from vhi.cohort.ids import Session
from vhi.errors import ConfigError, InputError
from vhi.fileio import read_json
from vhi.sources import Source, proposal_to_push, viewer_route
from vhi.sources.cleaning import CleaningRecord, Saved
from vhi.sources.dicomweb import segs, transfer
from vhi.sources.dicomweb.client import DicomwebConnection, DicomwebError, service_url
from vhi.sources.dicomweb.listing import ListedStudy, check_template, plan_studies
from vhi.sources.dicomweb.uris import instance_uri, parse_series_uri
from vhi.sources.select import compile_rules, sessions_of

log = logging.getLogger(__name__)


class DicomwebSource(Source):
    """The studies of one DICOMweb service (a PACS such as Orthanc)."""

    _CONNECTION = ("url", "user_env", "password_env", "token_env", "verify", "ca_bundle",
                   "retries", "backoff_s", "timeout_s", "deadline_s")
    SPEC_KEYS: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "list": (*_CONNECTION, "query", "subject_label", "session_label", "modalities",
                 "selection", "timepoint_pattern"),
        "fetch": _CONNECTION,
        "push": _CONNECTION,
        "cleaned": _CONNECTION,
    }

    def __init__(self, site: str, spec: Mapping[str, Any]) -> None:
        super().__init__(site, spec)
        self.url = service_url(site, spec)
        self.conn = DicomwebConnection(site, self.url, spec)
        self._receipts: dict[str, dict[str, Any]] = {}  # the pushes made by this object
        self.query = {str(k): str(v) for k, v in dict(spec.get("query") or {}).items()}
        self.subject_label = check_template(site, "subject_label", str(spec.get("subject_label",
                                                                                "{PatientID}")))
        self.session_label = check_template(site, "session_label", str(spec.get("session_label",
                                                                                "{AccessionNumber}")))
        self.modalities = tuple(str(m).upper() for m in spec.get("modalities") or ("MR",))
        pattern = str(spec.get("timepoint_pattern", ""))
        try:
            self.timepoint_re = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise ConfigError(f"site {site} source.timepoint_pattern", f"bad regex ({exc})") from None
        try:
            self.rules = compile_rules(spec.get("selection") or {})
        except ConfigError as exc:
            raise ConfigError(f"site {site} source.{exc.where}", exc.cause) from None

    # ------------------------------------------------------------------ list + pull
    def plan_sessions(self) -> list[ListedStudy]:
        """Every study the query finds with its series selection (picked and rejected, why);
        those found and skipped are :meth:`skipped`."""
        listed, self._skipped = plan_studies(
            self.conn, site=self.site, query=self.query, subject_label=self.subject_label,
            session_label=self.session_label, modalities=self.modalities, rules=self.rules,
            timepoint_re=self.timepoint_re)
        return listed

    def list_sessions(self) -> list[Session]:
        return sessions_of(self.plan_sessions())

    def fetch_scan(self, session: Session, role: str, dest: str | os.PathLike[str]) -> dict[str, Any]:
        """Retrieve the series of ``role`` (WADO-RS), verify it and convert it (dcm2niix)."""
        return transfer.fetch_scan(self.conn, session, role, dest)

    # ------------------------------------------------------------------ push
    def push_proposal(self, session: Session, files: Mapping[str, Path],
                      context: Mapping[str, Path] | None = None) -> dict[str, Any]:
        """Store the proposal as a BINARY DICOM SEG on the STIR series (STOW-RS), read back.

        A platform SEG on the STIR series that already holds this mask is left as it is
        and nothing is sent; a changed proposal is stored as a new series (DICOM objects
        are never replaced; the newest platform SEG is the proposal).
        """
        import pydicom

        from vhi.imaging.nifti import grid_mismatch
        from vhi.imaging.seg import is_platform_seg, write_seg

        what = f"session {session.key}"
        proposal, version = proposal_to_push(files)
        study_uid, _ = parse_series_uri(self.url, session, "stir")
        mask = proposal.data >= 1
        with tempfile.TemporaryDirectory(prefix="vhi-dicomweb-push-") as tmp:
            work = Path(tmp)
            stir, datasets, grid = transfer.stir_grid(self.conn, session, work)
            why = grid_mismatch(grid, proposal.img)
            if why:
                raise DicomwebError(what, f"the proposal is not on the grid of the STIR series "
                                          f"{stir['series_uid']} on the service: {why}")
            listed = segs.list_segs(self.conn, what, study_uid)
            old = _current_proposal(listed, stir["series_uid"], (context or {}).get("history"))
            if old is not None:
                data = segs.retrieve(self.conn, what, old)
                try:
                    same = bool(np.array_equal(segs.decode(data, grid, datasets), mask))
                except InputError as exc:
                    log.warning("%s: the stored proposal %s does not fit the STIR (%s): storing a "
                                "new one", what, old["series_uid"], exc.cause)
                    same = False
                if same:
                    log.info("%s: proposal SEG %s already on the service, unchanged: nothing sent",
                             what, old["series_uid"])
                    receipt = self._receipt(session, seg=old, data=data, stir=stir, mask=mask,
                                            status="unchanged", before=_before_unchanged(listed, old))
                    return _keep_earlier_push(receipt, (context or {}).get("history"))
            seg_path = work / "proposal.seg.dcm"
            number = int(getattr(datasets[0], "SeriesNumber", 0) or 0) + 1000
            info = write_seg(mask, grid.affine, datasets, seg_path, algorithm_version=version,
                             series_number=number)
            segs.store(self.conn, what, study_uid, [pydicom.dcmread(seg_path)])
            stored = {"study_uid": study_uid, "series_uid": info.series_instance_uid,
                      "sop_uid": info.sop_instance_uid}
            data = segs.retrieve(self.conn, what, stored)
            back = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            if not is_platform_seg(back) or not np.array_equal(segs.decode(data, grid, datasets), mask):
                raise DicomwebError(what, f"SEG {info.sop_instance_uid} read back from the service "
                                          "does not match what was sent")
            log.info("%s: proposal stored as SEG series %s (%d voxels), verified", what,
                     info.series_instance_uid, int(mask.sum()))
            return self._receipt(session, seg={**stored, "when": ""}, data=data, stir=stir, mask=mask,
                                 status="created" if old is None else "replaced",
                                 before=[r["sop_uid"] for r in listed])

    def _receipt(self, session: Session, *, seg: Mapping[str, Any], data: bytes,
                 stir: Mapping[str, Any], mask: np.ndarray, status: str, before: Sequence[str],
                 ) -> dict[str, Any]:
        uri = instance_uri(self.url, seg["study_uid"], seg["series_uid"], seg["sop_uid"])
        receipt = {
            "source": "dicomweb", "site": session.site, "session": session.key, "url": self.url,
            "status": status, "verified": True,
            "seg": {"study_uid": seg["study_uid"], "series_uid": seg["series_uid"],
                    "sop_uid": seg["sop_uid"]},
            "stir": {"series_uid": stir["series_uid"], "uri": stir["uri"]},
            "proposal_voxels": int(mask.sum()),
            "viewer_path": viewer_route(seg["study_uid"]),
            "files": {"seg": {"uri": uri, "sha256": hashlib.sha256(data).hexdigest(),
                              "size": len(data)}},
            "pushed_at": datetime.now(UTC).isoformat(),
            # the SEG instances of the study when this proposal became current: none of them
            # is its cleaning (vhi.sources.cleaning)
            "segs_before": sorted(set(before)),
        }
        self._receipts[session.key] = receipt
        return receipt

    # ------------------------------------------------------------------ collect
    def cleaning_saves(self, session: Session, receipt: Mapping[str, Any]) -> list[Saved]:
        """The SEG instances of the study on the STIR series (or drawn on another study,
        so that taking one fails by name), as the cleaning rule takes them."""
        study_uid, stir_uid = parse_series_uri(self.url, session, "stir")
        rows = segs.list_segs(self.conn, f"session {session.key}", study_uid)
        return [Saved(r["sop_uid"], "dicomweb", segs.label(r), platform=r["platform"], ref=r,
                      order=(r["when"], segs.number(r), r["series_uid"]))
                for r in rows if stir_uid in r["referenced_series"] or r["foreign"]]

    def describe_saved(self, saved: Saved) -> dict[str, Any]:
        if saved.origin == "dicomweb":
            r = saved.ref
            return {"uri": instance_uri(self.url, r["study_uid"], r["series_uid"], r["sop_uid"]),
                    "series_uid": r["series_uid"], "sop_uid": r["sop_uid"], "when": r["when"],
                    "foreign": r["foreign"]}
        save = saved.ref
        return {"uri": instance_uri(self.url, save.study_uid, save.series_uid, save.sop_uid),
                "series_uid": save.series_uid, "sop_uid": save.sop_uid, "when": save.saved_at,
                "reader": save.reader}

    def find_cleaned(self, sessions: Sequence[Session],
                     receipts: Mapping[str, Mapping[str, Any]] | None = None,
                     record: CleaningRecord | None = None) -> dict[str, dict[str, Any]]:
        """Per pushed session, its cleaning under the one rule (:mod:`vhi.sources.cleaning`)."""
        return self.find_cleaned_by_rule(sessions, {**self._receipts, **(receipts or {})},
                                         record or CleaningRecord())

    def fetch_cleaned(self, session: Session, dest: str | os.PathLike[str],
                      context: Mapping[str, Path] | None = None) -> dict[str, Any] | None:
        """The cleaning's VHI read decoded onto the STIR grid (:meth:`Source.fetch_by_rule`)."""
        return self.fetch_by_rule(session, dest, context, self._receipts)

    def read_cleaning(self, session: Session, saved: Saved, dest: str | os.PathLike[str],
                      context: Mapping[str, Path], data: bytes | None = None) -> dict[str, Any]:
        """Decode one chosen save onto the STIR grid: the bytes the station kept, else the
        instance retrieved from the service."""
        from vhi.imaging.nifti import save_nifti

        what = f"session {session.key}"
        if saved.origin == "dicomweb":
            segs.refuse_foreign(what, saved.ref)
        row = saved.ref if saved.origin == "dicomweb" else {
            "study_uid": saved.ref.study_uid, "series_uid": saved.ref.series_uid, "sop_uid": saved.id}
        if data is None:
            data = segs.retrieve(self.conn, what, row)
        with tempfile.TemporaryDirectory(prefix="vhi-dicomweb-collect-") as tmp:
            stir, datasets, grid = transfer.stir_grid(self.conn, session, Path(tmp))
            try:
                mask = segs.decode(data, grid, datasets)
            except InputError as exc:
                raise DicomwebError(what, f"{saved.label}: {exc.cause}") from None
            save_nifti(mask.astype(np.uint8), grid, dest)
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        log.info("%s: cleaned segmentation = %s%s: %d voxels", what, saved.label,
                 f" by {saved.reader}" if saved.reader else "", int(mask.sum()))
        return {"uri": instance_uri(self.url, row["study_uid"], row["series_uid"], saved.id),
                "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                "seg_series_instance_uid": str(row["series_uid"]), "seg_sop_instance_uid": saved.id,
                "series_description": str(ds.get("SeriesDescription", "")), "when": segs.when(ds),
                "recorded_by": "station" if saved.origin == "station" else "service",
                "stir": {"series_uid": stir["series_uid"]},
                "rule": "each reader's newest save after the current proposal's push (vhi.sources.cleaning)"}


def _current_proposal(listed: Sequence[Mapping[str, Any]], stir_uid: str,
                      history: Path | None) -> dict[str, Any] | None:
    """The proposal on the service now: the SEG the previous receipt names, while it is there
    (a viewer may save into the proposal's series keeping its marks: marks alone cannot tell);
    else the newest SEG with the platform's marks on the STIR series."""
    previous = read_json(history) if history is not None and Path(history).is_file() else {}
    sop = str((previous.get("seg") or {}).get("sop_uid") or "")
    named = [dict(r) for r in listed if sop and r["sop_uid"] == sop]
    return named[0] if named else segs.newest_proposal(listed, stir_uid)


def _before_unchanged(listed: Sequence[Mapping[str, Any]], proposal: Mapping[str, Any]) -> list[str]:
    """For a proposal pushed again unchanged with no earlier receipt: the SEGs not newer than
    it (those after it are taken as its cleanings, as they were before)."""
    mark = (proposal["when"], segs.number(proposal), proposal["series_uid"])
    return [r["sop_uid"] for r in listed if (r["when"], segs.number(r), r["series_uid"]) <= mark]


def _keep_earlier_push(receipt: dict[str, Any], history: Path | None) -> dict[str, Any]:
    """An unchanged proposal keeps the push that made it current: its time and its list of
    what was there then (the previous receipt, when it was of the same proposal)."""
    if history is None or not Path(history).is_file():
        return receipt
    previous = read_json(history)
    if (previous.get("seg") or {}).get("sop_uid") == receipt["seg"]["sop_uid"] and \
            isinstance(previous.get("segs_before"), list):
        receipt.update(pushed_at=previous.get("pushed_at") or receipt["pushed_at"],
                       segs_before=previous["segs_before"])
    return receipt


__all__ = ["DicomwebError", "DicomwebSource", "ListedStudy"]
