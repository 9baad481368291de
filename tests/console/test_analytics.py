"""The analytics page of the console and `/analytics/<kind>` of the ops API, in-process against
the local stack's Redis: figures of seeded cases, every role may read, no token refused, bad
queries answered 422, Redis gone answered 503, and no phone or address line on the page."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import Browser, People, console_server
from tests.console.test_browser import chromium
from tests.console.test_pages import CONFIG, LINE1, PHONE, _clean, _seed, _settings
from tests.handlers.conftest import _require_redis, free_port, prefix, redis_client

__fixtures__ = (_require_redis, redis_client, prefix, chromium)


async def _api(b: Browser, path: str, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with b.session.get(b.server.make_url(path), headers=headers) as r:
        return r.status, await r.json()


async def test_analytics_api_and_page(tmp_path: Path, prefix: str) -> None:
    people = People(tmp_path / "tokens.toml")
    async with console_server(_settings(prefix, people), CONFIG) as (server, rt):
        await _seed(rt)
        await rt.service.acknowledge((await rt.store.query(limit=1))[0][0].exception_id, "ana")
        b = Browser(server)
        try:
            for token in (people.viewer, people.operator, people.approver):
                status, body = await _api(b, "/analytics/summary?period=7d", token)
                assert status == 200, body
                current = body["result"]["current"]
                assert current["cases"] == 3 and current["handling"]["acknowledged"] == 1
            status, body = await _api(b, "/analytics/distribution?by=team&period=30d", people.viewer)
            assert status == 200 and {r["value"] for r in body["result"]} == {"ops", "payments"}
            status, body = await _api(b, "/analytics/handling?by=severity", people.viewer)
            assert status == 200 and sum(r["cases"] for r in body["result"]) == 3
            status, body = await _api(b, "/analytics/summary", None)
            assert status == 401
            for bad in ("/analytics/everything", "/analytics/summary?period=0s", "/analytics/summary?by=rule",
                        "/analytics/distribution?by=rule%3B%20DROP", "/analytics/distribution?top=1&top=2",
                        "/analytics/summary?end=2026-01-01T00:00:00"):  # fmt: skip
                status, body = await _api(b, bad, people.viewer)
                assert status == 422, bad
                assert "error" in body and len(body["error"]) < 300

            assert (await b.login(people.viewer)).status == 303
            status, html, resp = await b.get("/console/analytics?period=30d")
            assert status == 200
            assert "Content-Security-Policy" in resp.headers
            assert html.count("<svg") >= 2 and "Headline" in html and "SLA by severity" in html
            assert re.search(r"\| Exceptions \||<td>Exceptions</td><td>3</td>", html)
            assert '<a href="/console/analytics"' in html  # in the navigation
            status, html, _ = await b.get("/console/analytics?period=forever")
            assert status == 422
            _clean(b.pages)
            assert PHONE not in html and LINE1 not in html
        finally:
            await b.close()


async def test_analytics_with_redis_gone(tmp_path: Path, prefix: str) -> None:
    people = People(tmp_path / "tokens.toml")
    settings = _settings(prefix, people, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with console_server(settings, CONFIG) as (server, _):
        b = Browser(server)
        try:
            status, body = await _api(b, "/analytics/summary", people.viewer)
            assert status == 503 and "cannot be reached" in body["error"]
        finally:
            await b.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_the_analytics_page_in_chromium(tmp_path: Path, prefix: str, chromium: str) -> None:
    """Playwright driving Debian's chromium, as the console's browser test: the page's charts
    render, nothing is fetched from elsewhere, the CSP refuses nothing; a screenshot every run
    (with `ORDERWATCH_SCREENSHOTS=docs/images`, into the docs)."""
    from playwright.async_api import async_playwright

    from tests.console.test_browser import CHROMIUM_ARGS

    people = People(tmp_path / "tokens.toml")
    async with console_server(_settings(prefix, people), CONFIG) as (server, rt):
        await _seed(rt)
        base = str(server.make_url("")).rstrip("/")
        requested: list[str] = []
        problems: list[str] = []
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("request", lambda req: requested.append(req.url))
                page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
                failed: list[str] = []
                page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
                await page.goto(f"{base}/console/analytics?period=30d")
                await page.get_by_label("Access token").fill(people.viewer)
                await page.get_by_role("button", name="Log in").click()
                await page.wait_for_url(re.compile(r"/console/analytics\?period=30d"))
                await page.get_by_role("heading", name="SLA by severity").wait_for()
                charts = page.locator(".report svg")
                assert await charts.count() >= 2
                for i in range(await charts.count()):
                    box = await charts.nth(i).bounding_box()
                    assert box is not None and box["width"] > 200 and box["height"] > 20
                await page.get_by_label("Period", exact=True).select_option("1d")
                await page.get_by_role("button", name="Show").click()
                await page.wait_for_url(re.compile(r"period=1d"))
                shots = [tmp_path] + (
                    [Path(os.environ["ORDERWATCH_SCREENSHOTS"])] if os.environ.get("ORDERWATCH_SCREENSHOTS") else []
                )
                await page.goto(f"{base}/console/analytics?period=30d")
                for d in shots:
                    await page.screenshot(path=str(d / "console-analytics.png"), full_page=False)
                html = await page.content()
            finally:
                await browser.close()
        assert all(url.startswith(base) for url in requested), [u for u in requested if not u.startswith(base)]
        # Every request the page made was answered; the one 404 chromium may log is its own
        # /favicon.ico request (the console has none), which Playwright does not report as a request.
        assert failed == []
        assert [p for p in problems if "404" not in p] == [], problems  # e.g. a CSP violation
        assert len(problems) <= 1, problems
        _clean([html])
