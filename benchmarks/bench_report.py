"""The report at scale: a generated results folder of N sessions, its size and the time the
browser takes to open it (printed and checked against the targets; not a test).

    .venv/bin/python benchmarks/bench_report.py [--sessions 10000] [--sites 8] [--keep DIR]

The folder: status, cohort VHI (70 % of the sessions measured), cohort change (two
timepoints per subject), agreement (four readers on 10 % of the measured sessions) as the
tables module makes them, and a QC image per session with a disease region under ``qc/``
(one real QC image, hard-linked: the page links every one of them). Then:

* ``write``: seconds to render and write ``report.html`` (:func:`vhi.results.report.write_report`);
* ``size``: the page's size; target < 15 MB (thumbnails are files, not inlined);
* ``load``: Debian's Chromium (Playwright) opening the page from disk, to its ``load``
  event (lazy thumbnails: those on screen); target < 5 s;
* ``filter`` / ``sort``: one site-and-state filter, one sort by VHI, in the page.

Exits non-zero when a target is missed. Figures are printed as value and ratio to target.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from vhi.results.qc import cut_slices, render_qc, write_png  # noqa: E402
from vhi.results.report import write_report  # noqa: E402
from vhi.results.status import COLUMNS as STATUS_COLUMNS  # noqa: E402
from vhi.results.tables import AGREEMENT_COLUMNS, VHI_COLUMNS, change_table  # noqa: E402

from support.browser import CHROMIUM, browser_context  # noqa: E402  (the tests' browser)

MAX_MB, MAX_LOAD_S = 15.0, 5.0
STATES = ["measured"] * 14 + ["awaiting_cleaning"] * 3 + ["failed", "segmented", "pending"]


def one_qc_png(dest: Path) -> None:
    rng = np.random.default_rng(1)
    shape = (200, 160, 12)
    region = np.zeros(shape, np.uint8)
    region[30:170, 20:140, :] = 1
    proposal = ((rng.random(shape) > 0.97) * region * rng.integers(1, 3, shape)).astype(np.uint8)
    t1w, stir = rng.normal(300, 40, shape), rng.normal(200, 60, shape)
    qc = cut_slices("site0/S00000/x00000", t1w=t1w, region=region, stir=stir, proposal=proposal,
                    img=nib.Nifti1Image(t1w.astype(np.float32), np.diag([-0.6, 0.6, 3.3, 1])))
    write_png(render_qc(qc, cleaned=proposal[:, :, qc.slices].transpose(2, 0, 1) > 0), dest)


def generate(folder: Path, n: int, n_sites: int) -> dict:
    rng = np.random.default_rng(0)
    status, cohort, agreement, images = [], [], [], {}
    png = folder / "one_qc.png"
    one_qc_png(png)
    for i in range(n):
        site, subject = f"site{i % n_sites}", f"S{i // 2:05d}"
        session, timepoint = f"x{i:05d}", ("pre", "post")[i % 2]
        state = STATES[int(rng.integers(len(STATES)))]
        ids = {"site": site, "subject": subject, "session": session, "timepoint": timepoint}
        reason = {"failed": f"session {site}/{subject}/{session}: STIR /data/{session}.nii.gz: "
                            "cannot read as NIfTI", "segmented": "T1W only: disease region only",
                  "pending": "pull_scans not run yet",
                  "awaiting_cleaning": "proposal pushed; no cleaned segmentation on the source yet"
                  }.get(state, "")
        status.append({**ids, "state": state, "reason": reason,
                       "step": "pull_scans" if state == "failed" else "",
                       "log": f"logs/{site}/{subject}/{session}/pull_scans.log"
                       if state == "failed" else ""})
        key = f"{site}/{subject}/{session}"
        if state != "pending":
            rel = Path("qc", site, subject, session, "qc.png")
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(png, folder / rel)
            images[key] = {"image": rel.as_posix()}
        if state == "measured":
            proposal = float(rng.lognormal(1.5, 0.8))
            vhi = proposal * float(rng.uniform(0.4, 1.0))
            cohort.append({**ids, "vhi_ml": vhi, "vhi_voxels": round(vhi * 850),
                           "proposal_ml": proposal, "dice_cleaned_vs_proposal": rng.uniform(0.5, 1),
                           "removed_voxels": int(rng.integers(0, 4000)), "added_voxels": 0,
                           "reference_mode": "manual"})
            if rng.random() < 0.1:
                for reader in ("R11", "R12", "R21", "R22"):
                    ml = vhi * float(rng.uniform(0.6, 1.4))
                    agreement.append({**ids, "reader": reader, "dice": rng.uniform(0.2, 0.8),
                                      "volume_similarity": rng.uniform(0.5, 1), "reader_ml": ml,
                                      "proposal_ml": proposal})
    cohort_df = pd.DataFrame(cohort, columns=VHI_COLUMNS)
    return {"cohort": cohort_df, "change": change_table(cohort_df, ["pre", "post"]),
            "agreement": pd.DataFrame(agreement, columns=AGREEMENT_COLUMNS),
            "status": pd.DataFrame(status, columns=STATUS_COLUMNS),
            "description": {"GeneratedBy": [{"Name": "vhi", "Version": "bench"}],
                            "Sites": sorted({r["site"] for r in status}), "Sessions": n},
            "timepoints": ["pre", "post"], "images": images}


def in_browser(report: Path) -> dict[str, float]:
    with browser_context() as context:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        start = time.perf_counter()
        page.goto(report.as_uri(), wait_until="load", timeout=120_000)
        load = time.perf_counter() - start
        start = time.perf_counter()
        page.select_option("#filter-site", "site1")
        page.select_option("#filter-state", "failed")
        shown = page.evaluate("[...document.querySelectorAll('#session-table tbody tr')]"
                              ".filter(r => !r.hidden).length")
        filtering = time.perf_counter() - start
        page.select_option("#filter-site", "")
        page.select_option("#filter-state", "")
        start = time.perf_counter()
        page.locator("#session-table th", has_text="VHI (ml)").click()
        page.evaluate("document.querySelector('#session-table tbody tr').dataset.key")
        sorting = time.perf_counter() - start
        if errors:
            raise SystemExit(f"errors in the page: {errors[:3]}")
    return {"load": load, "filter": filtering, "sort": sorting, "shown": shown}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="write the folder here (else a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        tables = generate(folder, args.sessions, args.sites)
        report = folder / "report.html"
        start = time.perf_counter()
        write_report(report, **tables)
        write = time.perf_counter() - start
        size_mb = report.stat().st_size / 1e6
        n = args.sessions
        print(f"report of {n} sessions at {args.sites} sites "
              f"({len(tables['cohort'])} measured, {len(tables['images'])} QC images linked)")
        print(f"  write   {write:7.2f} s")
        print(f"  size    {size_mb:7.2f} MB   ({size_mb / MAX_MB:.2f} of the {MAX_MB:g} MB target, "
              f"{report.stat().st_size / n:.0f} bytes per session)")
        ok = size_mb < MAX_MB
        if CHROMIUM is None:
            print("  load    (no system Chromium: not measured)")
        else:
            b = in_browser(report)
            print(f"  load    {b['load']:7.2f} s    ({b['load'] / MAX_LOAD_S:.2f} of the "
                  f"{MAX_LOAD_S:g} s target)")
            print(f"  filter  {b['filter']:7.2f} s    (site and state: {b['shown']} rows shown)")
            print(f"  sort    {b['sort']:7.2f} s    (by VHI)")
            ok = ok and b["load"] < MAX_LOAD_S
        print("targets met" if ok else "TARGET MISSED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
