"""The sections of the report as HTML: the header, the status of every session, VHI per
measured session, the change per subject, reader agreement, the list of every session.

Each takes the frames of :mod:`vhi.results.tables` / :mod:`vhi.results.status` (and the
``dataset_description.json`` dict) and returns its ``<section>``; every string from data
goes through :func:`.text.esc` first. The page around them is :mod:`.page`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from vhi.results.report.svg import change_svg, proposal_scatter_svg, status_svg, vhi_bars_svg
from vhi.results.report.text import ML_DECIMALS, esc, fmt, fmt_int, fmt_ml, records, session_id
from vhi.results.status import STATES

RESEARCH_USE = "Research use only, not for clinical decisions"


# ----------------------------------------------------------------------------- tables
def _table(headers: Sequence[tuple[str, str]], rows: Iterable[Sequence[tuple[str, str]]],
           row_attrs: Iterable[str] | None = None) -> str:
    """An HTML table from (class, already-escaped text) cells."""
    head = "".join(f'<th class="{c}">{t}</th>' for c, t in headers)
    attrs = iter(row_attrs) if row_attrs is not None else None
    body = "".join(
        f"<tr{next(attrs) if attrs else ''}>"
        + "".join(f'<td class="{c}">{t}</td>' for c, t in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ids(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The id cells of a row, in :data:`ID_HEADERS` order."""
    return [("", esc(row.get(k))) for k in ("site", "subject", "session", "timepoint")]


ID_HEADERS = [("", "site"), ("", "subject"), ("", "session"), ("", "timepoint")]


# ----------------------------------------------------------------------------- sections
def state_counts(status: pd.DataFrame) -> pd.DataFrame:
    """Sessions per state (columns, pipeline order; ``total`` last) and site (rows)."""
    extra = sorted(set(status["state"].astype(str)) - set(STATES)) if len(status) else []
    columns = [*STATES, *extra]
    if status.empty:
        return pd.DataFrame(columns=[*columns, "total"], dtype=int)
    counts = (pd.crosstab(status["site"].astype(str), status["state"].astype(str))
              .reindex(columns=columns, fill_value=0))
    counts["total"] = counts.sum(axis=1)
    counts.index.name = "site"
    return counts.astype(int)


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
    return (f"<header><h1>VHI cohort report</h1>"
            f'<p class="ruo">{esc(RESEARCH_USE)}</p><dl class="meta">{meta}</dl></header>')


def status_section(status: pd.DataFrame, cohort: pd.DataFrame) -> str:
    """Counts per state and site (plot and table), failed sessions, sessions awaiting cleaning."""
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
    out.append(_table([("", "site"), *[("num", esc(s)) for s in shown], ("num", "total")],
                      table_rows, attrs))

    failed = [r for r in records(status) if r["state"] == "failed"]
    out.append(f"<h3>Failed sessions ({len(failed)})</h3>")
    if failed:
        out.append(_table([*ID_HEADERS, ("", "step"), ("", "reason"), ("", "log")],
                          ([*_ids(r), ("", esc(r["step"])), ("reason", esc(r["reason"])),
                            ("path", esc(r["log"]))] for r in failed)))
    else:
        out.append('<p class="empty">None.</p>')
    waiting = [r for r in records(status) if r["state"] == "awaiting_cleaning"]
    out.append(f"<h3>Awaiting cleaning ({len(waiting)})</h3>")
    if waiting:
        out.append('<p class="note">The proposal is on the source; a radiologist has not '
                   "saved a cleaned segmentation yet. The next run collects it.</p>")
        out.append(_table([*ID_HEADERS, ("", "note")],
                          ([*_ids(r), ("reason", esc(r["reason"]))] for r in waiting)))
    else:
        out.append('<p class="empty">None.</p>')
    out.append("</section>")
    return "".join(out)


