"""What the data manager sees of the readers: status.csv's reader columns, cohort_vhi's
cleaned_by, reads.csv, readers.csv, the worklists, `vhi status --sessions` and the report's
readers section and double-read agreement, on the synthetic cohort (tests/support/results.py)
with a double read collected as the collection writes it (cleaned.json's reads)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from vhi.cli import main
from vhi.config.load import ReaderConfig
from vhi.method.measure import dice
from vhi.readers.store import Assignment, ReadersStore
from vhi.results.tables import write_results

from support.browser import browser_context, needs_browser
from support.readers import T0, read_entry, save
from support.results import AFFINE, VOXEL_ML, SyntheticCohort, build_synthetic_cohort

READERS = (ReaderConfig("A", "Dr A", ("a",)), ReaderConfig("B", "", ("a",)))
NOW = "2026-03-20T00:00:00Z"  # after every due date (T0 + 14 days)


def b_mask(a: np.ndarray) -> np.ndarray:
    """Reader B's mask of s1: A's without its first slice's voxels, and 4 voxels more."""
    b = a.copy()
    b[..., 0] = 0
    b[0:2, 0:2, 1] = 1
    return b


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCohort:
    """The synthetic cohort with readers: s1 (measured) double-read by A (first, its VHI) and
    B; s2 (awaiting cleaning) B's, never opened."""
    c = build_synthetic_cohort(tmp_path_factory.mktemp("readers_results"))
    s1 = c.layout.session_dir(c.planned("s1").session)
    a = (nib.load(s1 / "cleaned.nii.gz").get_fdata() > 0).astype(np.uint8)
    b = b_mask(a)
    shutil.copy(s1 / "cleaned.nii.gz", s1 / "cleaned_A.nii.gz")
    nib.save(nib.Nifti1Image(b, AFFINE), s1 / "cleaned_B.nii.gz")
    cleaned = json.loads((s1 / "cleaned.json").read_text())
    cleaned.update(cleaned_by="A", cleaned_at="2026-03-06T10:00:00Z", reads=[
        read_entry("A", "first", mask="cleaned_A.nii.gz", voxels=int(a.sum()), voxel_ml=VOXEL_ML,
                   saved_at="2026-03-03T09:00:00Z", removed=3, added=1),
        read_entry("B", "second", mask="cleaned_B.nii.gz", voxels=int(b.sum()), voxel_ml=VOXEL_ML,
                   saved_at="2026-03-05T09:00:00Z", removed=12, added=4)])
    (s1 / "cleaned.json").write_text(json.dumps(cleaned))
    with ReadersStore.open(c.layout.work) as store:
        common = {"site": "a", "study_uid": "1.2.3", "viewer_path": "/segmentation?StudyInstanceUIDs=1.2.3",
                  "assigned_at": T0, "due_at": "2026-03-15T09:00:00Z", "reason": "test"}
        store.add_assignments([Assignment("a/01/s1", reader="A", role="first", **common),
                               Assignment("a/01/s1", reader="B", role="second", **common),
                               Assignment("a/01/s2", reader="B", role="first", **common)], by="test")
        for key in ("a/01/s1", "a/01/s2"):
            store.record_push(key, T0, "p1")
        save(store, "a/01/s1", "A", "2026-03-03T09:00:00Z")
    return c


@pytest.fixture(scope="module")
def results(cohort: SyntheticCohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    write_results(cohort.plan, cohort.layout_with_results(folder), ["pre", "post"], partial="test",
                  readers=READERS, viewer_url="https://station.example.org", now=NOW)
    return folder / "partial"  # s4 failed: the results are partial


def csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"subject": str, "session": str}, keep_default_na=False)


def test_status_has_each_sessions_readers(results: Path) -> None:
    status = csv(results / "status.csv").set_index("session")
    assert list(status.columns[-5:]) == ["readers", "cleaned_by", "cleaned_at", "due", "overdue"]
    assert status.loc["s1", ["state", "readers", "cleaned_by", "cleaned_at", "overdue"]].tolist() == [
        "measured", "A;B", "A", "2026-03-06T10:00:00Z", False]
    assert status.loc["s1", "due"] == "2026-03-15T09:00:00Z"
    assert status.loc["s2", ["state", "readers", "cleaned_by", "due", "overdue"]].tolist() == [
        "awaiting_cleaning", "B", "", "2026-03-15T09:00:00Z", True]
    assert status.loc["s3", ["readers", "due", "overdue"]].tolist() == ["", "", False]  # T1W only


