"""The agreement section: Bland–Altman plots per site and ICC(2,1), for the machine
proposal vs the cleaned VHI, for every pair of reader masks, and for the first vs the
second reader of the double-read sessions; Dice per reader mask and per site of the
double reads.

The readers' spread between themselves is the yardstick for the proposal's: both are
drawn and tabulated the same way. Statistics come from :mod:`vhi.method.reliability`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vhi.method.reliability import BlandAltman, bland_altman, icc_2_1
from vhi.results.report.svg import dots, site_colours, svg_doc, ticks_between, xy_frame
from vhi.results.report.text import esc, fmt, fmt_ml, html_table, order, session_id, signed_ml


@dataclass(frozen=True)
class Comparison:
    """Two volumes (ml) of the same sessions: ``a`` and ``b`` per session, with its site."""

    title: str
    a_name: str
    b_name: str
    frame: pd.DataFrame  # columns site, key, a, b


def comparisons(cohort: pd.DataFrame, agreement: pd.DataFrame,
                double: pd.DataFrame | None = None) -> list[Comparison]:
    """Proposal vs cleaned (measured sessions), every pair of reader masks (sessions with
    both), then the double reads' first vs second reader (``double``: columns site, key,
    a, b as :func:`vhi.results.readers.double_reads` gives them)."""
    out = []
    if cohort is not None and not cohort.empty:
        frame = pd.DataFrame({
            "site": cohort["site"].astype(str),
            "key": [session_id(r) for r in cohort.to_dict("records")],
            "a": pd.to_numeric(cohort["proposal_ml"], errors="coerce"),
            "b": pd.to_numeric(cohort["vhi_ml"], errors="coerce")}).dropna(subset=["a", "b"])
        out.append(Comparison("Machine proposal vs cleaned VHI", "proposal", "cleaned", frame))
    if agreement is not None and not agreement.empty:
        data = agreement.assign(key=[session_id(r) for r in agreement.to_dict("records")],
                                ml=pd.to_numeric(agreement["reader_ml"], errors="coerce"))
        wide = data.pivot_table(index=["site", "key"], columns="reader", values="ml",
                                aggfunc="first")
        for a, b in itertools.combinations(sorted(str(c) for c in wide.columns), 2):
            pair = wide[[a, b]].dropna().reset_index()
            if len(pair):
                frame = pd.DataFrame({"site": pair["site"].astype(str), "key": pair["key"],
                                      "a": pair[a], "b": pair[b]})
                out.append(Comparison(f"Reader {a} vs reader {b}", a, b, frame))
    if double is not None and not double.empty:
        frame = double[["site", "key", "a", "b"]].dropna(subset=["a", "b"])
        if len(frame):
            out.append(Comparison("Double reads: first vs second reader", "first reader",
                                  "second reader", frame.reset_index(drop=True)))
    return out


def _stats(frame: pd.DataFrame) -> tuple[BlandAltman, float]:
    return (bland_altman(frame["a"].to_numpy(), frame["b"].to_numpy()),
            icc_2_1(frame[["a", "b"]].to_numpy()))


def ba_svg(c: Comparison, site: str, colour: str) -> str:
    """One site's Bland–Altman plot: mean of the two (x) against a − b (y); the bias and
    the 95 % limits of agreement as lines."""
    f = c.frame[c.frame["site"] == site]
    mean, diff = ((f["a"] + f["b"]) / 2).to_numpy(), (f["a"] - f["b"]).to_numpy()
    ba, _ = _stats(f)
    lines = [v for v in (ba.bias, ba.loa_low, ba.loa_high) if math.isfinite(v)]
    ys = ticks_between(min([0.0, *diff, *lines]), max([0.0, *diff, *lines]), 4)
    xs = ticks_between(0.0, float(mean.max()) if mean.size else 1.0, 4)
    width, height = 330.0, 240.0
    frame, sx, sy = xy_frame((width, height), (22, 12, 44, 56), xticks=xs, yticks=ys,
                             xlabel=f"mean of {c.a_name} and {c.b_name} (ml)",
                             ylabel=f"{c.a_name} − {c.b_name} (ml)")
    x0, x1 = sx(xs[0]), sx(xs[-1])
    parts = [f'<line class="zero" x1="{x0:.1f}" y1="{sy(0):.1f}" x2="{x1:.1f}" y2="{sy(0):.1f}"/>']
    for css, value, name in (("bias", ba.bias, "bias"), ("loa", ba.loa_low, "−1.96 SD"),
                             ("loa", ba.loa_high, "+1.96 SD")):
        if math.isfinite(value):
            parts.append(f'<line class="{css}" x1="{x0:.1f}" y1="{sy(value):.1f}" x2="{x1:.1f}" '
                         f'y2="{sy(value):.1f}"><title>{name}: {signed_ml(value)} ml</title></line>'
                         f'<text class="lineval" x="{x1 - 2:.1f}" y="{sy(value) - 3:.1f}" '
                         f'text-anchor="end">{signed_ml(value)}</text>')
    parts.append(dots([(sx(m), sy(d), f"{k}: {c.a_name} {fmt_ml(a)} ml, {c.b_name} {fmt_ml(b)} ml")
                       for m, d, k, a, b in zip(mean, diff, f["key"], f["a"], f["b"], strict=True)],
                      colour, 3.5))
    parts.append(f'<text class="site" x="60" y="14">site {esc(site)} (n={ba.n})</text>')
    return svg_doc(width, height, frame + "".join(parts),
                   f"Bland–Altman {c.a_name} vs {c.b_name}, site {site}")


def _stats_row(name: str, frame: pd.DataFrame) -> list[tuple[str, str]]:
    ba, icc = _stats(frame)
    return [("", esc(name)), ("num", str(ba.n)), ("num", signed_ml(ba.bias)), ("num", fmt_ml(ba.sd)),
            ("num", f"{signed_ml(ba.loa_low)} to {signed_ml(ba.loa_high)}"), ("num", fmt(icc, 3))]


STATS_HEADERS = [("", "site"), ("num", "sessions"), ("num", "bias (ml)"), ("num", "SD (ml)"),
                 ("num", "95 % limits of agreement (ml)"), ("num", "ICC(2,1)")]


def comparison_html(c: Comparison, colours: dict[str, str]) -> str:
    sites = order(c.frame["site"])
    panels = "".join(f'<div class="panel">{ba_svg(c, s, colours[s])}</div>' for s in sites)
    rows = [_stats_row(s, c.frame[c.frame["site"] == s]) for s in sites]
    if len(sites) > 1:
        rows.append(_stats_row("all sites", c.frame))
    return (f'<h3>{esc(c.title)}</h3><div class="panels">{panels}</div>'
            + html_table(STATS_HEADERS, rows, css="stats"))


def dice_table(agreement: pd.DataFrame) -> str:
    rows = []
    for reader, group in agreement.groupby("reader", sort=True):
        dice = pd.to_numeric(group["dice"], errors="coerce")
        vs = pd.to_numeric(group["volume_similarity"], errors="coerce")
        rows.append([("", esc(reader)), ("num", str(len(group))), ("num", fmt(dice.mean(), 3)),
                     ("num", fmt(dice.median(), 3)), ("num", fmt(dice.min(), 3)),
                     ("num", fmt(vs.mean(), 3))])
    return ("<h3>Machine proposal vs reader masks (overlap)</h3>"
            '<p class="note">Per reader, over the sessions with their mask (per session: '
            "agreement.csv).</p>"
            + html_table([("", "reader"), ("num", "sessions"), ("num", "mean Dice"),
                          ("num", "median Dice"), ("num", "min Dice"),
                          ("num", "mean volume similarity")], rows))


def double_read_dice_table(double: pd.DataFrame) -> str:
    """Per site, the Dice of the two readers' masks of the double-read sessions."""
    rows = []
    groups = [(str(site), group) for site, group in double.groupby("site", sort=True)]
    if len(groups) > 1:
        groups.append(("all sites", double))
    for site, group in groups:
        dice = pd.to_numeric(group["dice"], errors="coerce")
        rows.append([("", esc(site)), ("num", str(len(group))), ("num", fmt(dice.mean(), 3)),
                     ("num", fmt(dice.median(), 3)), ("num", fmt(dice.min(), 3))])
    return ("<h3>Double reads: overlap of the two readers' masks</h3>"
            '<p class="note">Per site, over the sessions cleaned by two readers independently '
            "(per read: reads.csv).</p>"
            + html_table([("", "site"), ("num", "sessions"), ("num", "mean Dice"),
                          ("num", "median Dice"), ("num", "min Dice")], rows, css="double-reads"))


