"""Debian's Chromium driven by Playwright, for the report and viewer tests.

The pip wheel brings Playwright's driver only; the browser is the system's
`chromium` (installed by scripts/install-system-packages.sh), never `playwright install`.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LAUNCH_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]

needs_browser = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no system Chromium (scripts/install-system-packages.sh installs Debian's `chromium`)",
)


#: Every context's window size: OHIF's full layout (study list, viewport, segmentation panel)
#: in a small window, as SwiftShader draws every pixel on the CPU (a third less CPU per
#: OHIF test than 1400 × 900).
VIEWPORT = {"width": 1024, "height": 640}


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium (several contexts: several people at their own browsers)."""
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:
        pytest.skip("no system Chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def browser_context(**context_options) -> Iterator:
    """A fresh headless Chromium context; closed (with the browser) on exit."""
    with chromium() as browser:
        context = browser.new_context(**{"viewport": VIEWPORT, **context_options})
        yield context
        context.close()
