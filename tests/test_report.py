"""results/report.html from small synthetic tables, and from the files of a tiny synthetic
cohort (no workflow)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from vhi.results.report import RESEARCH_USE, fmt_ml, render_report, state_counts
from vhi.results.status import COLUMNS as STATUS_COLUMNS
from vhi.results.status import STATES
from vhi.results.tables import AGREEMENT_COLUMNS, VHI_COLUMNS, change_table, write_results

from support.results import SyntheticCohort

DESCRIPTION = {
    "GeneratedBy": [{"Name": "vhi", "Version": "9.8.7", "GitCommit": "c0ffee" * 6 + "abcd"}],
    "ModelBundle": "sij_disease_region_unet", "Sites": ["a", "b"], "Sessions": 6,
    "GeneratedAt": "2026-03-04T05:06:07+00:00",
}
EVIL = '<script>alert("x")</script>'


def frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def cohort_row(site: str, subject: str, session: str, timepoint: str, vhi_ml: float, *,
               proposal_ml: float = 5.0) -> dict[str, Any]:
    return {"site": site, "subject": subject, "session": session, "timepoint": timepoint,
            "vhi_ml": vhi_ml, "vhi_voxels": round(vhi_ml * 1000), "proposal_ml": proposal_ml,
            "dice_cleaned_vs_proposal": 0.8, "removed_voxels": 10, "added_voxels": 0,
            "reference_mode": "manual", "model_bundle": "sij_disease_region_unet",
            "model_version": "1.0.0"}


def status_row(site: str, subject: str, session: str, state: str, *, reason: str = "",
               step: str = "", log: str = "", timepoint: str = "pre",
               viewer_path: str = "") -> dict[str, Any]:
    return {"site": site, "subject": subject, "session": session, "timepoint": timepoint,
            "state": state, "reason": reason, "step": step, "log": log, "viewer_path": viewer_path}


COHORT = [cohort_row("a", "01", "s1", "pre", 1.23456, proposal_ml=2.5),
          cohort_row("a", "01", "s2", "post", 0.004999),
          cohort_row("b", "07", "s7", "pre", 12.0, proposal_ml=11.0)]
STATUS = [status_row("a", "01", "s1", "measured"),
          status_row("a", "01", "s2", "measured", timepoint="post"),
          status_row("a", "02", "s3", "failed", reason="session a/02/s3: STIR /x: file not found",
                     step="pull_scan_stir", log="logs/a/02/s3/pull_scan_stir.log"),
          status_row("b", "07", "s7", "measured"),
          status_row("b", "08", "s8", "awaiting_cleaning",
                     reason="proposal pushed; no cleaned segmentation on the source yet"),
          status_row("b", "09", "s9", "segmented", reason="T1W only: disease region only")]


def render(cohort: list[dict[str, Any]] = COHORT, status: list[dict[str, Any]] = STATUS,
           agreement: list[dict[str, Any]] = (), timepoints: list[str] = ("pre", "post"),
           images: dict[str, dict[str, str]] | None = None, *, viewer_url: str | None = None) -> str:
    vhi = frame(cohort, VHI_COLUMNS)
    return render_report(cohort=vhi, change=change_table(vhi, timepoints),
                         agreement=frame(list(agreement), AGREEMENT_COLUMNS),
                         status=frame(status, STATUS_COLUMNS), description=DESCRIPTION,
                         timepoints=timepoints, images=images, viewer_url=viewer_url)


def row_html(page: str, attr: str, value: str) -> str:
    match = re.search(rf'<tr [^>]*?\b{attr}="{re.escape(value)}"[^>]*>(.*?)</tr>', page)
    assert match, f"no row {attr}={value}"
    return match.group(1)


def session_data(page: str) -> dict[str, dict[str, str]]:
    """The session table's rows (its JSON data block), by ``site/subject/session``."""
    block = re.search(r'<script type="application/json" id="session-data">(.*?)</script>', page)
    assert block, "no session data"
    data = json.loads(block.group(1))
    rows = [dict(zip(data["fields"], row, strict=True)) for row in data["rows"]]
    return {f"{r['site']}/{r['subject']}/{r['session']}": r for r in rows}


def without_script(page: str) -> str:
    return re.sub(r"<script>.*?</script>", "", page, flags=re.S)


