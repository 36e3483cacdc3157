"""Cohort tables and status from the files the real per-session steps leave for a tiny
synthetic cohort (tests/support/results.py: 16 x 16 x 3 images, every count known)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import vhi
from vhi.cohort.plan import load_plan, save_plan
from vhi.errors import ConfigError
from vhi.method.lesions import find_thresholds
from vhi.model.bundles import get_bundle
from vhi.results.status import log_error, status_table
from vhi.results.tables import (
    AGREEMENT_COLUMNS,
    CHANGE_COLUMNS,
    VHI_COLUMNS,
    change_table,
    cohort_vhi_table,
    write_results,
)

from support.results import BRIGHT, DIM, EXPECTED_STATES, VOXEL_ML, SyntheticCohort


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def count(mask: np.ndarray) -> int:
    return int(np.count_nonzero(mask))


def test_cohort_row_carries_the_audit_trail(synthetic_cohort: SyntheticCohort) -> None:
    c = synthetic_cohort
    (row,) = cohort_vhi_table(c.plan, c.layout).to_dict("records")  # s1 alone is measured
    assert (row["site"], row["subject"], row["session"], row["timepoint"]) == ("a", "01", "s1", "pre")
    design, planned = c.designs["s1"], c.planned("s1")
    # VHI: the cleaned mask's voxels x the voxel volume
    cleaned = design.cleaned_mask() > 0
    assert row["vhi_voxels"] == count(cleaned) == 28
    assert row["voxel_volume_ml"] == VOXEL_ML
    assert row["vhi_ml"] == pytest.approx(count(cleaned) * VOXEL_ML, rel=1e-12)
    # the thresholds: the paper's search on the manual reference's STIR intensities
    t = find_thresholds(design.stir()[design.reference() == 1])
    assert (row["q1"], row["q3"], row["iqr"], row["m"], row["lower"], row["upper"]) == (
        t.q1, t.q3, t.iqr, t.m, t.lower, t.upper)
    assert row["reference_voxels"] == t.n_reference == 16 and row["reference_mode"] == "manual"
    assert row["lower"] < DIM < row["upper"] <= BRIGHT  # the two lesions get labels 1 and 2
    # the proposal: both lesions, the residue (single bright voxels) dropped
    proposal = design.proposal()
    assert (row["proposal_voxels"], row["proposal_voxels_label2"]) == (
        count(proposal), count(proposal == 2)) == (30, 18)
    assert row["proposal_ml"] == pytest.approx(count(proposal) * VOXEL_ML, rel=1e-12)
    # the radiologist's edit, against the proposal
    kept = count(cleaned & (proposal > 0))
    assert (row["removed_voxels"], row["added_voxels"]) == (
        count(proposal) - kept, count(cleaned) - kept) == (4, 2)
    assert row["dice_cleaned_vs_proposal"] == pytest.approx(2 * kept / (count(proposal) + count(cleaned)))
    # every file the number came from, by location and content
    assert row["cleaned_uri"] == planned.cleaned["uri"] == str(c.root / "cleaned" / "a" / "01" / "s1.nii.gz")
    assert row["cleaned_sha256"] == sha256(row["cleaned_uri"])
    assert row["cleaned_seg_uid"] is None  # a local source has no DICOM SEG
    for role in ("stir", "t1w"):
        assert row[f"{role}_uri"] == planned.session.scans[role]
        assert row[f"{role}_sha256"] == sha256(planned.session.scans[role])
    # the model and software, as the sidecars recorded them
    bundle = get_bundle()
    assert (row["model_bundle"], row["model_version"], row["model_device"]) == (
        bundle.name, bundle.version, "cpu")
    assert row["model_sha256"] == ";".join(f"{name}:{sha}" for name, sha in sorted(bundle.folds.items()))
    assert row["vhi_version"] == vhi.__version__
    assert row["collected_at"] == c.work_json("s1", "cleaned.json")["provenance"]["finished"]


def test_change_between_timepoints_in_config_order() -> None:
    cohort = pd.DataFrame([
        {"site": "a", "subject": "01", "session": "s2", "timepoint": "post", "vhi_ml": 1.0},
        {"site": "a", "subject": "01", "session": "s1", "timepoint": "pre", "vhi_ml": 4.0},
        {"site": "a", "subject": "01", "session": "s3", "timepoint": "week52", "vhi_ml": 0.0},
        {"site": "a", "subject": "02", "session": "s4", "timepoint": "pre", "vhi_ml": 3.0},
    ])
    change = change_table(cohort, ["pre", "post"])
    assert list(change.columns) == CHANGE_COLUMNS
    assert change[["session_from", "session_to"]].values.tolist() == [["s1", "s2"], ["s2", "s3"]]
    assert change["change_ml"].tolist() == [-3.0, -1.0]
    assert change["change_percent"].iloc[0] == pytest.approx(-75.0)
    assert change["change_percent"].iloc[1] == pytest.approx(-100.0)


def test_status_states_and_failure_reason(synthetic_cohort: SyntheticCohort) -> None:
    c = synthetic_cohort
    status = status_table(c.plan, c.layout)
    assert dict(zip(status["session"], status["state"], strict=True)) == EXPECTED_STATES
    rows = {r["session"]: r for r in status.to_dict("records")}
    failed = c.planned("s4")  # its pull job fetched the T1W; its STIR is not where the sheet says
    assert rows["s4"]["reason"] == f"session a/03/s4: STIR {failed.session.scans['stir']}: file not found"
    log = c.layout.log_file(failed.session, "pull_scans")
    assert rows["s4"]["step"] == "pull_scans" and rows["s4"]["log"] == str(log)
    assert (rows["s5"]["step"], rows["s5"]["reason"]) == ("pull_scans", "pull_scans not run yet")
    assert rows["s3"]["reason"] == "T1W only: disease region only"
    assert rows["s2"]["reason"] == "proposal pushed; no cleaned segmentation on the source yet"
    assert rows["s1"]["reason"] == rows["s1"]["step"] == ""


def test_log_error_reads_tracebacks(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("Traceback (most recent call last):\n  File x\nModuleNotFoundError: vhi.reference\n")
    assert log_error(log) == "ModuleNotFoundError: vhi.reference"
    assert log_error(tmp_path / "absent.log") is None
    shell = tmp_path / "shell.log"
    shell.write_text("/usr/bin/bash: line 1: vhi: command not found\n\n")
    assert log_error(shell) == "/usr/bin/bash: line 1: vhi: command not found"


def test_write_results_writes_every_file_even_when_empty(synthetic_cohort: SyntheticCohort,
                                                        tmp_path: Path) -> None:
    c = synthetic_cohort
    layout = c.layout_with_results(tmp_path / "results")
    planned = c.planned("s2")  # proposed and pushed, a reader mask, not cleaned yet
    status = write_results([planned], layout, ["pre", "post"], "m")
    assert status["state"].tolist() == ["awaiting_cleaning"]
    results = Path(layout.results)
    assert list(pd.read_csv(results / "cohort_vhi.csv").columns) == VHI_COLUMNS
    assert len(pd.read_parquet(results / "cohort_vhi.parquet")) == 0
    agreement = pd.read_csv(results / "agreement.csv", dtype={"subject": str})
    assert list(agreement.columns) == AGREEMENT_COLUMNS
    design = c.designs["s2"]
    proposal, reader = design.proposal() > 0, design.reader_mask() > 0
    both = count(proposal & reader)
    (row,) = agreement.to_dict("records")
    assert (row["session"], row["reader"], row["reader_file"]) == ("s2", "R1", planned.reader_masks["R1"])
    assert (row["proposal_voxels"], row["reader_voxels"], row["both_voxels"]) == (
        count(proposal), count(reader), both) == (39, 29, 27)
    assert row["dice"] == pytest.approx(2 * both / (count(proposal) + count(reader)))
    assert row["reader_ml"] == pytest.approx(count(reader) * VOXEL_ML, rel=1e-12)
    assert row["reader_sha256"] == sha256(planned.reader_masks["R1"])
    description = json.loads((results / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == "vhi"
    assert not list(results.glob(".*part*"))


def test_saved_plan_reads_back_equal_for_job_processes(synthetic_cohort: SyntheticCohort,
                                                       tmp_path: Path) -> None:
    plan = synthetic_cohort.plan
    # every kind of session: cleaned (a fingerprint), reader masks, T1W only, manual reference
    assert any(p.cleaned for p in plan) and any(p.reader_masks for p in plan)
    assert any(not p.has_stir for p in plan) and any(p.reference == "manual" for p in plan)
    save_plan(plan, tmp_path / "work" / ".vhi_plan.json")
    assert load_plan(tmp_path / "work" / ".vhi_plan.json") == plan
    with pytest.raises(ConfigError, match="cannot read the cohort plan"):
        load_plan(tmp_path / "absent.json")
