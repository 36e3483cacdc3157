"""``vhi pull | push | collect | agreement | qc | qc-cleaned``: the steps on one session
that the rules call (``collect --vhi-out --qc-out`` also measures the cleaned mask and
draws its QC image, in the same job).

Each acts on one session: its record and its source's spec come as JSON from the
workflow. Every output is written atomically; every error names the session.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from vhi import api
from vhi.cohort.ids import ROLE_NAMES, Session
from vhi.cohort.layout import STEPS
from vhi.errors import ConfigError, InputError
from vhi.fileio import atomic_path, read_json, save_json, sha256_file, sidecar_path
from vhi.imaging.nifti import grid_mismatch, load_image, load_mask
from vhi.method.measure import agreement
from vhi.provenance import build_provenance
from vhi.sources import Source, make_source
from vhi.sources.cleaning import BEFORE_KEYS, CleaningRecord, PushRecord, Read, Saved

log = logging.getLogger("vhi")


def _source_and_session(args: argparse.Namespace) -> tuple[Source, Session]:
    session = Session.from_json(args.session)
    try:
        spec = json.loads(args.source)
    except json.JSONDecodeError as exc:
        raise ConfigError("--source", f"not JSON ({exc})") from None
    return make_source(spec, site=session.site), session


def _image_info(img: Any) -> dict[str, Any]:
    return {"shape": list(img.shape[:3]),
            "zooms_mm": [float(z) for z in img.header.get_zooms()[:3]],
            "dtype": str(img.get_data_dtype())}


# --------------------------------------------------------------------------- pull
def cmd_pull(args: argparse.Namespace) -> int:
    """Fetch the session's scans in the order given (one job per session): each written
    with its sidecar before the next; a STIR must be on the grid of the T1W pulled first."""
    source, session = _source_and_session(args)
    roles = [role for role, _ in args.scan]
    if len(set(roles)) != len(roles):
        raise ConfigError("--scan", f"a role is given twice: {', '.join(roles)}")
    grid = None
    for role, out in args.scan:
        img = _pull_one(source, session, role, out, grid if role == "stir" else None)
        if role == "t1w":
            grid = img
    return 0


def _pull_one(source: Source, session: Session, role: str, out: Path, grid: Any) -> Any:
    started = datetime.now(UTC)
    name = ROLE_NAMES.get(role, role)
    with atomic_path(out) as tmp:
        info = source.fetch_scan(session, role, tmp)
        try:
            volume = load_mask(tmp) if role == "reference" else load_image(tmp)
        except InputError as exc:
            raise InputError(f"session {session.key}", f"{name} {info['uri']}: {exc.cause}") from None
        if grid is not None:
            why = grid_mismatch(grid, volume.img)
            if why:
                raise InputError(f"session {session.key}",
                                 f"{name} {info['uri']} is not on the T1W's voxel grid: {why}")
    save_json({
        "session": session.to_dict(),
        "role": role,
        "source": info,
        "image": _image_info(volume.img),
        "provenance": build_provenance(step="pull_scans", started=started, extra={
            "output": str(out)}),
    }, sidecar_path(out))
    log.info("%s: %s %s -> %s", session.key, name, info["uri"], out)
    return volume.img


# --------------------------------------------------------------------------- push
def cmd_push(args: argparse.Namespace) -> int:
    source, session = _source_and_session(args)
    files = {"proposal": Path(args.proposal), "sidecar": Path(args.sidecar)}
    # nothing broken reaches the radiologist: the proposal must read as labels 0/1/2 and
    # its sidecar must be the propose step's record
    read_json(files["sidecar"], STEPS["proposal.json"].required)
    labels = set(np.unique(load_mask(files["proposal"]).data).astype(int).tolist())
    if not labels <= {0, 1, 2}:
        raise InputError(files["proposal"], f"session {session.key}: labels {sorted(labels)} are "
                                            "not a lesion proposal's (0, 1, 2)")
    # The previous receipt outlives the run's deletion of pushed.json in its history copy:
    # an unchanged proposal keeps what its cleaning is measured against.
    history = Path(args.out).with_suffix(".history.json")
    context = {"history": history} if history.is_file() else {}
    if args.stir_sidecar:
        context["stir"] = Path(args.stir_sidecar)
    receipt = source.push_proposal(session, files, context)
    save_json(receipt, args.out)
    if any(key in receipt for key in BEFORE_KEYS):  # a source that measures cleanings against its pushes
        save_json(receipt, history)
    log.info("%s: proposal pushed (%s)", session.key,
             ", ".join(f["uri"] for f in receipt.get("files", {}).values()))
    return 0


# --------------------------------------------------------------------------- collect
def cmd_collect(args: argparse.Namespace) -> int:
    """Collect the session's cleaning: every read the one rule picks (vhi.sources.cleaning;
    the first is the mask the VHI comes from, ``--out``; another reader's of a double read
    beside it as ``cleaned_<reader>.nii.gz``), or the file at a folder's cleaned path."""
    if bool(args.qc_out) != bool(args.qc_slices):
        raise ConfigError("--qc-out", "--qc-out and --qc-slices go together")
    source, session = _source_and_session(args)
    started = datetime.now(UTC)
    proposal = load_mask(args.like)
    context = {"like": Path(args.like)}
    for key, path in (("receipt", args.receipt), ("stir", args.stir_sidecar)):
        if path:
            context[key] = Path(path)
    receipt = read_json(args.receipt) if args.receipt else None
    saves = source.cleaning_saves(session, receipt) if receipt is not None else None
    if saves is None:  # a folder's cleaned path
        info, cleaned = _collect_one(session, proposal, Path(args.out),
                                     lambda tmp: source.fetch_cleaned(session, tmp, context))
        reads = [(Read(str(info.get("reader") or ""), "", Saved(info["uri"], "local", info["uri"],
                                                                 saved_at=str(info.get("saved_at") or ""))),
                  Path(args.out), info, cleaned)]
    else:
        record = CleaningRecord.of_run(args.work_dir, {session.site: args.vhi_role}) if args.work_dir \
            else CleaningRecord(vhi_roles={session.site: args.vhi_role})
        cleaning = record.cleaning(session.key, session.site, PushRecord.from_receipt(receipt), saves)
        if not cleaning.reads:
            raise InputError(f"session {session.key}",
                             cleaning.pending or "no cleaned segmentation on the source (yet)")
        reads = []
        for n, read in enumerate(cleaning.reads):
            dest = Path(args.out) if n == 0 else Path(args.out).with_name(f"cleaned_{read.reader}.nii.gz")
            info, cleaned = _collect_one(session, proposal, dest, lambda tmp, r=read: source.read_cleaning(
                session, r.saved, tmp, context, data=record.data_of(r.saved)))
            reads.append((read, dest, info, cleaned))
    _, _, info, cleaned = reads[0]
    cleaned = replace(cleaned, path=Path(args.out))  # measured and drawn below as read
    labels = sorted(int(v) for v in np.unique(cleaned.data))
    vs = agreement(proposal.data >= 1, cleaned.data > 0, cleaned.voxel_volume_ml)
    entries = [_read_entry(read, dest, one, mask, proposal) for read, dest, one, mask in reads]
    save_json({
        "session": session.to_dict(),
        "source": info,
        "labels": labels,
        "voxels": vs.voxels_b,
        "voxel_volume_ml": cleaned.voxel_volume_ml,
        "vs_proposal": {"dice": vs.dice, "proposal_voxels": vs.voxels_a,
                        "kept_voxels": vs.voxels_both, "removed_voxels": vs.voxels_a - vs.voxels_both,
                        "added_voxels": vs.voxels_b - vs.voxels_both},
        "cleaned_by": entries[0]["reader"], "cleaned_at": entries[0]["saved_at"],
        "reads": entries,
        "provenance": build_provenance(step="collect_cleaned", inputs={"proposal": args.like},
                                       started=started, extra={"output": str(args.out)}),
    }, sidecar_path(args.out))
    log.info("%s: cleaned segmentation %s%s: %d voxels (Dice %.3f with the proposal)", session.key,
             info["uri"], f" by {entries[0]['reader']}" if entries[0]["reader"] else "", vs.voxels_b, vs.dice)
    if args.vhi_out:  # the measurement is cheap: the same job (vhi measure's api.measure)
        result = api.measure(cleaned, args.vhi_out)
        log.info("%s: VHI %.3f ml (%d voxels) -> %s", session.key, result["vhi_ml"],
                 result["voxels"], args.vhi_out)
    if args.qc_out:  # and the QC image again, with the cleaned mask (vhi qc-cleaned)
        from vhi.results.qc import draw_cleaned_qc

        draw_cleaned_qc(args.qc_slices, cleaned, args.qc_out)
        log.info("%s: QC image with the cleaned mask -> %s", session.key, args.qc_out)
    return 0


