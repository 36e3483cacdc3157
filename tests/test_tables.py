"""Cohort tables and status from synthetic per-session files (no images needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from vhi.cohort.ids import Session
from vhi.cohort.layout import Layout
from vhi.cohort.plan import PlannedSession
from vhi.results.status import log_error, status_table
from vhi.results.tables import (
    AGREEMENT_COLUMNS,
    CHANGE_COLUMNS,
    VHI_COLUMNS,
    change_table,
    cohort_vhi_table,
    write_results,
)

STIR = {"stir": "/d/stir.nii.gz", "t1w": "/d/t1w.nii.gz", "reference": "/d/nm.nii.gz"}
CLEANED = {"uri": "/d/cleaned.nii.gz", "size": 1, "mtime_ns": 1}


def plan_of(subject: str, session: str, timepoint: str, *, cleaned: bool = True,
            stir: bool = True, readers: bool = False) -> PlannedSession:
    scans = STIR if stir else {"t1w": "/d/t1w.nii.gz"}
    return PlannedSession(Session("a", subject, session, timepoint, scans), "manual",
                          CLEANED if cleaned and stir else None,
                          {"R1": "/d/r1.nii.gz"} if readers else {})


def put(layout: Layout, p: PlannedSession, name: str, data: dict) -> None:
    path = layout.work_file(p.session, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def complete(layout: Layout, p: PlannedSession, voxels: int) -> None:
    """Every file a finished session leaves (only the fields the tables read)."""
    put(layout, p, "t1w.json", {"source": {"uri": "/d/t1w.nii.gz", "sha256": "t" * 64}})
    put(layout, p, "disease_region.json", {"device": "cpu", "model": {
        "name": "m", "version": "1", "sha256": {"f1.pt": "a1", "f2.pt": "b2"}}})
    if not p.has_stir:
        return
    put(layout, p, "stir.json", {"source": {"uri": "/d/stir.nii.gz", "sha256": "s" * 64}})
    put(layout, p, "reference.json", {})
    put(layout, p, "proposal.json", {
        "lower": 10.0, "upper": 20.0, "proposal_ml": 2.0, "voxels": {"label_ge1": 2000,
                                                                      "label2": 500},
        "thresholds": {"q1": 1, "q3": 2, "iqr": 1, "m": 1.5, "n_reference": 99},
        "reference": {"mode": "manual"}})
    put(layout, p, "pushed.json", {})
    if p.readers:
        put(layout, p, "agreement.json", {"readers": {"R1": {
            "dice": 0.5, "volume_similarity": 0.9, "voxels_a": 2000, "voxels_b": 1000,
            "voxels_both": 750, "ml_a": 2.0, "ml_b": 1.0, "path": "/d/r1.nii.gz",
            "sha256": "r" * 64}}})
    if p.cleaned is not None:
        put(layout, p, "cleaned.json", {"source": {"uri": "/d/cleaned.nii.gz", "sha256": "c" * 64},
                                        "vs_proposal": {"dice": 0.8, "removed_voxels": 5,
                                                        "added_voxels": 0}})
        put(layout, p, "vhi.json", {"vhi_ml": voxels * 0.001, "voxels": voxels,
                                    "voxel_volume_ml": 0.001,
                                    "provenance": {"software": {"version": "0.1.0"}}})


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(str(tmp_path / "work"), str(tmp_path / "logs"), str(tmp_path / "results"))


def test_cohort_row_carries_the_audit_trail(layout: Layout) -> None:
    p = plan_of("01", "s1", "pre")
    complete(layout, p, 1500)
    (row,) = cohort_vhi_table([p], layout).to_dict("records")
    assert row["vhi_ml"] == pytest.approx(1.5) and row["vhi_voxels"] == 1500
    assert (row["proposal_voxels"], row["lower"], row["upper"], row["m"]) == (2000, 10.0, 20.0, 1.5)
    assert row["model_sha256"] == "f1.pt:a1;f2.pt:b2"
    assert (row["model_bundle"], row["model_version"], row["model_device"]) == ("m", "1", "cpu")
    assert row["cleaned_uri"] == "/d/cleaned.nii.gz" and row["cleaned_sha256"] == "c" * 64
    assert row["stir_sha256"] == "s" * 64 and row["t1w_uri"] == "/d/t1w.nii.gz"


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


def test_status_states_and_failure_reason(layout: Layout) -> None:
    measured = plan_of("01", "s1", "pre")
    awaiting = plan_of("01", "s2", "post", cleaned=False)
    t1w_only = plan_of("02", "s3", "pre", stir=False)
    failed = plan_of("03", "s4", "pre")
    pending = plan_of("04", "s5", "pre")
    for p in (measured, awaiting, t1w_only):
        complete(layout, p, 10)
    put(layout, failed, "t1w.json", {})
    log = layout.log_file(failed.session, "pull_scan_stir")
    log.parent.mkdir(parents=True)
    log.write_text("2026-01-01 10:00:00,000 INFO vhi: starting\n"
                   "2026-01-01 10:00:01,000 ERROR vhi: session a/03/s4: STIR /x: file not found\n")
    status = status_table([measured, awaiting, t1w_only, failed, pending], layout)
    states = dict(zip(status["session"], status["state"], strict=True))
    assert states == {"s1": "measured", "s2": "awaiting_cleaning", "s3": "segmented",
                      "s4": "failed", "s5": "pending"}
    row = status[status["session"] == "s4"].iloc[0]
    assert row["reason"] == "session a/03/s4: STIR /x: file not found"
    assert row["step"] == "pull_scan_stir" and row["log"] == str(log)


def test_log_error_reads_tracebacks(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("Traceback (most recent call last):\n  File x\nModuleNotFoundError: vhi.reference\n")
    assert log_error(log) == "ModuleNotFoundError: vhi.reference"
    assert log_error(tmp_path / "absent.log") is None
    shell = tmp_path / "shell.log"
    shell.write_text("/usr/bin/bash: line 1: vhi: command not found\n\n")
    assert log_error(shell) == "/usr/bin/bash: line 1: vhi: command not found"


def test_write_results_writes_every_file_even_when_empty(layout: Layout) -> None:
    p = plan_of("01", "s1", "pre", cleaned=False, readers=True)
    complete(layout, p, 10)
    status = write_results([p], layout, ["pre", "post"], "m")
    assert status["state"].tolist() == ["awaiting_cleaning"]
    results = Path(layout.results)
    assert list(pd.read_csv(results / "cohort_vhi.csv").columns) == VHI_COLUMNS
    assert len(pd.read_parquet(results / "cohort_vhi.parquet")) == 0
    agreement = pd.read_csv(results / "agreement.csv", dtype={"subject": str})
    assert list(agreement.columns) == AGREEMENT_COLUMNS and agreement["dice"].tolist() == [0.5]
    description = json.loads((results / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == "vhi"
    assert not list(results.glob(".*part*"))


def test_saved_plan_reads_back_equal_for_job_processes(tmp_path: Path) -> None:
    from vhi.cohort.plan import load_plan, save_plan
    from vhi.errors import ConfigError

    plan = [plan_of("01", "s1", "pre", readers=True), plan_of("02", "s2", "post", cleaned=False),
            plan_of("03", "s3", "pre", stir=False)]
    save_plan(plan, tmp_path / "work" / ".vhi_plan.json")
    assert load_plan(tmp_path / "work" / ".vhi_plan.json") == plan
    with pytest.raises(ConfigError, match="cannot read the cohort plan"):
        load_plan(tmp_path / "absent.json")
