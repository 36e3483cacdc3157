"""Reading the few DICOM attributes the emulator needs (pydicom)."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

LOG = logging.getLogger(__name__)

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
HEADER_TAGS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "StudyDate",
    "StudyTime",
]


@dataclass(frozen=True)
class Header:
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str = ""
    series_description: str = ""
    series_number: str = ""
    study_date: str = ""
    study_time: str = ""


def read_header(source: bytes | Path) -> Header | None:
    """The identifying attributes of one DICOM file, or None when it is not DICOM."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        ds = pydicom.dcmread(handle, stop_before_pixels=True, specific_tags=HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        LOG.debug("not a DICOM file (%s)", exc)
        return None
    sop_uid = str(ds.get("SOPInstanceUID", ""))
    if not sop_uid:
        return None
    return Header(
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        sop_uid=sop_uid,
        modality=str(ds.get("Modality", "")),
        series_description=str(ds.get("SeriesDescription", "")),
        series_number=str(ds.get("SeriesNumber", "")),
        study_date=str(ds.get("StudyDate", "")),
        study_time=str(ds.get("StudyTime", "")),
    )


@dataclass
class SegInfo:
    """What the ROI plugin reads from an uploaded SEG."""

    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_description: str
    date: str
    time: str
    series_refs: dict[str, set[str]] = field(default_factory=dict)
    frame_refs: set[str] = field(default_factory=set)

    @property
    def all_instance_refs(self) -> set[str]:
        refs = set(self.frame_refs)
        for uids in self.series_refs.values():
            refs |= uids
        return refs


def _iso_date(value: str) -> str:
    value = value.strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) >= 8 else ""


def _iso_time(value: str) -> str:
    value = value.strip()
    return f"{value[:2]}:{value[2:4]}:{value[4:6]}" if len(value) >= 6 else ""


def _source_refs(item: pydicom.Dataset) -> set[str]:
    refs: set[str] = set()
    for derivation in item.get("DerivationImageSequence", []):
        for source in derivation.get("SourceImageSequence", []):
            if "ReferencedSOPInstanceUID" in source:
                refs.add(str(source.ReferencedSOPInstanceUID))
    for source in item.get("SourceImageSequence", []):
        if "ReferencedSOPInstanceUID" in source:
            refs.add(str(source.ReferencedSOPInstanceUID))
    return refs


def parse_seg(data: bytes) -> SegInfo:
    """Parse a DICOM SEG; raises ValueError when the bytes are not DICOM."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, EOFError) as exc:
        raise ValueError(f"not a DICOM file: {exc}") from exc
    series_refs: dict[str, set[str]] = {}
    for series in ds.get("ReferencedSeriesSequence", []):
        uid = str(series.get("SeriesInstanceUID", ""))
        instances = {
            str(inst.ReferencedSOPInstanceUID)
            for inst in series.get("ReferencedInstanceSequence", [])
            if "ReferencedSOPInstanceUID" in inst
        }
        series_refs.setdefault(uid, set()).update(instances)
    frame_refs = _source_refs(ds)
    for frame in ds.get("PerFrameFunctionalGroupsSequence", []):
        frame_refs |= _source_refs(frame)
    date = str(ds.get("ContentDate", "") or ds.get("SeriesDate", "") or ds.get("StudyDate", ""))
    time = str(ds.get("ContentTime", "") or ds.get("SeriesTime", "") or ds.get("StudyTime", ""))
    return SegInfo(
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_description=str(ds.get("SeriesDescription", "")).strip(),
        date=_iso_date(date),
        time=_iso_time(time),
        series_refs=series_refs,
        frame_refs=frame_refs,
    )


def parse_rtstruct(data: bytes) -> SegInfo:
    """The identifiers of an RT structure set (its referenced series); ValueError if not DICOM."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, EOFError) as exc:
        raise ValueError(f"not a DICOM file: {exc}") from exc
    series_refs: dict[str, set[str]] = {}
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                uid = str(series.get("SeriesInstanceUID", ""))
                series_refs.setdefault(uid, set()).update(
                    str(c.ReferencedSOPInstanceUID) for c in series.get("ContourImageSequence", [])
                    if "ReferencedSOPInstanceUID" in c)
    return SegInfo(
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_description=str(ds.get("StructureSetLabel", "") or ds.get("SeriesDescription", "")),
        date=_iso_date(str(ds.get("StructureSetDate", "") or "")),
        time=_iso_time(str(ds.get("StructureSetTime", "") or "")),
        series_refs=series_refs,
        frame_refs=set(),
    )


_AIM_SERIES = re.compile(r"<imageSeries>\s*<instanceUid\s+root=\"([^\"]+)\"")
_AIM_UID = re.compile(r"<uniqueIdentifier\s+root=\"([^\"]+)\"")


def parse_aim(data: bytes) -> SegInfo:
    """The identifiers of an AIM document (XML): its unique identifier and image series."""
    text = data.decode("utf-8", "replace")
    if "<" not in text or "ImageAnnotationCollection" not in text:
        raise ValueError("not an AIM ImageAnnotationCollection")
    uid = _AIM_UID.search(text)
    return SegInfo(sop_class_uid="", sop_uid=uid.group(1) if uid else "", study_uid="",
                   series_description="AIM", date="", time="",
                   series_refs={s: set() for s in _AIM_SERIES.findall(text)}, frame_refs=set())