def _collect_one(session: Session, proposal: Any, dest: Path, fetch: Any) -> tuple[dict[str, Any], Any]:
    """Write one cleaned mask atomically with ``fetch(tmp)``; it must be on the proposal's grid."""
    with atomic_path(dest) as tmp:
        info = fetch(tmp)
        if info is None:
            raise InputError(f"session {session.key}", "no cleaned segmentation on the source (yet)")
        try:
            cleaned = load_mask(tmp)
        except InputError as exc:
            raise InputError(f"session {session.key}",
                             f"cleaned segmentation {info['uri']}: {exc.cause}") from None
        why = grid_mismatch(proposal.img, cleaned.img)
        if why:
            raise InputError(f"session {session.key}", f"cleaned segmentation {info['uri']} is "
                             f"not on the proposal's (STIR) grid: {why}")
    return info, replace(cleaned, path=dest)


def _read_entry(read: Read, dest: Path, info: dict[str, Any], cleaned: Any, proposal: Any) -> dict[str, Any]:
    """One reader's mask as cleaned.json's ``reads`` lists it (vhi.readers.progress reads it)."""
    vs = agreement(proposal.data >= 1, cleaned.data > 0, cleaned.voxel_volume_ml)
    return {"reader": read.reader, "role": read.role, "mask": dest.name, "voxels": vs.voxels_b,
            "volume_ml": vs.voxels_b * cleaned.voxel_volume_ml, "saved_at": _saved_at(read, info),
            "sha256": str(info.get("sha256", "")), "uri": str(info["uri"]),
            "voxels_removed": vs.voxels_a - vs.voxels_both, "voxels_added": vs.voxels_b - vs.voxels_both,
            "by_assignment": read.by_assignment}