def vhi_section(cohort: pd.DataFrame, timepoints: Sequence[str]) -> str:
    """VHI per measured session (bars, proposal scatter, table)."""
    out = [f"<section id=vhi><h2>VHI per measured session ({len(cohort)})</h2>"]
    if cohort.empty:
        return out[0] + '<p class="empty">No session is measured yet: no VHI to show.</p></section>'
    out.append(f'<p class="note">VHI = voxels of the cleaned mask × voxel volume, in ml '
               f"(printed to {ML_DECIMALS} decimals; full precision in cohort_vhi.csv).</p>")
    out.append(vhi_bars_svg(cohort, timepoints))
    out.append("<h3>Machine proposal vs cleaned VHI</h3>"
               '<p class="note">Points below the dashed line: the radiologist removed more than '
               "they added.</p>")
    out.append(proposal_scatter_svg(cohort))
    headers = [*ID_HEADERS, ("num", "VHI (ml)"), ("num", "proposal (ml)"), ("num", "VHI voxels"),
               ("num", "Dice cleaned vs proposal"), ("num", "removed voxels"),
               ("num", "added voxels"), ("", "reference")]
    rows = ([*_ids(r), ("num", fmt_ml(r["vhi_ml"])), ("num", fmt_ml(r.get("proposal_ml"))),
             ("num", fmt_int(r.get("vhi_voxels"))),
             ("num", fmt(r.get("dice_cleaned_vs_proposal"), 3)),
             ("num", fmt_int(r.get("removed_voxels"))), ("num", fmt_int(r.get("added_voxels"))),
             ("", esc(r.get("reference_mode")))]
            for r in records(cohort))
    attrs = (f' data-session="{esc(session_id(r))}"' for r in records(cohort))
    out.append(_table(headers, rows, attrs))
    out.append("</section>")
    return "".join(out)


def change_section(change: pd.DataFrame, timepoints: Sequence[str]) -> str:
    """The change per subject between timepoints (plot and table)."""
    out = [f"<section id=change><h2>Change per subject ({len(change)} pairs)</h2>"]
    if change.empty:
        return out[0] + ('<p class="empty">No subject has two measured timepoints yet: '
                         "no change to show.</p></section>")
    out.append(change_svg(change, timepoints))
    out.append(_table(
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


def agreement_section(agreement: pd.DataFrame) -> str:
    """Machine proposal vs reader masks, per reader (nothing without reader masks)."""
    if agreement is None or agreement.empty:
        return ""
    rows = []
    for reader, group in agreement.groupby("reader", sort=True):
        dice = pd.to_numeric(group["dice"], errors="coerce")
        vs = pd.to_numeric(group["volume_similarity"], errors="coerce")
        rows.append([("", esc(reader)), ("num", str(len(group))), ("num", fmt(dice.mean(), 3)),
                     ("num", fmt(dice.median(), 3)), ("num", fmt(dice.min(), 3)),
                     ("num", fmt(vs.mean(), 3))])
    return ("<section id=agreement><h2>Machine proposal vs reader masks</h2>"
            '<p class="note">Per reader, over the sessions with their mask (per session: '
            "agreement.csv).</p>"
            + _table([("", "reader"), ("num", "sessions"), ("num", "mean Dice"),
                      ("num", "median Dice"), ("num", "min Dice"),
                      ("num", "mean volume similarity")], rows)
            + "</section>")


def sessions_section(status: pd.DataFrame, cohort: pd.DataFrame) -> str:
    """Every session with its state, VHI and reason, folded (nothing without sessions)."""
    if status.empty:
        return ""
    vhi = {(str(r["site"]), str(r["subject"]), str(r["session"])): r["vhi_ml"]
           for r in records(cohort)}
    rows = ([*_ids(r), ("", f'<span class="state state-{esc(r["state"])}">{esc(r["state"])}</span>'),
             ("num", fmt_ml(vhi[k]) if (k := (str(r["site"]), str(r["subject"]),
                                             str(r["session"]))) in vhi else ""),
             ("reason", esc(r["reason"]))] for r in records(status))
    return (f"<section id=sessions><details><summary>Every session ({len(status)})</summary>"
            + _table([*ID_HEADERS, ("", "state"), ("num", "VHI (ml)"), ("", "reason")], rows)
            + "</details></section>")


def footer() -> str:
    """The closing line: research use only, and the files the page is drawn from."""
    return (f"<footer>{esc(RESEARCH_USE)}. Generated by vhi from results/cohort_vhi.csv, "
            "cohort_change.csv, agreement.csv and status.csv (docs/output.md).</footer>")
