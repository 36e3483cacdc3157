"""Where every file of a run goes, and which file marks each per-session step done.

File and log names live in :class:`Layout` and :data:`STEPS` so the workflow's rules
and the status table agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vhi.cohort.ids import Session
from vhi.config.load import Settings


@dataclass(frozen=True)
class Step:
    """One per-session step: its rule, log name, the file that marks it done, its state.

    One job may mark several steps done (its log is theirs): the session's scans are
    pulled by one job, and the cleaned mask is collected and measured by one job.
    """

    rule: str
    log: str
    marker: str
    state: str
    required: tuple[str, ...] = ()  # keys the marker's JSON must have (read by the tables)


#: The scans a session's pull job fetches, by the scans the session has: the rule that
#: pulls them (one job per session; workflow/rules/pull.smk) and the roles, in order
#: (a STIR is checked against the T1W's grid, so the T1W comes first).
PULL_RULES: dict[str, tuple[str, ...]] = {
    "pull_scans": ("t1w",),
    "pull_scans_stir": ("t1w", "stir"),
    "pull_scans_stir_reference": ("t1w", "stir", "reference"),
}
PULL_LOG = "pull_scans"

#: The per-session steps by marker file, in pipeline order.
STEPS: dict[str, Step] = {s.marker: s for s in (
    Step("pull_scans", PULL_LOG, "t1w.json", "pulled"),
    Step("pull_scans", PULL_LOG, "stir.json", "pulled"),
    Step("pull_scans", PULL_LOG, "reference.json", "pulled"),
    Step("segment_disease_region", "segment_disease_region", "disease_region.json", "segmented"),
    Step("propose_lesions", "propose_lesions", "proposal.json", "proposed",
         ("lower", "upper", "thresholds", "voxels", "proposal_ml")),
    Step("push_proposal", "push_proposal", "pushed.json", "pushed", ("files",)),
    Step("measure_agreement", "measure_agreement", "agreement.json", "pushed", ("readers",)),
    Step("collect_cleaned", "collect_cleaned", "cleaned.json", "cleaned",
         ("source", "voxels", "vs_proposal")),
    Step("collect_cleaned", "collect_cleaned", "vhi.json", "measured",
         ("vhi_ml", "voxels", "voxel_volume_ml")),
)}


def pull_rule(roles: tuple[str, ...]) -> str:
    """The rule that pulls a session's scans ``roles`` (:data:`PULL_RULES`)."""
    return next(rule for rule, pulled in PULL_RULES.items() if pulled == roles)


#: The QC images of a session (:mod:`vhi.results.qc`): after the proposal (or the disease
#: region of a T1W-only session) with the slices it shows, and after collection.
QC_FILES = {"image": "qc.png", "slices": "qc_slices.npz", "cleaned": "qc_cleaned.png"}
#: Where the report's copies of the QC images go, under the results folder.
QC_RESULTS_DIR = "qc"

RESULT_FILES = {
    "cohort_vhi": "cohort_vhi.csv",
    "cohort_vhi_parquet": "cohort_vhi.parquet",
    "cohort_change": "cohort_change.csv",
    "agreement": "agreement.csv",
    "status": "status.csv",
    "reads": "reads.csv",
    "readers": "readers.csv",
    "description": "dataset_description.json",
    "report": "report.html",
}


@dataclass(frozen=True)
class Layout:
    """Where every file of a run goes."""

    work: str
    logs: str
    results: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Layout:
        return cls(settings.work_dir, settings.logs_dir, settings.results_dir)

    # Snakemake patterns ({site}/{subject}/{session} wildcards)
    def work_pattern(self, name: str) -> str:
        return f"{self.work}/{{site}}/{{subject}}/{{session}}/{name}"

    def log_pattern(self, name: str) -> str:
        return f"{self.logs}/{{site}}/{{subject}}/{{session}}/{name}.log"

    def benchmark_pattern(self, name: str) -> str:
        return f"{self.logs}/{{site}}/{{subject}}/{{session}}/{name}.benchmark.tsv"

    # concrete paths
    def session_dir(self, s: Session) -> Path:
        return Path(self.work, s.site, s.subject, s.session)

    def work_file(self, s: Session, name: str) -> Path:
        return self.session_dir(s) / name

    def log_file(self, s: Session, name: str) -> Path:
        return Path(self.logs, s.site, s.subject, s.session, f"{name}.log")

    def result(self, key: str) -> Path:
        return Path(self.results, RESULT_FILES[key])

    def partial(self) -> Layout:
        """Where a failed or interrupted run writes what it finished: ``results/partial/``,
        never the targets of ``rule all``, so the next run still has the work to do."""
        return Layout(self.work, self.logs, str(Path(self.results, "partial")))
