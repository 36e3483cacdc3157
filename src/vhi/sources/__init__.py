"""Where sessions come from and where proposals go: one protocol, one module per backend.

A source lists the sessions of one site, fetches a scan of a session into the work
folder, pushes a proposal back for a radiologist to clean, and fetches the cleaned
segmentation once there is one. :func:`make_source` builds one from a site's
``source`` config, with the schema's defaults filled in; backends register in
:data:`SOURCE_TYPES` and are imported only when used.

Rules of every backend: nothing a radiologist saved is ever written to; every file a
source writes into ``dest`` is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vhi.cohort.ids import Session
from vhi.config.schema import definition, validate
from vhi.errors import ConfigError, InputError

if TYPE_CHECKING:
    from vhi.sources.cleaning import CleaningRecord, Saved

log = logging.getLogger(__name__)

#: source ``type`` -> "module:Class"
SOURCE_TYPES: dict[str, str] = {
    "local": "vhi.sources.local:LocalSource",
    "xnat": "vhi.sources.xnat:XnatSource",
    "dicomweb": "vhi.sources.dicomweb:DicomwebSource",
}


@dataclass(frozen=True)
class Skipped:
    """A study or session a source found and left out of the plan, and why: ``status.csv``
    lists it (state ``skipped``), so no session the source holds goes missing unsaid.

    ``label`` is how the source names it (``study 1.2.3``); ``subject`` and ``session`` are
    the ids it would have had, as read (often the reason they are not valid ids).
    """

    site: str
    label: str
    reason: str
    subject: str = ""
    session: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Skipped:
        return cls(**{k: str(data.get(k) or "") for k in ("site", "label", "reason", "subject",
                                                           "session")})


class Source(ABC):
    """The protocol every backend implements (local folder, XNAT, DICOMweb)."""

    #: Config keys each operation depends on. The workflow passes only these to the job,
    #: so changing, say, the outbox reruns the pushes but not the pulls.
    SPEC_KEYS: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "fetch": (), "push": (), "cleaned": (), "list": ()}

    def __init__(self, site: str, spec: Mapping[str, Any]) -> None:
        self.site = site
        self.spec = dict(spec)
        self._skipped: list[Skipped] = []

    @abstractmethod
    def list_sessions(self) -> list[Session]:
        """Every session of the site, with its scans' URIs."""

    def skipped(self) -> list[Skipped]:
        """What the last :meth:`list_sessions` found and left out, and why (none by default)."""
        return list(self._skipped)

    @abstractmethod
    def fetch_scan(self, session: Session, role: str, dest: str | os.PathLike[str]) -> dict[str, Any]:
        """Write the scan of ``role`` (stir, t1w, reference) as NIfTI to ``dest``.

        Returns what was fetched: at least ``uri`` and ``sha256`` of the source data.
        Raises :class:`vhi.errors.InputError` naming the session and the cause.
        """

    @abstractmethod
    def push_proposal(self, session: Session, files: Mapping[str, Path],
                      context: Mapping[str, Path] | None = None) -> dict[str, Any]:
        """Make the proposal files (role -> path) available for cleaning; return a receipt.

        ``context`` (read only, never pushed): ``stir`` (the STIR's pull sidecar) and
        ``history`` (the previous receipt), for backends that use them.
        """

    @abstractmethod
    def find_cleaned(self, sessions: Sequence[Session],
                     receipts: Mapping[str, Mapping[str, Any]] | None = None,
                     record: CleaningRecord | None = None) -> dict[str, dict[str, Any]]:
        """A cheap look: session key -> fingerprint of its cleaned segmentation, if any.

        The fingerprint changes when a radiologist saves again, so the workflow
        collects again. ``receipts``: session key -> its push receipt; ``record``: the
        station's saves and the assignments (:class:`~vhi.sources.cleaning.CleaningRecord`). An entry
        ``{"pending": reason}`` means something was saved that cannot be collected
        (the reason goes to the session's status).
        """

    @abstractmethod
    def fetch_cleaned(self, session: Session, dest: str | os.PathLike[str],
                      context: Mapping[str, Path] | None = None) -> dict[str, Any] | None:
        """Copy the cleaned segmentation to ``dest`` (NIfTI); None when there is none yet.

        ``context``: ``receipt`` (the push receipt), ``stir`` (the STIR's pull sidecar),
        ``like`` (the proposal). Returns at least ``uri`` and ``sha256`` of what was fetched.
        """

    # ------------------------------------------------------------------ the cleaning rule
    def cleaning_saves(self, session: Session, receipt: Mapping[str, Any]) -> list[Saved] | None:
        """The segmentations saved for ``session`` on the source, as the one cleaning rule
        (:mod:`vhi.sources.cleaning`) takes them; None where the source does not follow it
        (a folder's cleaned path is its cleaning)."""
        return None

    def read_cleaning(self, session: Session, saved: Saved, dest: str | os.PathLike[str],
                      context: Mapping[str, Path], data: bytes | None = None) -> dict[str, Any]:
        """Write the mask of one chosen save to ``dest`` (NIfTI on the STIR's grid); ``data``:
        its bytes where the station kept them. Returns what was read (``uri``, ``sha256`` …)."""
        raise NotImplementedError(f"{type(self).__name__} does not follow the cleaning rule")

    def describe_saved(self, saved: Saved) -> dict[str, Any]:
        """How the plan names a save (at least ``uri``)."""
        return {"uri": saved.label}

    def fetch_by_rule(self, session: Session, dest: str | os.PathLike[str],
                      context: Mapping[str, Path] | None = None,
                      receipts: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any] | None:
        """:meth:`fetch_cleaned` of a source that follows the rule: the read the VHI comes from
        (``context["receipt"]``: the push receipt; else one this source made in this process,
        from ``receipts``), None while there is none. The workflow's collection reads every
        read of a double read (``vhi collect``)."""
        from vhi.fileio import read_json
        from vhi.sources.cleaning import CleaningRecord, PushRecord

        context = dict(context or {})
        path = context.get("receipt")
        receipt = read_json(path) if path and Path(path).is_file() else (receipts or {}).get(session.key)
        if receipt is None:
            return None
        record = CleaningRecord()
        cleaning = record.cleaning(session.key, session.site, PushRecord.from_receipt(receipt),
                                   self.cleaning_saves(session, receipt) or [])
        if cleaning.vhi is None:
            return None
        return self.read_cleaning(session, cleaning.vhi.saved, dest, context)

    def find_cleaned_by_rule(self, sessions: Sequence[Session], receipts: Mapping[str, Mapping[str, Any]],
                             record: CleaningRecord) -> dict[str, dict[str, Any]]:
        """:meth:`find_cleaned` of a source that follows the rule: each pushed session's
        fingerprint (:func:`vhi.sources.cleaning.fingerprint`), ``{"pending": reason}``
        where what was saved cannot be collected; a session the source cannot be asked
        about now is left out (warned)."""
        from vhi.sources.cleaning import PushRecord, fingerprint

        found = {}
        for s in sessions:
            receipt = receipts.get(s.key)
            if not s.scans.get("stir") or receipt is None:
                continue
            try:
                saves = self.cleaning_saves(s, receipt)
            except InputError as exc:
                log.warning("%s (cleaned segmentation not looked up this run)", exc)
                continue
            entry = fingerprint(record.cleaning(s.key, s.site, PushRecord.from_receipt(receipt), saves or []),
                                self.describe_saved)
            if entry is not None:
                found[s.key] = entry
        return found

    def reader_masks(self, session: Session) -> dict[str, str]:
        """Independent reader masks of the session (reader -> path) for agreement; none by default."""
        return {}

    def scan_identity(self, session: Session) -> dict[str, Any]:
        """Per scan role, what changes when the scan is replaced at the same URI: the workflow
        pulls a scan again when its identity changes. None by default: a server source's
        URIs name the series or scan itself (a new series is a new URI)."""
        return {}

    @classmethod
    def spec_for(cls, spec: Mapping[str, Any], operation: str) -> dict[str, Any]:
        """The part of the site spec that ``operation`` depends on (plus ``type``)."""
        keys = cls.SPEC_KEYS.get(operation, ())
        return {"type": spec["type"], **{k: spec[k] for k in keys if k in spec}}


