"""The public demo volumes as two XNAT sites, and a stand-in for the radiologist in OHIF.

:func:`build_demo_series` turns the demo NIfTI volumes (``vhi.settings.demo_data_dir()``)
into DICOM series with :func:`support.dicom_series.write_series` (STIR and T1W of a
session share the study, the frame of reference and the grid, so dcm2niix gives the
volumes back exactly). :func:`seed_demo` uploads them as projects, subjects, sessions
and scans with the series descriptions two real sites might use, plus distractors:

* site A (project ``VHI_SITE_A``): ``AAHScout`` (a localiser), ``T1_TSE_COR``,
  ``STIR_COR_OBL``, ``T2_TSE_COR``;
* site B (project ``VHI_SITE_B``): ``localizer``, ``T1W cor`` (type ``T1W``),
  ``cor STIR SIJ`` (type ``STIR``), a later duplicate ``cor STIR SIJ`` marked
  ``unusable`` (motion), ``T2 TSE``.

Subjects are ``A09``/``B13`` (site letter + the paper's subject number), sessions
``<scan id>_<timepoint>`` (e.g. ``1003_pre``).

:func:`save_cleaned` plays the radiologist: it saves a new SEG collection through the
ROI API exactly as the OHIF viewer does (label ``SEG_YYYYMMDD_HHMMSS_mmm_S<n>``,
``overwrite=false``, octet-stream), never touching the proposal.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import xnat
from pydicom.uid import generate_uid

from .server import XnatEmulator
from support.dicom_series import write_series

#: session scan id -> (subject number, timepoint); the 8 demo sessions with STIR and T1W
DEMO_SESSIONS: dict[str, tuple[int, str]] = {
    "1234": (1, "pre"), "4386": (3, "post"), "1003": (9, "pre"), "1007": (11, "pre"),
    "1012": (13, "post"), "1013": (14, "pre"), "1016": (15, "post"), "3002": (17, "post"),
}
SITE_PROJECTS = {"A": "VHI_SITE_A", "B": "VHI_SITE_B"}
DEFAULT_SPLIT = {"A": ("1234", "4386", "1003", "1007"), "B": ("1012", "1013", "1016", "3002")}


@dataclass(frozen=True)
class ScanSpec:
    """One scan as a site stores it: id, XNAT type, series description, quality, content."""

    id: str
    type: str
    description: str
    content: str  # "stir" | "t1w" | "scout" | "t2" (a copy of the T1W's data, another series)
    quality: str = "usable"


SITE_SCANS: dict[str, tuple[ScanSpec, ...]] = {
    "A": (ScanSpec("1", "AAHScout", "AAHScout", "scout"),
          ScanSpec("2", "T1_TSE_COR", "T1_TSE_COR", "t1w"),
          ScanSpec("3", "STIR_COR_OBL", "STIR_COR_OBL", "stir"),
          ScanSpec("4", "T2_TSE_COR", "T2_TSE_COR", "t2")),
    "B": (ScanSpec("1", "localizer", "localizer", "scout"),
          ScanSpec("3", "T1W", "T1W cor", "t1w"),
          ScanSpec("4", "STIR", "cor STIR SIJ", "stir"),
          ScanSpec("5", "STIR", "cor STIR SIJ", "stir", quality="unusable"),
          ScanSpec("6", "T2 TSE", "T2 TSE", "t2")),
}
#: What the default selection rules must pick at each site (scan ids).
EXPECTED_PICK = {"A": {"stir": "3", "t1w": "2"}, "B": {"stir": "4", "t1w": "3"}}


@dataclass
class DemoSession:
    """One seeded session and what a test needs to check it."""

    site: str
    project: str
    subject: str
    session: str
    timepoint: str
    scan_id: str  # the demo data's scan id (file names)
    experiment: str = ""
    study_uid: str = ""
    series: dict[str, str] = field(default_factory=dict)  # XNAT scan id -> SeriesInstanceUID
    stir_nifti: Path = Path()
    t1w_nifti: Path = Path()

    @property
    def stir_scan(self) -> str:
        return EXPECTED_PICK[self.site]["stir"]

    @property
    def t1w_scan(self) -> str:
        return EXPECTED_PICK[self.site]["t1w"]


def _scout(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """A tiny 3-slice, coarse copy of ``img`` (a localiser-like series)."""
    raw = np.asanyarray(img.dataobj.get_unscaled()).astype(np.int16)
    sliced = img.slicer[::8, ::8, 10:13]
    return nib.Nifti1Image(np.ascontiguousarray(raw[::8, ::8, 10:13]), sliced.affine)


def build_demo_series(data_dir: Path, out_dir: Path, site: str, scan_id: str) -> tuple[dict[str, Path],
                                                                                       dict[str, str], str]:
    """DICOM folders of every scan of one session (XNAT scan id -> folder), their series UIDs.

    Folders already under ``out_dir`` (from an earlier call) are reused as they are.
    """
    subject, _ = DEMO_SESSIONS[scan_id]
    cached = out_dir / f"{site}_{scan_id}"
    if all((cached / spec.id).is_dir() for spec in SITE_SCANS[site]):
        folders = {spec.id: cached / spec.id for spec in SITE_SCANS[site]}
        headers = {sid: pydicom.dcmread(next(iter(sorted(f.glob("*.dcm")))), stop_before_pixels=True)
                   for sid, f in folders.items()}
        uids = {sid: str(h.SeriesInstanceUID) for sid, h in headers.items()}
        return folders, uids, str(next(iter(headers.values())).StudyInstanceUID)
    stir = nib.load(data_dir / "stir" / f"{scan_id}_STIR.nii.gz")
    t1w = nib.load(data_dir / "t1w" / f"{scan_id}_T1W.nii.gz")
    content = {"stir": stir, "t1w": t1w, "t2": t1w, "scout": _scout(t1w)}
    study_uid, frame_uid = generate_uid(), generate_uid()
    folders: dict[str, Path] = {}
    uids: dict[str, str] = {}
    for number, spec in enumerate(SITE_SCANS[site], start=1):
        folder = out_dir / f"{site}_{scan_id}" / spec.id
        info = write_series(content[spec.content], folder, series_description=spec.description,
                            series_number=int(spec.id) if spec.id.isdigit() else number,
                            study_uid=study_uid, patient_id=f"VHI{site}{subject:02d}",
                            patient_name=f"Demo^{site}{subject:02d}", study_date="20190402",
                            frame_of_reference_uid=frame_uid, protocol_name=spec.description)
        folders[spec.id] = folder
        uids[spec.id] = info.series_uid
    return folders, uids, study_uid


def seed_demo(emu: XnatEmulator, data_dir: Path, work_dir: Path,
              split: dict[str, Sequence[str]] | None = None) -> list[DemoSession]:
    """Seed both sites (``split``: site letter -> demo scan ids; default all 8, 4 per site)."""
    seeded = []
    for site, scan_ids in (split or DEFAULT_SPLIT).items():
        project = SITE_PROJECTS[site]
        for scan_id in scan_ids:
            subject_no, timepoint = DEMO_SESSIONS[scan_id]
            demo = DemoSession(site=site, project=project, subject=f"{site}{subject_no:02d}",
                               session=f"{scan_id}_{timepoint}", timepoint=timepoint, scan_id=scan_id,
                               stir_nifti=data_dir / "stir" / f"{scan_id}_STIR.nii.gz",
                               t1w_nifti=data_dir / "t1w" / f"{scan_id}_T1W.nii.gz")
            folders, uids, study_uid = build_demo_series(data_dir, work_dir, site, scan_id)
            experiment = emu.seed_session(project, demo.subject, demo.session)
            for spec in SITE_SCANS[site]:
                emu.add_dicom_scan(experiment.id, spec.id, folders[spec.id], type=spec.type,
                                   quality=spec.quality, series_description=spec.description)
            demo.experiment, demo.study_uid, demo.series = experiment.id, study_uid, uids
            seeded.append(demo)
    return seeded


# ----------------------------------------------------------------------------- radiologist
def viewer_label(now: dt.datetime | None = None, series_number: int = 1) -> str:
    """The OHIF viewer's export label: ``SEG_<YYYYMMDD>_<HHMMSS>_<ms>_S<SeriesNumber>``."""
    now = now or dt.datetime.now()
    return f"SEG_{now:%Y%m%d}_{now:%H%M%S}_{now.microsecond // 1000:03d}_S{series_number}"


