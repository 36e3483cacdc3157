"""A tiny synthetic cohort taken through the real per-session steps (table and report tests).

Every file a session leaves in ``work/`` is written by the code the workflow's rules run,
with the arguments they give it (workflow/rules/*.smk): ``vhi pull | propose | push |
agreement | collect | measure`` through :func:`vhi.cli.main`, each step's output going to
its log as the rule's ``> {log} 2>&1`` sends it. The disease region is written by
:func:`vhi.api.segment`, the function ``vhi segment`` calls, given :class:`FakeEnsemble`
in place of the U-Net: the real bundle's metadata (name, version, sha256 of the folds, as
the sidecar records them) and a threshold on the T1W instead of the network, so no
weights are needed. The plan is :func:`vhi.cohort.plan.plan_cohort` on a local-folder
config, as the workflow makes it.

The images are 16 x 16 x 3 voxels of 0.75 x 0.75 x 4 mm (:data:`VOXEL_ML` ml each), drawn
so that every number the tables report is known from the arrays (:class:`SessionDesign`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from vhi import api
from vhi.cli import main
from vhi.cohort.layout import Layout
from vhi.cohort.plan import PlannedSession, plan_cohort
from vhi.config.load import Settings, resolve_config
from vhi.model.bundles import DEFAULT_BUNDLE, Bundle, get_bundle
from vhi.sources import source_class

SITE = "a"
SHAPE = (16, 16, 3)
ZOOMS = (0.75, 0.75, 4.0)
#: One voxel's volume in ml, from the zooms (exact in the NIfTI header's float32).
VOXEL_ML = ZOOMS[0] * ZOOMS[1] * ZOOMS[2] / 1000.0
AFFINE = np.diag([*ZOOMS, 1.0])

#: The disease region the stand-in model finds: the T1W is bright there.
REGION = (slice(2, 14), slice(2, 14), slice(None))
T1W_REGION, T1W_OUTSIDE = 300, 60
#: The normal-marrow reference (manual mask): 16 voxels of slice 0 with spread intensities,
#: its brightest (the threshold search's ``upper``) an isolated voxel in one corner.
REFERENCE = (slice(3, 7), slice(3, 7), 0)
REFERENCE_VALUES = [*range(90, 120, 2), 160]
MARROW = 100  # the STIR everywhere else: far below the lower threshold
#: Lesions: label 2 (above every reference value) and label 1 (between the two thresholds,
#: which the search puts at about 153 and 160 for this reference).
BRIGHT, DIM = 200, 156
LESION_DIM = (slice(9, 11), slice(3, 5), slice(None))  # 2 x 2 x 3 = 12 voxels
#: Single bright voxels: residue, which the proposal drops (with the reference's brightest).
SPECKS = [(12, 6, 2), (4, 12, 1)]


def _lesion_bright(slices: int) -> tuple[slice, slice, slice]:
    return slice(9, 12), slice(9, 12), slice(0, slices)  # 3 x 3 x slices voxels


@dataclass(frozen=True)
class SessionDesign:
    """The scans of one session and what the method must make of them."""

    bright_slices: int = 2  # the label-2 lesion spans this many slices
    reader: bool = True  # reader R1 drew a mask
    cleaned: bool = False  # a radiologist saved the cleaned mask

    def stir(self) -> np.ndarray:
        stir = np.full(SHAPE, MARROW, dtype=np.int16)
        reference = np.zeros(SHAPE, dtype=bool)
        reference[REFERENCE] = True
        stir[reference] = REFERENCE_VALUES
        stir[_lesion_bright(self.bright_slices)] = BRIGHT
        stir[LESION_DIM] = DIM
        for speck in SPECKS:
            stir[speck] = BRIGHT
        return stir

    def t1w(self) -> np.ndarray:
        t1w = np.full(SHAPE, T1W_OUTSIDE, dtype=np.int16)
        t1w[REGION] = T1W_REGION
        return t1w

    def reference(self) -> np.ndarray:
        mask = np.zeros(SHAPE, dtype=np.uint8)
        mask[REFERENCE] = 1
        return mask

    def proposal(self) -> np.ndarray:
        """The labels the proposal must hold: the two lesions, no residue."""
        labels = np.zeros(SHAPE, dtype=np.uint8)
        labels[LESION_DIM] = 1
        labels[_lesion_bright(self.bright_slices)] = 2
        return labels

    def cleaned_mask(self) -> np.ndarray:
        """The radiologist's edit: the dim lesion's last slice removed, two voxels added."""
        mask = (self.proposal() > 0).astype(np.uint8)
        mask[9:11, 3:5, 2] = 0
        mask[12, 9:11, 0] = 1
        return mask

    def reader_mask(self) -> np.ndarray:
        """Reader R1: the bright lesion and two voxels the proposal does not have."""
        mask = np.zeros(SHAPE, dtype=np.uint8)
        mask[_lesion_bright(self.bright_slices)] = 1
        mask[8, 9:11, 0] = 1
        return mask


#: The cohort: subject, session, timepoint, design (None: T1W only), steps run.
#: ``failed``: the sheet lists a STIR that is not there (a name the report must escape).
SESSIONS = {
    "s1": ("01", "pre", SessionDesign(bright_slices=2, cleaned=True), "all"),
    "s2": ("01", "post", SessionDesign(bright_slices=3), "all"),
    "s3": ("02", "pre", None, "all"),
    "s4": ("03", "pre", SessionDesign(reader=False), "failed"),
    "s5": ("04", "pre", SessionDesign(reader=False), "none"),
}
#: The state each session of the synthetic cohort is left in (results/status.csv).
EXPECTED_STATES = {"s1": "measured", "s2": "awaiting_cleaning", "s3": "segmented", "s4": "failed",
          "s5": "pending"}


class FakeEnsemble:
    """Stands in for :class:`vhi.model.inference.DiseaseRegionEnsemble` in
    :func:`vhi.api.segment`: the real bundle, no weights, the region = bright T1W voxels."""

    def __init__(self, bundle: str = DEFAULT_BUNDLE) -> None:
        self.bundle: Bundle = get_bundle(bundle)
        self.device = "cpu"

    def segment(self, t1w: np.ndarray) -> np.ndarray:
        return (t1w > (T1W_REGION + T1W_OUTSIDE) / 2).astype(np.uint8)


@dataclass(frozen=True)
class SyntheticCohort:
    """The cohort's folder, settings, plan (sorted by key) and the layout of its run."""

    root: Path
    settings: Settings
    plan: list[PlannedSession]
    layout: Layout
    designs: dict[str, SessionDesign | None] = field(default_factory=dict)

    def planned(self, session: str) -> PlannedSession:
        return next(p for p in self.plan if p.session.session == session)

    def plan_of(self, *sessions: str) -> list[PlannedSession]:
        return [self.planned(s) for s in sessions]

    def layout_with_results(self, results: Path) -> Layout:
        """This run's work and logs, with the tables written to ``results``."""
        return Layout(self.layout.work, self.layout.logs, str(results))

    def work_json(self, session: str, name: str) -> dict:
        return json.loads(self.layout.work_file(self.planned(session).session, name).read_text())


