"""Cohort tables: a pure gather of the per-session files a run leaves in ``work/``.

* ``cohort_vhi`` – one row per measured (cleaned) session with the audit trail of its
  number: thresholds, proposal, model sha256, the cleaned file used, the source scans;
* ``cohort_change`` – per subject, VHI between consecutive timepoints;
* ``agreement`` – the proposal vs every reader mask that exists;
* ``status`` – every session's state (see :mod:`vhi.results.status`);
* ``reads``, ``readers`` and the worklists – the readers' work (:mod:`vhi.results.readers`).

``report.html`` is drawn from these same frames (:mod:`vhi.results.report`).

Column meanings are listed in docs/output.md.
"""

from __future__ import annotations

import itertools
import logging
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

import vhi
from vhi.cohort.layout import STEPS, Layout
from vhi.cohort.plan import PlannedSession
from vhi.config.load import ReaderConfig
from vhi.errors import InputError, VhiError
from vhi.fileio import atomic_path, read_json, save_json
from vhi.provenance import git_commit
from vhi.readers.progress import Reading, short_utc
from vhi.results.readers import WORKLISTS_DIR, readers_table, reads_table, write_worklists
from vhi.results.report import publish_qc_images, write_report
from vhi.results.status import STATES, status_table

log = logging.getLogger(__name__)

ID_COLUMNS = ["site", "subject", "session", "timepoint"]
VHI_COLUMNS = [
    *ID_COLUMNS, "vhi_ml", "vhi_voxels", "voxel_volume_ml",
    "proposal_ml", "proposal_voxels", "proposal_voxels_label2",
    "lower", "upper", "q1", "q3", "iqr", "m", "reference_voxels", "reference_mode",
    "dice_cleaned_vs_proposal", "removed_voxels", "added_voxels",
    "cleaned_uri", "cleaned_sha256", "cleaned_seg_uid", "cleaned_by", "cleaned_at",
    "stir_uri", "stir_sha256", "t1w_uri", "t1w_sha256",
    "model_bundle", "model_version", "model_sha256", "model_device", "vhi_version", "collected_at",
]
CHANGE_COLUMNS = [
    "site", "subject", "timepoint_from", "timepoint_to", "session_from", "session_to",
    "vhi_ml_from", "vhi_ml_to", "change_ml", "change_percent",
]
AGREEMENT_COLUMNS = [
    *ID_COLUMNS, "reader", "dice", "volume_similarity", "proposal_voxels", "reader_voxels",
    "both_voxels", "proposal_ml", "reader_ml", "reader_file", "reader_sha256",
]


def _get(data: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, Mapping) or key not in data:
            return None
        data = data[key]
    return data


def _ids(p: PlannedSession) -> dict[str, str]:
    s = p.session
    return {"site": s.site, "subject": s.subject, "session": s.session, "timepoint": s.timepoint}


def _sidecar(p: PlannedSession, layout: Layout, name: str) -> dict[str, Any]:
    step = next((s for s in STEPS.values() if s.marker == name), None)
    return read_json(layout.work_file(p.session, name), step.required if step else ())


def vhi_row(p: PlannedSession, layout: Layout) -> dict[str, Any]:
    """The cohort_vhi row of a measured session (its sidecars checked by the status)."""
    f = lambda name: _sidecar(p, layout, name)  # noqa: E731
    measured = f("vhi.json")
    proposal, cleaned, region = f("proposal.json"), f("cleaned.json"), f("disease_region.json")
    stir, t1w = f("stir.json"), f("t1w.json")
    thresholds = proposal.get("thresholds", {})
    # vhi segment writes its provenance at the top level of the sidecar
    model = region.get("model") or _get(region, "provenance", "model") or {}
    folds = model.get("sha256") or {}
    return {
        **_ids(p),
        "vhi_ml": measured.get("vhi_ml"),
        "vhi_voxels": measured.get("voxels"),
        "voxel_volume_ml": measured.get("voxel_volume_ml"),
        "proposal_ml": proposal.get("proposal_ml"),
        "proposal_voxels": _get(proposal, "voxels", "label_ge1"),
        "proposal_voxels_label2": _get(proposal, "voxels", "label2"),
        "lower": proposal.get("lower"),
        "upper": proposal.get("upper"),
        "q1": thresholds.get("q1"),
        "q3": thresholds.get("q3"),
        "iqr": thresholds.get("iqr"),
        "m": thresholds.get("m"),
        "reference_voxels": thresholds.get("n_reference"),
        "reference_mode": _get(proposal, "reference", "mode"),
        "dice_cleaned_vs_proposal": _get(cleaned, "vs_proposal", "dice"),
        "removed_voxels": _get(cleaned, "vs_proposal", "removed_voxels"),
        "added_voxels": _get(cleaned, "vs_proposal", "added_voxels"),
        "cleaned_uri": _get(cleaned, "source", "uri"),
        "cleaned_sha256": _get(cleaned, "source", "sha256"),
        "cleaned_seg_uid": _get(cleaned, "source", "seg_series_instance_uid"),
        "cleaned_by": cleaned.get("cleaned_by") or "",
        "cleaned_at": short_utc(str(cleaned["cleaned_at"])) if cleaned.get("cleaned_at") else "",
        "stir_uri": _get(stir, "source", "uri"),
        "stir_sha256": _get(stir, "source", "sha256"),
        "t1w_uri": _get(t1w, "source", "uri"),
        "t1w_sha256": _get(t1w, "source", "sha256"),
        "model_bundle": model.get("name"),
        "model_version": model.get("version"),
        "model_sha256": ";".join(f"{k}:{v}" for k, v in sorted(folds.items())) or None,
        "model_device": region.get("device") or _get(region, "provenance", "device"),
        "vhi_version": _get(measured, "provenance", "software", "version"),
        "collected_at": _get(cleaned, "provenance", "finished"),
    }


