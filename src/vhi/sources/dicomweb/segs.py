"""DICOM SEG objects in a study on a DICOMweb service: listed, chosen, retrieved, stored.

Every SEG series of the study is listed with what the choices need, read from its
instances' metadata (WADO-RS): whether it carries the platform's marks
(:func:`vhi.imaging.seg.is_platform_seg`), the series it references and when it was made.

* The **proposal** of a session is the newest platform SEG that references its STIR series.
* Which SEG is the **cleaning** is decided by the one rule of every source
  (:mod:`vhi.sources.cleaning`), from what existed when the proposal was pushed. A SEG in
  the study whose references all lie outside the study (drawn on another study) is listed
  too, so that collecting it fails by name (:func:`refuse_foreign`) instead of silently
  taking an older one.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vhi.sources.dicomweb.client import DicomwebConnection, DicomwebError
from vhi.sources.dicomweb.listing import list_series

log = logging.getLogger(__name__)

#: Instances per STOW-RS request (a series of a few dozen slices takes a few).
STOW_BATCH = 16


def when(ds: Any) -> str:
    """When a SEG was made, as sortable text: content, else series, else instance creation."""
    for date, time in (("ContentDate", "ContentTime"), ("SeriesDate", "SeriesTime"),
                       ("InstanceCreationDate", "InstanceCreationTime")):
        if ds.get(date):
            return f"{ds.get(date)}{str(ds.get(time, '') or '').split('.')[0]:0<6}"
    return ""


def _referenced(ds: Any) -> tuple[list[str], list[str]]:
    """(referenced series UIDs, referenced study UIDs) of a SEG."""
    series = [str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])
              if "SeriesInstanceUID" in item]
    studies = [str(item.StudyInstanceUID)
               for item in ds.get("StudiesContainingOtherReferencedInstancesSequence", [])
               if "StudyInstanceUID" in item]
    return series, studies


def list_segs(conn: DicomwebConnection, what: str, study_uid: str) -> list[dict[str, Any]]:
    """Every SEG instance of the study, newest last, with its marks, references and date."""
    import pydicom

    from vhi.imaging.seg import is_platform_seg

    series = list_series(conn, what, study_uid)
    in_study = {s["SeriesInstanceUID"] for s in series}
    out = []
    for row in series:
        if row["Modality"].upper() != "SEG":
            continue
        uid = row["SeriesInstanceUID"]
        metadata = conn.call(what, f"reading the metadata of SEG series {uid}",
                             lambda c, u=uid: c.retrieve_series_metadata(study_uid, u))
        for item in metadata:
            ds = pydicom.Dataset.from_json(item, bulk_data_uri_handler=lambda *_: b"")
            refs, other_studies = _referenced(ds)
            out.append({
                "series_uid": uid, "sop_uid": str(ds.get("SOPInstanceUID", "")),
                "study_uid": study_uid, "platform": is_platform_seg(ds),
                "series_description": str(ds.get("SeriesDescription", "")),
                "series_number": str(ds.get("SeriesNumber", "")), "when": when(ds),
                "referenced_series": refs, "other_studies": other_studies,
                "foreign": bool(refs) and not (set(refs) & in_study),
            })
    out.sort(key=lambda s: (s["when"], number(s), s["series_uid"]))
    return out


def number(seg: Mapping[str, Any]) -> float:
    """A listed SEG's series number (0 when it has none)."""
    try:
        return float(seg["series_number"])
    except ValueError:
        return 0.0


def newest_proposal(segs: Sequence[Mapping[str, Any]], stir_uid: str) -> dict[str, Any] | None:
    ours = [s for s in segs if s["platform"] and stir_uid in s["referenced_series"]]
    return dict(ours[-1]) if ours else None


def label(seg: Mapping[str, Any]) -> str:
    """How messages name a SEG: its series and description."""
    return f"SEG series {seg['series_uid']} ('{seg['series_description']}')"


def refuse_foreign(what: str, chosen: Mapping[str, Any]) -> None:
    """The chosen cleaned SEG must be drawn on this study: one drawn on another fails by name."""
    if chosen["foreign"]:
        raise DicomwebError(what, f"the newest cleaned segmentation, {label(chosen)}, references "
                                  f"series {', '.join(chosen['referenced_series'])}, none of which "
                                  "is in this study (drawn on another study?): not collected")


def decode(data: bytes, grid: Any, datasets: Sequence[Any]) -> np.ndarray:
    """A retrieved SEG as a bool mask on the STIR's grid (:func:`vhi.imaging.seg.read_seg`;
    ``grid`` the STIR image or ``(affine, shape)``, ``datasets`` its series)."""
    from vhi.imaging.seg import read_seg

    with tempfile.TemporaryDirectory(prefix="vhi-seg-") as tmp:
        path = Path(tmp) / "seg.dcm"
        path.write_bytes(data)
        return read_seg(path, grid, datasets)


def retrieve(conn: DicomwebConnection, what: str, seg: Mapping[str, Any]) -> bytes:
    """The SEG instance as a DICOM file (WADO-RS)."""
    action = f"retrieving SEG {seg['sop_uid']} of series {seg['series_uid']}"

    def fetch(client: Any) -> Any:
        try:
            return client.retrieve_instance(seg["study_uid"], seg["series_uid"], seg["sop_uid"])
        except ValueError as exc:  # dicomweb-client: the answer is not multipart/related
            raise DicomwebError(what, f"{action}: the service's answer is not DICOM (WADO-RS "
                                      f"multipart/related): {exc}") from None

    ds = conn.call(what, action, fetch)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def store(conn: DicomwebConnection, what: str, study_uid: str, datasets: Sequence[Any],
          stored: str | None = None) -> None:
    """STOW-RS instances into their study, ``STOW_BATCH`` per request; refused instances
    raise DicomwebError. ``stored`` names them in messages (default: the first as a SEG)."""
    stored = stored or f"SEG {datasets[0].SOPInstanceUID}"
    for start in range(0, len(datasets), STOW_BATCH):
        batch = list(datasets[start:start + STOW_BATCH])
        answer = conn.call(what, f"storing {stored} (STOW-RS)", lambda c, b=batch:
                           c.store_instances(b, study_instance_uid=study_uid))
        failed = list(answer.get("FailedSOPSequence", []) if answer is not None else [])
        if failed:
            reason = failed[0].get("FailureReason", "?")
            raise DicomwebError(what, f"the service refused {len(failed)} instance(s) of {stored} "
                                      f"(STOW-RS failure reason {reason})")
