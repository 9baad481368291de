"""The analytics page of the console and `/analytics/<kind>` of the ops API, in-process against
the local stack's Redis: figures of seeded cases, every role may read, no token refused, bad
queries answered 422, Redis gone answered 503, and no phone or address line on the page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.console.conftest import Browser, People, console_server
from tests.console.test_pages import CONFIG, LINE1, PHONE, _clean, _seed, _settings
from tests.handlers.conftest import _require_redis, free_port, prefix, redis_client

__fixtures__ = (_require_redis, redis_client, prefix)


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
