"""One end-to-end run of the workflow on the demo cohort, shared by the tests that read it.

The run (the ``demo_run`` fixture, once per test session) is the embedded demo config,
with reader 1's masks (R11) as cleaned masks for every STIR session but 1003 (cleaned
later by the end-to-end test), plus a second site, ``followup``: one subject (``90``)
at two timepoints, built from the demo's scans of 1003 (``pre``) and 1012 (``post``)
under new session ids, both cleaned (R11), so the cohort has a VHI change to show.

The end-to-end test (test_workflow.py) is the only one that changes the run (it saves
1003's cleaned mask and runs again); every other test reads what the run holds when it
runs and must hold in both states.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from support.paths import MODELS, PROJECT_ROOT
from support.workflow import snakemake

STIR_SESSIONS = {"1234": "01", "4386": "03", "1003": "09", "1007": "11", "1012": "13",
                 "1013": "14", "1016": "15", "3002": "17"}
T1W_ONLY = {"1001": "08", "3009": "24", "2016": "30"}
CLEANED_LATER = "1003"
#: The follow-up site: session -> (timepoint, the demo scan it is made of)
FOLLOWUP_SITE, FOLLOWUP_SUBJECT = "followup", "90"
FOLLOWUP = {"f1003": ("pre", "1003"), "f1012": ("post", "1012")}

WEIGHTS = MODELS / "sij_disease_region_unet" / "model_1.pt"


def r11(data_dir: Path, session: str) -> Path:
    return data_dir / "inflammation" / "R11" / f"{session}_inflammation_R11.nii.gz"


def source_state(data_dir: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(data_dir.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class DemoRun:
    root: Path
    run: Path
    config: Path
    cleaned: Path  # {site}/{subject}/{session}.nii.gz
    result: subprocess.CompletedProcess[str]
    source_before: dict[str, tuple[int, int]]

    @property
    def results(self) -> Path:
        return self.run / "results"


def _followup_sheet(root: Path, data_dir: Path) -> Path:
    sheet = root / "followup_sheet.csv"
    with sheet.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["site", "subject", "session", "timepoint", "stir", "t1w", "normal_marrow"])
        for session, (timepoint, scan) in FOLLOWUP.items():
            writer.writerow([FOLLOWUP_SITE, FOLLOWUP_SUBJECT, session, timepoint,
                             f"stir/{scan}_STIR.nii.gz", f"t1w/{scan}_T1W.nii.gz",
                             f"normal_marrow/{scan}_normal_marrow.nii.gz"])
    return sheet


def demo_config(root: Path, data_dir: Path, cleaned: Path) -> Path:
    """The embedded demo site with cleaned masks under ``cleaned``, and the follow-up site."""
    config = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    pattern = f"{cleaned}/{{site}}/{{subject}}/{{session}}.nii.gz"
    demo = config["sites"][0]
    demo["source"]["cleaned"] = pattern
    followup = {"name": FOLLOWUP_SITE, "reference": "manual_if_present",
                "source": {"type": "local", "root": str(data_dir),
                           "sheet": str(_followup_sheet(root, data_dir)), "outbox": "outbox",
                           "cleaned": pattern}}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump({"sites": [demo, followup]}))
    return path


def run_demo(root: Path, data_dir: Path) -> DemoRun:
    before = source_state(data_dir)
    cleaned = root / "cleaned"
    masks = {("demo", subject, session): session for session, subject in STIR_SESSIONS.items()
             if session != CLEANED_LATER}
    masks |= {(FOLLOWUP_SITE, FOLLOWUP_SUBJECT, session): scan
              for session, (_, scan) in FOLLOWUP.items()}
    for (site, subject, session), scan in masks.items():
        dest = cleaned / site / subject / f"{session}.nii.gz"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(r11(data_dir, scan), dest)
    config = demo_config(root, data_dir, cleaned)
    run = root / "run"
    result = snakemake(run, "--configfile", str(config), timeout=1800)
    return DemoRun(root, run, config, cleaned, result, before)
