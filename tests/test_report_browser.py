"""The demo run's report (support/demo.py) opened in Debian's Chromium through Playwright.

Checks what a person sees: no console error, nothing loaded from outside the report's
folder, every QC thumbnail loaded, the VHI numbers of cohort_vhi.csv in the session
table, the site/state/text filters and sorting, the follow-up subject's change at two
timepoints in cohort_change.csv and in the change plot. The screenshot is saved as
``report.png`` in the test's temporary folder (pytest prints its base with ``-v``;
``--basetemp`` fixes it).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from support.browser import browser_context, needs_browser
from support.demo import FOLLOWUP, FOLLOWUP_SITE, FOLLOWUP_SUBJECT, DemoRun, r11

pytestmark = [pytest.mark.slow, needs_browser]

MAX_QC_PNG_BYTES = 150_000
ROWS = "#session-table tbody tr"
LOAD_EVERY_IMAGE = """async () => {
  const images = [...document.images];
  images.forEach(i => { i.loading = "eager"; });
  await Promise.all(images.map(i => i.decode().catch(() => null)));
  return images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);
}"""


def ids(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({"site": str, "subject": str, "session": str})


def read(results: Path, name: str) -> pd.DataFrame:
    return ids(pd.read_csv(results / name, dtype={"subject": str, "session": str}))


def visible_keys(page) -> list[str]:
    return page.evaluate(f"[...document.querySelectorAll('{ROWS}')].filter(r => !r.hidden)"
                         ".map(r => r.dataset.key)")


def mask_ml(path: Path) -> float:
    img = nib.load(path)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    return int(np.count_nonzero(np.asanyarray(img.dataobj))) * float(np.prod(zooms)) / 1000.0


def test_demo_report_in_chromium(demo_run: DemoRun, data_dir: Path, tmp_path: Path) -> None:
    results = demo_run.results.resolve()
    status = read(results, "status.csv")
    cohort = read(results, "cohort_vhi.csv")
    key = lambda r: f"{r['site']}/{r['subject']}/{r['session']}"  # noqa: E731
    every = [key(r) for r in status.to_dict("records")]

    # the QC images: one per session with a disease region, small, next to the report
    pngs = sorted(results.glob("qc/*/*/*/qc.png"))
    assert len(pngs) == len(status) == 13  # 11 demo sessions and the two follow-up ones
    assert all(p.stat().st_size <= MAX_QC_PNG_BYTES for p in results.glob("qc/**/*.png"))
    assert len(list(results.glob("qc/*/*/*/qc_cleaned.png"))) == len(cohort)

    folder = results.as_uri() + "/"
    requests, errors = [], []
    with browser_context() as context:
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((results / "report.html").as_uri(), wait_until="load")
        broken = page.evaluate(LOAD_EVERY_IMAGE)
        n_images = page.evaluate("document.images.length")

        # VHI in the session table = cohort_vhi.csv (printed to 0.01 ml); empty when not measured
        shown = dict(page.evaluate(f"[...document.querySelectorAll('{ROWS}')]"
                                   ".map(r => [r.dataset.key, r.querySelector('td.vhi').textContent])"))
        vhi = {key(r): f"{r['vhi_ml']:.2f}" for r in cohort.to_dict("records")}
        assert sorted(shown) == sorted(every)
        assert shown == {k: vhi.get(k, "") for k in every}

        # filters: site and state, then text
        page.select_option("#filter-site", "demo")
        page.select_option("#filter-state", "measured")
        expected = [key(r) for r in status.to_dict("records")
                    if r["site"] == "demo" and r["state"] == "measured"]
        assert visible_keys(page) == expected and len(expected) >= 7
        assert page.text_content("#filter-count") == f"{len(expected)} of {len(every)} sessions shown"
        page.select_option("#filter-state", "segmented")
        assert visible_keys(page) == ["demo/08/1001", "demo/24/3009", "demo/30/2016"]
        page.select_option("#filter-site", FOLLOWUP_SITE)
        page.select_option("#filter-state", "")
        assert visible_keys(page) == [f"{FOLLOWUP_SITE}/{FOLLOWUP_SUBJECT}/{s}" for s in FOLLOWUP]
        page.select_option("#filter-site", "")
        page.fill("#filter-text", "1012")  # the demo's 1012 and the follow-up's f1012, at two sites
        assert {"demo/13/1012", f"{FOLLOWUP_SITE}/{FOLLOWUP_SUBJECT}/f1012"} <= set(visible_keys(page))
        assert page.evaluate(f"[...document.querySelectorAll('{ROWS}')]"
                             ".every(r => r.textContent.includes('1012'))")
        page.fill("#filter-text", "")

        # sorting by VHI: largest first on the second click, unmeasured sessions last
        header = page.locator("#session-table th", has_text="VHI (ml)")
        header.click()
        header.click()
        values = page.evaluate(f"[...document.querySelectorAll('{ROWS}')]"
                               ".map(r => r.querySelector('td.vhi').textContent)")
        numbers = [float(v) for v in values if v]
        assert numbers == sorted(numbers, reverse=True) and values[len(numbers):] == [""] * (
            len(every) - len(numbers))

        # the change plot: the follow-up subject's line and its two points
        change_titles = page.evaluate(
            "[...document.querySelectorAll('svg[aria-label=\"VHI change per subject\"] title')]"
            ".map(t => t.textContent)")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=False)

    assert errors == [] and broken == []
    assert n_images >= len(status)  # the session table's thumbnails (and the failed table's)
    assert requests and all(url.startswith(folder) for url in requests), [
        u for u in requests if not u.startswith(folder)]
    assert (tmp_path / "report.png").stat().st_size > 10_000

    change = pd.read_csv(results / "cohort_change.csv", dtype={"subject": str, "session_from": str,
                                                                 "session_to": str})
    [row] = change[change["site"] == FOLLOWUP_SITE].to_dict("records")
    pre_ml, post_ml = (mask_ml(r11(data_dir, FOLLOWUP[s][1])) for s in ("f1003", "f1012"))
    assert (row["subject"], row["timepoint_from"], row["timepoint_to"]) == (FOLLOWUP_SUBJECT, "pre", "post")
    assert (row["session_from"], row["session_to"]) == ("f1003", "f1012")
    assert row["vhi_ml_from"] == pytest.approx(pre_ml, rel=1e-12)
    assert row["vhi_ml_to"] == pytest.approx(post_ml, rel=1e-12)
    assert row["change_ml"] == pytest.approx(post_ml - pre_ml, rel=1e-9)
    assert row["change_percent"] == pytest.approx(100 * (post_ml - pre_ml) / pre_ml, rel=1e-9)
    assert len(change) == 1  # no demo subject has two timepoints
    subject = f"{FOLLOWUP_SITE}/{FOLLOWUP_SUBJECT}"
    assert f"{subject}: pre to post: {post_ml - pre_ml:+.2f} ml" in change_titles
    assert f"{subject}/f1003 (pre): {pre_ml:.2f} ml" in change_titles
    assert f"{subject}/f1012 (post): {post_ml:.2f} ml" in change_titles
