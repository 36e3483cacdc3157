"""The report page: the sections in one self-contained HTML document.

The stylesheet and the table's script are package data (``report.css``, ``report.js``),
inlined. The Content-Security-Policy allows that one script (by its sha256), inline
styles and images from the page's own folder (the QC thumbnails under ``qc/``) and
nothing else: no font, no other script, no network request.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd

from vhi.fileio import atomic_path
from vhi.results.readers import double_reads
from vhi.results.report.agreement import agreement_section
from vhi.results.report.readers import readers_section
from vhi.results.report.sections import change_section, footer, header, status_section, vhi_section
from vhi.results.report.table import sessions_section


@cache
def stylesheet() -> str:
    """The page's CSS (``report.css``, shipped with the package)."""
    return (files(__package__) / "report.css").read_text(encoding="utf-8")


@cache
def script() -> str:
    """The session table's sorting and filters (``report.js``, shipped with the package)."""
    return (files(__package__) / "report.js").read_text(encoding="utf-8")


def content_security_policy() -> str:
    digest = base64.b64encode(hashlib.sha256(script().encode("utf-8")).digest()).decode()
    return (f"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
            f"script-src 'sha256-{digest}'")


def render_report(*, cohort: pd.DataFrame, change: pd.DataFrame, agreement: pd.DataFrame,
                  status: pd.DataFrame, description: Mapping[str, Any],
                  timepoints: Sequence[str] = (),
                  images: Mapping[str, Mapping[str, str]] | None = None,
                  viewer_url: str | None = None, reads: pd.DataFrame | None = None,
                  readers: pd.DataFrame | None = None) -> str:
    """The whole report as one HTML document (pure: the tables in, a string out).

    ``cohort``, ``change``, ``agreement`` and ``status`` are the frames of
    :mod:`vhi.results.tables` / :mod:`vhi.results.status`; ``description`` the ``dataset_description.json``
    dict; ``timepoints`` the config's order of timepoints (for the change plot's axis);
    ``images`` per session key, the QC images relative to the page
    (:func:`.images.publish_qc_images`); ``viewer_url`` where the cleaning station
    (``vhi viewer``) serves: sessions awaiting cleaning on a source with a viewer link to it;
    ``reads`` and ``readers`` the frames of :mod:`vhi.results.readers` (the readers'
    section, the double reads' agreement).
    """
    images = images or {}
    body = "".join([
        header(description, cohort),
        status_section(status, images, viewer_url),
        vhi_section(cohort),
        change_section(change, timepoints),
        readers_section(readers, status),
        agreement_section(cohort, agreement, double_reads(reads)),
        sessions_section(status, cohort, images, viewer_url),
        footer(),
    ])
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width,initial-scale=1">'
            f'<meta http-equiv=Content-Security-Policy content="{content_security_policy()}">'
            f"<title>VHI cohort report</title><style>\n{stylesheet()}</style></head>"
            f"<body>{body}<script>{script()}</script></body></html>\n")


def write_report(dest: str | os.PathLike[str], **tables: Any) -> Path:
    """Render (:func:`render_report`, same keyword arguments) and write ``dest`` atomically."""
    text = render_report(**tables)
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return dest
