"""Both reports render in a real headless Chromium and print to PDF: every section and image, no console errors,
no network, a plausible page count (pdfinfo), and a PNG of each PDF's first page (what a PI sees first on paper)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from evaluation.central_report import CENTRAL_SECTIONS
from evaluation.report_browser import CHROMIUM_ARGS, chromium_path, pdf_page_count
from evaluation.site_report import SITE_SECTIONS

pytestmark = pytest.mark.browser

SCREENSHOT_DIR = Path(os.environ.get("FEDRESPONSE_SCREENSHOTS", "/tmp/fedresponse-screenshots"))


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None or shutil.which("pdftoppm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium/poppler-utils missing on CI; `make test` installs both (Debian packages)")
        pytest.skip("Debian chromium or poppler-utils not installed; the reports are untested in a browser")
    return path


@pytest.fixture(scope="module")
def printed(chromium: str, evaluated: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Copies of the central and one site report, each printed beside itself (PDF + first-page PNG)."""
    from evaluation.report_browser import print_report

    root = tmp_path_factory.mktemp("printed")
    out = {}
    for name, folder in (("central", evaluated["report"].parent), ("site", evaluated["sites"]["S01"]["report"].parent)):
        shutil.copytree(folder, root / name)
        out[name] = print_report(root / name / "report.html")
    return out


def test_central_report_renders_every_section_and_image_offline(chromium: str, evaluated: dict) -> None:
    from playwright.sync_api import sync_playwright

    report: Path = evaluated["report"]
    html = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']https?://""", html), "the report must not fetch anything"
    n_png = len(list(evaluated["figures"].glob("*.png")))
    assert n_png == len(list(evaluated["figures"].glob("*.svg"))) >= 7
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
        contents = page.eval_on_selector_all("nav#contents a", "els => els.map(e => e.getAttribute('href'))")
        browser.close()
    assert ids == [sid for sid, _ in CENTRAL_SECTIONS]
    assert contents == [f"#{sid}" for sid, _ in CENTRAL_SECTIONS]
    assert len(images) == n_png and all(ok for _, ok in images), images
    assert {"population", "primary", "calibration", "survival", "orr", "privacy"} <= {sid for sid, _ in images}
    assert errors == [] and requests == []
    assert "AUC, full model (T0–T2)" in headline and "median PFS" in headline and "Primary endpoint" in headline


@pytest.mark.parametrize(("name", "sections"), [("central", CENTRAL_SECTIONS), ("site", SITE_SECTIONS)])
def test_each_report_prints_to_a_plausible_pdf(printed: dict, name: str, sections: tuple) -> None:
    result = printed[name]
    assert result.sections == [sid for sid, _ in sections]
    assert result.console_errors == [] and result.images_broken == 0 and result.images_loaded >= 5
    assert result.pdf is not None and result.pdf.exists() and result.pdf.parent == result.screenshot.parent
    # a page break before every section but the first, a title page with the contents: no 14,000-pixel page
    assert len(sections) <= result.pdf_pages == pdf_page_count(result.pdf) <= 3 * len(sections)
    assert result.first_page is not None and result.first_page.stat().st_size > 20_000
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy2(result.first_page, SCREENSHOT_DIR / f"{name}_report_page1.png")
    shutil.copy2(result.screenshot, SCREENSHOT_DIR / f"{name}_report.png")
    print(f"first page: {SCREENSHOT_DIR / f'{name}_report_page1.png'}")


def test_first_page_is_what_a_pi_reads_first(printed: dict) -> None:
    import subprocess

    text = subprocess.run(["pdftotext", "-f", "1", "-l", "1", "-layout", str(printed["central"].pdf), "-"],
                          capture_output=True, text=True, check=True).stdout
    flat = " ".join(text.split())
    for expected in ("Central PI report", "ChiCTR2600120951", "Data cut-off", "Run", "Contents",
                     "Participant flow (CONSORT)"):
        assert expected in flat, expected


def test_render_helper_reports_what_the_browser_saw(chromium: str, evaluated: dict, tmp_path: Path) -> None:
    from evaluation.report_browser import render_report

    result = render_report(evaluated["report"], tmp_path / "shot.png")
    assert result.sections == [sid for sid, _ in CENTRAL_SECTIONS]
    assert result.images_broken == 0 and result.images_loaded >= 7
    assert result.console_errors == [] and result.pdf is None
    # a broken image must be seen as broken
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><section id="x"><img src="data:image/png;base64,AAAA"></section></body></html>')
    assert render_report(broken, tmp_path / "b.png").images_broken == 1
