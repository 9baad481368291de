"""The example report in a real browser (Playwright driving Debian's chromium, as the console's
browser test does): it renders its charts, asks for nothing but its own file, and with
`ORDERWATCH_SCREENSHOTS=docs/examples` (`make example-report-screenshot`) replaces
docs/examples/report.png."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.console.test_browser import chromium

pytestmark = pytest.mark.slow

REPORT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "report.html"
__fixtures__ = (chromium,)


@pytest.mark.timeout(180)
async def test_the_example_report_in_chromium(tmp_path: Path, chromium: str) -> None:
    from playwright.async_api import async_playwright

    from tests.console.test_browser import CHROMIUM_ARGS

    requested: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("request", lambda req: requested.append(req.url))
            await page.goto(REPORT.as_uri())
            assert await page.title() == "Order exceptions review (simulated shop, seed 7)"
            charts = page.locator("svg")
            assert await charts.count() >= 10
            for i in range(await charts.count()):
                box = await charts.nth(i).bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 20
            assert await page.locator("h2", has_text="Rules that look mis-tuned").count() == 1
            assert requested == [REPORT.as_uri()], "the report fetches nothing but itself"
            shots = [tmp_path]
            if os.environ.get("ORDERWATCH_SCREENSHOTS"):
                shots.append(Path(os.environ["ORDERWATCH_SCREENSHOTS"]))
            for d in shots:
                await page.screenshot(path=str(d / "report.png"), full_page=True)
            assert (tmp_path / "report.png").stat().st_size > 50_000
        finally:
            await browser.close()
