"""``results/report.html``: one page for data managers, readers and imaging scientists.

Rendered from the same in-memory tables :mod:`vhi.results.tables` writes (``cohort_vhi``,
``cohort_change``, ``agreement``, ``status``) and the ``dataset_description.json``
dict; nothing is measured again. The page loads nothing from outside its folder: inline
CSS and script, plots as inline SVG drawn here, QC thumbnails as files under ``qc/``
beside it (copied from ``work/``). Charts aggregate per site, so the page keeps its size
at thousands of sessions; the session table sorts and filters.

- :mod:`.text`: escaping of every string from data, number formatting (``fmt_ml``).
- :mod:`.svg`: plot helpers; proposal vs cleaned, change per subject, status per site.
- :mod:`.distributions`: box plots and histograms per site.
- :mod:`.agreement`: Bland–Altman per site and ICC(2,1) (proposal vs cleaned, reader pairs).
- :mod:`.sections`: header, status, VHI, change; :mod:`.table`: every session, filterable.
- :mod:`.images`: the QC images copied next to the page, and their thumbnails.
- :mod:`.page`: the document, ``report.css`` and ``report.js`` inlined; ``write_report``.
"""

from vhi.results.report.images import publish_qc_images
from vhi.results.report.page import render_report, write_report
from vhi.results.report.sections import RESEARCH_USE
from vhi.results.report.svg import change_svg, proposal_scatter_svg, status_svg
from vhi.results.report.text import ML_DECIMALS, fmt_ml
from vhi.results.status import state_counts

__all__ = [
    "ML_DECIMALS",
    "RESEARCH_USE",
    "change_svg",
    "fmt_ml",
    "proposal_scatter_svg",
    "publish_qc_images",
    "render_report",
    "state_counts",
    "status_svg",
    "write_report",
]
