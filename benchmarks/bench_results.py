"""`results/` for generated cohorts: the tables, the status and the report (printed, not a test).

    .venv/bin/python benchmarks/bench_results.py [--sessions 200 2000 10000]

For each size: the cohort of bench_dag (two sessions per subject, 10 % T1W only, half of the
STIR sessions cleaned, one reader), planned as the workflow plans it, and a `work/` as a
finished run leaves it (every step's marker file and the JSON sidecars the tables read, with
realistic content). Then `write_results` (what `build_cohort_tables` runs), timed whole and
by part: cohort table, status, agreement, change, report. Then the same with readers: a
readers database with every STIR session assigned (two readers, every tenth session
double-read), the cleaned sessions saved and their ``cleaned.json`` carrying ``cleaned_by``
and ``reads``: the status again (its reader columns), and ``reads.csv``/``readers.csv``.
Target ([hpc] issue): `results/` for 10,000 sessions in under 60 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from vhi.cohort.layout import Layout  # noqa: E402
from vhi.cohort.plan import plan_cohort  # noqa: E402
from vhi.config.load import load_config_file  # noqa: E402
from vhi.results import tables  # noqa: E402
from vhi.results.report import write_report  # noqa: E402
from vhi.results.status import status_table  # noqa: E402

from support.cohorts import write_cohort  # noqa: E402

MODEL = {"name": "sij_disease_region_unet", "version": "1.0.0",
         "sha256": {f"model_{i}.pt": "0" * 64 for i in (1, 2, 3)}}


def sidecars(i: int) -> dict[str, dict]:
    prov = {"software": {"version": "0.1.0"}, "finished": "2026-01-01T00:00:00+00:00"}
    voxels = 4000 + (i * 37) % 3000
    return {
        "t1w.json": {"source": {"uri": f"scans/S{i:05d}_T1W.nii.gz", "sha256": "1" * 64}},
        "stir.json": {"source": {"uri": f"scans/S{i:05d}_STIR.nii.gz", "sha256": "2" * 64}},
        "disease_region.json": {"model": MODEL, "device": "cpu", "voxels": 280000},
        "proposal.json": {"lower": 480.2 + i % 50, "upper": 900.0, "proposal_ml": voxels * 0.00117,
                          "voxels": {"label_ge1": voxels, "label2": voxels // 2},
                          "thresholds": {"q1": 300.0, "q3": 400.0, "iqr": 100.0, "m": 1.5,
                                         "n_reference": 5000},
                          "reference": {"mode": "manual"}, "provenance": prov},
        "cleaned.json": {"source": {"uri": f"cleaned/S{i:05d}.nii.gz", "sha256": "3" * 64},
                         "voxels": int(voxels * 0.95),
                         "vs_proposal": {"dice": 0.9, "removed_voxels": 300, "added_voxels": 0},
                         "cleaned_by": "A", "cleaned_at": "2026-01-03T00:00:00+00:00",
                         "reads": [{"reader": "A", "role": "first", "mask": "cleaned.nii.gz",
                                    "voxels": int(voxels * 0.95), "volume_ml": voxels * 0.0011,
                                    "saved_at": "2026-01-02T00:00:00+00:00", "sha256": "3" * 64,
                                    "voxels_removed": 300, "voxels_added": 0}],
                         "provenance": prov},
        "vhi.json": {"vhi_ml": voxels * 0.00117 * 0.95, "voxels": int(voxels * 0.95),
                     "voxel_volume_ml": 0.00117, "provenance": prov},
        "agreement.json": {"readers": {"R1": {"dice": 0.7, "volume_similarity": 0.9, "voxels_a": voxels,
                                              "voxels_b": voxels - 100, "voxels_both": voxels - 900,
                                              "ml_a": 1.0, "ml_b": 0.9, "path": "r", "sha256": "4" * 64}}},
        "pushed.json": {"source": "local", "files": {"proposal": {"uri": "outbox", "sha256": "6" * 64}},
                        "pushed_at": "2026-01-01T00:00:00+00:00"},
    }


def finished_work(plan, layout: Layout) -> None:
    """Every planned step's marker and the sidecars, as after a complete run."""
    for i, p in enumerate(plan):
        files = sidecars(i)
        for step in p.steps():
            path = layout.work_file(p.session, step.marker)
            path.parent.mkdir(parents=True, exist_ok=True)
            content = files.get(step.marker) or files.get(step.marker.replace(".nii.gz", ".json"))
            if step.marker.endswith(".json"):
                path.write_text(json.dumps(content or {}))
            else:
                path.touch()
                if content is not None:
                    layout.work_file(p.session, step.marker.replace(".nii.gz", ".json")).write_text(
                        json.dumps(content))
        for name in ("t1w.json", "stir.json") if p.has_stir else ("t1w.json",):
            layout.work_file(p.session, name).write_text(json.dumps(files[name]))


