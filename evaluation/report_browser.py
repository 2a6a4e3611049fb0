"""Open ``report.html`` in headless Chromium (Playwright) and save a screenshot: the demo's proof that the
report renders offline. The browser test (``tests/evaluation/test_report_browser.py``) drives the same browser.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def chromium_path() -> str | None:
    """Debian's chromium (``/usr/bin/chromium``) or whatever ``chromium`` is on PATH; None if absent."""
    fixed = Path("/usr/bin/chromium")
    return str(fixed) if fixed.exists() else shutil.which("chromium")


@dataclass
class RenderResult:
    """What the browser saw: section ids, images (loaded or not) and console errors."""

    screenshot: Path
    sections: list[str] = field(default_factory=list)
    images_loaded: int = 0
    images_broken: int = 0
    console_errors: list[str] = field(default_factory=list)


def render_report(report: Path, screenshot: Path, timeout_ms: int = 30_000) -> RenderResult:
    """Load ``report`` from disk with networking disabled, collect errors, and write a full-page PNG."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError("chromium not found; install Debian's `chromium` package (the Makefile does on CI)")
    result = RenderResult(screenshot=screenshot)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda msg: result.console_errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: result.console_errors.append(str(exc)))
            page.route("http*://**", lambda route: route.abort())  # offline: nothing may be fetched
            page.goto(report.resolve().as_uri(), wait_until="load", timeout=timeout_ms)
            result.sections = page.eval_on_selector_all("section", "els => els.map(e => e.id)")
            states = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
            result.images_loaded = sum(bool(s) for s in states)
            result.images_broken = len(states) - result.images_loaded
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    log.info("report rendered: %d sections, %d images, %d console errors; screenshot %s", len(result.sections),
             result.images_loaded, len(result.console_errors), screenshot)
    return result
