"""The cleaning is collected whatever OHIF build saved it: 3.13.2 (the station's) and the next
release's beta, @ohif/app 3.14.0-beta.6, each served by the station in front of a real Orthanc.

OHIF after 3.13 can save into the current series or replace a series (OHIF pull requests
6221 and 6261). The one cleaning rule (vhi.sources.cleaning) does not depend on where a
save goes: each build loads the proposal, saves an edit twice, and the rule must take the
second save, by the service's listing alone and by the station's record. Where each build
put its saves is written to ``save_paths.json`` in the test's folder (3.14.0-beta.6, as
3.13.2, stores every save as a new series: the two pull requests came after it).
"""

from __future__ import annotations

import getpass
import json
import logging

import nibabel as nib
import numpy as np
import pytest

from vhi.imaging.nifti import save_nifti
from vhi.readers.store import ReadersStore
from vhi.sources import make_source
from vhi.sources.cleaning import CleaningRecord
from vhi.viewer.access import Awaiting, SingleUser
from vhi.viewer.ohif import OHIF_BUILDS, app_config, fetch_ohif
from vhi.viewer.readers_access import SaveRecorder
from vhi.viewer.server import StationServer

from support.browser import VIEWPORT, chromium, needs_browser
from support.ohif_browser import (
    KNOWN_CONSOLE_ERRORS,
    LOAD_TIMEOUT_MS,
    edit_and_store,
    load_proposal,
    reader_edit,
)
from support.orthanc import Orthanc, needs_orthanc, seed_demo

log = logging.getLogger(__name__)


def _js(edits: list, sops: list[str], ny: int) -> list:
    return [[sops[k], ny - 1 - j, i, v] for i, j, k, v in edits]


@pytest.mark.slow
@needs_orthanc
@needs_browser
@pytest.mark.parametrize("version", sorted(OHIF_BUILDS))
def test_every_build_s_saves_are_collected_by_the_rule(version, tmp_path, data_dir):
    dist = fetch_ohif(version=version)  # npm pack, sha256-checked (cached after the first time)
    with Orthanc(tmp_path / "orthanc") as orthanc:
        seeded = seed_demo(orthanc, data_dir, tmp_path / "dicom", ("1003",))["1003_pre"]
        src = make_source({"type": "dicomweb", "url": orthanc.dicomweb, "timepoint_pattern": "_(pre|post)$",
                           "session_label": "{AccessionNumber}"}, site="C")
        [session] = src.list_sessions()
        src.fetch_scan(session, "stir", tmp_path / "stir.nii.gz")
        stir = nib.load(tmp_path / "stir.nii.gz")
        r11 = np.asarray(nib.load(data_dir / "inflammation/R11/1003_inflammation_R11.nii.gz").dataobj) > 0
        save_nifti(r11.astype(np.uint8), stir, tmp_path / "proposal.nii.gz")
        receipt = src.push_proposal(session, {"proposal": tmp_path / "proposal.nii.gz"})
        work = tmp_path / "work"
        (work / session.key).mkdir(parents=True)
        (work / session.key / "pushed.json").write_text(json.dumps(receipt))
        store = ReadersStore.open(work)
        item = Awaiting(session.key, "C", receipt["seg"]["study_uid"], receipt["viewer_path"])
        access = SingleUser(lambda: [item])
        recorder = SaveRecorder(store, lambda user, study: item.key if study == item.study_uid else None,
                                lambda key: receipt["seg"]["sop_uid"])
        server = StationServer(dist, orthanc.dicomweb, orthanc.http(),
                               app_config((dist / "app-config.js").read_text()), access, on_stored=recorder)
        first, edits1 = reader_edit(r11)
        second, edits2 = reader_edit(first)
        ny, sops = r11.shape[1], seeded["sops"]
        console: list[str] = []
        with server, chromium() as browser:
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            page.goto(access.signin_url(server.url, item.viewer_path))
            page.wait_for_function("() => window.services && window.services.displaySetService"
                                   ".getActiveDisplaySets().length >= 2", timeout=LOAD_TIMEOUT_MS)
            seg_id = load_proposal(page, int(r11.sum()))
            for n, (edited, edits) in enumerate(((first, edits1), (second, edits2)), start=1):
                edit_and_store(page, seg_id, _js(edits, sops, ny), edited)
                for _ in range(120):
                    if len(store.saves()) == n:
                        break
                    page.wait_for_timeout(500)
                assert len(store.saves()) == n, f"OHIF {version}'s save {n} did not reach the station"
                page.screenshot(path=str(tmp_path / f"saved-{n}.png"))
        saves = store.saves()
        store.close()
        # where the build put its saves
        paths = {"version": version, "proposal_series": receipt["seg"]["series_uid"],
                 "saves": [{"series": s.series_uid, "sop": s.sop_uid} for s in saves]}
        (tmp_path / "save_paths.json").write_text(json.dumps(paths, indent=1))
        proposal_series = receipt["seg"]["series_uid"]
        log.warning("OHIF %s saves: %s", version, ["proposal's series" if s.series_uid == proposal_series
                                                   else "new series" for s in saves])
        # the rule takes the second save: by the service's listing, and by the station's record
        for record in (CleaningRecord(), CleaningRecord.of_run(work)):
            found = src.find_cleaned([session], {session.key: receipt}, record)[session.key]
            assert found["reads"][0][2] == saves[-1].sop_uid, (version, found)
        assert found["reads"][0][0] == getpass.getuser()  # the station's record names who saved
        info = src.fetch_cleaned(session, tmp_path / "cleaned.nii.gz",
                                 {"receipt": work / session.key / "pushed.json"})
        assert info["seg_sop_instance_uid"] == saves[-1].sop_uid
        assert np.array_equal(np.asarray(nib.load(tmp_path / "cleaned.nii.gz").dataobj) > 0, second)
    unknown = [m for m in console if not any(k in m for k in KNOWN_CONSOLE_ERRORS)]
    assert unknown == [], unknown