def source_class(spec: Mapping[str, Any]) -> type[Source]:
    kind = spec.get("type")
    if kind not in SOURCE_TYPES:
        raise ConfigError("source.type", f"unknown source type {kind!r} "
                                         f"(known: {', '.join(sorted(SOURCE_TYPES))})")
    module, _, name = SOURCE_TYPES[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def make_source(spec: Mapping[str, Any], site: str) -> Source:
    """The source of one site from its (expanded) ``source`` config.

    The spec is validated against the source kind's schema, which fills in every
    default: the schema is the one place defaults are defined. Required keys are
    checked when the whole config is validated; here a spec may be the part of it one
    operation needs (:meth:`Source.spec_for`).
    """
    cls = source_class(spec)
    schema = definition(f"{spec['type']}_source")
    schema.pop("required", None)
    return cls(site, validate(copy.deepcopy(dict(spec)), schema, f"site {site} source"))




def viewer_route(study_uid: str) -> str:
    """The OHIF route that opens a study for cleaning (segmentation mode), as ``vhi viewer``
    serves it: what push receipts record as ``viewer_path``."""
    return f"/segmentation?StudyInstanceUIDs={study_uid}"


def proposal_to_push(files: Mapping[str, Path]) -> tuple[Any, str]:
    """The proposal volume of a push and the vhi version that made it (its sidecar's, else
    this one's): what a remote source's SEG is built from."""
    import vhi
    from vhi.fileio import read_json
    from vhi.imaging.nifti import load_mask

    proposal = load_mask(files["proposal"])
    sidecar = {}
    if files.get("sidecar") and Path(files["sidecar"]).is_file():
        sidecar = read_json(files["sidecar"])
    version = str(sidecar.get("provenance", {}).get("software", {}).get("version") or "")
    return proposal, version or vhi.__version__


__all__ = ["SOURCE_TYPES", "Skipped", "Source", "make_source", "proposal_to_push", "source_class",
           "viewer_route"]
