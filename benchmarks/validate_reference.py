"""Validate the automatic normal-marrow reference against the manual one on the public data.

    python benchmarks/validate_reference.py [--data-dir DIR] [--csv PATH]

Prints, per scan with a manual normal-marrow mask, the lower/upper thresholds from the
manual and the automatic reference, their relative differences, the proposal sizes
(label >= 1), Dice between the two proposals and Dice of each proposal against the four
reader masks (R11, R12, R21, R22); then the summary against the acceptance bars.
Reader aggregation: per scan the mean over the four reader masks, then the median over
scans. Exit status 1 when a bar is missed.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

from vhi.settings import demo_data_dir

from reference_validation import (
    BAR_MAX_LOWER_REL,
    BAR_MEDIAN_DICE_AUTO_VS_MANUAL,
    BAR_MEDIAN_LOWER_REL,
    BAR_READER_DICE_DROP,
    READERS,
    summarise,
    validate,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=demo_data_dir(),
                        help="the public bone-MRI data (default: $VHI_SHARED/data/bone_mri)")
    parser.add_argument("--csv", type=Path, help="also write the per-scan table here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not (args.data_dir / "normal_marrow").is_dir():
        print(f"no public data at {args.data_dir} (set VHI_SHARED or --data-dir)", file=sys.stderr)
        return 2

    rows = validate(args.data_dir)
    head = (f"{'scan':>5} {'lower man':>10} {'lower auto':>10} {'rel':>7} {'upper man':>10} "
            f"{'upper auto':>10} {'rel':>7} {'vox man':>8} {'vox auto':>8} {'Dice a/m':>8}  "
            + " ".join(f"{r + ' m/a':>11}" for r in READERS) + f"  {'mean m/a':>11}")
    print(head)
    print("-" * len(head))
    for r in rows:
        readers = " ".join(f"{r.reader_dice_manual[k]:.3f}/{r.reader_dice_auto[k]:.3f}"
                           for k in READERS)
        print(f"{r.scan:>5} {r.lower_manual:10.2f} {r.lower_auto:10.2f} {r.lower_rel_diff:+7.3f} "
              f"{r.upper_manual:10.2f} {r.upper_auto:10.2f} {r.upper_rel_diff:+7.3f} "
              f"{r.voxels_manual:8d} {r.voxels_auto:8d} {r.dice_auto_vs_manual:8.3f}  "
              f"{readers}  {r.reader_mean_manual:.3f}/{r.reader_mean_auto:.3f}")
    s = summarise(rows)
    ok = {True: "met", False: "NOT MET"}
    print()
    print(f"median |rel diff lower| {s['median_abs_lower_rel_diff']:.3f} "
          f"(bar <= {BAR_MEDIAN_LOWER_REL}): {ok[s['bars']['median_lower']]}")
    print(f"max |rel diff lower|    {s['max_abs_lower_rel_diff']:.3f} "
          f"(scan {s['max_abs_lower_rel_diff_scan']}, bar <= {BAR_MAX_LOWER_REL}): "
          f"{ok[s['bars']['max_lower']]}")
    print(f"median |rel diff upper| {s['median_abs_upper_rel_diff']:.3f} (no bar)")
    print(f"median Dice auto vs manual proposal {s['median_dice_auto_vs_manual']:.3f} "
          f"(bar >= {BAR_MEDIAN_DICE_AUTO_VS_MANUAL}): {ok[s['bars']['dice_auto_vs_manual']]}")
    print(f"median over scans of the mean Dice vs the 4 readers: manual "
          f"{s['median_reader_dice_manual']:.3f}, auto {s['median_reader_dice_auto']:.3f}, "
          f"difference {s['reader_dice_difference']:+.3f} (bar >= -{BAR_READER_DICE_DROP}): "
          f"{ok[s['bars']['reader_dice']]}")
    if args.csv:
        table = [r.as_row() for r in rows]
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
        print(f"table written to {args.csv}")
    return 0 if all(s["bars"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
