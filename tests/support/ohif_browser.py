"""OHIF 3.13 in headless Chromium, driven as a radiologist would: load the proposal SEG,
edit it through OHIF's labelmap API, save it through OHIF's own store command.

Shared by the browser loops of the DICOMweb site (tests/test_viewer_loop.py) and the
local station (tests/test_viewer_local.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from support.browser import browser_context

#: How long OHIF may take to load a study or a SEG, or a save to arrive: generous, as the
#: suite's other workers may hold the CPU meanwhile (a wait, not a duration: never slower).
LOAD_TIMEOUT_MS = 180_000

SEG_LABEL = "VHI inflammation (AI proposal, research use)"
#: Browser console errors known to be harmless here.
KNOWN_CONSOLE_ERRORS = ("favicon.ico", "Failed to load resource: the server responded with a status of 404")

JS_COUNT = """(segId) => {
  const seg = window.cornerstoneTools.segmentation.state.getSegmentation(segId);
  const lm = seg.representationData.Labelmap;
  let voxels = 0;
  for (const id of lm.imageIds) {
    const d = window.cornerstone.cache.getImage(id).getPixelData();
    for (let n = 0; n < d.length; n++) if (d[n]) voxels++;
  }
  return {segments: Object.keys(seg.segments).filter(k => seg.segments[k]).length, voxels};
}"""

JS_EDIT = """([segId, edits]) => {
  // edits: [sopInstanceUID, row, column, value]; the labelmap image of each source image
  // is found through the source image's SOP Instance UID
  const cs = window.cornerstone;
  const seg = window.cornerstoneTools.segmentation.state.getSegmentation(segId);
  const lm = seg.representationData.Labelmap;
  const bySop = {};
  for (const id of lm.imageIds) {
    const image = cs.cache.getImage(id);
    const sop = cs.metaData.get('sopCommonModule', image.referencedImageId).sopInstanceUID;
    bySop[sop] = image;
  }
  let done = 0;
  for (const [sop, r, c, v] of edits) {
    const image = bySop[sop];
    if (!image) continue;
    image.getPixelData()[r * image.columns + c] = v;
    done++;
  }
  window.cornerstoneTools.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(segId);
  return done;
}"""


JS_VOI = """() => {
  const vp = window.cornerstone.getEnabledElements().map(e => e.viewport)
    .find(v => v.getImageIds && v.getImageIds().length && v.getProperties().voiRange);
  return vp ? vp.getProperties().voiRange : null;
}"""


def reader_edit(proposal: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Remove the smallest connected component, add a 2×2 square elsewhere: the edited mask
    and the edits as voxel (i, j, k, value)."""
    mask = proposal >= 1
    labels, n = ndimage.label(mask)
    assert n >= 2, "the proposal needs two components for this test"
    sizes = ndimage.sum_labels(mask, labels, index=range(1, n + 1))
    drop = int(np.argmin(sizes)) + 1
    edits = [(int(i), int(j), int(k), 0) for i, j, k in np.argwhere(labels == drop)]
    k = int(np.argwhere(mask)[:, 2].mean())
    free = [(i, j) for i in range(2, mask.shape[0] - 2) for j in range(2, mask.shape[1] - 2)
            if not mask[i:i + 2, j:j + 2, k].any()]
    i0, j0 = free[len(free) // 2]
    edits += [(i, j, k, 1) for i in (i0, i0 + 1) for j in (j0, j0 + 1)]
    edited = mask.copy()
    for i, j, kk, v in edits:
        edited[i, j, kk] = bool(v)
    return edited, edits


def load_proposal(page, ours: int) -> str:
    """Open the proposal SEG of the study on the page (OHIF asks first); its segmentation id.
    It must hold ``ours`` voxels in one segment."""
    page.get_by_text(SEG_LABEL).first.dblclick()
    page.get_by_role("button", name="Yes").click()
    page.wait_for_function("() => window.services.segmentationService.getSegmentations()"
                           ".length > 0", timeout=LOAD_TIMEOUT_MS)
    seg_id = page.evaluate("() => window.services.segmentationService.getSegmentations()[0]"
                           ".segmentationId")
    page.wait_for_timeout(1000)
    assert page.evaluate(JS_COUNT, seg_id) == {"segments": 1, "voxels": ours}
    return seg_id


def edit_and_store(page, seg_id: str, js_edits: list, edited: np.ndarray) -> None:
    """Edit the segmentation as a reader would, check it, and save it through OHIF's own
    store command and dialog (the save itself reaches the service afterwards)."""
    assert page.evaluate(JS_EDIT, [seg_id, js_edits]) == len(js_edits)
    page.wait_for_timeout(1000)
    assert page.evaluate(JS_COUNT, seg_id)["voxels"] == int(edited.sum())
    # the command's promise settles when the dialog closes: not awaited here
    page.evaluate("(segId) => { window.commandsManager.runCommand('storeSegmentation', "
                  "{segmentationId: segId, modality: 'SEG'}); }", seg_id)
    page.get_by_role("dialog").get_by_role("button", name="Save").click()


def clean_in_browser(url: str, *, saved: Callable[[], bool], ours: int, edited: np.ndarray,
                     js_edits: list, artefacts: Path) -> tuple[str, list[str], list[str], dict]:
    """Open the session in OHIF, load the proposal, edit it, save it through OHIF's store
    command and wait until ``saved()``; the Chromium version, the URLs requested, the
    console errors and the image viewport's VOI range (the display window) as loaded."""
    with browser_context() as context:
        requests_seen: list[str] = []
        context.on("request", lambda r: requests_seen.append(r.url))
        page = context.new_page()
        console, voi = clean_on_page(page, url, saved=saved, ours=ours, edited=edited, js_edits=js_edits,
                                     artefacts=artefacts)
        return context.browser.version, requests_seen, console, voi


def clean_on_page(page, url: str, *, saved: Callable[[], bool], ours: int, edited: np.ndarray,
                  js_edits: list, artefacts: Path, name: str = "") -> tuple[list[str], dict]:
    """:func:`clean_in_browser` on a page of a context the caller made (a reader signed in);
    the console errors and the VOI range. Screenshots are ``{name}loaded.png`` …"""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    failed: list[str] = []  # requests that got no answer or an error status: what a hang waits on
    page.on("requestfailed", lambda r: failed.append(f"{r.method} {r.url}: {r.failure}"))
    page.on("response", lambda r: failed.append(f"{r.request.method} {r.url}: {r.status}")
            if r.status >= 400 else None)
    page.set_default_timeout(LOAD_TIMEOUT_MS)
    page.goto(url)
    try:
        page.wait_for_function("() => window.services && window.services.displaySetService"
                               ".getActiveDisplaySets().length >= 2", timeout=LOAD_TIMEOUT_MS)
        page.wait_for_function(JS_VOI, timeout=LOAD_TIMEOUT_MS)
    except PlaywrightTimeoutError as exc:
        page.screenshot(path=str(artefacts / f"{name}not-loaded.png"))
        raise AssertionError(f"{url} not loaded in {LOAD_TIMEOUT_MS / 1000:.0f} s (screenshot "
                             f"{name}not-loaded.png); failed requests: {failed[-20:]}; "
                             f"console errors: {console[-20:]}") from exc
    voi = page.evaluate(JS_VOI)
    seg_id = load_proposal(page, ours)
    page.screenshot(path=str(artefacts / f"{name}loaded.png"))
    edit_and_store(page, seg_id, js_edits, edited)
    page.screenshot(path=str(artefacts / f"{name}edited.png"))
    deadline = time.monotonic() + LOAD_TIMEOUT_MS / 1000
    while not saved():
        assert time.monotonic() < deadline, "OHIF's save did not reach the DICOMweb service"
        time.sleep(0.5)
    page.wait_for_timeout(500)
    page.screenshot(path=str(artefacts / f"{name}saved.png"))
    return console, voi