def _save(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, AFFINE), path)
    return str(path)


def write_cohort_files(root: Path) -> Path:
    """Scans, reader and cleaned masks and the sheet under ``root``; returns the sheet."""
    rows = []
    for session, (subject, timepoint, design, steps) in SESSIONS.items():
        scans = root / "scans"
        row = {"site": SITE, "subject": subject, "session": session, "timepoint": timepoint,
               "stir": "", "t1w": _save(scans / f"{session}_T1W.nii.gz", (design or SessionDesign()).t1w()),
               "normal_marrow": ""}
        if design is not None:
            row["normal_marrow"] = _save(scans / f"{session}_NM.nii.gz", design.reference())
            row["stir"] = (str(scans / f"{session}_<x>_STIR.nii.gz") if steps == "failed"
                           else _save(scans / f"{session}_STIR.nii.gz", design.stir()))
            if design.reader:
                _save(root / "readers" / f"{session}_R1.nii.gz", design.reader_mask())
            if design.cleaned:
                _save(root / "cleaned" / SITE / subject / f"{session}.nii.gz", design.cleaned_mask())
        rows.append(row)
    sheet = root / "sheet.csv"
    with sheet.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return sheet


@contextlib.contextmanager
def _logged_to(path: Path) -> Iterator[None]:
    """The step's log and printed output to ``path``, as the rule's ``> {log} 2>&1`` does
    (in the format vhi.cli.setup_logging gives stderr)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("vhi")
    with path.open("w") as fh, contextlib.redirect_stdout(fh):
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)


def run_step(cohort: SyntheticCohort, p: PlannedSession, step: str) -> int:
    """One step of one session, as its rule runs it; returns the exit status."""
    work = lambda name: str(cohort.layout.work_file(p.session, name))  # noqa: E731
    site = cohort.settings.site(p.session.site).source
    source = lambda operation: json.dumps(  # noqa: E731 - the rules' source_json
        source_class(site).spec_for(site, operation), sort_keys=True)
    session = json.dumps(p.session.to_dict(), sort_keys=True)
    pull = ["pull", "--source", source("fetch"), "--session", session]
    commands = {
        "pull_scans": [*pull, *(arg for role in p.pulled_roles()
                                for arg in ("--scan", f"{role}={work(f'{role}.nii.gz')}"))],
        "propose_lesions": [
            "propose", "--stir", work("stir.nii.gz"), "--disease-region", work("disease_region.nii.gz"),
            "--reference", work("reference.nii.gz") if p.reference == "manual" else "auto",
            "--reference-out", work("proposal_reference.nii.gz"), "--out", work("proposal.nii.gz"),
            "--scan", p.key],
        "push_proposal": ["push", "--source", source("push"), "--session", session, "--proposal",
                          work("proposal.nii.gz"), "--sidecar", work("proposal.json"),
                          "--out", work("pushed.json")],
        "measure_agreement": ["agreement", "--proposal", work("proposal.nii.gz"),
                              *(arg for name, path in p.reader_masks.items()
                                for arg in ("--reader", f"{name}={path}")),
                              "--scan", p.key, "--out", work("agreement.json")],
        "collect_cleaned": ["collect", "--source", source("cleaned"), "--session", session,
                            "--like", work("proposal.nii.gz"), "--out", work("cleaned.nii.gz"),
                            "--vhi-out", work("vhi.json"), "--qc-slices", work("qc_slices.npz"),
                            "--qc-out", work("qc_cleaned.png")],
        "draw_qc": ["qc", "--t1w", work("t1w.nii.gz"), "--disease-region", work("disease_region.nii.gz"),
                    *(["--stir", work("stir.nii.gz"), "--proposal", work("proposal.nii.gz")]
                      if p.has_stir else []),
                    "--scan", p.key, "--out", work("qc.png"), "--slices-out", work("qc_slices.npz")],
    }
    cohort.layout.session_dir(p.session).mkdir(parents=True, exist_ok=True)
    with _logged_to(cohort.layout.log_file(p.session, step)):
        if step == "segment_disease_region":  # vhi segment's api.segment, with the stand-in model
            api.segment(work("t1w.nii.gz"), work("disease_region.nii.gz"), ensemble=FakeEnsemble())
            return 0
        return main(["--no-progress", *commands[step]])


def run_session(cohort: SyntheticCohort, p: PlannedSession) -> str | None:
    """The session's jobs in pipeline order, up to the first failure, its QC image before
    the collection (which draws the cleaned one); returns the job (log) that failed, or None."""
    jobs = list(dict.fromkeys(step.log for step in p.steps()))
    jobs.insert(jobs.index("collect_cleaned") if "collect_cleaned" in jobs else len(jobs), "draw_qc")
    for job in jobs:
        if run_step(cohort, p, job) != 0:
            return job
    return None


def build_synthetic_cohort(root: Path) -> SyntheticCohort:
    """Write the cohort under ``root``, plan it, and take every session as far as
    :data:`SESSIONS` says (all its steps, until its STIR fails to pull, or none)."""
    sheet = write_cohort_files(root)
    source = {"type": "local", "root": str(root), "sheet": str(sheet), "outbox": str(root / "outbox"),
              "cleaned": "cleaned/{site}/{subject}/{session}.nii.gz",
              "reader_masks": {"R1": "readers/{session}_R1.nii.gz"}}
    settings = resolve_config({"timepoints": ["pre", "post"],
                               "sites": [{"name": SITE, "source": source}]})
    run = root / "run"
    cohort = SyntheticCohort(root, settings, plan_cohort(settings),
                             Layout(str(run / "work"), str(run / "logs"), str(run / "results")),
                             {s: design for s, (_, _, design, _) in SESSIONS.items()})
    for p in cohort.plan:
        how = SESSIONS[p.session.session][3]
        if how != "none":
            failed = run_session(cohort, p)
            expected = "pull_scans" if how == "failed" else None
            assert failed == expected, f"{p.key}: {failed} failed, expected {expected}"
    return cohort