def _in_state(plan: Sequence[PlannedSession], status: pd.DataFrame,
              states: set[str]) -> list[PlannedSession]:
    keep = {f"{r.site}/{r.subject}/{r.session}" for r in status.itertuples() if r.state in states}
    return [p for p in plan if p.key in keep]


def cohort_vhi_table(plan: Sequence[PlannedSession], layout: Layout,
                     status: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per session the status says is measured (so the two never disagree)."""
    status = status_table(plan, layout) if status is None else status
    rows = [vhi_row(p, layout) for p in _in_state(plan, status, {"measured"})]
    return pd.DataFrame(rows, columns=VHI_COLUMNS)


def _timepoint_rank(order: Sequence[str]) -> Any:
    rank = {t: i for i, t in enumerate(order)}
    return lambda t: (rank.get(t, len(rank)), t)


def change_table(cohort: pd.DataFrame, timepoints: Sequence[str]) -> pd.DataFrame:
    """VHI change per subject between consecutive timepoints (in ``timepoints`` order)."""
    key = _timepoint_rank(timepoints)
    rows = []
    for (site, subject), group in cohort.groupby(["site", "subject"], sort=True):
        ordered = sorted(group.to_dict("records"), key=lambda r: (key(r["timepoint"]),
                                                                  r["session"]))
        for a, b in itertools.pairwise(ordered):
            change = b["vhi_ml"] - a["vhi_ml"]
            rows.append({
                "site": site, "subject": subject,
                "timepoint_from": a["timepoint"], "timepoint_to": b["timepoint"],
                "session_from": a["session"], "session_to": b["session"],
                "vhi_ml_from": a["vhi_ml"], "vhi_ml_to": b["vhi_ml"], "change_ml": change,
                "change_percent": 100.0 * change / a["vhi_ml"] if a["vhi_ml"] else None,
            })
    return pd.DataFrame(rows, columns=CHANGE_COLUMNS)


def agreement_table(plan: Sequence[PlannedSession], layout: Layout,
                    status: pd.DataFrame | None = None) -> pd.DataFrame:
    status = status_table(plan, layout) if status is None else status
    rows = []
    for p in _in_state(plan, status, set(STATES) - {"failed"}):
        if not p.reader_masks or not layout.work_file(p.session, "agreement.json").is_file():
            continue
        data = _sidecar(p, layout, "agreement.json")
        for reader, r in sorted(data.get("readers", {}).items()):
            rows.append({**_ids(p), "reader": reader, "dice": r.get("dice"),
                         "volume_similarity": r.get("volume_similarity"),
                         "proposal_voxels": r.get("voxels_a"), "reader_voxels": r.get("voxels_b"),
                         "both_voxels": r.get("voxels_both"), "proposal_ml": r.get("ml_a"),
                         "reader_ml": r.get("ml_b"), "reader_file": r.get("path"),
                         "reader_sha256": r.get("sha256")})
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def dataset_description(plan: Sequence[PlannedSession], bundle: str | None = None) -> dict[str, Any]:
    """BIDS-derivative-style description of the results folder."""
    return {
        "Name": "VHI cohort results",
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "vhi",
            "Version": vhi.__version__,
            "Description": "Volume of hyperintense inflammation (VHI) cohort workflow "
                           "(Snakemake); research use only, not for clinical decisions",
            "CodeURL": "https://github.com/c-hepburn/Bone_MRI (method)",
            **({"GitCommit": commit} if (commit := git_commit()) else {}),
        }],
        "ModelBundle": bundle,
        "Sites": sorted({p.session.site for p in plan}),
        "Sessions": len(plan),
        "GeneratedAt": datetime.now(UTC).isoformat(),
    }


def _write_csv(df: pd.DataFrame, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        df.to_csv(tmp, index=False)


def _write_parquet(df: pd.DataFrame, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        df.to_parquet(tmp, index=False)


def write_results(plan: Sequence[PlannedSession], layout: Layout, timepoints: Sequence[str],
                  bundle: str | None = None, *, partial: str | None = None,
                  require_complete: bool = False, viewer_url: str | None = None,
                  readers: Sequence[ReaderConfig] = (), now: Any = None) -> pd.DataFrame:
    """Write every file of the results folder (atomically) and return the status table.

    ``results/`` holds the results of a finished cohort only: every session measured, or
    as far as it can go (awaiting cleaning, T1W only). While a session has failed or not
    run yet, or when ``partial`` says why the run stopped, the files go to
    ``results/partial/`` and the report says so; ``require_complete`` (the workflow's
    final rule) raises instead. A complete write removes a stale ``results/partial/``.
    ``viewer_url``: where the cleaning station serves, for the report's links and the
    worklists; ``readers``: the config's readers (their table and worklists); ``now``: the
    moment due dates are judged against (default: now).
    """
    reading = Reading.of_run(layout.work, now)
    status = status_table(plan, layout, reading)
    unfinished = status[status["step"] != ""]
    if not unfinished.empty and partial is None:
        shown = "; ".join(f"{r.site}/{r.subject}/{r.session}: {r.reason}"
                          for r in unfinished.head(5).itertuples())
        if require_complete:
            raise InputError(f"{len(unfinished)} session(s)", f"not finished: {shown}")
        partial = f"{len(unfinished)} of {len(status)} sessions failed or not finished yet"
    dest = layout.partial() if partial is not None else layout
    if partial is None:
        shutil.rmtree(layout.partial().results, ignore_errors=True)
    cohort = cohort_vhi_table(plan, layout, status)
    change = change_table(cohort, timepoints)
    agreement = agreement_table(plan, layout, status)
    reads = reads_table(plan, layout, status, reading)
    reader_work = readers_table(reading, readers)
    description = dataset_description(plan, bundle)
    if partial is not None:
        description["Partial"] = partial
    _write_csv(cohort, dest.result("cohort_vhi"))
    _write_parquet(cohort, dest.result("cohort_vhi_parquet"))
    _write_csv(change, dest.result("cohort_change"))
    _write_csv(agreement, dest.result("agreement"))
    _write_csv(status, dest.result("status"))
    _write_csv(reads, dest.result("reads"))
    _write_csv(reader_work, dest.result("readers"))
    write_worklists(reading, readers, Path(dest.results, WORKLISTS_DIR), viewer_url)
    save_json(description, dest.result("description"))
    # last: the report is drawn from the same frames, after every table is safely written
    images = publish_qc_images(plan, dest)
    write_report(dest.result("report"), cohort=cohort, change=change, agreement=agreement,
                 status=status, description=description, timepoints=timepoints, images=images,
                 viewer_url=viewer_url, reads=reads, readers=reader_work)
    log.info("results: %d measured of %d sessions -> %s%s", len(cohort), len(plan), dest.results,
             " (partial)" if partial is not None else "")
    return status


def write_results_logged(plan: Sequence[PlannedSession], layout: Layout, settings: Any,
                         log_path: str | Path, *, after_failure: bool = False) -> None:
    """:func:`write_results` with the ``vhi`` log also going to ``log_path``.

    ``after_failure`` is the workflow's error handler: the tables are written from the
    sessions that finished, every failed session and its reason goes to stderr, and an
    error here is reported, not raised (the run has failed already).
    """
    import sys

    from vhi.readers.assign import assign_run

    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="a" if after_failure else "w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("vhi")
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    try:
        try:  # the sessions this run pushed get their readers (what follows reads them)
            assign_run(settings, plan, layout)
        except (VhiError, OSError) as exc:
            if not after_failure:
                raise
            log.error("could not assign readers after the failed run: %s", exc)
        partial = None
        if after_failure:
            partial = ("the run stopped before every session was finished: these results "
                       "hold the sessions that were; run the same command again to finish")
        status = write_results(plan, layout, settings.timepoints, settings.bundle,
                               partial=partial, require_complete=not after_failure,
                               viewer_url=settings.viewer_url, readers=settings.readers)
        if after_failure:
            failed = status[status["state"] == "failed"]
            for row in failed.itertuples():
                sys.stderr.write(f"VHI session {row.site}/{row.subject}/{row.session} failed in "
                                 f"{row.step}: {row.reason} (log: {row.log})\n")
            sys.stderr.write(f"VHI partial results (the sessions that finished) in "
                             f"{layout.partial().results}; {len(failed)} failed: see "
                             f"{layout.partial().result('status')}; fix them and run the same "
                             f"command again\n")
    except (OSError, ValueError, KeyError) as exc:
        if not after_failure:
            raise
        log.error("could not write the results after the failed run: %s", exc)
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()
