"""Generated local-folder cohorts for workflow tests and the DAG benchmark."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml


def write_cohort(root: Path, n: int, *, cleaned: int = 0, t1w_only: int = 0,
                 missing_t1w: int = 0, reader_masks: bool = False, site: str = "s1") -> Path:
    """A generated cohort: a sheet of ``n`` sessions (two per subject, pre/post), the first
    ``cleaned`` with an (empty) cleaned mask in the documented layout; returns a config."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        subject, session = f"P{i // 2:04d}", f"S{i:05d}"
        has_stir = i >= t1w_only
        rows.append({"site": site, "subject": subject, "session": session,
                     "timepoint": "pre" if i % 2 == 0 else "post",
                     "stir": f"scans/{session}_STIR.nii.gz" if has_stir else "",
                     "t1w": "" if i < missing_t1w else f"scans/{session}_T1W.nii.gz",
                     "normal_marrow": f"scans/{session}_nm.nii.gz" if has_stir else ""})
        if has_stir and i - t1w_only < cleaned:
            mask = root / "cleaned" / site / subject / f"{session}.nii.gz"
            mask.parent.mkdir(parents=True, exist_ok=True)
            mask.touch()
            if reader_masks:
                reader = root / "readers" / f"{session}.nii.gz"
                reader.parent.mkdir(parents=True, exist_ok=True)
                reader.touch()
    sheet = root / "sheet.csv"
    with sheet.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    source = {"type": "local", "root": str(root), "sheet": str(sheet),
              "outbox": str(root / "outbox")}
    if reader_masks:
        source["reader_masks"] = {"R1": "readers/{session}.nii.gz"}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"sites": [{"name": site, "source": source}]}))
    return config
