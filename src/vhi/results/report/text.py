"""How the report prints values: HTML escaping of data, numbers, ids, row order.

Shared by the SVG plots (:mod:`.svg`) and the HTML sections (:mod:`.sections`), so a
volume reads the same in a table cell and in a plot label.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

ML_DECIMALS = 2  # VHI and proposal volumes are printed (tables and plot labels) to 0.01 ml


def esc(value: Any) -> str:
    """Escaped text of a data value (None and NaN print as empty)."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    return html.escape(str(value), quote=True)


def number(value: Any) -> float | None:
    """``value`` as a float; None when it is missing, NaN or not a number."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(result) else result


def fmt_ml(value: Any) -> str:
    """A volume in ml as the report prints it everywhere (tables and plot labels)."""
    return fmt(value, ML_DECIMALS)


def signed_ml(value: Any) -> str:
    """A change in ml with its sign (``+0.50``, ``-1.23``), as the report prints it."""
    result = number(value)
    return "–" if result is None else f"{result:+.{ML_DECIMALS}f}"


def fmt(value: Any, decimals: int) -> str:
    """A number to ``decimals`` places; "–" when missing."""
    result = number(value)
    return "–" if result is None else f"{result:.{decimals}f}"


def fmt_int(value: Any) -> str:
    """A count, rounded to a whole number; "–" when missing."""
    result = number(value)
    return "–" if result is None else str(round(result))


def html_table(headers: Sequence[tuple[str, str]], rows: Iterable[Sequence[tuple[str, str]]],
               row_attrs: Iterable[str] | None = None, css: str = "") -> str:
    """An HTML table from (class, already-escaped text) cells; ``row_attrs`` per row."""
    head = "".join(f'<th class="{c}">{t}</th>' for c, t in headers)
    attrs = iter(row_attrs) if row_attrs is not None else None
    body = "".join(
        f"<tr{next(attrs) if attrs else ''}>"
        + "".join(f'<td class="{c}">{t}</td>' for c, t in row) + "</tr>" for row in rows)
    table = f'<table class="{css}">' if css else "<table>"
    return f"{table}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def session_id(row: Mapping[str, Any]) -> str:
    """``site/subject/session`` of a table row."""
    return f"{row.get('site')}/{row.get('subject')}/{row.get('session')}"


def records(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The rows of a frame as dicts (none for a missing or empty frame)."""
    return [] if df is None or df.empty else df.to_dict("records")


def order(values: Iterable[Any], first: Sequence[str] = ()) -> list[str]:
    """Distinct values as text, ``first``'s order first, the rest sorted."""
    rank = {v: i for i, v in enumerate(first)}
    return sorted({str(v) for v in values}, key=lambda v: (rank.get(v, len(rank)), v))


def viewer_link(row: Mapping[str, Any], viewer_url: str | None) -> str:
    """The session's address in the cleaning station (``viewer_url`` + its OHIF route), or
    "" when it does not await cleaning there."""
    path = str(row.get("viewer_path") or "")
    if not viewer_url or not path or row.get("state") != "awaiting_cleaning":
        return ""
    return viewer_url.rstrip("/") + path