def readers_database(plan, layout: Layout) -> None:
    """Every STIR session assigned (A, B in turn; every tenth both), pushed, the cleaned
    ones saved by their first reader."""
    from vhi.readers.store import Assignment, ReadersStore, Save

    with ReadersStore.open(layout.work) as store, store.transaction():
        blob = store.put_blob(b"SEG")
        for i, p in enumerate(x for x in plan if x.has_stir):
            readers = ["A", "B"] if i % 10 == 0 else ["AB"[i % 2]]
            store.add_assignments([
                Assignment(p.key, p.session.site, r, role, "1.2", "/v", "2026-01-01T00:00:00Z",
                           "2026-01-15T00:00:00Z", "bench")
                for r, role in zip(readers, ("first", "second")[:len(readers)], strict=True)], by="bench")
            store.record_push(p.key, "2026-01-01T00:00:00Z", "p")
            if p.cleaned is not None:
                store.record_save(Save(p.key, readers[0], "2026-01-02T00:00:00Z", "1.2", "1.2.3", "1.2.3.4",
                                       "5" * 64, 3, blob, "p", "station"))


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def measure(n: int, tmp: Path) -> None:
    folder = tmp / f"n{n}"
    config = write_cohort(folder, n, cleaned=n // 2, t1w_only=n // 10, reader_masks=True, site="bench")
    settings = load_config_file(config)
    plan_s, plan = timed(lambda: plan_cohort(settings))
    run = folder / "run"
    layout = Layout(str(run / "work"), str(run / "logs"), str(run / "results"))
    finished_work(plan, layout)
    cohort_s, cohort = timed(lambda: tables.cohort_vhi_table(plan, layout))
    status_s, status = timed(lambda: status_table(plan, layout))
    agree_s, agreement = timed(lambda: tables.agreement_table(plan, layout))
    change = tables.change_table(cohort, settings.timepoints)
    report_s, _ = timed(lambda: write_report(
        tmp / f"report{n}.html", cohort=cohort, change=change, agreement=agreement, status=status,
        description=tables.dataset_description(plan), timepoints=settings.timepoints))
    total_s, _ = timed(lambda: tables.write_results(plan, layout, settings.timepoints))
    assert len(status) == n and len(cohort) == n // 2, (len(status), len(cohort))
    # with readers
    from vhi.config.load import ReaderConfig
    from vhi.readers.progress import Reading
    from vhi.results.readers import readers_table, reads_table

    readers_database(plan, layout)
    readers = (ReaderConfig("A", "", ("bench",)), ReaderConfig("B", "", ("bench",)))
    status_r_s, status = timed(lambda: status_table(plan, layout))
    reading = Reading.of_run(layout.work)
    tables_r_s, _ = timed(lambda: (reads_table(plan, layout, status, reading),
                                   readers_table(reading, readers)))
    total_r_s, _ = timed(lambda: tables.write_results(plan, layout, settings.timepoints, readers=readers))
    print(f"{n:>8} {plan_s:>6.1f} {cohort_s:>7.1f} {status_s:>7.1f} {agree_s:>6.1f} {report_s:>7.1f} "
          f"{total_s:>13.1f} {1000 * total_s / n:>10.2f} {status_r_s:>15.1f} {tables_r_s:>14.1f} "
          f"{total_r_s:>13.1f}")
    assert (status["readers"] != "").sum() == len([p for p in plan if p.has_stir])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[200, 2000])
    args = parser.parse_args()
    print(f"{'sessions':>8} {'plan':>6} {'cohort':>7} {'status':>7} {'agree':>6} {'report':>7} "
          f"{'write_results':>13} {'ms/session':>10} {'status+readers':>15} "
          f"{'reads+readers':>14} {'with readers':>13}")
    with tempfile.TemporaryDirectory(prefix="vhi_bench_results_") as tmp:
        for n in args.sessions:
            measure(n, Path(tmp))
    print("target: results/ for 10,000 sessions < 60 s (write_results column)")


if __name__ == "__main__":
    main()
