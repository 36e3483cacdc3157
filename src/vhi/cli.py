"""The ``vhi`` command.

Every sub-command reads its inputs, checks them (a bad input is an error naming the
file and the cause, exit status 2), and writes each output atomically with a JSON
sidecar from :func:`vhi.provenance.build_provenance`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import vhi
from vhi.errors import InputError, VhiError
from vhi.imaging import (
    Volume,
    load_image,
    load_mask,
    require_same_grid,
    save_json,
    save_nifti,
    sidecar_path,
)
from vhi.provenance import build_provenance

log = logging.getLogger("vhi")

EXIT_INPUT = 2

Command = Callable[[argparse.Namespace], int]


def _progress_default() -> bool:
    """Progress bars on an interactive terminal unless VHI_NO_PROGRESS is set (HPC logs)."""
    return sys.stderr.isatty() and not os.environ.get("VHI_NO_PROGRESS")


# --------------------------------------------------------------------------- segment
def cmd_segment(args: argparse.Namespace) -> int:
    from vhi.model import DiseaseRegionEnsemble

    if len(args.t1w) != len(args.out):
        raise InputError("--out", f"{len(args.t1w)} --t1w given but {len(args.out)} --out")
    started = datetime.now(UTC)
    ensemble = DiseaseRegionEnsemble(args.bundle, device=args.device, batch_size=args.batch_size,
                                     progress=args.progress)
    failures = 0
    for t1w_path, out in zip(args.t1w, args.out, strict=True):
        try:
            t1w = load_image(t1w_path)
            mask = ensemble.segment(t1w.data)
        except (VhiError, ValueError) as exc:
            failures += 1
            log.error("%s", exc if isinstance(exc, VhiError) else InputError(t1w_path, str(exc)))
            continue
        voxels = int(mask.sum())
        save_nifti(mask, t1w.img, out, dtype=np.uint8)
        save_json(build_provenance(
            step="segment_disease_region", inputs={"t1w": t1w.path},
            model=ensemble.bundle.metadata(), device=str(ensemble.device), started=started,
            extra={"output": str(out), "voxels": voxels,
                   "ml": voxels * t1w.voxel_volume_ml}), sidecar_path(out))
        log.info("%s: disease region %d voxels -> %s", t1w.path.name, voxels, out)
    return EXIT_INPUT if failures else 0


# --------------------------------------------------------------------------- propose
def _nonempty_mask(path: str, stir: Volume) -> Volume:
    mask = load_mask(path)
    require_same_grid(stir, mask)
    if not np.any(mask.data == 1):
        raise InputError(mask.path, "mask holds no voxels (no value 1)")
    return mask


def cmd_propose(args: argparse.Namespace) -> int:
    from vhi.lesions import propose

    started = datetime.now(UTC)
    stir = load_image(args.stir)
    scan = args.scan or stir.path.name
    disease_region = _nonempty_mask(args.disease_region, stir).data == 1
    inputs: dict[str, str | os.PathLike[str]] = {"stir": stir.path,
                                                  "disease_region": args.disease_region}
    reference_info: dict[str, object]
    if args.reference == "auto":
        from vhi.reference import auto_reference

        auto = auto_reference(stir.data, disease_region, scan)
        reference = auto.mask
        reference_info = {"mode": "auto", "stats": auto.stats}
    else:
        reference = _nonempty_mask(args.reference, stir).data == 1
        inputs["reference"] = args.reference
        reference_info = {"mode": "manual", "path": str(args.reference)}
    proposal = propose(stir.data, disease_region, reference, scan)
    if args.reference_out:
        save_nifti(reference, stir.img, args.reference_out, dtype=np.uint8)
    counts = proposal.counts
    t = proposal.thresholds
    sidecar = {
        "scan": scan,
        "lower": t.lower,
        "upper": t.upper,
        "thresholds": t.as_dict(),
        "reference": reference_info,
        "voxels": counts,
        "voxel_volume_ml": stir.voxel_volume_ml,
        "proposal_ml": counts["label_ge1"] * stir.voxel_volume_ml,
        "provenance": build_provenance(step="propose_lesions", inputs=inputs, started=started),
    }
    save_nifti(proposal.labels, stir.img, args.out, dtype=np.uint8)
    save_json(sidecar, sidecar_path(args.out))
    log.info("%s: lower %.4f upper %.4f (m %.2f): %d voxels (%d label 2), %.3f ml -> %s", scan,
             t.lower, t.upper, t.m, counts["label_ge1"], counts["label2"], sidecar["proposal_ml"],
             args.out)
    return 0


# --------------------------------------------------------------------------- measure
def cmd_measure(args: argparse.Namespace) -> int:
    from vhi.measure import vhi_ml

    mask = load_mask(args.mask)
    voxels = int(np.count_nonzero(mask.data))
    result = {
        "mask": str(mask.path),
        "voxels": voxels,
        "voxel_volume_ml": mask.voxel_volume_ml,
        "vhi_ml": vhi_ml(mask.data, mask.voxel_volume_ml),
    }
    if args.out:
        save_json({**result, "provenance": build_provenance(step="measure_vhi",
                                                            inputs={"mask": mask.path})}, args.out)
    if args.json:
        print(json.dumps(result, indent=2))  # noqa: T201 - the command's output
    else:
        print(f"{result['vhi_ml']:.4f} ml  ({voxels} voxels x "  # noqa: T201
              f"{result['voxel_volume_ml']:.7f} ml)  {mask.path}")
    return 0


# --------------------------------------------------------------------------- models
def cmd_models(args: argparse.Namespace) -> int:
    from vhi.model import BUNDLES

    for bundle in BUNDLES.values():
        print(json.dumps({**bundle.metadata(), "description": bundle.description,  # noqa: T201
                          "input_contract": bundle.input_contract,
                          "output_contract": bundle.output_contract,
                          "source": bundle.source}, indent=2))
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vhi", description="Volume of hyperintense inflammation (VHI) from STIR MRI of the "
                                "sacroiliac joints. Research use only, not for clinical decisions.")
    parser.add_argument("--version", action="version", version=f"vhi {vhi.__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true",
                          default=_progress_default(), help="show progress bars")
    progress.add_argument("--no-progress", dest="progress", action="store_false",
                          help="no progress bars (default when not on a terminal or with "
                               "VHI_NO_PROGRESS set)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("segment", help="disease region (iliac + sacral bone) from a T1W volume")
    p.add_argument("--t1w", action="append", required=True, type=Path,
                   help="T1W NIfTI; repeat with --out to segment many scans with one model load")
    p.add_argument("--out", action="append", required=True, type=Path, help="output mask NIfTI")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--bundle", default="sij_disease_region_unet", help="model bundle name")
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
    from vhi.cli_cohort import register
    register(sub)
    return parser


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return args.func(args)
    except VhiError as exc:
        log.error("%s", exc)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
