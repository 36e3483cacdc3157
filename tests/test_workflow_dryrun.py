"""Workflow dry runs (``snakemake -n``) for every input scenario, and ``snakemake --lint``.

The cohorts here are generated sheets whose scans need not exist: a dry run only
plans, and a missing scan fails its own session's pull at run time, never the DAG.
Cleaned masks are found by a stat, so empty files stand in for them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from support.cohorts import write_cohort
from support.paths import PROJECT_ROOT
from support.workflow import job_counts, snakemake


def dry_run(tmp_path: Path, config: Path) -> dict[str, int]:
    result = snakemake(tmp_path / "run", "-n", "--configfile", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    return job_counts(result.stdout + result.stderr)


def test_dry_run_no_cleaned_masks(tmp_path: Path) -> None:
    counts = dry_run(tmp_path, write_cohort(tmp_path / "cohort", 6, t1w_only=2))
    assert counts["segment_disease_region"] == 6
    assert counts["propose_lesions"] == counts["push_proposal"] == 4
    # one pull job per session: T1W only, or T1W + STIR + manual reference
    assert (counts["pull_scans"], counts["pull_scans_stir_reference"]) == (2, 4)
    assert "pull_scans_stir" not in counts
    assert "collect_cleaned" not in counts
    assert counts["build_cohort_tables"] == 1


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_profile_disk_is_a_constant(profile: str) -> None:
    """A profile's default-resources switch Snakemake to sizing every job's disk from its
    inputs (a stat of each input, per job) unless disk_mb is given: keep it a number."""
    settings = yaml.safe_load((PROJECT_ROOT / "profiles" / profile / "config.yaml").read_text())
    assert isinstance(settings["default-resources"]["disk_mb"], int)


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_profile_runs_the_tables_in_snakemakes_own_process(profile: str) -> None:
    """The one `run:` rule (the cohort tables) in a thread: without it Snakemake starts a
    second Snakemake that parses the workflow again (3 s of a one-session run's 12 s)."""
    settings = yaml.safe_load((PROJECT_ROOT / "profiles" / profile / "config.yaml").read_text())
    assert settings["force-use-threads"] is True
    run_rules = [line for path in (PROJECT_ROOT / "workflow" / "rules").glob("*.smk")
                 for line in path.read_text().splitlines() if line.strip() == "run:"]
    assert len(run_rules) == 1  # a second `run:` rule would share Snakemake's process too


def test_dry_run_some_cleaned_masks(tmp_path: Path) -> None:
    counts = dry_run(tmp_path, write_cohort(tmp_path / "cohort", 6, cleaned=3, reader_masks=True))
    assert counts["collect_cleaned"] == 3  # collect, measure and the cleaned QC image
    assert "measure_vhi" not in counts and "draw_qc_cleaned" not in counts
    assert counts["measure_agreement"] == 3  # reader masks exist for those three
    assert counts["push_proposal"] == 6


def test_dry_run_all_cleaned_masks(tmp_path: Path) -> None:
    counts = dry_run(tmp_path, write_cohort(tmp_path / "cohort", 6, cleaned=6))
    assert counts["collect_cleaned"] == counts["propose_lesions"] == counts["draw_qc"] == 6
    assert counts["total"] == 6 * 6 + 2  # pull, segment, propose, push, collect, QC + tables, all


def test_dry_run_automatic_reference_pulls_no_mask(tmp_path: Path) -> None:
    """A site with the automatic reference: each STIR session's one pull job fetches the
    T1W and the STIR only (the rule for that set of scans)."""
    config = write_cohort(tmp_path / "cohort", 6, t1w_only=2)
    settings = yaml.safe_load(config.read_text())
    settings["sites"][0]["reference"] = "auto"
    config.write_text(yaml.safe_dump(settings))
    result = snakemake(tmp_path / "run", "-n", "-p", "--configfile", str(config))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    counts = job_counts(output)
    assert (counts["pull_scans"], counts["pull_scans_stir"]) == (2, 4), counts
    assert "pull_scans_stir_reference" not in counts and "reference=" not in output
    assert output.count("--scan t1w=") == 6 and output.count("--scan stir=") == 4


def test_dry_run_missing_scan_plans_the_rest(tmp_path: Path) -> None:
    """A session without a T1W (empty cell) or with a missing file is planned like any
    other: it fails its own pull at run time instead of stopping the whole DAG."""
    config = write_cohort(tmp_path / "cohort", 4, missing_t1w=1)  # no file exists at all
    counts = dry_run(tmp_path, config)
    assert counts["segment_disease_region"] == 4
    assert counts["pull_scans_stir_reference"] == 4


def test_dry_run_demo_config(tmp_path: Path, data_dir: Path) -> None:
    """The embedded default: the demo cohort, R11 standing in for cleaned masks."""
    result = snakemake(tmp_path, "-n")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout + result.stderr)
    assert counts["segment_disease_region"] == 11
    assert counts["propose_lesions"] == counts["collect_cleaned"] == 8
    assert counts["measure_agreement"] == 8


def test_lint_has_no_findings(tmp_path: Path) -> None:
    result = snakemake(tmp_path, "--lint")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Congratulations, your workflow is in a good condition!" in output
    assert "Lints for" not in output


@pytest.mark.parametrize(("override", "named"), [
    ({"tpyo": 1}, "tpyo"),
    ({"model": {"devcie": "cpu"}}, "devcie"),
])
def test_unknown_config_key_is_rejected_by_name(tmp_path: Path, override: dict,
                                                named: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(override))
    result = snakemake(tmp_path / "run", "-n", "--configfile", str(config))
    assert result.returncode != 0
    assert named in result.stderr + result.stdout


def test_duplicate_session_is_rejected_by_name(tmp_path: Path) -> None:
    config = write_cohort(tmp_path / "cohort", 3)
    sheet = tmp_path / "cohort" / "sheet.csv"
    lines = sheet.read_text().splitlines()
    sheet.write_text("\n".join([*lines, lines[1].replace("P0000", "P0099")]) + "\n")
    result = snakemake(tmp_path / "run", "-n", "--configfile", str(config))
    assert result.returncode != 0
    assert "duplicate session s1/S00000" in result.stderr + result.stdout