def agreement_section(cohort: pd.DataFrame, agreement: pd.DataFrame,
                      double: pd.DataFrame | None = None) -> str:
    """Bland–Altman per site and ICC(2,1): proposal vs cleaned, every reader pair, the
    double reads; Dice per reader mask and of the double reads. Nothing when there is
    nothing to compare."""
    found = comparisons(cohort, agreement, double)
    has_readers = agreement is not None and not agreement.empty
    has_double = double is not None and not double.empty
    if not found and not has_readers and not has_double:
        return ""
    every_site = np.concatenate([c.frame["site"].to_numpy() for c in found]) if found else []
    colours = site_colours(every_site)
    return ("<section id=agreement><h2>Agreement</h2>"
            '<p class="note">Bland–Altman: each session\'s difference against the mean of the '
            "two volumes; solid line the bias (mean difference), dashed lines the 95 % limits "
            "of agreement (bias ± 1.96 SD). ICC(2,1): two-way random effects, absolute "
            "agreement, single measurement (Shrout &amp; Fleiss 1979). The reader pairs' "
            "agreement is the yardstick for the proposal's.</p>"
            + "".join(comparison_html(c, colours) for c in found)
            + (dice_table(agreement) if has_readers else "")
            + (double_read_dice_table(double) if has_double else "")
            + "</section>")
