"""Open a report in headless Chromium (Playwright): check it renders offline, save a screenshot, print its PDF.

:func:`render_report` loads the HTML with networking blocked and records sections, images and console errors;
with ``pdf=`` it also prints the report (A4, the template's print CSS: a page break before every section) and
writes the PDF's first page as a PNG (poppler's ``pdftoppm``) beside it. The browser test
(``tests/evaluation/test_report_browser.py``) drives the same browser.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    pdf: Path | None = None
    pdf_pages: int = 0
    first_page: Path | None = None


def pdf_page_count(pdf: Path) -> int:
    """Pages of ``pdf`` (poppler's ``pdfinfo``)."""
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    match = re.search(r"^Pages:\s+(\d+)", info, flags=re.MULTILINE)
    if match is None:
        raise ValueError(f"pdfinfo printed no page count for {pdf}: {info[:200]!r}")
    return int(match.group(1))


def pdf_first_page_png(pdf: Path, png: Path, dpi: int = 80) -> Path:
    """Write page 1 of ``pdf`` as ``png`` (poppler's ``pdftoppm``); what a PI sees first on paper."""
    if shutil.which("pdftoppm") is None:
        raise FileNotFoundError("pdftoppm not found; install Debian's `poppler-utils` (the Makefile does on CI)")
    stem = png.with_suffix("")
    subprocess.run(["pdftoppm", "-f", "1", "-l", "1", "-singlefile", "-r", str(dpi), "-png", str(pdf), str(stem)],
                   check=True, capture_output=True)
    return png


def _print(page: Any, result: RenderResult, pdf: Path) -> None:
    pdf.parent.mkdir(parents=True, exist_ok=True)
    footer = ('<div style="font-size:7px;width:100%;text-align:center;color:#777">'
              '<span class="title"></span> · page <span class="pageNumber"></span> of <span class="totalPages"></span>'
              "</div>")
    page.pdf(path=str(pdf), format="A4", print_background=True, display_header_footer=True,
             header_template="<div></div>", footer_template=footer, prefer_css_page_size=True)
    result.pdf, result.pdf_pages = pdf, pdf_page_count(pdf)
    if shutil.which("pdftoppm") is not None:
        result.first_page = pdf_first_page_png(pdf, pdf.with_name(f"{pdf.stem}_page1.png"))


def render_report(report: Path, screenshot: Path, timeout_ms: int = 30_000, pdf: Path | None = None) -> RenderResult:
    """Load ``report`` from disk with networking disabled, collect errors, and write a full-page PNG.

    With ``pdf``, also print the report to that PDF (A4, print CSS) and, when poppler is installed, its first page
    to ``<pdf stem>_page1.png`` beside it.
    """
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
            if pdf is not None:
                _print(page, result, pdf)
        finally:
            browser.close()
    log.info("report rendered: %d sections, %d images, %d console errors; screenshot %s; pdf %s (%d pages)",
             len(result.sections), result.images_loaded, len(result.console_errors), screenshot, result.pdf,
             result.pdf_pages)
    return result


def print_report(report: Path) -> RenderResult:
    """Render ``report`` and print it beside itself: ``report.pdf``, ``report_page1.png``, ``report_screenshot.png``."""
    return render_report(report, report.with_name(f"{report.stem}_screenshot.png"), pdf=report.with_suffix(".pdf"))
