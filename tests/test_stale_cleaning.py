"""A save made for an earlier proposal is never collected as a changed proposal's cleaning.

The same story for every source (XNAT's is in tests/test_sources_xnat.py,
``test_collect_ignores_other_series_and_earlier_collections``): the proposal is pushed, a
reader saves a cleaning, it is collected; the proposal changes and is pushed again; the
old save is no longer the cleaning, and the session's plan entry (its status reason)
names it; a new save is collected. Real Orthanc for DICOMweb; the local station's record
for a folder site.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from test_sources_dicomweb import make_study, proposal_files, source, stow, viewer_edit

from vhi.fileio import sha256_file
from vhi.readers.store import ReadersStore, Save, utc_iso
from vhi.sources import make_source
from vhi.sources.cleaning import CleaningRecord
from vhi.sources.local import StationRecord

from support.orthanc import Orthanc, needs_orthanc


def _changed(files: dict[str, Path]) -> None:
    """The proposal changes (one voxel more): the next push stores a new SEG."""
    img = nib.load(files["proposal"])
    data = np.asarray(img.dataobj).copy()
    data[13, 9, 3] = 1
    nib.save(nib.Nifti1Image(data, img.affine, img.header), files["proposal"])


@needs_orthanc
@pytest.mark.parametrize("saved_by", ["the PACS's own viewer", "the station"])
def test_dicomweb(saved_by, tmp_path):
    with Orthanc(tmp_path / "server") as orthanc:
        study = make_study(tmp_path / "dicom", "P01", "S01_pre", 3)
        orthanc.upload(p for files in study.files.values() for p in files)
        src = source(orthanc.dicomweb)
        [session] = src.list_sessions()
        files = proposal_files(tmp_path, src, session, [(10, 8, 2), (11, 8, 2), (12, 9, 3)])
        first = src.push_proposal(session, files)
        history = tmp_path / "pushed.history.json"
        history.write_text(json.dumps(first))
        [stored] = orthanc.instance_file(study.study_uid, first["seg"]["series_uid"])
        work = tmp_path / "work"

        def save(label: str, answers: str) -> pydicom.Dataset:
            ds = viewer_edit(stored, clear=[(0, 0, 0)])
            ds.SeriesDescription = label
            stow(orthanc, ds)
            if saved_by == "the station":  # the station records it with the proposal it answers
                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                with ReadersStore.open(work) as store:
                    blob = store.put_blob(buffer.getvalue())
                    store.record_save(Save(session.key, "asmith", utc_iso(), study.study_uid,
                                           ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                           sha256_file(store.blob_path(blob)), len(buffer.getvalue()), blob,
                                           answers, "station"))
            return ds

        def cleaning(receipt: dict) -> dict:
            record = CleaningRecord.of_run(work)
            return src.find_cleaned([session], {session.key: receipt}, record).get(session.key, {})

        old = save("Cleaned first", first["seg"]["sop_uid"])
        assert cleaning(first)["reads"][0][2] == old.SOPInstanceUID
        _changed(files)
        second = src.push_proposal(session, files, {"history": history})
        assert second["status"] == "replaced" and old.SOPInstanceUID in second["segs_before"]
        found = cleaning(second)
        assert set(found) == {"pending"}
        assert f"('{old.SeriesDescription}')" in found["pending"] and "earlier proposal" in found["pending"]
        assert ("by asmith" in found["pending"]) == (saved_by == "the station")
        pushed = {"receipt": _write(tmp_path, second)}
        assert src.fetch_cleaned(session, tmp_path / "none.nii.gz", pushed) is None
        new = save("Cleaned again", second["seg"]["sop_uid"])
        assert cleaning(second)["reads"][0][2] == new.SOPInstanceUID


def _write(folder: Path, receipt: dict) -> Path:
    path = folder / "pushed.json"
    path.write_text(json.dumps(receipt))
    return path


def test_local_station(tmp_path):
    """The local station wrote its mask from a save of the first proposal; after a changed
    proposal is pushed, the workflow's look at the cleaned path reports it, naming the SEG."""
    root = tmp_path / "cohort"
    (root / "stir").mkdir(parents=True)
    src = make_source({"type": "local", "root": str(root), "sheet": str(_sheet(tmp_path, root)),
                       "outbox": str(tmp_path / "outbox"), "station": True}, site="L")
    [session] = src.list_sessions()
    cleaned = src.cleaned_path(session)
    cleaned.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.uint8), np.eye(4)), cleaned)
    receipt = {"source": "local", "pushed_at": utc_iso(), "files": {"proposal": {"sha256": "a" * 64}}}
    StationRecord(cleaned).add(sha256_file(cleaned), {"seg_sop_instance_uid": "2.25.7", "reader": "asmith",
                                                      "answers": "a" * 64})
    found = src.find_cleaned([session], {session.key: receipt})[session.key]
    assert found["uri"] == str(cleaned)
    changed = {**receipt, "files": {"proposal": {"sha256": "b" * 64}}}
    found = src.find_cleaned([session], {session.key: changed})[session.key]
    assert set(found) == {"pending"}
    assert "SEG 2.25.7 by asmith" in found["pending"] and "earlier proposal" in found["pending"]


def _sheet(tmp: Path, root: Path) -> Path:
    stir = root / "stir" / "s1.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), stir)
    sheet = tmp / "sheet.csv"
    sheet.write_text(f"subject,session,timepoint,stir,t1w\nP1,S1,pre,{stir},{stir}\n")
    return sheet
