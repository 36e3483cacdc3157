"""The sections of the report as HTML: the header, the status of every session, VHI per
site, the change per subject. Agreement is :mod:`.agreement`, the table of every session
:mod:`.table`.

Each takes the frames of :mod:`vhi.results.tables` / :mod:`vhi.results.status` (and the
``dataset_description.json`` dict) and returns its ``<section>``; every string from data
goes through :func:`.text.esc` first. The page around them is :mod:`.page`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from vhi.results.report.distributions import box_svg, histogram_svg
from vhi.results.report.images import thumbnail
from vhi.results.report.svg import change_svg, proposal_scatter_svg, site_colours, status_svg
from vhi.results.report.text import (
    ML_DECIMALS,
    esc,
    fmt,
    fmt_ml,
    html_table,
    number,
    order,
    records,
    session_id,
    viewer_link,
)
from vhi.results.status import state_counts

#: Above this many subjects the change plot shows the distribution per site, not a line each.
MAX_SUBJECT_LINES = 60

RESEARCH_USE = "Research use only, not for clinical decisions"


# ----------------------------------------------------------------------------- tables
def _ids(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The id cells of a row, in :data:`ID_HEADERS` order."""
    return [("", esc(row.get(k))) for k in ("site", "subject", "session", "timepoint")]


ID_HEADERS = [("", "site"), ("", "subject"), ("", "session"), ("", "timepoint")]


# ----------------------------------------------------------------------------- sections
def header(description: Mapping[str, Any], cohort: pd.DataFrame) -> str:
    """Title, "Research use only", software, git commit, model bundle, sites, date."""
    generated = (description.get("GeneratedBy") or [{}])[0]
    when = description.get("GeneratedAt") or datetime.now(UTC).isoformat()
    with contextlib.suppress(ValueError):
        when = datetime.fromisoformat(str(when)).strftime("%Y-%m-%d %H:%M %Z").strip()
    bundle = description.get("ModelBundle")
    measured_with = sorted({f"{r.get('model_bundle')} {r.get('model_version')}"
                            for r in records(cohort) if r.get("model_bundle")})
    items = [
        ("software", f"{generated.get('Name', 'vhi')} {generated.get('Version', '')}".strip()),
        ("git commit", generated.get("GitCommit") or "not a git checkout"),
        ("model bundle", bundle or "–"),
        *([("model (measured sessions)", ", ".join(measured_with))] if measured_with else []),
        ("sites", ", ".join(str(s) for s in description.get("Sites", [])) or "–"),
        ("sessions in the sheet", description.get("Sessions", "–")),
        ("generated", when),
    ]
    meta = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    partial = description.get("Partial")
    warning = f'<p class="partial">Partial results: {esc(partial)}.</p>' if partial else ""
    return (f"<header><h1>VHI cohort report</h1>"
            f'<p class="ruo">{esc(RESEARCH_USE)}</p>{warning}<dl class="meta">{meta}</dl></header>')


#: Sessions awaiting cleaning listed by name with their viewer links (the rest are rows of
#: the session table, which links them too).
AWAITING_LISTED = 100


