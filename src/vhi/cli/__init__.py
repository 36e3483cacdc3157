"""The ``vhi`` command.

Sub-commands by what they act on: one scan (:mod:`vhi.cli.scan`: segment, propose,
measure, models), one session of the workflow (:mod:`vhi.cli.session`: pull, push,
collect, agreement), the cohort (:mod:`vhi.cli.cohort`: sheet, tables, xnat-plan) and
its readers (:mod:`vhi.cli.readers`: readers, assign).
Every sub-command checks its inputs: a bad input, config or source is an error naming
the file or session and the cause, with exit status :data:`vhi.errors.EXIT_INPUT`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import vhi
from vhi.cli import cohort, readers, scan, session, viewer
from vhi.errors import EXIT_ENVIRONMENT, EXIT_INPUT, VhiError

log = logging.getLogger("vhi")


def _progress_default() -> bool:
    """Progress bars on an interactive terminal unless VHI_NO_PROGRESS is set (HPC logs)."""
    return sys.stderr.isatty() and not os.environ.get("VHI_NO_PROGRESS")


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
    for group in (scan, session, cohort, readers, viewer):
        group.register(sub)
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
    except MemoryError:
        log.error("out of memory in vhi %s (exit %d): give the job more memory",
                  args.command, EXIT_ENVIRONMENT)
        return EXIT_ENVIRONMENT
    except OSError as exc:  # disk full, permissions, a folder where a file should be, ...
        where = f"{exc.filename}: " if exc.filename else ""
        log.error("%s%s (vhi %s stopped by its environment, exit %d)",
                  where, exc.strerror or exc, args.command, EXIT_ENVIRONMENT)
        return EXIT_ENVIRONMENT
