"""``vhi status``: the per-site state counts, from the code that writes status.csv."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from vhi.cli import main
from vhi.results.status import STATES, state_counts, status_table

from support.results import EXPECTED_STATES, SyntheticCohort


def config_of(cohort: SyntheticCohort, dest: Path) -> Path:
    """The synthetic cohort's settings as a config file for the vhi commands."""
    s = cohort.settings
    dest.write_text(yaml.safe_dump({
        "work_dir": cohort.layout.work, "logs_dir": cohort.layout.logs,
        "results_dir": str(dest.parent / "results"), "timepoints": list(s.timepoints),
        "sites": [{"name": site.name, "reference": site.reference, "source": dict(site.source)}
                  for site in s.sites]}))
    return dest


def test_status_json_equals_the_status_table(synthetic_cohort: SyntheticCohort, tmp_path: Path,
                                            capsys) -> None:
    config = config_of(synthetic_cohort, tmp_path / "config.yaml")
    assert main(["-q", "status", "--config", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = {state: 0 for state in STATES}
    for state in EXPECTED_STATES.values():
        expected[state] += 1
    assert out["sites"] == {"a": {**expected, "total": 5}}
    assert out["total"] == {**expected, "total": 5} and out["states"] == list(STATES)
    table = state_counts(status_table(synthetic_cohort.plan, synthetic_cohort.layout))
    assert out["sites"]["a"] == {k: int(v) for k, v in table.loc["a"].items()}
    assert not (tmp_path / "results").exists()  # status writes nothing


def test_status_table_in_the_terminal(synthetic_cohort: SyntheticCohort, tmp_path: Path,
                                      capsys) -> None:
    config = config_of(synthetic_cohort, tmp_path / "config.yaml")
    assert main(["-q", "status", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["site", "pending", "segmented", "awaiting_cleaning", "measured",
                                "failed", "total"]
    assert lines[1].split() == ["a", "1", "1", "1", "1", "1", "5"]
    assert lines[2] == ""  # one site: no "all sites" row; then the notes
    assert lines[3].startswith("site a: 5 sessions, 0 skipped, listed 20")
    assert len(lines) == 4  # no run holds the work folder; results/ holds nothing


def test_a_session_awaiting_cleaning_in_a_viewer_has_its_route(synthetic_cohort: SyntheticCohort) -> None:
    c = synthetic_cohort
    [waiting] = [p for p in c.plan if p.session.session == "s2"]
    receipt = c.layout.work_file(waiting.session, "pushed.json")
    saved = receipt.read_text()
    route = "/segmentation?StudyInstanceUIDs=1.2.826.0.1.3680043.8.498.1"
    try:
        receipt.write_text(json.dumps({**json.loads(saved), "viewer_path": route}))
        rows = status_table(c.plan, c.layout).set_index("session")
        assert rows.loc["s2", "state"] == "awaiting_cleaning"
        assert rows.loc["s2", "viewer_path"] == route and rows.loc["s2", "reason"].endswith(route)
        assert set(rows.drop(index="s2")["viewer_path"]) == {""}  # measured, failed, ... have none
    finally:
        receipt.write_text(saved)  # the cohort is shared by the module's tests


def test_a_study_skipped_at_listing_is_a_row_of_the_status(synthetic_cohort: SyntheticCohort,
                                                          tmp_path: Path) -> None:
    """What a source found and did not plan (the plan's ``skipped``) is a ``skipped`` row
    of status.csv with its reason; it leaves the results complete."""
    from vhi.results.tables import write_results
    from vhi.sources import Skipped

    c = synthetic_cohort
    done = [p for p in c.plan if p.session.session in ("s1", "s2", "s3")]
    skipped = [Skipped("a", "study 1.2.3", "no STIR or T1W series"),
               Skipped("a", "study 4.5.6", "invalid PatientID", subject="P 8", session="ACC8")]
    results = tmp_path / "results"
    status = write_results(done, c.layout_with_results(results), c.settings.timepoints, skipped=skipped)
    assert status.iloc[-1][["subject", "session", "reason"]].tolist() == [
        "P 8", "ACC8", "study 4.5.6: invalid PatientID"]
    written = pd.read_csv(results / "status.csv", dtype=str, keep_default_na=False)
    assert written["state"].tolist() == ["measured", "awaiting_cleaning", "segmented", "skipped", "skipped"]
    assert written["reason"].iloc[3] == "study 1.2.3: no STIR or T1W series"
    assert not (results / "partial").exists()  # skipped studies are not unfinished sessions
