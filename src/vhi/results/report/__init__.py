"""``results/report.html``: one self-contained page for data managers and imaging scientists.

Rendered from the same in-memory tables :mod:`vhi.results.tables` writes (``cohort_vhi``,
``cohort_change``, ``agreement``, ``status``) and the ``dataset_description.json``
dict; nothing is measured again. The page needs nothing outside itself: inline CSS,
plots as inline SVG drawn here, no script, no font or network request.

- :mod:`.text`: escaping of every string from data, number formatting (``fmt_ml``).
- :mod:`.svg`: the plots (VHI per session, proposal vs cleaned, change, status).
- :mod:`.sections`: the HTML sections (header, status, VHI, change, agreement, sessions).
- :mod:`.page`: the document around them, with ``report.css`` inlined; ``write_report``.
"""

from vhi.results.report.page import render_report, write_report
from vhi.results.report.sections import RESEARCH_USE, state_counts
from vhi.results.report.svg import change_svg, proposal_scatter_svg, status_svg, vhi_bars_svg
from vhi.results.report.text import ML_DECIMALS, fmt_ml

__all__ = [
    "ML_DECIMALS",
    "RESEARCH_USE",
    "change_svg",
    "fmt_ml",
    "proposal_scatter_svg",
    "render_report",
    "state_counts",
    "status_svg",
    "vhi_bars_svg",
    "write_report",
]