def edit_seg(seg_bytes: bytes, keep: np.ndarray | None = None, *, remove_frames: Sequence[int] = (),
             description: str = "Lesion") -> tuple[bytes, int]:
    """A viewer-style SEG from ``seg_bytes``: frames in ``remove_frames`` cleared, new UIDs.

    Returns the new SEG and how many segment pixels it still has. The edit keeps the
    source references (as OHIF does) and drops the platform's marks (manufacturer,
    content label, description).
    """
    seg = pydicom.dcmread(io.BytesIO(seg_bytes))
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns)).astype(bool)
    if keep is not None:
        frames &= keep
    for f in remove_frames:
        frames[f] = False
    seg.PixelData = np.packbits(frames.reshape(-1), bitorder="little").tobytes()
    seg.SOPInstanceUID = seg.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    seg.SeriesInstanceUID = generate_uid()
    seg.SeriesDescription = description
    seg.Manufacturer = "OHIF"
    seg.ContentLabel = "SEGMENTATION"
    seg.SeriesNumber = int(seg.get("SeriesNumber", 1)) + 1
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), int(frames.sum())


def save_cleaned(connection: xnat.session.XNATSession, project: str, experiment: str,
                 seg_bytes: bytes, *, series_number: int = 1, label: str | None = None) -> tuple[str, str]:
    """PUT a SEG as a new collection, as the OHIF viewer's export does; (label, collection ID)."""
    label = label or viewer_label(series_number=series_number)
    return save_collection(connection, project, experiment, seg_bytes, label=label)


def save_collection(connection: xnat.session.XNATSession, project: str, experiment: str,
                    data: bytes, *, label: str, kind: str = "SEG") -> tuple[str, str]:
    """PUT a collection as the viewer does (``overwrite=false``, the session's CSRF token, as
    a browser session sends it); (label, collection ID)."""
    who = connection.get("/data/auth", query={"CSRF": "true"}).text
    token = who.rsplit("XNAT_CSRF=", 1)[1] if "XNAT_CSRF=" in who else ""
    response = connection.put(
        f"/xapi/roi/projects/{project}/sessions/{experiment}/collections/{label}",
        query={"type": kind, "overwrite": "false", **({"XNAT_CSRF": token} if token else {})},
        data=data,
        headers={"Content-Type": "application/octet-stream"}, accepted_status=[200])
    return label, response.text.strip()
