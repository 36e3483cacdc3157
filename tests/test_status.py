"""``vhi status``: the per-site state counts, from the code that writes status.csv."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert len(lines) == 2  # one site: no "all sites" row
