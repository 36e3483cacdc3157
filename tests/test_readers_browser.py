"""Two readers clean at the station over HTTPS: real Orthanc, real OHIF, Debian's Chromium.

The data manager creates the readers' sign-ins (``vhi readers add``); the first workflow
run pushes three demo sessions to Orthanc and assigns them (one a double read); the
station serves them over HTTPS on a certificate this test makes. Each reader signs in,
sees only their worklist, opens their sessions and saves an edit through OHIF; both
clean the double read. Reader A cannot open B's session, by the worklist's route or by a
DICOMweb URL, and a browser that is not signed in reaches nothing. The next run collects
every read: the VHI of each session is its reader's mask, ``cleaned_by`` names them,
both masks of the double read are measured, and the report shows both readers' work and
their agreement. The stand-in model segments (the U-Net is not the point here).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from vhi.readers.assign import double_read_draw
from vhi.readers.store import ReadersStore
from vhi.viewer.ohif import OHIF_VERSION, is_fetched

from support.browser import VIEWPORT, chromium, needs_browser
from support.fake_model import write_vhi_shim
from support.ohif_browser import KNOWN_CONSOLE_ERRORS, clean_on_page, reader_edit
from support.orthanc import Orthanc, needs_orthanc, seed_demo
from support.viewer import announced_url
from support.workflow import snakemake, status_of, workflow_env

pytest_plugins = ["xnat_emulator.fixtures"]  # self_signed_cert
log = logging.getLogger(__name__)

SESSIONS = ("1003", "4386", "1013")  # demo scan ids; site A's series layout
PASSWORDS = {"alice": "alice-reads-3f9", "bob": "bob-reads-7c1"}
needs_ohif = pytest.mark.skipif(not is_fetched(), reason=f"OHIF {OHIF_VERSION} not fetched "
                                                          "(`make setup` runs `vhi viewer --fetch-only`)")


def _edits(proposal: np.ndarray, sops: list[str], *, add: bool) -> tuple[np.ndarray, list]:
    """A reader's edit (the smallest component removed; with ``add`` a 2×2 square added) and
    the same edit as OHIF labelmap writes (SOP Instance UID, row, column, value)."""
    edited, edits = reader_edit(proposal)
    if not add:
        edits = [e for e in edits if e[3] == 0]
        edited = proposal >= 1
        for i, j, k, _ in edits:
            edited[i, j, k] = False
    ny = proposal.shape[1]
    return edited, [[sops[k], ny - 1 - j, i, v] for i, j, k, v in edits]


def _sign_in(browser, base: str, reader: str):
    context = browser.new_context(ignore_https_errors=True, viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{base}/")
    assert page.url.startswith(f"{base}/signin"), page.url  # every route asks to sign in first
    page.fill("#reader", reader)
    page.fill("#password", PASSWORDS[reader])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.url == f"{base}/", (page.url, page.content()[:2000])
    return context, page


@pytest.mark.slow
@needs_orthanc
@needs_browser
@needs_ohif
def test_two_readers_clean_over_https_and_are_attributed(tmp_path, data_dir, self_signed_cert, monkeypatch):
    started = time.monotonic()
    monkeypatch.setenv("VHI_TEST_BIN", str(write_vhi_shim(tmp_path / "bin")))
    artefacts = tmp_path / "artefacts"
    artefacts.mkdir()
    with Orthanc(tmp_path / "orthanc") as orthanc:
        seeded = seed_demo(orthanc, data_dir, tmp_path / "dicom", SESSIONS)
        keys = {f"C/{s['subject']}/{name}": name for name, s in seeded.items()}
        draws = sorted(keys, key=double_read_draw)  # the fraction that double-reads one session
        fraction = (double_read_draw(draws[0]) + double_read_draw(draws[1])) / 2
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({
            "timepoints": ["pre", "post"],
            "readers": [{"id": "alice", "name": "Dr Alice Reader", "sites": ["C"]},
                        {"id": "bob", "name": "Dr Bob Reader", "sites": ["C"]}],
            "sites": [{"name": "C", "reference": "auto", "double_read": fraction, "due_days": 7,
                       "source": {"type": "dicomweb", "url": orthanc.dicomweb,
                                  "session_label": "{AccessionNumber}", "timepoint_pattern": "_(pre|post)$",
                                  "backoff_s": 0.05}}]}))
        run = tmp_path / "run"
        run.mkdir()
        for reader, password in PASSWORDS.items():  # the data manager's sign-ins for the readers
            made = subprocess.run(["vhi", "readers", "add", reader, "--config", str(config),
                                   "--password-stdin"], input=password + "\n", cwd=run, capture_output=True,
                                  text=True, timeout=60, env=workflow_env(), check=False)
            assert made.returncode == 0, made.stderr

        # run 1: pull, segment, propose, push; the gather assigns
        first = snakemake(run, "--configfile", str(config))
        assert first.returncode == 0, first.stderr[-5000:]
        with ReadersStore.open(run / "work") as store:
            assignments = store.assignments()
        readers_of = {k: [a.reader for a in assignments if a.session_key == k] for k in keys}
        [double] = [k for k, r in readers_of.items() if len(r) == 2]
        assert double == draws[0]
        single = {readers_of[k][0]: k for k in keys if k != double}
        assert set(single) == {"alice", "bob"}  # balanced by open work
        first_reader = next(a.reader for a in assignments if a.session_key == double and a.role == "first")
        t_run1 = time.monotonic() - started

        # what each reader will do: their sessions' edits
        plan = {}  # (reader, key) -> (edited mask, js edits)
        for key, name in keys.items():
            proposal = np.asarray(nib.load(run / "work" / key / "proposal.nii.gz").dataobj)
            for reader in readers_of[key]:
                # in the double read, the second reader only removes: the two masks differ
                add = key != double or reader == first_reader
                edited, js_edits = _edits(proposal, seeded[name]["sops"], add=add)
                plan[reader, key] = (edited, js_edits, int((proposal >= 1).sum()))

        cert, key_file = self_signed_cert
        viewer = subprocess.Popen(["vhi", "viewer", "--config", str(config), "--port", "0",
                                   "--tls-cert", str(cert), "--tls-key", str(key_file)],
                                  cwd=run, env=workflow_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            line, base = announced_url(viewer, "site C")
            assert base.startswith("https://127.0.0.1:") and "readers mode" in line
            browser_started = time.monotonic()
            console: list[str] = []
            with chromium() as browser:
                # signed out: nothing, not even the DICOMweb proxy
                anonymous = browser.new_context(ignore_https_errors=True)
                page = anonymous.new_page()
                page.goto(f"{base}/segmentation?StudyInstanceUIDs={seeded[keys[double]]['study']}")
                assert "/signin" in page.url
                assert anonymous.request.get(f"{base}/dicom-web/studies").status == 401
                anonymous.close()

                for reader in ("alice", "bob"):
                    context, page = _sign_in(browser, base, reader)
                    cookie = next(c for c in context.cookies() if c["name"] == "vhi_station")
                    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
                    listed = page.content()
                    mine = [k for k in keys if reader in readers_of[k]]
                    assert all(k in listed for k in mine) and f"0 of {len(mine)} sessions saved" in listed
                    other = next(k for k in keys if reader not in readers_of[k])
                    assert other not in listed
                    # another reader's session: refused by its route and by a DICOMweb URL
                    refused = page.goto(f"{base}/open/{other}")
                    assert refused.status == 403 and "not assigned to you" in page.content()
                    study = seeded[keys[other]]["study"]
                    assert context.request.get(f"{base}/dicom-web/studies/{study}/series").status == 403
                    for key in mine:
                        edited, js_edits, ours = plan[reader, key]

                        def saved(key=key, reader=reader) -> bool:
                            with ReadersStore.open(run / "work") as store:
                                return bool(store.saves(session_key=key, reader=reader))

                        errors, _ = clean_on_page(page, f"{base}/open/{key}", saved=saved, ours=ours,
                                                  edited=edited, js_edits=js_edits, artefacts=artefacts,
                                                  name=f"{reader}-{keys[key]}-")
                        console += errors
                    page.goto(f"{base}/")
                    assert f"{len(mine)} of {len(mine)} sessions saved" in page.content()
                    page.screenshot(path=str(artefacts / f"{reader}-worklist.png"))
                    context.close()
            t_browser = time.monotonic() - browser_started
        finally:
            viewer.send_signal(signal.SIGTERM)
            _, err = viewer.communicate(timeout=60)
        assert viewer.returncode == 0, err[-3000:]
        unknown = [m for m in console if not any(k in m for k in KNOWN_CONSOLE_ERRORS)]
        assert unknown == [], unknown

        # run 2: every read collected and measured
        second = snakemake(run, "--configfile", str(config))
        assert second.returncode == 0, second.stderr[-5000:]
    cohort = pd.read_csv(run / "results" / "cohort_vhi.csv", dtype=str).set_index("session")
    for key, name in keys.items():
        reader = next((r for r, k in single.items() if k == key), first_reader)
        edited = plan[reader, key][0]
        work = run / "work" / key
        cleaned = nib.load(work / "cleaned.nii.gz")
        voxel_ml = float(np.prod(np.asarray(cleaned.header.get_zooms()[:3], float))) / 1000
        assert np.array_equal(np.asarray(cleaned.dataobj) > 0, edited)
        row = cohort.loc[name]
        assert (row.cleaned_by, int(row.vhi_voxels)) == (reader, int(edited.sum()))
        assert float(row.vhi_ml) == pytest.approx(int(edited.sum()) * voxel_ml, rel=1e-9)
    second_reader = next(r for r in readers_of[double] if r != first_reader)
    other_mask = run / "work" / double / f"cleaned_{second_reader}.nii.gz"
    assert np.array_equal(np.asarray(nib.load(other_mask).dataobj) > 0, plan[second_reader, double][0])
    reads = pd.read_csv(run / "results" / "reads.csv", dtype=str)
    pair = reads[reads.session == keys[double]].set_index("reader")
    assert set(pair.index) == {"alice", "bob"} and pair.loc[first_reader, "gives_vhi"] == "True"
    a, b = (plan[r, double][0] for r in ("alice", "bob"))
    expected_dice = 2 * int((a & b).sum()) / int(a.sum() + b.sum())
    assert float(pair.loc["alice", "dice_vs_other_reader"]) == pytest.approx(expected_dice, rel=1e-6)
    status = status_of(run, by=("site", "session"))
    assert {r["state"] for r in status.values()} == {"measured"}
    report = (run / "results" / "report.html").read_text()
    assert "Dr Alice Reader" in report and "Dr Bob Reader" in report
    assert "Double reads: overlap of the two readers' masks" in report
    wall = time.monotonic() - started
    log.warning("two readers over HTTPS: OHIF %s; run 1 %.0f s, browser %.0f s, whole test %.0f s",
                OHIF_VERSION, t_run1, t_browser, wall)
    (artefacts / "timings.json").write_text(json.dumps({"ohif": OHIF_VERSION, "run1_s": t_run1,
                                                        "browser_s": t_browser, "wall_s": wall}))
    logs = "".join(p.read_text(errors="replace") for p in (run / "logs").rglob("*.log")) + first.stderr
    assert not any(pw in logs + second.stderr + err for pw in PASSWORDS.values())
