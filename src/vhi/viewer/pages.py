"""The station's own pages (sign-in, worklist, refusals): small, self-contained HTML, no scripts."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from vhi.viewer.access import WorkItem

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1d2733}
h1{font-size:1.35rem}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .6rem;
border-bottom:1px solid #dde3ea}th{background:#f3f6f9}.overdue{color:#a40000;font-weight:600}
.note{color:#5b6875}form.signin{max-width:22rem}label{display:block;margin:.6rem 0 .2rem}
input{width:100%;padding:.4rem;font:inherit}button{margin-top:.8rem;padding:.4rem 1rem;font:inherit}
.error{color:#a40000}.foot{margin-top:2rem;color:#5b6875;font-size:.85rem}
"""
_FOOT = "VHI cleaning station — research use only, not for clinical decisions."


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}<p class='foot'>{_e(_FOOT)}</p></body></html>")


def signin(target: str, *, failed: bool = False) -> str:
    error = "<p class='error'>Unknown reader or wrong password.</p>" if failed else ""
    return _page("Sign in", f"""<h1>VHI cleaning station: sign in</h1>{error}
<form class='signin' method='post' action='/signin'>
<input type='hidden' name='next' value='{_e(target)}'>
<label for='reader'>Reader id</label><input id='reader' name='reader' autocomplete='username' required>
<label for='password'>Password</label>
<input id='password' name='password' type='password' autocomplete='current-password' required>
<button type='submit'>Sign in</button></form>""")


def token_needed() -> str:
    return _page("Sign in", "<h1>VHI cleaning station</h1><p>Open the station with the address "
                            "<code>vhi viewer</code> printed: it signs this browser in.</p>")


def refused(reason: str) -> str:
    return _page("Not allowed",
                 f"<h1>Not allowed</h1><p>{_e(reason)}</p><p><a href='/'>Your worklist</a></p>")


def worklist(name: str, rows: Sequence[WorkItem], *, readers_mode: bool) -> str:
    done = sum(r.state == "saved" for r in rows)
    overdue = sum(r.overdue for r in rows)
    head = (f"<h1>Worklist of {_e(name)}</h1><p>{done} of {len(rows)} sessions saved"
            + (f", <span class='overdue'>{overdue} overdue</span>" if overdue else "") + ".</p>")
    if readers_mode:
        head += "<form method='post' action='/signout'><button type='submit'>Sign out</button></form>"
    body = "".join(
        f"<tr><td><a href='{_e(r.link)}'>{_e(r.key)}</a></td><td>{_e(r.state)}</td>"
        f"<td>{_e(r.role)}</td><td class='{'overdue' if r.overdue else ''}'>{_e(r.due)}"
        f"{' (overdue)' if r.overdue else ''}</td><td class='note'>{_e(r.note)}</td></tr>" for r in rows)
    table = ("<table><thead><tr><th>Session</th><th>State</th><th>Read</th><th>Due</th><th></th></tr>"
             f"</thead><tbody>{body}</tbody></table>" if rows else "<p>Nothing to clean.</p>")
    return _page(f"Worklist of {name}", head + table)
