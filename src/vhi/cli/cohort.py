"""``vhi sheet | tables | status | xnat-plan | dicomweb-plan``: cohort-level commands.

``vhi sheet`` writes or checks a session sheet; ``vhi tables`` rebuilds the cohort
tables and status from a config and the work folder; ``vhi status`` prints the sessions
per state and site (the code of ``status.csv``); ``vhi xnat-plan`` and
``vhi dicomweb-plan`` are the dry runs of the XNAT and DICOMweb sites' scan selection.
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


# --------------------------------------------------------------------------- tables
def _saved_or_new_plan(settings: Any, args: argparse.Namespace) -> list[Any]:
    """The plan of the last run (or ``--plan``), unless ``--refresh`` or no run has saved
    one: then every source is asked again."""
    from vhi.cohort.plan import load_latest_plan, load_plan, plan_cohort

    plan = None if args.refresh else (load_plan(args.plan) if args.plan
                                      else load_latest_plan(settings.work_dir))
    if plan is None:
        return plan_cohort(settings)
    log.info("using the saved plan of the last run in %s (--refresh asks the sources again)",
             settings.work_dir)
    return plan


def cmd_tables(args: argparse.Namespace) -> int:
    from vhi.cohort.layout import Layout
    from vhi.results.tables import write_results

    settings = load_config_file(args.config)
    plan = _saved_or_new_plan(settings, args)
    status = write_results(plan, Layout.from_settings(settings), settings.timepoints, settings.bundle,
                           viewer_url=settings.viewer_url, readers=settings.readers)
    counts = status["state"].value_counts().to_dict()
    log.info("status: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


# --------------------------------------------------------------------------- status
def cmd_status(args: argparse.Namespace) -> int:
    """Sessions per state and site, from ``work/`` and ``logs/`` as ``status.csv`` has them."""
    import json
    import sys

    from vhi.cohort.layout import Layout
    from vhi.results.status import counts_summary, format_counts, state_counts, status_table

    settings = load_config_file(args.config)
    status = status_table(_saved_or_new_plan(settings, args), Layout.from_settings(settings))
    counts = state_counts(status)
    sessions = status[SESSION_VIEW].to_dict("records") if args.sessions else None
    if args.json:
        summary = counts_summary(counts)
        sys.stdout.write(json.dumps({**summary, "sessions": sessions} if args.sessions else summary,
                                    indent=2) + "\n")
        return 0
    sys.stdout.write(format_counts(counts))
    overdue = status[status["overdue"].astype(bool)]
    if len(overdue):
        sys.stdout.write(f"{len(overdue)} session(s) overdue for cleaning: "
                         f"{', '.join(overdue['session'].astype(str).head(10))}"
                         f"{' ...' if len(overdue) > 10 else ''} (vhi status --sessions)\n")
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
    report = []
    for site in sites:
        for item in make_source(site.source, site=site.name).plan_sessions():
            log.info("%s", format_report(item.session.key, item.selection))
            report.append(item.report())
    if args.out:
        save_json({"sessions": report, "provenance": build_provenance(step=f"{kind}_plan")},
                  args.out)
    usable = sum(1 for r in report if {"stir", "t1w"} <= set(r["picked"]))
    log.info("%d %s, %d with a STIR and a T1W%s", len(report), unit, usable,
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

    def plan_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", required=True, type=Path)
        p.add_argument("--plan", type=Path,
                       help="a saved cohort plan (default: the last run's, in work/.vhi/)")
        p.add_argument("--refresh", action="store_true",
                       help="ask every source for its sessions again instead of reusing the "
                            "plan of the last run")

    p = sub.add_parser("tables", help="rebuild results/ (tables, status) from a config and work/")
    plan_options(p)
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("status", help="sessions per state and site (what status.csv says, now)")
    plan_options(p)
    p.add_argument("--json", action="store_true", help="JSON for scripts instead of a table")
    p.add_argument("--sessions", action="store_true",
                   help="also every session: state, readers, cleaned by and when, due, overdue")
    p.set_defaults(func=cmd_status)
