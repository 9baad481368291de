"""Fixtures of the console tests: a worker's web app served in-process (handlers only, the local
stack's Redis, a key prefix of its own), a tokens file with one person per role, and a client that
logs in like a browser and keeps every page it got for the privacy scan."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from orderwatch.handlers.config import HandlersConfig
from orderwatch.streams.app import create_app
from orderwatch.streams.handling import HandlerRuntime
from orderwatch.streams.metrics import Metrics
from orderwatch.streams.settings import Settings

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class People:
    """One token per role in a tokens file: vic (viewer), ana (operator), lee (approver)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.viewer, self.operator, self.approver = (f"{n}-{uuid.uuid4().hex}" for n in ("vic", "ana", "lee"))
        self.write()

    def write(self, *, without: str | None = None) -> None:
        body = ""
        for name, role, token in (
            ("vic", "viewer", self.viewer),
            ("ana", "operator", self.operator),
            ("lee", "approver", self.approver),
        ):
            if name != without:
                body += f'[[tokens]]\nname = "{name}"\nroles = ["{role}"]\ntoken = "{token}"\n'
        self.path.write_text(body)


@asynccontextmanager
async def console_server(
    settings: Settings, config: HandlersConfig
) -> AsyncIterator[tuple[TestServer, HandlerRuntime]]:
    ow = create_app(settings, metrics=Metrics(CollectorRegistry()), detection=False, handlers=config)
    rt = ow.handlers
    assert rt is not None
    server = TestServer(ow.app.web.web_app)  # type: ignore[attr-defined]
    await server.start_server()
    try:
        yield server, rt
    finally:
        await server.close()
        await rt.close()


class Browser:
    """An HTTP client with a cookie jar, used as a browser would: GET a page, read its form's
    CSRF token, POST the form. Keeps every page's HTML."""

    def __init__(self, server: TestServer, *, headers: dict[str, str] | None = None) -> None:
        self.server = server
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers)
        self.pages: list[str] = []
        self.csrf = ""

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.server.make_url(path), allow_redirects=False, **kwargs) as resp:
            text = await resp.text()
        self.pages.append(text)
        found = CSRF.search(text)
        if found and "/console/login" not in path:
            self.csrf = found.group(1)
        return resp.status, text, resp

    async def post(
        self, path: str, data: dict[str, str], *, csrf: bool = True
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        form = {**data, "csrf": self.csrf} if csrf else data
        async with self.session.post(self.server.make_url(path), data=form, allow_redirects=False) as resp:
            text = await resp.text()
        self.pages.append(text)
        return resp.status, text, resp

    async def login(self, token: str) -> aiohttp.ClientResponse:
        status, html, _ = await self.get("/console/login")
        assert status == 200
        found = CSRF.search(html)
        assert found
        _, _, resp = await self.post("/console/login", {"token": token, "csrf": found.group(1)}, csrf=False)
        return resp
