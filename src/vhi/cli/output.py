"""What the ``vhi`` commands print for people: rows as a plain-text table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def text_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a plain-text table with a header line (booleans as yes/no, None empty)."""
    def text(value: Any) -> str:
        return ("yes" if value else "no") if isinstance(value, bool) else "" if value is None else str(value)

    body = [[text(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(x) for x in [c, *(b[i] for b in body)]) for i, c in enumerate(columns)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in [list(columns), *body]) + "\n"
