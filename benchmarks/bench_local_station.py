"""The local cleaning station (`vhi viewer --local`): load time per session, and the
display window it gives the public scans (printed, not a test).

    .venv/bin/python benchmarks/bench_local_station.py [--sessions 2 20]

Timing: N synthetic sessions the size of the public scans (336×336×25 int16 with a
scale factor, an oblique affine), each with a disease region and a proposal in its work
folder, are loaded into a fresh station (its own Orthanc): the first load (STIR series
and proposal SEG stored by STOW-RS), a second load (must send nothing) and a collect
(nothing saved yet) are timed.

Window: for each public scan with a normal-marrow mask, the window the station gives
(the disease region's P1..P99.9, raised to the upper threshold) against the whole
volume's range: where the normal marrow's Q3 and the lower threshold fall in each (0 =
black, 1 = white), and the share of the proposal's voxels that are white.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

from vhi.config.load import load_config_file
from vhi.method.lesions import find_thresholds
from vhi.settings import demo_data_dir
from vhi.viewer.local import LocalStation, oedema_window

SHAPE = (336, 336, 25)


def _affine() -> np.ndarray:
    angle = np.deg2rad(45)
    c, s = np.cos(angle), np.sin(angle)
    linear = np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]]) @ np.diag([-0.595, 0.595, 3.3])
    return np.vstack([np.column_stack([linear, [100.0, -50.0, 20.0]]), [0, 0, 0, 1]])


def _cohort(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    affine = _affine()
    region = np.zeros(SHAPE, np.uint8)
    region[80:256, 80:256, :] = 1
    proposal = np.zeros(SHAPE, np.uint16)
    proposal[150:170, 150:170, 8:14] = 1
    rows = []
    for i in range(n):
        session = f"S{i:04d}"
        stir = nib.Nifti1Image(rng.integers(0, 1200, SHAPE).astype(np.int16), affine)
        stir.header.set_slope_inter(2.0, 0.0)
        path = root / "scans" / f"{session}_STIR.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(stir, path)
        work = root / "run" / "work" / "B" / f"P{i:04d}" / session
        work.mkdir(parents=True)
        nib.save(nib.Nifti1Image(region, affine), work / "disease_region.nii.gz")
        nib.save(nib.Nifti1Image(proposal, affine), work / "proposal.nii.gz")
        (work / "proposal.json").write_text(json.dumps({"upper": 2000.0}))
        rows.append({"site": "B", "subject": f"P{i:04d}", "session": session, "timepoint": "pre",
                     "stir": str(path), "t1w": str(path), "normal_marrow": ""})
    with (root / "sheet.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"sites": [{"name": "B", "source": {
        "type": "local", "root": str(root), "sheet": str(root / "sheet.csv"),
        "outbox": str(root / "outbox")}}]}))
    return config


def timing(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="vhi-bench-station-") as tmp:
        root = Path(tmp)
        config = _cohort(root, n)
        here = Path.cwd()
        os.chdir(root / "run")
        try:
            with LocalStation(load_config_file(config), "B") as station:
                start = time.perf_counter()
                loaded = station.load()
                first = time.perf_counter() - start
                start = time.perf_counter()
                again = station.load()
                second = time.perf_counter() - start
                start = time.perf_counter()
                station.collect()
                collect = time.perf_counter() - start
        finally:
            os.chdir(here)
    assert all(o.action == "loaded" for o in loaded) and sum(o.sent for o in again) == 0
    print(f"{n:>5} sessions {SHAPE}: first load {first:6.1f} s ({first / n:.2f} s/session), "
          f"reload {second:5.1f} s (0 sent), collect {collect:5.1f} s")


def windows() -> None:
    data = demo_data_dir()
    if not (data / "normal_marrow").is_dir():
        print(f"(window table skipped: public data not found at {data})")
        return
    print("scan  window (C/W)          | station: Q3  lower  white | whole volume: Q3  lower")
    for stir_path in sorted((data / "stir").glob("*_STIR.nii.gz")):
        scan = stir_path.name.split("_")[0]
        region_path = data / "disease_region" / f"{scan}_disease_region.nii.gz"
        marrow_path = data / "normal_marrow" / f"{scan}_normal_marrow.nii.gz"
        if not (region_path.is_file() and marrow_path.is_file()):
            continue
        stir = nib.load(stir_path).get_fdata()
        region = nib.load(region_path).get_fdata() > 0
        reference = stir[nib.load(marrow_path).get_fdata() > 0]
        found = find_thresholds(reference, scan)
        lower, upper = found.lower, found.upper
        q3 = found.q3
        window = oedema_window(stir, region, upper)
        proposal = region & (stir >= lower)
        low, high = stir.min(), stir.max()

        def pos(v: float, a: float, b: float) -> float:
            return (v - a) / (b - a)

        print(f"{scan}  {window.low:5.0f}-{window.high:5.0f} ({window.center:4.0f}/{window.width:4.0f}) | "
              f"{pos(q3, window.low, window.high):12.2f} {pos(lower, window.low, window.high):6.2f} "
              f"{np.mean(stir[proposal] >= window.high):6.2f} | "
              f"{pos(q3, low, high):16.2f} {pos(lower, low, high):6.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[2, 20])
    args = parser.parse_args()
    for n in args.sessions:
        timing(n)
    windows()
    return 0


if __name__ == "__main__":
    sys.exit(main())