def test_cohort_vhi_carries_cleaned_by(results: Path) -> None:
    [row] = csv(results / "cohort_vhi.csv").to_dict("records")
    assert (row["session"], row["cleaned_by"], row["cleaned_at"]) == ("s1", "A", "2026-03-06T10:00:00Z")


def test_reads_csv_has_both_reads_and_their_dice(results: Path, cohort: SyntheticCohort) -> None:
    reads = csv(results / "reads.csv")
    a = cohort.designs["s1"].cleaned_mask() > 0
    expected = dice(a, b_mask(a.astype(np.uint8)))
    assert reads[["session", "reader", "role", "gives_vhi"]].to_numpy().tolist() == [
        ["s1", "A", "first", True], ["s1", "B", "second", False]]
    assert reads["dice_vs_other_reader"].tolist() == pytest.approx([expected, expected])
    assert 0.5 < expected < 0.9
    assert reads["voxels"].tolist() == [28, int(b_mask(a.astype(np.uint8)).sum())]
    assert reads["volume_ml"].tolist() == pytest.approx([28 * VOXEL_ML, reads["voxels"][1] * VOXEL_ML])
    # A's save is in the database and collected: 2 days after the assignment; B's collected only
    assert reads["days_to_clean"].tolist() == pytest.approx([2.0, 4.0])
    assert reads["voxels_removed"].tolist() == [3, 12] and reads["voxels_added"].tolist() == [1, 4]


def test_readers_csv_and_worklists(results: Path) -> None:
    readers = csv(results / "readers.csv").set_index("reader")
    assert readers.loc["A", ["name", "assigned", "done", "open", "overdue"]].tolist() == ["Dr A", 1, 1, 0, 0]
    assert readers.loc["B", ["name", "assigned", "done", "open", "overdue"]].tolist() == ["B", 2, 1, 1, 1]
    assert readers.loc["A", "median_days_to_clean"] == pytest.approx(2.0)
    assert readers.loc["B", ["median_voxels_removed", "median_voxels_added"]].tolist() == [12.0, 4.0]
    worklist = csv(results / "worklists" / "B.csv")
    assert worklist[["session", "role", "state", "overdue"]].to_numpy().tolist() == [
        ["a/01/s2", "first", "to_do", True], ["a/01/s1", "second", "saved", False]]
    assert worklist["viewer_url"][0] == "https://station.example.org/segmentation?StudyInstanceUIDs=1.2.3"
    assert sorted(p.name for p in (results / "worklists").iterdir()) == ["A.csv", "B.csv"]


def test_the_report_shows_the_readers_and_their_agreement(results: Path) -> None:
    html = (results / "report.html").read_text()
    section = re.search(r"<section id=readers>.*?</section>", html).group(0)
    assert '<td class="">Dr A</td>' in section and "Overdue sessions (1)" in section
    assert '<td class="">a/01/s2</td><td class="">awaiting_cleaning</td><td class="">B</td>' in section
    agreement = re.search(r"<section id=agreement>.*?</section>", html).group(0)
    assert "Double reads: first vs second reader" in agreement
    assert "Double reads: overlap of the two readers' masks" in agreement
    assert 'aria-label="Bland–Altman first reader vs second reader, site a"' in agreement
    data = json.loads(re.search(r'id="session-data">(.*?)</script>', html).group(1))
    rows = {r[2]: dict(zip(data["fields"], r, strict=True)) for r in data["rows"]}
    assert (rows["s1"]["readers"], rows["s1"]["cleaned_by"], rows["s1"]["due"]) == ("A, B", "A", "2026-03-15")
    assert (rows["s2"]["overdue"], rows["s1"]["overdue"]) == ("1", "")