def count_cells(row: str) -> dict[str, int]:
    """The per-state counts of one row of the status table (state order, then total)."""
    cells = re.findall(r'<td class="num[^"]*">(\d+)</td>', row)
    return dict(zip([*STATES, "total"], map(int, cells), strict=True))


def test_header_names_software_commit_bundle_date_and_research_use() -> None:
    page = render()
    assert page.startswith("<!DOCTYPE html>")
    assert RESEARCH_USE == "Research use only, not for clinical decisions"
    assert RESEARCH_USE in page
    assert "vhi 9.8.7" in page and DESCRIPTION["GeneratedBy"][0]["GitCommit"] in page
    assert "sij_disease_region_unet" in page and "sij_disease_region_unet 1.0.0" in page
    assert "2026-03-04 05:06 UTC" in page


def test_status_counts_per_state_and_site_failed_and_awaiting() -> None:
    page = render()
    a = count_cells(row_html(page, "data-site", "a"))
    assert (a["measured"], a["failed"], a["total"]) == (2, 1, 3)
    assert sum(a.values()) == 2 * a["total"]
    b = count_cells(row_html(page, "data-site", "b"))
    assert (b["measured"], b["awaiting_cleaning"], b["segmented"], b["failed"], b["total"]) == (
        1, 1, 1, 0, 3)
    every = count_cells(re.search(r'<tr class="total"[^>]*>(.*?)</tr>', page).group(1))
    assert (every["measured"], every["failed"], every["total"]) == (3, 1, 6)
    assert "Failed sessions (1)" in page and "Awaiting cleaning (1)" in page
    assert "session a/02/s3: STIR /x: file not found" in page and "pull_scan_stir" in page
    assert "logs/a/02/s3/pull_scan_stir.log" in page
    assert "6 sessions at 2 site(s): 1 segmented, 1 awaiting cleaning, 3 measured, 1 failed" in page


def test_state_counts_keeps_every_state_in_pipeline_order() -> None:
    counts = state_counts(frame(STATUS, STATUS_COLUMNS))
    assert list(counts.columns) == [*STATES, "total"]
    assert counts.loc["a", "measured"] == 2 and counts.loc["b", "pending"] == 0
    assert counts["total"].sum() == len(STATUS)


def svg_of(page: str, label: str) -> str:
    match = re.search(rf'<svg [^>]*aria-label="{re.escape(label)}">.*?</svg>', page)
    assert match, f"no plot {label!r}"
    return match.group(0)


def test_vhi_per_site_as_boxes_and_every_session_in_the_table() -> None:
    page = render()
    boxes = svg_of(page, "VHI per site")
    assert boxes.count('class="box"') == 2  # one per site, not one bar per session
    assert "a: n=2, median 0.62" in boxes and "b: n=1, median 12.00" in boxes
    assert boxes.index(">a (n=2)</text>") < boxes.index(">b (n=1)</text>")
    for r in COHORT:
        shown = fmt_ml(r["vhi_ml"])
        assert shown == f"{r['vhi_ml']:.2f}"
        session = f"{r['site']}/{r['subject']}/{r['session']}"
        assert f"<title>{session}: {shown} ml</title>" in boxes  # its point on the site's box
        assert session_data(page)[session]["vhi_ml"] == shown
    hist = svg_of(page, "VHI histogram per site")
    assert hist.count('class="hbar"') == 3  # three sessions in three distinct bins
    rows = session_data(page)
    assert list(rows) == [f"{r['site']}/{r['subject']}/{r['session']}" for r in STATUS]
    assert rows["a/02/s3"]["vhi_ml"] == "" and rows["a/02/s3"]["state"] == "failed"
    assert rows["a/01/s1"]["proposal_ml"] == "2.50" and rows["a/01/s1"]["reference_mode"] == "manual"


def test_sessions_awaiting_cleaning_link_to_the_cleaning_station() -> None:
    route = "/segmentation?StudyInstanceUIDs=1.2.3&x=<b>"
    status = [*STATUS, status_row("b", "10", "s10", "awaiting_cleaning", viewer_path=route),
              status_row("b", "11", "s11", "measured", viewer_path="/stale")]
    page = render(status=status, viewer_url="http://127.0.0.1:8042/")
    url = "http://127.0.0.1:8042/segmentation?StudyInstanceUIDs=1.2.3&x=<b>"
    links = re.findall(r'<a class="viewer" href="([^"]*)">([^<]*)</a>', without_script(page))
    assert links == [("http://127.0.0.1:8042/segmentation?StudyInstanceUIDs=1.2.3&amp;x=&lt;b&gt;",
                      "b/10/s10")]  # the source without a viewer (b/08/s8) has no link
    rows = session_data(page)
    assert rows["b/10/s10"]["viewer"] == url
    assert rows["b/08/s8"]["viewer"] == rows["b/11/s11"]["viewer"] == ""  # none, or not awaiting
    # without a station address, no links at all
    page = render(status=status)
    assert 'class="viewer"' not in without_script(page) and session_data(page)["b/10/s10"]["viewer"] == ""


