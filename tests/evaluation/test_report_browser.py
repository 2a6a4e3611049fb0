"""The report renders in a real headless Chromium: every section and image, no console errors, a screenshot."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from evaluation.report import SECTIONS
from evaluation.report_browser import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.browser

SCREENSHOT_DIR = Path(os.environ.get("FEDRESPONSE_SCREENSHOTS", "/tmp/fedresponse-screenshots"))


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing on CI; `make test` installs Debian's chromium package")
        pytest.skip("Debian chromium not installed (apt-get install chromium); the report is untested in a browser")
    return path


def test_report_renders_every_section_and_image_without_errors(chromium: str, evaluated: dict) -> None:
    from playwright.sync_api import sync_playwright

    report: Path = evaluated["report"]
    html = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']https?://""", html), "the report must not fetch anything"
    n_png = len(list(evaluated["figures"].glob("*.png")))
    assert n_png == len(list(evaluated["figures"].glob("*.svg"))) >= 15
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS), headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
        page.goto(report.as_uri(), wait_until="load")
        ids = page.eval_on_selector_all("section", "els => els.map(e => e.id)")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.closest('section').id, e.complete && e.naturalWidth > 100])"
        )
        headline = page.inner_text("#summary")
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOT_DIR / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert ids == [sid for sid, _ in SECTIONS]
    assert len(images) == n_png and all(ok for _, ok in images), images
    with_images = {sid for sid, _ in images}
    assert {
        "primary",
        "calibration",
        "survival",
        "orr",
        "dhi",
        "agreement",
        "privacy",
        "consort",
        "sites",
    } <= with_images
    assert errors == [] and requests == []
    assert "AUC, full (T2)" in headline and "median PFS" in headline
    assert shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")


def test_render_helper_reports_what_the_browser_saw(chromium: str, evaluated: dict, tmp_path: Path) -> None:
    from evaluation.report_browser import render_report

    result = render_report(evaluated["report"], tmp_path / "shot.png")
    assert result.sections == [sid for sid, _ in SECTIONS]
    assert result.images_broken == 0 and result.images_loaded >= 15
    assert result.console_errors == []
    # a broken image must be seen as broken
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><section id="x"><img src="data:image/png;base64,AAAA"></section></body></html>')
    assert render_report(broken, tmp_path / "b.png").images_broken == 1
