"""``vhi sheet | plan | tables | status | xnat-plan | dicomweb-plan``: cohort-level commands.

``vhi sheet`` writes or checks a session sheet; ``vhi plan`` lists every site's sessions
and saves the plan file (:mod:`vhi.cohort.plan`); ``vhi tables`` rebuilds the cohort
tables and status from a config and the work folder; ``vhi status`` prints the sessions
per state and site (the code of ``status.csv``); ``vhi xnat-plan`` and
``vhi dicomweb-plan`` are the dry runs of the XNAT and DICOMweb sites' scan selection.
``plan``, ``tables`` and ``status`` read the saved plan and list the sites again only with
``--refresh`` or when none is saved, so ``status`` works with every server down.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from vhi.cohort.sheet import demo_sessions, read_sheet, write_sheet
from vhi.config.load import load_config_file
from vhi.errors import ConfigError
from vhi.fileio import save_json
from vhi.provenance import build_provenance

log = logging.getLogger("vhi")


# --------------------------------------------------------------------------- sheet
def cmd_sheet(args: argparse.Namespace) -> int:
    if args.check:
        sessions = read_sheet(args.check, args.site, args.root or Path(args.check).parent)
        log.info("%s: %d sessions, valid", args.check, len(sessions))
        return 0
    from vhi.settings import demo_data_dir

    sessions = demo_sessions(args.root or demo_data_dir(), args.site)
    write_sheet(sessions, args.out)
    log.info("%d demo sessions -> %s", len(sessions), args.out)
    return 0


# --------------------------------------------------------------------------- plan
def _plan_of(settings: Any, args: argparse.Namespace) -> Any:
    """``--plan PATH`` (a plan of this config's sites), else the saved listing of the
    config's sites, listed now only with ``--refresh`` or when none is saved."""
    from vhi.cohort.plan import load_plan, obtain_plan

    if getattr(args, "plan", None):
        return load_plan(args.plan, settings)
    return obtain_plan(settings, refresh=args.refresh)


def cmd_plan(args: argparse.Namespace) -> int:
    """List every site (or reuse the saved listing) and save it: the plan file the workflow
    (``plan: saved``), ``vhi status``, ``vhi tables`` and ``vhi viewer`` read."""
    import sys

    from vhi.cohort.plan import saved_plan_path

    settings = load_config_file(args.config)
    plan = _plan_of(settings, args)
    sys.stdout.write(f"{plan.describe()}\nplan: {saved_plan_path(settings)} ({len(plan.sessions)} "
                     f"sessions, {len(plan.skipped)} skipped, digest {plan.digest})\n")
    return 0


# --------------------------------------------------------------------------- tables
def cmd_tables(args: argparse.Namespace) -> int:
    from vhi.cohort.layout import Layout
    from vhi.results.tables import write_results

    settings = load_config_file(args.config)
    plan = _plan_of(settings, args)
    status = write_results(plan.sessions, Layout.from_settings(settings), settings.timepoints,
                           settings.bundle, viewer_url=settings.viewer_url, readers=settings.readers,
                           skipped=plan.skipped)
    counts = status["state"].value_counts().to_dict()
    log.info("status: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


# --------------------------------------------------------------------------- status
def cmd_status(args: argparse.Namespace) -> int:
    """Sessions per state and site, from ``work/`` and ``logs/`` as ``status.csv`` has them,
    with the plan's age, the run that holds the work folder and the state of ``results/``.
    Reads the saved plan: works with every server down."""
    import json
    import sys

    from vhi.cohort.layout import Layout
    from vhi.cohort.plan import saved_plan_path
    from vhi.cohort.run import active_run
    from vhi.cohort.run import summary as run_summary
    from vhi.results.status import (
        counts_summary,
        format_counts,
        format_notes,
        results_state,
        state_counts,
        status_table,
    )

    settings = load_config_file(args.config)
    layout = Layout.from_settings(settings)
    plan = _plan_of(settings, args)
    run = active_run(settings.work_dir)
    status = status_table(plan.sessions, layout, skipped=plan.skipped, run=run)
    counts = state_counts(status)
    sessions = status[SESSION_VIEW].to_dict("records") if args.sessions else None
    plan_info = {"file": str(args.plan or saved_plan_path(settings)), "created": plan.created,
                 "digest": plan.digest, "sites": {k: dict(v) for k, v in plan.sites.items()}}
    results = results_state(layout)
    if args.json:
        summary = {**counts_summary(counts), "plan": plan_info, "run": run_summary(run),
                   "results": results}
        sys.stdout.write(json.dumps({**summary, "sessions": sessions} if args.sessions else summary,
                                    indent=2) + "\n")
        return 0
    sys.stdout.write(format_counts(counts))
    overdue = status[status["overdue"].astype(bool)]
    if len(overdue):
        sys.stdout.write(f"{len(overdue)} session(s) overdue for cleaning: "
                         f"{', '.join(overdue['session'].astype(str).head(10))}"
                         f"{' ...' if len(overdue) > 10 else ''} (vhi status --sessions)\n")
    sys.stdout.write(format_notes(plan.describe(), run, results))
    if sessions is not None:
        from vhi.cli.output import text_table

        sys.stdout.write("\n" + text_table(sessions, SESSION_VIEW))
    return 0


#: What ``vhi status --sessions`` shows of each session's row of status.csv.
SESSION_VIEW = ["site", "subject", "session", "state", "readers", "cleaned_by", "cleaned_at", "due",
                "overdue"]


# --------------------------------------------------------------------------- xnat-plan, dicomweb-plan
def _selection_dry_run(args: argparse.Namespace, kind: str, name: str, unit: str) -> int:
    """Dry run of the ``kind`` sites: per session, which scans are picked or rejected and why."""
    from vhi.sources import make_source
    from vhi.sources.select import format_report

    settings = load_config_file(args.config)
    sites = [s for s in settings.sites if s.source.get("type") == kind
             and (not args.site or s.name in args.site)]
    if not sites:
        raise ConfigError(args.config, f"no {name} site" + (f" named {', '.join(args.site)}"
                                                            if args.site else ""))
    report, skipped = [], []
    for site in sites:
        source = make_source(site.source, site=site.name)
        for item in source.plan_sessions():
            log.info("%s", format_report(item.session.key, item.selection))
            report.append(item.report())
        skipped += [s.to_dict() for s in source.skipped()]
    if args.out:
        save_json({"sessions": report, "skipped": skipped,
                   "provenance": build_provenance(step=f"{kind}_plan")}, args.out)
    usable = sum(1 for r in report if {"stir", "t1w"} <= set(r["picked"]))
    log.info("%d %s, %d with a STIR and a T1W%s%s", len(report), unit, usable,
             f"; {len(skipped)} skipped" if skipped else "",
             f" (report: {args.out})" if args.out else "")
    return 0


def cmd_xnat_plan(args: argparse.Namespace) -> int:
    return _selection_dry_run(args, "xnat", "XNAT", "sessions")


def cmd_dicomweb_plan(args: argparse.Namespace) -> int:
    return _selection_dry_run(args, "dicomweb", "DICOMweb", "studies")


# --------------------------------------------------------------------------- parser
def register(sub: Any) -> None:
    """Add the cohort sub-commands to the ``vhi`` parser's sub-parsers."""
    p = sub.add_parser("sheet", help="write the demo cohort's session sheet, or check a sheet")
    p.add_argument("--root", type=Path, help="cohort folder (default: the shared demo data)")
    p.add_argument("--site", default="demo")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="write the demo sheet here")
    group.add_argument("--check", type=Path, help="validate this sheet")
    p.set_defaults(func=cmd_sheet)

    p = sub.add_parser("xnat-plan", help="dry run: the scans each XNAT session would use, and why")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--site", action="append", default=[], help="only this site (repeatable)")
    p.add_argument("--out", type=Path, help="also write the per-session selection report (JSON)")
    p.set_defaults(func=cmd_xnat_plan)

    p = sub.add_parser("dicomweb-plan",
                       help="dry run: the series each DICOMweb study would use, and why")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--site", action="append", default=[], help="only this site (repeatable)")
    p.add_argument("--out", type=Path, help="also write the per-study selection report (JSON)")
    p.set_defaults(func=cmd_dicomweb_plan)

    def plan_options(p: argparse.ArgumentParser, *, plan_file: bool = True) -> None:
        p.add_argument("--config", required=True, type=Path)
        refresh = p.add_mutually_exclusive_group()
        if plan_file:
            refresh.add_argument("--plan", type=Path,
                                 help="a plan file of this config's sites (default: the saved "
                                      "listing, work/.vhi/plans/)")
        refresh.add_argument("--refresh", action="store_true",
                             help="list every site again (and save the listing) instead of "
                                  "reading the saved listing")

    p = sub.add_parser("plan", help="list every site's sessions and save the plan file the "
                                    "workflow, status, tables and viewer read")
    plan_options(p, plan_file=False)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("tables", help="rebuild results/ (tables, status) from a config and work/")
    plan_options(p)
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("status", help="sessions per state and site (what status.csv says, now)")
    plan_options(p)
    p.add_argument("--json", action="store_true", help="JSON for scripts instead of a table")
    p.add_argument("--sessions", action="store_true",
                   help="also every session: state, readers, cleaned by and when, due, overdue")
    p.set_defaults(func=cmd_status)