def test_session_data_cannot_close_its_element() -> None:
    page = render(status=[status_row("a", "01", "s1", "failed", reason="</script><b>x</b>")],
                  cohort=[])
    assert "</script><b>" not in page
    assert session_data(page)["a/01/s1"]["reason"] == "</script><b>x</b>"


def test_proposal_scatter_and_change_plot() -> None:
    page = render()
    scatter = svg_of(page, "proposal vs cleaned VHI")
    assert scatter.count('class="point"') == len(COHORT)
    assert "proposal 2.50 ml, cleaned 1.23 ml" in scatter
    change = svg_of(page, "VHI change per subject")
    assert change.count('class="subject"') == 1  # only subject a/01 has two timepoints
    assert "<title>a/01: pre to post: -1.23 ml</title>" in change
    assert "Change per subject (1 pairs)" in page
    assert '<td class="num">-1.23</td>' in page  # 0.00 - 1.23
    assert "a/01/s1 (pre): 1.23 ml" in change and "a/01/s2 (post): 0.00 ml" in change


def test_change_plot_follows_each_subject_across_its_timepoints() -> None:
    cohort = [cohort_row("a", "01", "s1", "pre", 4.0), cohort_row("a", "01", "s2", "post", 1.0),
              cohort_row("a", "01", "s3", "week52", 0.5), cohort_row("a", "02", "s4", "pre", 3.0),
              cohort_row("a", "02", "s5", "post", 3.5)]
    page = render(cohort, [status_row("a", r["subject"], r["session"], "measured")
                           for r in cohort], timepoints=["pre", "post", "week52"])
    svg = re.search(r'<svg [^>]*aria-label="VHI change per subject">.*?</svg>', page).group(0)
    assert svg.count('class="subject"') == 2
    assert svg.count("<circle") == 5
    assert svg.index(">pre</text>") < svg.index(">post</text>") < svg.index(">week52</text>")


def test_strings_from_data_are_escaped() -> None:
    cohort = [cohort_row("a", "01", EVIL, "pre", 1.0)]
    status = [status_row("a", "01", EVIL, "measured"),
              status_row("a", '"><b>', "s2", "failed", reason=f"cannot read {EVIL} & more",
                         step="pull_scan_stir", log="logs/<i>.log")]
    agreement = [{"site": "a", "subject": "01", "session": EVIL, "timepoint": "pre",
                  "reader": "<R1>", "dice": 0.5, "volume_similarity": 0.9}]
    page = render(cohort, status, agreement)
    assert EVIL not in page and "<b>" not in page and "<i>" not in page and "<R1>" not in page
    assert page.count("<script>") == 1  # the page's own (and its data block)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "cannot read &lt;script&gt;" in page and "&amp; more" in page
    assert "&lt;R1&gt;" in page and '"&quot;&gt;&lt;b&gt;"' not in page
    assert svg_of(page, "VHI per site").count('class="box"') == 1


def test_empty_cohort() -> None:
    page = render([], [])
    assert RESEARCH_USE in page
    assert "No sessions in the sheet." in page
    assert "No session is measured yet" in page and "no change to show" in page
    assert 'class="box"' not in page


def test_cohort_with_failures_only() -> None:
    status = [status_row("a", "01", "s1", "failed", reason="session a/01/s1: T1W /t: file not found",
                         step="pull_scan_t1w", log="logs/x.log"),
              status_row("a", "02", "s2", "pending", reason="pull_scan_t1w not run yet",
                         step="pull_scan_t1w")]
    page = render([], status)
    counts = count_cells(row_html(page, "data-site", "a"))
    assert (counts["failed"], counts["pending"], counts["measured"], counts["total"]) == (1, 1, 0, 2)
    assert "Failed sessions (1)" in page and "Awaiting cleaning (0)" in page
    assert "session a/01/s1: T1W /t: file not found" in page
    assert 'class="box"' not in page and 'class="total"' not in page  # one site: no total row


