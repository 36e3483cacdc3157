"""Sessions from an XNAT project; proposals back as DICOM SEG ROI collections for OHIF.

Config (``sites[].source`` with ``type: xnat``; every key in
``workflow/schemas/config.schema.yaml`` and ``docs/usage.md``)::

    server:       https://xnat.example.org  (no credentials in the URL)
    project:      the XNAT project ID
    user_env:     environment variable with the user name  (default XNAT_USER)
    password_env: environment variable with the password   (default XNAT_PASS)
                  neither set: xnatpy's own variables, then ~/.netrc
    verify:       verify the server's TLS certificate (default true)
    ca_bundle:    PEM file of the site's CA (for a server with a site-internal CA)
    selection:    per-role scan rules, see :mod:`vhi.sources.xnat.select`
    timepoint_pattern: regex on the session label; group 1 is the timepoint
                  (default: the session date)
    proposal_label: label of the proposal collection, default ``VHI_PROPOSAL_{session}``
    resource:     the scan resource holding the DICOM files (default DICOM)
    retries, backoff_s, timeout_s: transient-error handling (default 3, 1.0 s doubling, 120 s)

Everything goes through the ``xnat`` client (xnatpy). What this source does on the
server, and nothing else:

* reads: the project's MR sessions, their scans, a scan's file listing and its zip
  (checked: zip CRCs, every listed file present with the listed size and MD5);
* writes: one ROI collection per session, labelled :meth:`XnatSource.proposal_label`,
  with ``overwrite=false``; only a collection under that label whose SEG carries the
  platform's marks and differs from the new proposal is replaced (``overwrite=true``).
  A collection saved by anyone else is never written or deleted. A push is done only
  when the collection read back from the server is byte-identical to what was sent.

Cleaned segmentations (the OHIF viewer saves a *new* collection on every save,
``SEG_<date>_<time>_<ms>_S<n>``, ``overwrite=false``): the chosen one is the newest
(by the server's ``insert_date``) SEG collection of the session that (a) is not the
proposal, (b) was stored after the proposal and (c) references the session's STIR
series. It is decoded onto the STIR grid with highdicom; its collection ID, label and
SEG SOP Instance UID go into ``cleaned.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import numpy as np

from vhi.cohort.ids import ID_PATTERN, ROLE_NAMES, Session
from vhi.errors import ConfigError, InputError
from vhi.sources import Source
from vhi.sources.xnat.select import ROLES, ScanRow, Selection, compile_rules, format_report, select_scans

log = logging.getLogger(__name__)

T = TypeVar("T")

SESSION_XSI = "xnat:mrSessionData"
ROI_XSI = "icr:roiCollectionData"
#: Statuses worth another try: the server or a proxy had a bad moment.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
ANY_STATUS = range(100, 600)
OCTET = {"Content-Type": "application/octet-stream"}
_ID_RE = re.compile(f"^{ID_PATTERN}$")
_URI_RE = re.compile(r"/data/experiments/(?P<exp>[^/]+)/scans/(?P<scan>[^/?#]+)$")


class XnatError(InputError):
    """The XNAT server did not give what a session needs; names the session and the cause."""


class _Transfer(Exception):  # noqa: N818 - internal signal, never escapes this module
    """A download arrived damaged (zip, size or digest): worth another try."""


@dataclass(frozen=True)
class ListedSession:
    """What the listing knows of one session (kept for find_cleaned in the same process)."""

    session: Session
    experiment: str
    subject: str
    date: str
    selection: Selection
    stir_uid: str = ""

    def report(self) -> dict[str, Any]:
        return {"session": self.session.key, "experiment": self.experiment,
                "date": self.date, "listed": bool(self.session.scans.get("t1w")),
                **self.selection.as_dict()}


def _env(name: str) -> str | None:
    value = os.environ.get(name) if name else None
    return value or None


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - XNAT's catalog digest is MD5
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _rows(data: Any) -> list[dict[str, Any]]:
    try:
        return list(data["ResultSet"]["Result"])
    except (KeyError, TypeError):
        return []


class XnatSource(Source):
    """The sessions of one XNAT project."""

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
        server = str(spec.get("server") or "").rstrip("/")
        parts = urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"site {site} source.server", f"not an http(s) URL: {server!r}")
        if parts.username or parts.password:
            raise ConfigError(f"site {site} source.server", "credentials do not belong in the URL: "
                              "set them in the environment (user_env/password_env) or ~/.netrc")
        self.server = server
        self.project = str(spec.get("project") or "")
        if not self.project:
            raise ConfigError(f"site {site} source.project", "an XNAT project ID is required")
        self.user_env = str(spec["user_env"])
        self.password_env = str(spec["password_env"])
        self.verify = bool(spec["verify"])
        self.ca_bundle = str(spec["ca_bundle"])
        if self.ca_bundle and not Path(self.ca_bundle).is_file():
            raise ConfigError(f"site {site} source.ca_bundle", f"file not found: {self.ca_bundle}")
        self.resource = str(spec["resource"])
        self.retries = int(spec["retries"])
        self.backoff_s = float(spec["backoff_s"])
        self.timeout_s = float(spec["timeout_s"])
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
        self._conn: Any = None
        self._held = False  # inside ``with source:``: one connection for every operation
        self._depth = 0
        self._listed: dict[str, ListedSession] = {}

    # ------------------------------------------------------------------ connection
    @contextlib.contextmanager
    def _ca_env(self) -> Iterator[None]:
        """xnatpy's ``verify`` is bool-only: a site CA goes through REQUESTS_CA_BUNDLE."""
        if not self.ca_bundle:
            yield
            return
        old = os.environ.get("REQUESTS_CA_BUNDLE")
        os.environ["REQUESTS_CA_BUNDLE"] = self.ca_bundle
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("REQUESTS_CA_BUNDLE", None)
            else:
                os.environ["REQUESTS_CA_BUNDLE"] = old

    def _connect(self) -> Any:
        import requests
        import xnat
        from xnat.exceptions import XNATError, XNATLoginFailedError, XNATSSLError

        where = f"XNAT {self.server} (site {self.site})"
        user, password = _env(self.user_env), _env(self.password_env)
        try:
            with self._ca_env():
                conn = xnat.connect(self.server, user=user, password=password, verify=self.verify,
                                    logger=logging.getLogger("vhi.sources.xnat.client"),
                                    loglevel="WARNING", default_timeout=self.timeout_s,
                                    pilot_timeout=min(self.timeout_s, 30.0))
        except (requests.exceptions.SSLError, XNATSSLError) as exc:
            raise XnatError(where, "TLS certificate verification failed; for a site CA set "
                                   f"source.ca_bundle ({type(exc).__name__})") from None
        except XNATLoginFailedError:
            who = (f"${self.user_env}" if user else "xnatpy's environment or ~/.netrc")
            raise XnatError(where, f"login failed (credentials from {who})") from None
        except (requests.exceptions.RequestException, XNATError, OSError) as exc:
            raise XnatError(where, f"cannot connect ({type(exc).__name__}: "
                                   f"{self._scrub(str(exc))})") from None
        if self.ca_bundle:
            conn.interface.verify = self.ca_bundle
        return conn

    def _scrub(self, text: str) -> str:
        """Never echo a credential in a message."""
        for name in (self.password_env, "XNAT_PASS", "XNATPY_PASS"):
            secret = _env(name)
            if secret:
                text = text.replace(secret, "***")
        return text if len(text) <= 200 else text[:200] + "…"

    def connection(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):  # logging out of a dead session may fail
                conn.disconnect()

    def __enter__(self) -> XnatSource:
        self._held = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._held = False
        self.close()

    @contextlib.contextmanager
    def _operation(self) -> Iterator[None]:
        """One public operation: its connection is closed at the end unless held by ``with``."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and not self._held:
                self.close()

    def _call(self, what: str, action: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(connection)`` with bounded retries (exponential backoff) on transient errors.

        Retried: HTTP 408/429/5xx, dropped connections, timeouts, damaged downloads; an
        HTTP 401 (an expired session) logs in again once. Anything else, or the last
        failure, raises XnatError(what, "<action>: <cause>").
        """
        import requests
        from xnat.exceptions import XNATResponseError, XNATSSLError, XNATValueError

        attempts = max(self.retries, 0) + 1
        relogged = False
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._ca_env():
                    return fn(self.connection())
            except XNATResponseError as exc:
                status = int(getattr(exc, "status_code", 0) or 0)
                if status == 401 and not relogged:
                    log.warning("%s: %s: HTTP 401 (session expired?): logging in again", what, action)
                    relogged = True
                    self.close()
                    attempt -= 1
                    continue
                cause = f"HTTP {status} from the server"
                retry = status in RETRY_STATUS
            except (requests.exceptions.SSLError, XNATSSLError):
                raise XnatError(what, f"{action}: TLS certificate verification failed") from None
            except (requests.exceptions.RequestException, XNATValueError, _Transfer) as exc:
                cause = f"{type(exc).__name__}: {self._scrub(str(exc))}"
                retry = True
                if isinstance(exc, requests.exceptions.RequestException):
                    self.close()  # a half-read stream leaves the connection unusable
            if not retry or attempt >= attempts:
                tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise XnatError(what, f"{action}: {cause}{tries}") from None
            delay = self.backoff_s * 2 ** (attempt - 1)
            log.warning("%s: %s: %s; retry %d of %d in %.1f s", what, action, cause, attempt,
                        attempts - 1, delay)
            time.sleep(delay)

    # ------------------------------------------------------------------ identifiers
    def proposal_label(self, session: Session) -> str:
        return self.label_template.format(site=session.site, subject=session.subject,
                                          session=session.session)

    def scan_uri(self, experiment: str, scan_id: str) -> str:
        return f"{self.server}/data/experiments/{experiment}/scans/{scan_id}"

    def _parse_uri(self, session: Session, role: str) -> tuple[str, str]:
        uri = session.scans.get(role)
        if not uri:
            raise XnatError(f"session {session.key}", f"no {ROLE_NAMES.get(role, role)} scan "
                                                      "matched the site's selection rules "
                                                      "(`vhi xnat-plan` says why)")
        match = _URI_RE.search(uri)
        if not match or not uri.startswith(self.server + "/"):
            raise XnatError(f"session {session.key}", f"{uri} is not a scan of {self.server}")
        return match["exp"], match["scan"]

    def collection_uri(self, ident: str) -> str:
        return f"{self.server}/xapi/roi/projects/{self.project}/collections/{ident}"

    # ------------------------------------------------------------------ listing
    def _timepoint(self, label: str, date: str) -> str:
        if self.timepoint_re is not None:
            match = self.timepoint_re.search(label)
            if match:
                return match.group(1) if match.groups() else match.group(0)
        return date or "unknown"

    def _plan_sessions(self) -> list[ListedSession]:
        """Every MR session of the project with its scan selection (picked and rejected, why)."""
        where = f"site {self.site} (XNAT project {self.project})"
        rows = _rows(self._call(where, "listing the MR sessions", lambda c: c.get_json(
            f"/data/projects/{self.project}/experiments",
            query={"xsiType": SESSION_XSI, "columns": "ID,label,subject_label,date,xsiType"})))
        listed = []
        for row in sorted(rows, key=lambda r: (str(r.get("subject_label", "")), str(r.get("label", "")))):
            exp, label = str(row.get("ID", "")), str(row.get("label", ""))
            subject = str(row.get("subject_label", ""))
            if row.get("xsiType") not in (None, "", SESSION_XSI):
                continue
            if not (_ID_RE.match(label) and _ID_RE.match(subject)):
                log.warning("%s: skipping session %s/%s: labels must match %s", where, subject,
                            label, ID_PATTERN)
                continue
            key = f"{self.site}/{subject}/{label}"
            scans = [ScanRow.from_listing(r) for r in _rows(self._call(
                f"session {key}", "listing its scans",
                lambda c, e=exp: c.get_json(f"/data/experiments/{e}/scans", query={"format": "json"})))]
            selection = select_scans(scans, self.rules)
            picked = selection.picked
            uris = {role: self.scan_uri(exp, scan.id) for role, scan in picked.items()}
            date = str(row.get("date") or "")
            session = Session(self.site, subject, label, self._timepoint(label, date), uris)
            item = ListedSession(session, exp, subject, date, selection,
                                 stir_uid=picked["stir"].uid if "stir" in picked else "")
            listed.append(item)
            log.info("%s", format_report(key, selection))
        return listed

    def _list_sessions(self) -> list[Session]:
        """Every MR session. One without a T1W stays in the plan and fails at its pull, so
        status.csv lists it with the reason; one without a STIR gets the disease region only."""
        sessions = []
        for item in self._plan_sessions():
            self._listed[item.session.key] = item
            for role, consequence in (("t1w", "it will fail at the pull"),
                                      ("stir", "disease region only, no proposal")):
                if role not in item.selection.picked:
                    log.warning("session %s: no %s (%s): %s", item.session.key, ROLE_NAMES[role],
                                item.selection.problems.get(role, "no candidate"), consequence)
            sessions.append(item.session)
        return sessions

    # ------------------------------------------------------------------ download
    def _download_series(self, session: Session, role: str, dest_dir: Path) -> dict[str, Any]:
        """Download and verify the DICOM files of the session's ``role`` scan into ``dest_dir``."""
        what = f"session {session.key}"
        name = ROLE_NAMES.get(role, role)
        exp, scan_id = self._parse_uri(session, role)
        base = f"/data/experiments/{exp}/scans/{scan_id}"
        scan_rows = _rows(self._call(what, f"reading {name} scan {scan_id}", lambda c: c.get_json(
            f"/data/experiments/{exp}/scans", query={"format": "json"})))
        scan = next((ScanRow.from_listing(r) for r in scan_rows if str(r.get("ID")) == scan_id), None)
        if scan is None:
            raise XnatError(what, f"{name} scan {scan_id} is no longer in experiment {exp}")
        listing = _rows(self._call(
            what, f"listing the {self.resource} files of {name} scan {scan_id}",
            lambda c: c.get_json(f"{base}/resources/{self.resource}/files", query={"format": "json"})))
        expected: dict[str, tuple[int, str]] = {}
        for row in listing:
            uri = str(row.get("URI", ""))
            rel = uri.split("/files/", 1)[1] if "/files/" in uri else str(row.get("Name", ""))
            expected[rel] = (int(str(row.get("Size") or -1)), str(row.get("digest") or ""))
        if not expected:
            raise XnatError(what, f"{name} scan {scan_id} has no files in resource {self.resource}")

        def fetch(conn: Any) -> dict[str, Any]:
            for old in dest_dir.iterdir():
                old.unlink()
            zip_path = dest_dir.parent / f".{dest_dir.name}.zip"
            try:
                with zip_path.open("wb") as fh:
                    conn.download_stream(f"{base}/resources/{self.resource}/files", fh, format="zip",
                                         timeout=self.timeout_s)
                return self._unpack_checked(zip_path, expected, dest_dir)
            finally:
                zip_path.unlink(missing_ok=True)

        info = self._call(what, f"downloading {name} scan {scan_id}", fetch)
        return {"uri": self.scan_uri(exp, scan_id), "experiment": exp, "scan": scan_id,
                "series_uid": scan.uid, "series_description": scan.series_description,
                "type": scan.type, "quality": scan.quality, **info}

    @staticmethod
    def _unpack_checked(zip_path: Path, expected: Mapping[str, tuple[int, str]],
                        dest_dir: Path) -> dict[str, Any]:
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

    def _series(self, session: Session, role: str, work: Path) -> tuple[dict[str, Any], Path]:
        folder = work / role
        folder.mkdir()
        return self._download_series(session, role, folder), folder

    def _fetch_scan(self, session: Session, role: str, dest: str | os.PathLike[str]) -> dict[str, Any]:
        from vhi.fileio import atomic_path
        from vhi.imaging.dicom import dicom_to_nifti

        name = ROLE_NAMES.get(role, role)
        if role not in ROLES:
            raise XnatError(f"session {session.key}", f"XNAT sources have no {role} scans")
        dest = Path(dest)
        with tempfile.TemporaryDirectory(prefix="vhi-xnat-") as tmp:
            info, folder = self._series(session, role, Path(tmp))
            with atomic_path(dest) as out:
                dicom_to_nifti(folder, out, scan=f"session {session.key}: {name} scan "
                                                 f"{info['scan']} ({info['uri']})")
        log.info("session %s: %s scan %s '%s' (%d files, verified) -> %s", session.key, name,
                 info["scan"], info["series_description"], info["files"], dest)
        return info

    def _stir_grid(self, session: Session, work: Path) -> tuple[dict[str, Any], list[Any], Any]:
        """The archived STIR series: its datasets and the NIfTI grid dcm2niix makes of it."""
        import nibabel as nib

        from vhi.imaging.dicom import dicom_to_nifti, read_series

        info, folder = self._series(session, "stir", work)
        scan = f"session {session.key}: STIR scan {info['scan']}"
        nifti = dicom_to_nifti(folder, work / "stir.nii.gz", scan=scan)
        return info, read_series(folder), nib.load(nifti)

    # ------------------------------------------------------------------ collections
    def _collections(self, session: Session, exp: str) -> list[dict[str, Any]]:
        """Every ROI collection of the session (rows with collectionType, UID, series refs)."""
        what = f"session {session.key}"
        rows = _rows(self._call(what, "listing its ROI collections", lambda c: c.get_json(
            f"/data/experiments/{exp}/assessors", query={"xsiType": ROI_XSI, "format": "json"})))
        out = []
        for row in rows:
            if row.get("xsiType") not in (None, "", ROI_XSI):
                continue
            ident = str(row.get("ID", ""))
            doc = self._call(what, f"reading ROI collection {ident}", lambda c, i=ident: c.get_json(
                f"/data/experiments/{exp}/assessors/{i}", query={"format": "json"}))
            items = [it for it in doc.get("items", []) if not it.get("meta", {}).get("isHistory")]
            if not items:
                continue
            fields = items[0].get("data_fields", {})
            refs = [ref.get("data_fields", {}).get("seriesUID", "")
                    for child in items[0].get("children", [])
                    if child.get("field") == "references/seriesUID"
                    for ref in child.get("items", [])]
            out.append({"id": ident, "label": str(fields.get("label", row.get("label", ""))),
                        "type": str(fields.get("collectionType", "")),
                        "name": str(fields.get("name", "")), "uid": str(fields.get("UID", "")),
                        "insert_date": str(row.get("insert_date")
                                           or items[0].get("meta", {}).get("start_date", "")),
                        "series": [s for s in refs if s]})
        return out

    def choose_cleaned(self, session: Session, collections: Sequence[Mapping[str, Any]],
                       stir_uid: str) -> dict[str, Any] | None:
        """The documented rule: the newest SEG collection after the proposal, on the STIR series."""
        label = self.proposal_label(session)
        proposal = next((c for c in collections if c["label"] == label), None)
        if proposal is None:
            return None
        candidates = [c for c in collections
                      if c["label"] != label and c["type"] == "SEG"
                      and c["insert_date"] > proposal["insert_date"]
                      and (not stir_uid or stir_uid in c["series"])]
        if not candidates:
            return None
        return dict(max(candidates, key=lambda c: (c["insert_date"], c["label"])))

    def _stir_uid(self, session: Session) -> tuple[str, str]:
        exp, scan_id = self._parse_uri(session, "stir")
        listed = self._listed.get(session.key)
        if listed is not None and listed.experiment == exp and listed.stir_uid:
            return exp, listed.stir_uid
        rows = _rows(self._call(f"session {session.key}", "listing its scans", lambda c: c.get_json(
            f"/data/experiments/{exp}/scans", query={"format": "json"})))
        row = next((r for r in rows if str(r.get("ID")) == scan_id), None)
        if row is None:
            raise XnatError(f"session {session.key}", f"STIR scan {scan_id} is no longer in "
                                                      f"experiment {exp}")
        return exp, str(row.get("UID") or "")

    def _find_cleaned(self, sessions: Sequence[Session]) -> dict[str, dict[str, Any]]:
        found = {}
        for s in sessions:
            if not s.scans.get("stir"):
                continue
            try:
                exp, stir_uid = self._stir_uid(s)
                chosen = self.choose_cleaned(s, self._collections(s, exp), stir_uid)
            except XnatError as exc:
                log.warning("%s (cleaned segmentation not looked up this run)", exc)
                continue
            if chosen is not None:
                found[s.key] = {"uri": self.collection_uri(chosen["id"]), "collection": chosen["id"],
                                "label": chosen["label"], "uid": chosen["uid"],
                                "insert_date": chosen["insert_date"]}
        return found

    def _collection_bytes(self, session: Session, exp: str, collection: Mapping[str, Any]) -> bytes:
        """The SEG file of a collection, checked against the catalog's MD5 where it has one."""
        ident = collection["id"]
        what = f"session {session.key}"
        files = _rows(self._call(what, f"listing the files of ROI collection {ident}",
                                 lambda c: c.get_json(f"/data/experiments/{exp}/assessors/{ident}/files",
                                                      query={"format": "json"})))
        row = next((r for r in files if r.get("collection") == collection.get("type", "SEG")), None)
        if row is None:
            raise XnatError(what, f"ROI collection {ident} ({collection['label']}) has no SEG file")
        digest = str(row.get("digest") or "")

        def fetch(conn: Any) -> bytes:
            buffer = io.BytesIO()
            conn.download_stream(str(row["URI"]), buffer, timeout=self.timeout_s)
            data = buffer.getvalue()
            if digest and hashlib.md5(data).hexdigest() != digest:  # noqa: S324 - XNAT's digest
                raise _Transfer(f"{row.get('Name')}: MD5 differs from the catalog's digest")
            return data

        return self._call(what, f"downloading ROI collection {ident}", fetch)

    # ------------------------------------------------------------------ push
    def _put_collection(self, session: Session, exp: str, label: str, data: bytes,
                        overwrite: bool) -> tuple[int, str]:
        what = f"session {session.key}"
        path = f"/xapi/roi/projects/{self.project}/sessions/{exp}/collections/{label}"
        query = {"type": "SEG", "overwrite": "true" if overwrite else "false"}

        def put(conn: Any) -> tuple[int, str]:
            from xnat.exceptions import XNATResponseError

            response = conn.put(path, query=query, data=data, headers=OCTET,
                                accepted_status=ANY_STATUS, timeout=self.timeout_s)
            if response.status_code in RETRY_STATUS or response.status_code == 401:
                raise XNATResponseError(f"PUT {path}: HTTP {response.status_code}", response=response)
            return response.status_code, response.text.strip()

        return self._call(what, f"uploading ROI collection {label}", put)

    def _readback(self, session: Session, exp: str, label: str) -> tuple[dict[str, Any] | None, bytes]:
        collection = next((c for c in self._collections(session, exp) if c["label"] == label), None)
        if collection is None:
            return None, b""
        return collection, self._collection_bytes(session, exp, collection)

    def _push_proposal(self, session: Session, files: Mapping[str, Path]) -> dict[str, Any]:
        from vhi.imaging.nifti import grid_mismatch, load_mask
        from vhi.imaging.seg import write_seg

        what = f"session {session.key}"
        proposal = load_mask(files["proposal"])
        sidecar = {}
        if files.get("sidecar") and Path(files["sidecar"]).is_file():
            sidecar = json.loads(Path(files["sidecar"]).read_text())
        version = str(sidecar.get("provenance", {}).get("software", {}).get("version") or "")
        if not version:
            import vhi

            version = vhi.__version__
        exp, _ = self._parse_uri(session, "stir")
        label = self.proposal_label(session)
        mask = proposal.data >= 1
        with tempfile.TemporaryDirectory(prefix="vhi-xnat-push-") as tmp:
            work = Path(tmp)
            stir, datasets, grid = self._stir_grid(session, work)
            why = grid_mismatch(grid, proposal.img)
            if why:
                raise XnatError(what, f"the proposal is not on the grid of the archived STIR series "
                                      f"{stir['series_uid']} (scan {stir['scan']}): {why}")
            existing, old = self._readback(session, exp, label)
            if existing is not None and self._same_as_stored(
                    session, label=label, old=old, work=work, grid=grid, datasets=datasets, mask=mask,
                    stir=stir, existing=existing):
                log.info("%s: proposal %s already on the server, unchanged", what, label)
                return self._receipt(session, exp=exp, label=label, collection=existing, data=old,
                                     stir=stir, mask=mask, status="unchanged")
            status = "created" if existing is None else "replaced"
            seg_path = work / "proposal.seg.dcm"
            number = int(getattr(datasets[0], "SeriesNumber", 0) or 0) + 1000
            info = write_seg(mask, grid.affine, datasets, seg_path, algorithm_version=version,
                             series_number=number)
            data = seg_path.read_bytes()
            code, body = self._put_collection(session, exp, label, data, overwrite=existing is not None)
            if code != 200:
                readback, stored = self._readback(session, exp, label)
                if not (readback is not None and stored == data):  # not a retried PUT that landed
                    raise XnatError(what, f"the server refused ROI collection {label} "
                                          f"(HTTP {code}: {self._scrub(body)[:300]})")
            readback, stored = self._readback(session, exp, label)
            if readback is None or stored != data:
                raise XnatError(what, f"ROI collection {label} read back from the server does not "
                                      "match what was sent")
            if readback["uid"] and readback["uid"] != info.sop_instance_uid:
                raise XnatError(what, f"ROI collection {label} on the server has UID "
                                      f"{readback['uid']}, not the SEG's {info.sop_instance_uid}")
            log.info("%s: proposal pushed as ROI collection %s (%s, %d voxels), verified", what,
                     label, readback["id"], int(mask.sum()))
            return self._receipt(session, exp=exp, label=label, collection=readback, data=data,
                                 stir=stir, mask=mask, status=status)

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
                 data: bytes, stir: Mapping[str, Any], mask: np.ndarray, status: str) -> dict[str, Any]:
        return {
            "source": "xnat", "site": session.site, "session": session.key,
            "server": self.server, "project": self.project, "experiment": exp,
            "status": status, "verified": True,
            "collection": {"id": collection["id"], "label": label, "uid": collection["uid"],
                           "insert_date": collection["insert_date"],
                           "referenced_series": list(collection["series"])},
            "stir": {"scan": stir["scan"], "series_uid": stir["series_uid"], "uri": stir["uri"]},
            "proposal_voxels": int(mask.sum()),
            "files": {"seg": {"uri": self.collection_uri(label),
                              "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}},
            "pushed_at": datetime.now(UTC).isoformat(),
        }

    # ------------------------------------------------------------------ collect
    def _fetch_cleaned(self, session: Session, dest: str | os.PathLike[str]) -> dict[str, Any] | None:
        from vhi.imaging.nifti import save_nifti
        from vhi.imaging.seg import read_seg

        what = f"session {session.key}"
        exp, stir_uid = self._stir_uid(session)
        chosen = self.choose_cleaned(session, self._collections(session, exp), stir_uid)
        if chosen is None:
            return None
        data = self._collection_bytes(session, exp, chosen)
        with tempfile.TemporaryDirectory(prefix="vhi-xnat-collect-") as tmp:
            work = Path(tmp)
            stir, datasets, grid = self._stir_grid(session, work)
            seg_path = work / "cleaned.seg.dcm"
            seg_path.write_bytes(data)
            try:
                mask = read_seg(seg_path, grid, datasets)
            except InputError as exc:
                raise XnatError(what, f"ROI collection {chosen['label']} ({chosen['id']}): "
                                      f"{exc.cause}") from None
            save_nifti(mask.astype(np.uint8), grid, dest)
        log.info("%s: cleaned segmentation = ROI collection %s (%s, SEG %s): %d voxels", what,
                 chosen["label"], chosen["id"], chosen["uid"], int(mask.sum()))
        return {"uri": self.collection_uri(chosen["id"]), "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data), "collection": chosen["id"], "label": chosen["label"],
                "name": chosen["name"], "seg_sop_instance_uid": chosen["uid"],
                "insert_date": chosen["insert_date"], "proposal_label": self.proposal_label(session),
                "stir": {"scan": stir["scan"], "series_uid": stir["series_uid"]},
                "rule": "newest SEG collection after the proposal on the STIR series"}


    # ------------------------------------------------------------------ protocol
    def plan_sessions(self) -> list[ListedSession]:
        """Every MR session of the project with its scan selection (picked and rejected, why)."""
        with self._operation():
            return self._plan_sessions()

    def list_sessions(self) -> list[Session]:
        """Sessions with a T1W (those with a STIR too get a proposal); the rest are logged."""
        with self._operation():
            return self._list_sessions()

    def fetch_scan(self, session: Session, role: str, dest: str | os.PathLike[str]) -> dict[str, Any]:
        """Download the scan of ``role``, verify it (zip CRCs, sizes, MD5s) and convert it (dcm2niix)."""
        with self._operation():
            return self._fetch_scan(session, role, dest)

    def push_proposal(self, session: Session, files: Mapping[str, Path]) -> dict[str, Any]:
        """Upload the proposal as a DICOM SEG collection; done once read back identical."""
        with self._operation():
            return self._push_proposal(session, files)

    def find_cleaned(self, sessions: Sequence[Session]) -> dict[str, dict[str, Any]]:
        """Per session, the collection the documented rule picks (its ID, label, UID, date)."""
        with self._operation():
            return self._find_cleaned(sessions)

    def fetch_cleaned(self, session: Session, dest: str | os.PathLike[str]) -> dict[str, Any] | None:
        """Decode the chosen cleaned SEG onto the STIR grid; None while there is none."""
        with self._operation():
            return self._fetch_cleaned(session, dest)


__all__ = ["ListedSession", "XnatError", "XnatSource"]