def status_section(status: pd.DataFrame, images: Mapping[str, Mapping[str, str]],
                   viewer_url: str | None = None) -> str:
    """Counts per state and site (plot and table), failed sessions (with whatever QC image
    exists), sessions awaiting cleaning (a count, and the first of them with a link to the
    cleaning station where their source has one)."""
    out = ["<section id=status><h2>Status of every session</h2>"]
    if status.empty:
        return out[0] + '<p class="empty">No sessions in the sheet.</p></section>'
    counts = state_counts(status)
    shown = [s for s in counts.columns if s != "total"]
    totals = counts.sum(axis=0)
    summary = ", ".join(f"{int(totals[s])} {s.replace('_', ' ')}" for s in shown if totals[s])
    out.append(f"<p>{len(status)} sessions at {len(counts)} site(s): {esc(summary)}.</p>")
    out.append(status_svg(counts))

    def cells(row: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [("num" + ("" if row[s] else " zero"), str(int(row[s])))
                for s in [*shown, "total"]]

    table_rows = [[("", esc(site)), *cells(row)] for site, row in counts.iterrows()]
    attrs = [f' data-site="{esc(site)}"' for site in counts.index]
    if len(counts) > 1:
        table_rows.append([("", "all sites"), *cells(totals)])
        attrs.append(' class="total" data-site=""')
    out.append(html_table([("", "site"), *[("num", esc(s)) for s in shown], ("num", "total")],
                      table_rows, attrs))

    failed = [r for r in records(status) if r["state"] == "failed"]
    out.append(f"<h3>Failed sessions ({len(failed)})</h3>")
    if failed:
        out.append(html_table([("", "QC"), *ID_HEADERS, ("", "step"), ("", "reason"), ("", "log")],
                          ([("qc", thumbnail(images.get(session_id(r)), session_id(r))), *_ids(r),
                            ("", esc(r["step"])), ("reason", esc(r["reason"])),
                            ("path", esc(r["log"]))] for r in failed),
                          (f' data-key="{esc(session_id(r))}"' for r in failed)))
    else:
        out.append('<p class="empty">None.</p>')
    waiting = [r for r in records(status) if r["state"] == "awaiting_cleaning"]
    out.append(f"<h3>Awaiting cleaning ({len(waiting)})</h3>")
    if waiting:
        per_site = ", ".join(f"{esc(site)}: {n}" for site, n in sorted(
            pd.Series([r["site"] for r in waiting]).astype(str).value_counts().items()))
        out.append(f'<p class="note">The proposal is on the source; a radiologist has not '
                   f"saved a cleaned segmentation yet ({per_site}). The next run collects it. "
                   "They are the rows in state awaiting_cleaning of the session table.</p>")
        linked = [(r, url) for r in waiting if (url := viewer_link(r, viewer_url))]
        if linked:
            items = "".join(f'<li><a class="viewer" href="{esc(url)}">{esc(session_id(r))}</a></li>'
                            for r, url in linked[:AWAITING_LISTED])
            more = (f'<p class="note">{len(linked) - AWAITING_LISTED} more: filter the session '
                    "table by state.</p>" if len(linked) > AWAITING_LISTED else "")
            out.append(f'<p class="note">Open each in the cleaning station (start it with '
                       f"<code>vhi viewer --config …</code>; it serves {esc(viewer_url)}):</p>"
                       f'<ul class="awaiting">{items}</ul>{more}')
    else:
        out.append('<p class="empty">None.</p>')
    out.append("</section>")
    return "".join(out)


def _per_site(rows: list[dict[str, Any]], column: str, decimals: int = ML_DECIMALS,
              ) -> list[tuple[str, list[float], list[str]]]:
    groups = []
    for site in order(r["site"] for r in rows):
        mine = [r for r in rows if str(r["site"]) == site]
        values = [float("nan") if (v := number(r[column])) is None else v for r in mine]
        groups.append((site, values, [f"{session_id(r)}: {fmt(r[column], decimals)} ml"
                                      for r in mine]))
    return groups


def vhi_section(cohort: pd.DataFrame) -> str:
    """VHI per site (box plot and histogram) and the proposal against the cleaned VHI."""
    out = [f"<section id=vhi><h2>VHI per site ({len(cohort)} measured sessions)</h2>"]
    if cohort.empty:
        return out[0] + '<p class="empty">No session is measured yet: no VHI to show.</p></section>'
    rows = records(cohort)
    groups = _per_site(rows, "vhi_ml")
    colours = site_colours(r["site"] for r in rows)
    out.append(f'<p class="note">VHI = voxels of the cleaned mask × voxel volume, in ml. '
               f"Box: quartiles and median; whiskers: the last session within 1.5 × IQR. Every "
               f"session's VHI (to {ML_DECIMALS} decimals) is in the session table below.</p>")
    out.append(box_svg(groups, xlabel="VHI (ml)", label="VHI per site", colours=colours))
    out.append(histogram_svg(groups, xlabel="VHI (ml)", label="VHI histogram per site",
                             colours=colours))
    out.append("<h3>Machine proposal vs cleaned VHI</h3>"
               '<p class="note">Points below the dashed line: the radiologist removed more than '
               "they added.</p>")
    out.append(proposal_scatter_svg(cohort))
    out.append("</section>")
    return "".join(out)


def change_section(change: pd.DataFrame, timepoints: Sequence[str]) -> str:
    """The change per subject between timepoints (plot and table)."""
    out = [f"<section id=change><h2>Change per subject ({len(change)} pairs)</h2>"]
    if change.empty:
        return out[0] + ('<p class="empty">No subject has two measured timepoints yet: '
                         "no change to show.</p></section>")
    subjects = {(str(r["site"]), str(r["subject"])) for r in records(change)}
    if len(subjects) <= MAX_SUBJECT_LINES:
        out.append(change_svg(change, timepoints))
    else:
        rows = records(change)
        out.append(box_svg(_per_site(rows, "change_ml"), xlabel="VHI change between timepoints (ml)",
                           label="VHI change per site",
                           colours=site_colours(r["site"] for r in rows)))
    out.append(html_table(
        [("", "site"), ("", "subject"), ("", "from"), ("", "to"), ("num", "VHI from (ml)"),
         ("num", "VHI to (ml)"), ("num", "change (ml)"), ("num", "change (%)")],
        ([("", esc(r["site"])), ("", esc(r["subject"])),
          ("", f"{esc(r['timepoint_from'])} ({esc(r['session_from'])})"),
          ("", f"{esc(r['timepoint_to'])} ({esc(r['session_to'])})"),
          ("num", fmt_ml(r["vhi_ml_from"])), ("num", fmt_ml(r["vhi_ml_to"])),
          ("num", fmt_ml(r["change_ml"])), ("num", fmt(r["change_percent"], 1))]
         for r in records(change))))
    out.append("</section>")
    return "".join(out)


def footer() -> str:
    """The closing line: research use only, and the files the page is drawn from."""
    return (f"<footer>{esc(RESEARCH_USE)}. Generated by vhi from results/cohort_vhi.csv, "
            "cohort_change.csv, agreement.csv, status.csv, reads.csv and readers.csv "
            "(docs/output.md).</footer>")
