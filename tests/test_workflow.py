"""End-to-end runs of the workflow on the public demo cohort, on the CPU.

Slow (the U-Net segments 11 T1W scans, ~5 s each on 2 cores): ``pytest -m slow``.
Each run happens in a temporary folder with ``--directory``; nothing is written into
the repository or into the shared data (checked).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from support.demo import STIR_SESSIONS, T1W_ONLY, DemoRun, r11, source_state
from support.paths import PROJECT_ROOT
from support.workflow import half_written, job_counts, snakemake, status_of, workflow_env

pytestmark = pytest.mark.slow


def mask_ml(path: Path) -> tuple[int, float]:
    img = nib.load(path)
    voxels = int(np.count_nonzero(np.asanyarray(img.dataobj)))
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    return voxels, voxels * float(np.prod(zooms)) / 1000.0


def test_demo_cohort_end_to_end_and_resume(demo_run: DemoRun, tmp_path: Path,
                                           data_dir: Path) -> None:
    """The shared demo run (support/demo.py: the demo site, 1003 cleaned later, and a
    follow-up site checked in test_report_browser.py); the only test that changes it."""
    before, cleaned, config, run = (demo_run.source_before, demo_run.cleaned, demo_run.config,
                                    demo_run.run)
    work, results = run / "work" / "demo", run / "results"

    # status: nothing dropped, 1003 waits for its cleaned mask
    status = {s: r for s, r in status_of(run).items() if r["site"] == "demo"}
    assert set(status) == set(STIR_SESSIONS) | set(T1W_ONLY)
    assert {s for s, r in status.items() if r["state"] == "measured"} == set(STIR_SESSIONS) - {"1003"}
    assert status["1003"]["state"] == "awaiting_cleaning"
    assert all(status[s]["state"] == "segmented" for s in T1W_ONLY)

    # proposals equal those of the vhi command for the same inputs
    for session in ("1003", "1013", "4386"):
        subject = STIR_SESSIONS[session]
        out = tmp_path / "direct" / f"{session}.nii.gz"
        subprocess.run([str(Path(sys.executable).with_name("vhi")), "--no-progress", "propose",
                        "--stir", str(data_dir / "stir" / f"{session}_STIR.nii.gz"),
                        "--disease-region", str(work / subject / session / "disease_region.nii.gz"),
                        "--reference", str(data_dir / "normal_marrow" / f"{session}_normal_marrow.nii.gz"),
                        "--out", str(out)], check=True, env=workflow_env(), capture_output=True)
        direct = json.loads(out.with_name(f"{session}.json").read_text())
        ours = json.loads((work / subject / session / "proposal.json").read_text())
        assert ours["voxels"] == direct["voxels"], session
        assert (ours["lower"], ours["upper"]) == (direct["lower"], direct["upper"])
        labels = np.asanyarray(nib.load(work / subject / session / "proposal.nii.gz").dataobj)
        assert int(np.count_nonzero(labels)) == direct["voxels"]["label_ge1"]

    # VHI of each cleaned session = the stand-in mask's voxels x voxel volume
    cohort = pd.read_csv(results / "cohort_vhi.csv", dtype={"subject": str, "session": str})
    cohort = cohort[cohort["site"] == "demo"]
    assert len(cohort) == 7
    for row in cohort.itertuples():
        voxels, ml = mask_ml(r11(data_dir, row.session))
        assert row.vhi_voxels == voxels and row.vhi_ml == pytest.approx(ml, rel=1e-12)
        assert row.cleaned_uri == str(cleaned / "demo" / row.subject / f"{row.session}.nii.gz")
        assert row.stir_uri.endswith(f"{row.session}_STIR.nii.gz")
        assert row.model_bundle == "sij_disease_region_unet" and row.model_device == "cpu"
        assert row.model_sha256.count(".pt:") == 3
    assert len(pd.read_parquet(results / "cohort_vhi.parquet")) == 7 + 2  # + the follow-up site
    agreement = pd.read_csv(results / "agreement.csv", dtype={"session": str})
    assert len(agreement) == 8 * 4 and set(agreement["reader"]) == {"R11", "R12", "R21", "R22"}
    assert json.loads((results / "dataset_description.json").read_text())["GeneratedBy"]
    report = (results / "report.html").read_text()  # every session in the session table's data
    assert all(f'["demo","{r["subject"]}","{s}",' in report for s, r in status.items())
    assert len(list((run / "outbox" / "demo").glob("*/*/proposal.nii.gz"))) == 8
    assert not list(work.rglob("stir.nii.gz")) and not list(work.rglob("t1w.nii.gz"))  # temp
    assert not half_written(run / "work", results)

    # a second run does nothing
    again = snakemake(run, "--configfile", str(config))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # a cleaned mask saved later: only its collection (with the measurement and the cleaned
    # QC image) and the tables rerun
    dest = cleaned / "demo" / "09" / "1003.nii.gz"
    dest.parent.mkdir(parents=True)
    shutil.copy(r11(data_dir, "1003"), dest)
    dry = snakemake(run, "-n", "--configfile", str(config))
    assert job_counts(dry.stdout + dry.stderr) == {
        "collect_cleaned": 1, "build_cohort_tables": 1, "all": 1, "total": 3}
    assert snakemake(run, "--configfile", str(config)).returncode == 0
    cohort = pd.read_csv(results / "cohort_vhi.csv", dtype={"subject": str, "session": str})
    row = cohort[(cohort["site"] == "demo") & (cohort["session"] == "1003")].iloc[0]
    voxels, ml = mask_ml(r11(data_dir, "1003"))
    assert row["vhi_voxels"] == voxels and row["vhi_ml"] == pytest.approx(ml, rel=1e-12)
    assert status_of(run)["1003"]["state"] == "measured"
    assert (results / "qc" / "demo" / "09" / "1003" / "qc_cleaned.png").is_file()

    assert source_state(data_dir) == before  # the radiologists' and scanner's files untouched


@pytest.mark.usefixtures("stand_in_model")
def test_broken_sessions_fail_alone(tmp_path: Path, data_dir: Path) -> None:
    """Missing T1W, corrupt STIR, STIR/T1W grid mismatch: each fails with its reason;
    the good session is complete; no half-written file anywhere (the stand-in model
    segments: the failures are the point)."""
    before = source_state(data_dir)
    corrupt = tmp_path / "corrupt_STIR.nii.gz"
    corrupt.write_bytes((data_dir / "stir" / "1012_STIR.nii.gz").read_bytes()[:5000])
    d = data_dir
    rows = [
        ["demo", "09", "1003", "pre", f"{d}/stir/1003_STIR.nii.gz", f"{d}/t1w/1003_T1W.nii.gz",
         f"{d}/normal_marrow/1003_normal_marrow.nii.gz"],
        ["demo", "11", "m1", "pre", f"{d}/stir/1007_STIR.nii.gz", f"{tmp_path}/gone_T1W.nii.gz",
         f"{d}/normal_marrow/1007_normal_marrow.nii.gz"],
        ["demo", "13", "c1", "post", str(corrupt), f"{d}/t1w/1012_T1W.nii.gz",
         f"{d}/normal_marrow/1012_normal_marrow.nii.gz"],
        ["demo", "14", "g1", "pre", f"{d}/stir/1003_STIR.nii.gz", f"{d}/t1w/1007_T1W.nii.gz",
         f"{d}/normal_marrow/1003_normal_marrow.nii.gz"],
    ]
    sheet = tmp_path / "sheet.csv"
    with sheet.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["site", "subject", "session", "timepoint", "stir", "t1w", "normal_marrow"])
        writer.writerows(rows)
    config = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    config["sites"][0]["source"].update(sheet=str(sheet), reader_masks={})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"sites": config["sites"]}))
    run = tmp_path / "run"

    result = snakemake(run, "--configfile", str(path))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    # results/ is for a finished cohort: what finished is in results/partial/, and the same
    # command run again retries the failed sessions (it does not say "Nothing to be done")
    assert not (run / "results" / "cohort_vhi.csv").exists()
    status = status_of(run, partial=True)
    assert status["1003"]["state"] == "measured"
    expected = {"m1": ("pull_scans", "gone_T1W.nii.gz: file not found"),
                "c1": ("pull_scans", "corrupt_STIR.nii.gz: cannot read"),
                "g1": ("pull_scans", "is not on the T1W's voxel grid")}
    for session, (step, cause) in expected.items():
        row = status[session]
        assert row["state"] == "failed" and row["step"] == step, row
        assert f"demo/{row['subject']}/{session}" in row["reason"] and cause in row["reason"]
        assert f"VHI session demo/{row['subject']}/{session} failed in {step}" in output
    cohort = pd.read_csv(run / "results" / "partial" / "cohort_vhi.csv", dtype={"session": str})
    assert cohort["session"].tolist() == ["1003"]
    voxels, ml = mask_ml(r11(data_dir, "1003"))
    assert cohort["vhi_voxels"].iloc[0] == voxels
    assert cohort["vhi_ml"].iloc[0] == pytest.approx(ml, rel=1e-12)
    # the good session is complete; the failed ones left no (half-written) outputs
    good = run / "work" / "demo" / "09" / "1003"
    for name in ("disease_region.nii.gz", "proposal.nii.gz", "pushed.json", "cleaned.nii.gz",
                 "vhi.json"):
        assert (good / name).is_file(), name
    assert not (run / "work" / "demo" / "11" / "m1" / "t1w.json").exists()
    assert not half_written(run / "work", run / "results")
    assert source_state(data_dir) == before