def test_agreement_summary_per_reader() -> None:
    agreement = [{"site": "a", "subject": "01", "session": s, "timepoint": "pre", "reader": "R1",
                  "dice": d, "volume_similarity": 0.9} for s, d in (("s1", 0.5), ("s2", 0.7))]
    page = render(agreement=agreement)
    row = re.search(r"<td class=\"\">R1</td>(.*?)</tr>", page).group(1)
    assert '<td class="num">2</td><td class="num">0.600</td>' in row


def test_page_is_self_contained() -> None:
    page = render(images={"a/01/s1": {"image": "qc/a/01/s1/qc.png"}})
    without_namespace = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    for needle in ("http://", "https://", "<link", "@import", "url(", "//"):
        assert needle not in without_namespace.replace("// ", ""), needle
    # one inline script (allowed by its hash) and its data; images only from the page's folder
    assert page.count("<script>") == 1 and page.count('<script type="application/json"') == 1
    assert "<script src" not in page
    assert "script-src 'sha256-" in page and "img-src 'self' data:" in page
    assert session_data(page)["a/01/s1"]["qc_image"] == "qc/a/01/s1/qc.png"


def test_write_results_writes_the_report_from_the_same_tables(synthetic_cohort: SyntheticCohort,
                                                             tmp_path: Path) -> None:
    c = synthetic_cohort
    layout = c.layout_with_results(tmp_path / "results")
    # measured, awaiting cleaning, and failed on a STIR whose (missing) file's name holds "<x>"
    plan = c.plan_of("s1", "s2", "s4")
    write_results(plan, layout, ["pre", "post"], "m")
    assert not Path(layout.results, "report.html").exists()  # s4 failed: partial results only
    layout = layout.partial()
    page = (Path(layout.results) / "report.html").read_text()
    assert "Partial results: 1 of 3 sessions failed or not finished yet" in page
    rows = session_data(page)
    assert list(rows) == ["a/01/s1", "a/01/s2", "a/03/s4"]  # every session, in the table
    cohort = pd.read_csv(Path(layout.results) / "cohort_vhi.csv")
    assert len(cohort) == 1
    assert rows["a/01/s1"]["vhi_ml"] == fmt_ml(cohort["vhi_ml"].iloc[0])
    stir = c.planned("s4").session.scans["stir"]
    assert "<x>" in stir and "<x>" not in page
    assert f"session a/03/s4: STIR {html.escape(stir)}: file not found" in page
    assert not list(Path(layout.results).glob(".*part*"))


def test_qc_images_are_copied_next_to_the_report_and_linked_relatively(
        synthetic_cohort: SyntheticCohort, tmp_path: Path) -> None:
    c = synthetic_cohort
    layout = c.layout_with_results(tmp_path / "results")
    results = tmp_path / "results" / "partial"  # s4 failed, s5 never ran: partial results
    write_results(c.plan, layout, ["pre", "post"], "m")
    page = (results / "report.html").read_text()
    rows = session_data(page)
    links = ({r["qc_image"] for r in rows.values()} | {r["qc_before_cleaning"] for r in rows.values()}
             | set(re.findall(r' (?:src|href)="([^"]*)"', without_script(page)))) - {""}
    expected = {"qc/a/01/s1/qc_cleaned.png", "qc/a/01/s1/qc.png", "qc/a/01/s2/qc.png",
                "qc/a/02/s3/qc.png"}  # s4 failed before any image, s5 never ran
    assert links == expected
    for rel in expected:
        session = c.planned(rel.split("/")[3]).session
        copy, original = results / rel, c.layout.work_file(session, Path(rel).name)
        assert copy.read_bytes() == original.read_bytes()
    assert rows["a/01/s1"]["qc_image"] == "qc/a/01/s1/qc_cleaned.png"
    assert rows["a/01/s1"]["qc_before_cleaning"] == "qc/a/01/s1/qc.png"
    assert rows["a/03/s4"]["qc_image"] == ""  # failed before any image
    assert "no image" in row_html(page, "data-key", "a/03/s4")  # in the failed sessions' table
    # a second write copies nothing that did not change
    stamp = (results / "qc/a/01/s2/qc.png").stat().st_mtime_ns
    write_results(c.plan, layout, ["pre", "post"], "m")
    assert (results / "qc/a/01/s2/qc.png").stat().st_mtime_ns == stamp
