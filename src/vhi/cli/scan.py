"""``vhi segment | propose | measure | models``: the steps on one scan (:mod:`vhi.api`)."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vhi import api
from vhi.errors import EXIT_INPUT, InputError, VhiError
from vhi.model.bundles import DEFAULT_BUNDLE

log = logging.getLogger("vhi")


def cmd_segment(args: argparse.Namespace) -> int:
    """Every scan with one model load; a scan that fails is logged and the others go on."""
    if len(args.t1w) != len(args.out):
        raise InputError("--out", f"{len(args.t1w)} --t1w given but {len(args.out)} --out")
    started = datetime.now(UTC)
    ensemble = api.load_ensemble(args.bundle, device=args.device, batch_size=args.batch_size,
                                 progress=args.progress)
    failures = 0
    for t1w, out in zip(args.t1w, args.out, strict=True):
        try:
            sidecar = api.segment(t1w, out, ensemble=ensemble, started=started)
        except VhiError as exc:
            failures += 1
            log.error("%s", exc)
            continue
        log.info("%s: disease region %d voxels -> %s", Path(t1w).name, sidecar["voxels"], out)
    return EXIT_INPUT if failures else 0


def cmd_propose(args: argparse.Namespace) -> int:
    sidecar = api.propose(args.stir, args.disease_region, args.reference, args.out,
                          reference_out=args.reference_out, scan=args.scan)
    counts, t = sidecar["voxels"], sidecar["thresholds"]
    log.info("%s: lower %.4f upper %.4f (m %.2f): %d voxels (%d label 2), %.3f ml -> %s",
             sidecar["scan"], t["lower"], t["upper"], t["m"], counts["label_ge1"], counts["label2"],
             sidecar["proposal_ml"], args.out)
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    result = api.measure(args.mask, args.out)
    if args.json:
        print(json.dumps(result, indent=2))  # noqa: T201 - the command's output
    else:
        print(f"{result['vhi_ml']:.4f} ml  ({result['voxels']} voxels x "  # noqa: T201
              f"{result['voxel_volume_ml']:.7f} ml)  {result['mask']}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from vhi.model.bundles import BUNDLES

    for bundle in BUNDLES.values():
        print(json.dumps({**bundle.metadata(), "description": bundle.description,  # noqa: T201
                          "input_contract": bundle.input_contract,
                          "output_contract": bundle.output_contract,
                          "source": bundle.source}, indent=2))
    return 0


def register(sub: Any) -> None:
    """Add the per-scan sub-commands to the ``vhi`` parser's sub-parsers."""
    p = sub.add_parser("segment", help="disease region (iliac + sacral bone) from a T1W volume")
    p.add_argument("--t1w", action="append", required=True, type=Path,
                   help="T1W NIfTI; repeat with --out to segment many scans with one model load")
    p.add_argument("--out", action="append", required=True, type=Path, help="output mask NIfTI")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--bundle", default=DEFAULT_BUNDLE, help="model bundle name")
    p.add_argument("--batch-size", type=int, default=None, help="slices per forward pass")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("propose", help="lesion proposal (labels 0/1/2) from STIR thresholds")
    p.add_argument("--stir", required=True, type=Path, help="STIR NIfTI")
    p.add_argument("--disease-region", required=True, type=Path, help="disease-region mask")
    p.add_argument("--reference", required=True,
                   help="normal-marrow mask NIfTI, or 'auto' to estimate it from the STIR")
    p.add_argument("--reference-out", type=Path,
                   help="save the reference voxels used (the estimate with 'auto')")
    p.add_argument("--out", required=True, type=Path, help="output label NIfTI")
    p.add_argument("--scan", help="scan name used in messages and the sidecar")
    p.set_defaults(func=cmd_propose)

    p = sub.add_parser("measure", help="VHI in ml of a mask (voxels with label >= 1)")
    p.add_argument("--mask", required=True, type=Path)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", type=Path, help="also write the result with provenance to this JSON")
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser("models", help="list the model bundles and their contracts")
    p.set_defaults(func=cmd_models)
