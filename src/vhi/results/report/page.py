"""The report page: the sections of :mod:`.sections` in one self-contained HTML document.

The stylesheet is the package data file ``report.css``, inlined into ``<style>``; the
Content-Security-Policy allows nothing else to load (no script, font or network request).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd

from vhi.fileio import atomic_path
from vhi.results.report.sections import (
    agreement_section,
    change_section,
    footer,
    header,
    sessions_section,
    status_section,
    vhi_section,
)


@cache
def stylesheet() -> str:
    """The page's CSS (``report.css``, shipped with the package)."""
    return (files(__package__) / "report.css").read_text(encoding="utf-8")


def render_report(*, cohort: pd.DataFrame, change: pd.DataFrame, agreement: pd.DataFrame,
                  status: pd.DataFrame, description: Mapping[str, Any],
                  timepoints: Sequence[str] = ()) -> str:
    """The whole report as one HTML document (pure: the tables in, a string out).

    ``cohort``, ``change``, ``agreement`` and ``status`` are the frames of
    :mod:`vhi.results.tables` / :mod:`vhi.results.status`; ``description`` the ``dataset_description.json``
    dict; ``timepoints`` the config's order of timepoints (for the change plot's axis).
    """
    body = "".join([
        header(description, cohort),
        status_section(status, cohort),
        vhi_section(cohort, timepoints),
        change_section(change, timepoints),
        agreement_section(agreement),
        sessions_section(status, cohort),
        footer(),
    ])
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width,initial-scale=1">'
            "<meta http-equiv=Content-Security-Policy "
            "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
            f"<title>VHI cohort report</title><style>\n{stylesheet()}</style></head>"
            f"<body>{body}</body></html>\n")


def write_report(dest: str | os.PathLike[str], **tables: Any) -> Path:
    """Render (:func:`render_report`, same keyword arguments) and write ``dest`` atomically."""
    text = render_report(**tables)
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return dest
