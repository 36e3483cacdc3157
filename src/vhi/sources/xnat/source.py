"""The XNAT source: :class:`XnatSource`, the Source protocol for one XNAT project.

It composes the package's parts (see :mod:`vhi.sources.xnat` for the config keys and
what is done on the server): the connection (:mod:`~vhi.sources.xnat.client`), the
listing (:mod:`~vhi.sources.xnat.listing`), scan downloads (:mod:`~vhi.sources.xnat.transfer`)
and ROI collections (:mod:`~vhi.sources.xnat.roi`); the push of a proposal and the
collection of the cleaned segmentation are here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import numpy as np

from vhi.cohort.ids import Session
from vhi.errors import ConfigError, InputError
from vhi.sources import Source, proposal_to_push
from vhi.sources.select import compile_rules, sessions_of
from vhi.sources.xnat import listing, roi, transfer
from vhi.sources.xnat.client import XnatClient, XnatError, server_url
from vhi.sources.xnat.listing import ListedSession
from vhi.sources.xnat.uris import collection_uri, parse_scan_uri, scan_uri

log = logging.getLogger(__name__)


class XnatSource(Source):
    """The sessions of one XNAT project: the Source protocol over an :class:`XnatClient`."""

    _CONNECTION = ("server", "user_env", "password_env", "verify", "ca_bundle",
                   "retries", "backoff_s", "timeout_s")
    SPEC_KEYS: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "list": (*_CONNECTION, "project", "selection", "timepoint_pattern", "proposal_label"),
        "fetch": (*_CONNECTION, "project", "resource"),
        "push": (*_CONNECTION, "project", "resource", "proposal_label"),
        "cleaned": (*_CONNECTION, "project", "resource", "proposal_label"),
    }

    def __init__(self, site: str, spec: Mapping[str, Any]) -> None:
        super().__init__(site, spec)
        self.server = server_url(site, spec)
        self.project = str(spec.get("project") or "")
        if not self.project:
            raise ConfigError(f"site {site} source.project", "an XNAT project ID is required")
        self.client = XnatClient(site, self.server, spec)
        self.resource = str(spec["resource"])
        self.label_template = str(spec["proposal_label"])
        try:
            self.label_template.format(site="s", subject="s", session="s")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"site {site} source.proposal_label",
                              f"may use only {{site}}, {{subject}}, {{session}} ({exc!r})") from None
        pattern = str(spec["timepoint_pattern"])
        try:
            self.timepoint_re = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise ConfigError(f"site {site} source.timepoint_pattern", f"bad regex ({exc})") from None
        try:
            self.rules = compile_rules(spec["selection"])
        except ConfigError as exc:
            raise ConfigError(f"site {site} source.{exc.where}", exc.cause) from None
        self._listed: dict[str, ListedSession] = {}
        self._receipts: dict[str, dict[str, Any]] = {}  # pushes made by this process

    # ------------------------------------------------------------------ connection
    def connection(self) -> Any:
        return self.client.connection()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> XnatSource:
        self.client.held = True  # one connection for every operation until the ``with`` ends
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.held = False
        self.close()

    def _operation(self) -> contextlib.AbstractContextManager[None]:
        """One public operation: its connection is closed at the end unless held by ``with``."""
        return self.client.operation()

    # ------------------------------------------------------------------ identifiers
    def proposal_label(self, session: Session) -> str:
        return self.label_template.format(site=session.site, subject=session.subject,
                                          session=session.session)

    def scan_uri(self, experiment: str, scan_id: str) -> str:
        return scan_uri(self.server, experiment, scan_id)

    def viewer_url(self, session: Session, experiment: str) -> str:
        """The session in XNAT's OHIF viewer (the plugin's own "View Session" link; XNAT takes
        the subject's label where its ID goes), where the site's readers clean it."""
        query = urlencode({"subjectId": session.subject, "projectId": self.project,
                           "experimentId": experiment, "experimentLabel": session.session})
        return f"{self.server}/VIEWER/?{query}"

    def collection_uri(self, ident: str) -> str:
        return collection_uri(self.server, self.project, ident)

    def choose_cleaned(self, session: Session, collections: Sequence[Mapping[str, Any]],
                       stir_uid: str, receipt: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The documented rule (:func:`vhi.sources.xnat.roi.choose_cleaned`): the newest SEG
        collection on the STIR series that is neither the proposal nor one that existed when
        the proposal was last pushed changed (the receipt's ``collections_before``)."""
        return roi.choose_cleaned(collections, self.proposal_label(session), stir_uid,
                                  _before(receipt))

    def _stir_uid(self, session: Session) -> tuple[str, str]:
        return listing.stir_uid(self.client, session, self._listed.get(session.key))

    # ------------------------------------------------------------------ list + pull
    def plan_sessions(self) -> list[ListedSession]:
        """Every MR session of the project with its scan selection (picked and rejected, why)."""
        with self._operation():
            return listing.plan_sessions(self.client, site=self.site, project=self.project,
                                         rules=self.rules, timepoint_re=self.timepoint_re)

    def list_sessions(self) -> list[Session]:
        """Sessions with a T1W (those with a STIR too get a proposal); the rest are logged."""
        with self._operation():
            plan = self.plan_sessions()
            self._listed.update((item.session.key, item) for item in plan)
            return sessions_of(plan)

    def fetch_scan(self, session: Session, role: str, dest: str | os.PathLike[str]) -> dict[str, Any]:
        """Download the scan of ``role``, verify it (zip CRCs, sizes, MD5s) and convert it (dcm2niix)."""
        with self._operation():
            return transfer.fetch_scan(self.client, session, role, dest, self.resource)

    # ------------------------------------------------------------------ push
    def push_proposal(self, session: Session, files: Mapping[str, Path],
                      context: Mapping[str, Path] | None = None) -> dict[str, Any]:
        """Upload the proposal as a DICOM SEG collection; done once read back identical.

        ``context``: ``stir`` (the STIR's pull sidecar: its kept headers spare a download),
        ``history`` (the previous receipt: an unchanged proposal keeps its cleaning)."""
        with self._operation():
            return self._push_proposal(session, files, dict(context or {}))

    def _push_proposal(self, session: Session, files: Mapping[str, Path],
                       context: dict[str, Path]) -> dict[str, Any]:
        from vhi.imaging.seg import write_seg

        what = f"session {session.key}"
        proposal, version = proposal_to_push(files)
        exp, _ = parse_scan_uri(self.server, session, "stir")
        label = self.proposal_label(session)
        mask = proposal.data >= 1
        with tempfile.TemporaryDirectory(prefix="vhi-xnat-push-") as tmp:
            work = Path(tmp)
            stir, datasets, grid = self._stir_series(session, context.get("stir"), work, proposal.img)
            existing, old, collections = roi.readback(self.client, session, exp, label)
            others = sorted(c["id"] for c in collections if c["label"] != label)
            if existing is not None and self._same_as_stored(
                    session, label=label, old=old, work=work, grid=grid, datasets=datasets, mask=mask,
                    stir=stir, existing=existing):
                log.info("%s: proposal %s already on the server, unchanged", what, label)
                before = self._before_unchanged(session, existing, context.get("history"), others)
                return self._receipt(session, exp=exp, label=label, collection=existing, data=old,
                                     stir=stir, mask=mask, status="unchanged", before=before)
            status = "created" if existing is None else "replaced"
            seg_path = work / "proposal.seg.dcm"
            number = int(getattr(datasets[0], "SeriesNumber", 0) or 0) + 1000
            info = write_seg(mask, grid.affine, datasets, seg_path, algorithm_version=version,
                             series_number=number)
            data = seg_path.read_bytes()
            code, body = roi.put_collection(self.client, self.project, session, exp, label, data=data,
                                            overwrite=existing is not None)
            if code != 200:
                readback, stored, _ = roi.readback(self.client, session, exp, label)
                if not (readback is not None and stored == data):  # not a retried PUT that landed
                    raise XnatError(what, f"the server refused ROI collection {label} "
                                          f"(HTTP {code}: {self.client.scrub(body)[:300]})")
            readback, stored, _ = roi.readback(self.client, session, exp, label)
            if readback is None or stored != data:
                raise XnatError(what, f"ROI collection {label} read back from the server does not "
                                      "match what was sent")
            if readback["uid"] and readback["uid"] != info.sop_instance_uid:
                raise XnatError(what, f"ROI collection {label} on the server has UID "
                                      f"{readback['uid']}, not the SEG's {info.sop_instance_uid}")
            log.info("%s: proposal pushed as ROI collection %s (%s, %d voxels), verified", what,
                     label, readback["id"], int(mask.sum()))
            return self._receipt(session, exp=exp, label=label, collection=readback, data=data,
                                 stir=stir, mask=mask, status=status, before=others)

    def _stir_series(self, session: Session, sidecar: Path | None, work: Path,
                     like: Any) -> tuple[dict[str, Any], list[Any], Any]:
        """The archived STIR series: (scan, series UID, URI), its datasets and the grid.

        From the headers the pull kept in the STIR's sidecar (``stir.json``) when it is the
        session's current STIR scan (the grid is then ``like``, the proposal or its grid,
        which the SEG writer checks against every instance's geometry); else the series is
        downloaded again and converted."""
        from vhi.imaging.nifti import grid_mismatch

        if sidecar is not None and Path(sidecar).is_file():
            src = json.loads(Path(sidecar).read_text()).get("source", {})
            headers = src.get("dicom_headers")
            if headers and src.get("uri") == session.scans.get("stir"):
                datasets = transfer.datasets_from(headers)
                uid = str(src.get("series_uid") or datasets[0].get("SeriesInstanceUID", ""))
                return {"scan": src.get("scan", ""), "series_uid": uid, "uri": src["uri"]}, datasets, like
        stir, datasets, grid = transfer.stir_grid(self.client, session, work, self.resource)
        why = grid_mismatch(grid, like)
        if why:
            raise XnatError(f"session {session.key}", f"the proposal is not on the grid of the archived "
                                                      f"STIR series {stir['series_uid']} (scan "
                                                      f"{stir['scan']}): {why}")
        return stir, datasets, grid

    def _before_unchanged(self, session: Session, existing: Mapping[str, Any], history: Path | None,
                          others: list[str]) -> list[str]:
        """For an unchanged proposal, the collections that existed when it was last changed:
        from the previous receipt of the same collection; without one, every collection now
        there (a cleaning already saved is then not taken: safe, the radiologist saves again)."""
        previous = self._receipts.get(session.key)
        if previous is None and history is not None and Path(history).is_file():
            with contextlib.suppress(OSError, ValueError):
                previous = json.loads(Path(history).read_text())
        if (previous and previous.get("collection", {}).get("id") == existing["id"]
                and isinstance(previous.get("collections_before"), list)):
            return sorted(str(i) for i in previous["collections_before"])
        if others:
            log.warning("session %s: no earlier receipt of proposal %s: the %d collection(s) now on "
                        "the session are not taken as its cleaning", session.key, existing["label"],
                        len(others))
        return others

    def _same_as_stored(self, session: Session, *, label: str, old: bytes, work: Path, grid: Any,
                        datasets: list[Any], mask: np.ndarray, stir: Mapping[str, Any],
                        existing: Mapping[str, Any]) -> bool:
        """Whether the collection under the platform's label already holds this proposal.

        Raises XnatError when that collection was not written by the platform (it is never
        replaced then).
        """
        import pydicom

        from vhi.imaging.seg import is_platform_seg, read_seg

        what = f"session {session.key}"
        old_path = work / "existing.dcm"
        old_path.write_bytes(old)
        ours = pydicom.dcmread(old_path, stop_before_pixels=True)
        if not is_platform_seg(ours):
            raise XnatError(what, f"ROI collection {label} exists but was not written by this "
                                  "platform: left untouched; set another proposal_label")
        try:
            same = bool(np.array_equal(read_seg(old_path, grid, datasets), mask))
        except InputError as exc:
            log.warning("%s: the stored proposal %s does not fit the STIR (%s): replacing it",
                        what, label, exc.cause)
            return False
        return same and stir["series_uid"] in existing["series"]

    def _receipt(self, session: Session, *, exp: str, label: str, collection: Mapping[str, Any],
                 data: bytes, stir: Mapping[str, Any], mask: np.ndarray, status: str,
                 before: list[str]) -> dict[str, Any]:
        receipt = {
            "source": "xnat", "site": session.site, "session": session.key,
            "server": self.server, "project": self.project, "experiment": exp,
            "status": status, "verified": True,
            "collection": {"id": collection["id"], "label": label, "uid": collection["uid"],
                           "insert_date": collection["insert_date"],
                           "referenced_series": list(collection["series"])},
            "stir": {"scan": stir["scan"], "series_uid": stir["series_uid"], "uri": stir["uri"]},
            "proposal_voxels": int(mask.sum()),
            "viewer_path": self.viewer_url(session, exp),
            "files": {"seg": {"uri": self.collection_uri(label),
                              "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}},
            "pushed_at": datetime.now(UTC).isoformat(),
            # the session's other collections when this proposal was last changed: none of
            # them is its cleaning, whatever dates the server gives (see choose_cleaned)
            "collections_before": list(before),
        }
        self._receipts[session.key] = receipt
        return receipt

    # ------------------------------------------------------------------ collect
    def find_cleaned(self, sessions: Sequence[Session],
                     receipts: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """Per session, the collection the documented rule picks (its ID, label, UID, date);
        ``{"pending": reason}`` where the radiologist saved contours only.

        ``receipts``: session key -> its push receipt (``pushed.json``); a session without
        one has nothing to collect. The collections come from the plan's listing where this
        source made it (no request), else from the experiment's JSON (one request)."""
        with self._operation():
            found: dict[str, dict[str, Any]] = {}
            for s in sessions:
                receipt = (receipts or {}).get(s.key) or self._receipts.get(s.key)
                if not s.scans.get("stir") or receipt is None:
                    continue
                try:
                    _, stir_uid, collections = self._collections(s)
                except XnatError as exc:
                    log.warning("%s (cleaned segmentation not looked up this run)", exc)
                    continue
                chosen = self.choose_cleaned(s, collections, stir_uid, receipt)
                if chosen is not None:
                    found[s.key] = {"uri": self.collection_uri(chosen["id"]), "collection": chosen["id"],
                                    "label": chosen["label"], "uid": chosen["uid"],
                                    "insert_date": chosen["insert_date"]}
                    continue
                contours = roi.contours_only(collections, self.proposal_label(s), stir_uid,
                                             _before(receipt))
                if contours:
                    log.warning("session %s: %s (%s)", s.key, roi.CONTOUR_REASON, ", ".join(contours))
                    found[s.key] = {"pending": roi.CONTOUR_REASON, "contours": contours}
            return found

    def _collections(self, session: Session) -> tuple[str, str, list[dict[str, Any]]]:
        """(experiment, STIR series UID, ROI collections) of a session, from the listing when
        this source made it, else from the experiment's JSON."""
        exp, scan_id = parse_scan_uri(self.server, session, "stir")
        listed = self._listed.get(session.key)
        if listed is not None and listed.experiment == exp:
            if listed.collections is not None:
                return exp, listed.stir_uid, listed.collections
            # the experiment's JSON had no assessor child: none, or not sent; the listing says
            return exp, listed.stir_uid, roi.list_collections(self.client, session, exp)
        doc = roi.experiment_doc(self.client, session, exp)
        scans = listing.scans_in(doc)
        scan = next((x for x in scans or () if x.id == scan_id), None)
        if scans is not None and scan is None:
            raise XnatError(f"session {session.key}", f"STIR scan {scan_id} is no longer in "
                                                      f"experiment {exp}")
        uid = scan.uid if scan is not None else self._stir_uid(session)[1]
        return exp, uid, roi.session_collections(self.client, session, exp, doc)

    def fetch_cleaned(self, session: Session, dest: str | os.PathLike[str],
                      context: Mapping[str, Path] | None = None) -> dict[str, Any] | None:
        """Decode the chosen cleaned SEG onto the STIR grid; None while there is none.

        ``context``: ``receipt`` (the push receipt, ``pushed.json``), ``stir`` (the STIR's pull
        sidecar, whose kept headers spare a download) and ``like`` (the proposal: the grid)."""
        with self._operation():
            return self._fetch_cleaned(session, dest, dict(context or {}))

    def _fetch_cleaned(self, session: Session, dest: str | os.PathLike[str],
                       files: dict[str, Path]) -> dict[str, Any] | None:
        import nibabel as nib
        import pydicom

        from vhi.imaging.nifti import save_nifti
        from vhi.imaging.seg import read_seg

        what = f"session {session.key}"
        receipt = self._receipts.get(session.key)
        if files.get("receipt") and Path(files["receipt"]).is_file():
            receipt = json.loads(Path(files["receipt"]).read_text())
        if receipt is None:
            return None
        exp, stir_uid, collections = self._collections(session)
        chosen = self.choose_cleaned(session, collections, stir_uid, receipt)
        if chosen is None:
            return None
        data = roi.collection_bytes(self.client, session, exp, chosen)
        with tempfile.TemporaryDirectory(prefix="vhi-xnat-collect-") as tmp:
            work = Path(tmp)
            like = nib.load(files["like"]) if files.get("like") else None
            if like is None:
                stir, datasets, grid = transfer.stir_grid(self.client, session, work, self.resource)
            else:
                stir, datasets, grid = self._stir_series(session, files.get("stir"), work, like)
            seg_path = work / "cleaned.seg.dcm"
            seg_path.write_bytes(data)
            try:
                mask = read_seg(seg_path, grid, datasets)
                series_uid = str(pydicom.dcmread(seg_path, stop_before_pixels=True).SeriesInstanceUID)
            except InputError as exc:
                raise XnatError(what, f"ROI collection {chosen['label']} ({chosen['id']}): "
                                      f"{exc.cause}") from None
            save_nifti(mask.astype(np.uint8), grid, dest)
        log.info("%s: cleaned segmentation = ROI collection %s (%s, SEG %s): %d voxels", what,
                 chosen["label"], chosen["id"], chosen["uid"], int(mask.sum()))
        return {"uri": self.collection_uri(chosen["id"]), "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data), "collection": chosen["id"], "label": chosen["label"],
                "name": chosen["name"], "seg_series_instance_uid": series_uid,
                "seg_sop_instance_uid": chosen["uid"],
                "insert_date": chosen["insert_date"], "proposal_label": self.proposal_label(session),
                "stir": {"scan": stir["scan"], "series_uid": stir["series_uid"]},
                "rule": "newest SEG collection on the STIR series saved after the proposal was "
                        "last pushed changed"}


def _before(receipt: Mapping[str, Any] | None) -> list[str] | None:
    """The receipt's ``collections_before`` (None: no receipt, or one without the list)."""
    if not receipt or not isinstance(receipt.get("collections_before"), list):
        return None
    return [str(i) for i in receipt["collections_before"]]


__all__ = ["ListedSession", "XnatError", "XnatSource"]