def _saved_at(read: Read, info: dict[str, Any]) -> str:
    """When the read was saved: the station's record, else the source's own date (a DICOM
    content date and time, or XNAT's insert date), as ISO-8601; "" when unknown."""
    if read.saved.saved_at:
        return read.saved.saved_at
    text = str(info.get("when") or info.get("insert_date") or "")
    try:
        if len(text) >= 14 and text[:14].isdigit():
            return datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC).isoformat()
        return datetime.fromisoformat(text).isoformat() if text else ""
    except ValueError:
        return ""


# --------------------------------------------------------------------------- agreement
def _reader_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def cmd_agreement(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    proposal = load_mask(args.proposal)
    readers: dict[str, Any] = {}
    for name, path in args.reader:
        mask = load_mask(path)
        why = grid_mismatch(proposal.img, mask.img)
        if why:
            raise InputError(path, f"{args.scan}: reader {name}'s mask is not on the "
                                   f"proposal's grid: {why}")
        result = agreement(proposal.data >= 1, mask.data > 0, proposal.voxel_volume_ml)
        readers[name] = {"path": str(path), "sha256": sha256_file(path), **result.as_dict()}
        log.info("%s: proposal vs %s: Dice %.3f (%d vs %d voxels)", args.scan, name,
                 result.dice, result.voxels_a, result.voxels_b)
    save_json({"scan": args.scan, "proposal": str(args.proposal), "readers": readers,
               "provenance": build_provenance(step="measure_agreement",
                                              inputs={"proposal": args.proposal},
                                              started=started)}, args.out)
    return 0


# --------------------------------------------------------------------------- qc
def cmd_qc(args: argparse.Namespace) -> int:
    from vhi.results.qc import draw_session_qc

    qc = draw_session_qc(args.scan, t1w=args.t1w, region=args.disease_region, stir=args.stir,
                         proposal=args.proposal, out=args.out, slices_out=args.slices_out)
    log.info("%s: QC image of %s slices %s -> %s", args.scan, qc.modality,
             ", ".join(str(int(k)) for k in qc.slices), args.out)
    return 0


def cmd_qc_cleaned(args: argparse.Namespace) -> int:
    from vhi.results.qc import draw_cleaned_qc

    draw_cleaned_qc(args.slices, args.cleaned, args.out)
    log.info("QC image with the cleaned mask %s -> %s", args.cleaned, args.out)
    return 0


# --------------------------------------------------------------------------- parser
def _scan_arg(text: str) -> tuple[str, Path]:
    role, sep, path = text.partition("=")
    if not sep or role not in ROLE_NAMES or not path:
        raise argparse.ArgumentTypeError(
            f"expected ROLE=PATH with ROLE one of {', '.join(ROLE_NAMES)}, got {text!r}")
    return role, Path(path)


def register(sub: Any) -> None:
    """Add the per-session sub-commands to the ``vhi`` parser's sub-parsers."""
    source_help = "the site's source spec as JSON (written by the workflow)"
    session_help = "the session record as JSON (written by the workflow)"

    p = sub.add_parser("pull", help="fetch scans of a session from its source into NIfTI")
    p.add_argument("--source", required=True, help=source_help)
    p.add_argument("--session", required=True, help=session_help)
    p.add_argument("--scan", required=True, action="append", type=_scan_arg, metavar="ROLE=PATH",
                   help="a scan to fetch (stir, t1w, reference) and the NIfTI to write it to "
                        "(+ sidecar JSON); repeatable, fetched in order; a STIR is checked "
                        "against the grid of a T1W given before it")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("push", help="push a proposal to the session's source for cleaning")
    p.add_argument("--source", required=True, help=source_help)
    p.add_argument("--session", required=True, help=session_help)
    p.add_argument("--proposal", required=True, type=Path)
    p.add_argument("--sidecar", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="receipt JSON")
    p.add_argument("--stir-sidecar", type=Path, help="the STIR's pull sidecar (its kept DICOM headers)")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("collect", help="fetch the cleaned segmentation of a session")
    p.add_argument("--source", required=True, help=source_help)
    p.add_argument("--session", required=True, help=session_help)
    p.add_argument("--like", required=True, type=Path,
                   help="the proposal: the cleaned mask must be on its grid")
    p.add_argument("--out", required=True, type=Path, help="cleaned NIfTI (+ sidecar JSON)")
    p.add_argument("--receipt", type=Path, help="the push receipt (pushed.json)")
    p.add_argument("--vhi-out", type=Path, help="also measure VHI on it (JSON, as vhi measure --out)")
    p.add_argument("--qc-slices", type=Path, help="qc_slices.npz of `vhi qc` (with --qc-out)")
    p.add_argument("--qc-out", type=Path, help="also draw the QC image with the cleaned mask "
                                               "(PNG, as vhi qc-cleaned)")
    p.add_argument("--stir-sidecar", type=Path, help="the STIR's pull sidecar (its kept DICOM headers)")
    p.add_argument("--work-dir", type=Path, help="the run's work folder (its readers database: the "
                                                 "station's saves and the assignments)")
    p.add_argument("--vhi-role", choices=["first", "second"], default="first",
                   help="the reader whose mask gives a double read's VHI (the site's double_read_vhi)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("agreement", help="Dice and volumes of a proposal vs reader masks")
    p.add_argument("--proposal", required=True, type=Path)
    p.add_argument("--reader", action="append", default=[], type=_reader_arg,
                   metavar="NAME=PATH", help="a reader's mask (repeatable)")
    p.add_argument("--scan", default="scan", help="name used in messages")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_agreement)

    p = sub.add_parser("qc", help="QC image of a session: the slices with the most proposal voxels")
    p.add_argument("--t1w", required=True, type=Path)
    p.add_argument("--disease-region", required=True, type=Path)
    p.add_argument("--stir", type=Path, help="absent for a T1W-only session")
    p.add_argument("--proposal", type=Path, help="the proposal's labels (with --stir)")
    p.add_argument("--scan", default="scan", help="the session's name on the image")
    p.add_argument("--out", required=True, type=Path, help="PNG to write")
    p.add_argument("--slices-out", required=True, type=Path,
                   help="the slices shown, for the QC image after collection (npz)")
    p.set_defaults(func=cmd_qc)

    p = sub.add_parser("qc-cleaned", help="the QC image again, with the cleaned mask")
    p.add_argument("--slices", required=True, type=Path, help="qc_slices.npz of `vhi qc`")
    p.add_argument("--cleaned", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="PNG to write")
    p.set_defaults(func=cmd_qc_cleaned)