def test_vhi_status_sessions(cohort: SyntheticCohort, tmp_path: Path, capsys) -> None:
    s = cohort.settings
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "work_dir": cohort.layout.work, "logs_dir": cohort.layout.logs,
        "results_dir": str(tmp_path / "results"), "timepoints": list(s.timepoints),
        "sites": [{"name": site.name, "reference": site.reference, "source": dict(site.source)}
                  for site in s.sites],
        "readers": [{"id": "A", "sites": ["a"]}, {"id": "B", "sites": ["a"]}]}))
    assert main(["-q", "status", "--config", str(config), "--sessions"]) == 0
    out = capsys.readouterr().out
    assert "1 session(s) overdue for cleaning: s2 (vhi status --sessions)" in out
    [s2] = [line.split() for line in out.splitlines() if line.startswith("a ") and " s2 " in line]
    assert s2 == ["a", "01", "s2", "awaiting_cleaning", "B", "2026-03-15T09:00:00Z", "yes"]
    assert main(["-q", "status", "--config", str(config), "--sessions", "--json"]) == 0
    sessions = {r["session"]: r for r in json.loads(capsys.readouterr().out)["sessions"]}
    assert (sessions["s1"]["readers"], sessions["s1"]["cleaned_by"]) == ("A;B", "A")


def test_the_workflows_gather_assigns_the_sessions_it_pushed(tmp_path: Path) -> None:
    """build_cohort_tables and the error handler (write_results_logged) assign before they
    write: s2 (pushed, awaiting cleaning) gets a reader; s1 (cleaned on its source) none."""
    from vhi.config.load import resolve_config
    from vhi.results.tables import write_results_logged

    c = build_synthetic_cohort(tmp_path / "cohort")
    s = c.settings
    settings = resolve_config({
        "work_dir": c.layout.work, "logs_dir": c.layout.logs, "results_dir": str(tmp_path / "results"),
        "sites": [{"name": site.name, "reference": site.reference, "source": dict(site.source)}
                  for site in s.sites],
        "readers": [{"id": "A", "sites": ["a"]}, {"id": "B", "sites": ["a"]}]})
    layout = c.layout_with_results(tmp_path / "results")
    write_results_logged(c.plan, layout, settings, tmp_path / "tables.log", after_failure=True)
    with ReadersStore.open(c.layout.work) as store:
        assert [(a.session_key, a.reader, a.role) for a in store.assignments()] == [("a/01/s2", "A", "first")]
        assert {k for k in ("a/01/s1", "a/01/s2") if store.last_push(k)} == {"a/01/s1", "a/01/s2"}
    status = csv(tmp_path / "results" / "partial" / "status.csv").set_index("session")
    assert status.loc["s2", "readers"] == "A" and not status.loc["s2", "overdue"]
    assert csv(tmp_path / "results" / "partial" / "worklists" / "A.csv")["session"].tolist() == ["a/01/s2"]
    assert "assigned 1 session(s) for cleaning: A 1" in (tmp_path / "tables.log").read_text()


@needs_browser
def test_the_session_tables_reader_columns_in_a_browser(results: Path) -> None:
    """The page's script draws the reader columns (overdue marked) and sorts by them."""
    errors = []
    with browser_context() as context:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((results / "report.html").as_uri(), wait_until="load")
        cells = page.evaluate("[...document.querySelectorAll('#session-table tbody tr')].map(r => "
                              "[r.dataset.key, ...[...r.cells].slice(6, 9).map(c => c.textContent)])")
        assert cells[:2] == [["a/01/s1", "A, B", "A", "2026-03-15"],
                             ["a/01/s2", "B", "", "2026-03-15 (overdue)"]]
        assert page.evaluate("document.querySelectorAll('#session-table td.due.overdue').length") == 1
        header = page.locator("#session-table th", has_text="readers")
        header.click()
        header.click()  # descending: B before "A, B" before the sessions without readers
        keys = page.evaluate("[...document.querySelectorAll('#session-table tbody tr')]"
                             ".map(r => r.dataset.key)")
        assert keys[:2] == ["a/01/s2", "a/01/s1"]
    assert errors == []
