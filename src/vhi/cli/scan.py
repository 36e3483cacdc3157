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
from vhi.fileio import sidecar_path
from vhi.model.bundles import DEFAULT_BUNDLE

log = logging.getLogger("vhi")


def cmd_segment(args: argparse.Namespace) -> int:
    """Every scan with one model load; a scan that fails is logged and the others go on.

    With ``--worker`` the model is not loaded here: the job's segmentation worker
    (:mod:`vhi.cli.worker`) holds it for every ``vhi segment`` process of the job or run.
    """
    if len(args.t1w) != len(args.out):
        raise InputError("--out", f"{len(args.t1w)} --t1w given but {len(args.out)} --out")
    started = datetime.now(UTC)
    scans = [(t1w, out) for t1w, out in zip(args.t1w, args.out, strict=True)
             if not (args.skip_existing and out.is_file() and sidecar_path(out).is_file())]
    if len(scans) < len(args.t1w):
        log.info("%d of %d scans already segmented: skipped", len(args.t1w) - len(scans),
                 len(args.t1w))
    if args.worker:
        from vhi.cli.worker import WorkerSpec, segment_with_worker

        spec = WorkerSpec(args.bundle, args.device, args.batch_size)

        def run(t1w: Path, out: Path) -> dict[str, Any]:
            answer = segment_with_worker(spec, t1w, out, started=started)
            log.info("served by segmentation worker pid %d on %s (scan %d of that worker; "
                     "ensemble loaded once in %.1f s)", answer["pid"], answer["device"],
                     answer["scans"], answer["load_s"])
            if note := answer.get("device_note"):
                log.log(logging.WARNING if "reserved" in note else logging.INFO, "%s", note)
            return answer["sidecar"]
    elif scans:
        ensemble = api.load_ensemble(args.bundle, device=args.device, batch_size=args.batch_size,
                                     progress=args.progress)

        def run(t1w: Path, out: Path) -> dict[str, Any]:
            return api.segment(t1w, out, ensemble=ensemble, started=started)
    failures = 0
    for t1w, out in scans:
        try:
            sidecar = run(t1w, out)
        except VhiError as exc:
            failures += 1
            log.error("%s", exc)
            continue
        log.info("%s: disease region %d voxels on %s -> %s", Path(t1w).name, sidecar["voxels"],
                 sidecar.get("device", "?"), out)
    return EXIT_INPUT if failures else 0


def cmd_segment_worker(args: argparse.Namespace) -> int:
    from vhi.cli.worker import WorkerSpec, serve

    return serve(args.socket, WorkerSpec(args.bundle, args.device, args.batch_size),
                 idle_s=args.idle_timeout)


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
    p.add_argument("--skip-existing", action="store_true",
                   help="leave scans whose mask and sidecar exist as they are")
    p.add_argument("--worker", action="store_true",
                   help="segment through this job's segmentation worker, which loads the "
                        "ensemble once for every vhi segment process of the job (started if "
                        "none runs; it exits when idle)")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("segment-worker",
                       help="serve segmentation requests with the ensemble loaded once "
                            "(started by vhi segment --worker)")
    p.add_argument("--socket", required=True, type=Path, help="Unix socket to listen on")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--bundle", default=DEFAULT_BUNDLE, help="model bundle name")
    p.add_argument("--batch-size", type=int, default=None, help="slices per forward pass")
    p.add_argument("--idle-timeout", type=float, default=30.0,
                   help="seconds without a request after which the worker exits")
    p.set_defaults(func=cmd_segment_worker)

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
