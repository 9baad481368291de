"""The ops API's views on their own: a `Deps` built from the handlers' real stores on the local
Redis (no faust app, no worker), the views served by a bare aiohttp application or called as
plain functions. The worker's side (`WorkerState`: readiness, where an order's detector lives)
is a fixed answer here; the real one (`streams.probe.WorkerProbe`) runs in the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer, make_mocked_request
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from orderwatch.handlers.actions import ActionDispatcher, DryRunSink
from orderwatch.handlers.config import HandlersConfig
from orderwatch.handlers.incidents import IncidentStore
from orderwatch.handlers.service import HandlerService
from orderwatch.handlers.store import CaseStore, open_redis
from orderwatch.streams.api import ROUTES, Reply, install_api, list_cases, order_timeline, ready
from orderwatch.streams.console.access import LoginLimiter, Principal, SessionStore, TokenRegistry
from orderwatch.streams.console.deps import DEPS, Deps
from orderwatch.streams.console.ops import InputError, Ops, OrderPlace
from orderwatch.streams.metrics import Metrics
from orderwatch.streams.settings import Settings
from tests.handlers.conftest import T0, _require_redis, exception_data, free_port, opened, prefix, redis_client

__fixtures__ = (_require_redis, redis_client, prefix)

PHONE = "+49 151 98765432"


class FixedWorker:
    """A worker whose readiness and order placement are given (the `WorkerState` protocol)."""

    def __init__(self, reasons: list[str], place: OrderPlace | None = None) -> None:
        self.reasons = reasons
        self.place = place
        self.asked: list[str] = []

    async def readiness(self) -> tuple[list[str], int]:
        return self.reasons, 0 if self.reasons else 3

    def locate(self, order_id: str) -> OrderPlace:
        self.asked.append(order_id)
        assert self.place is not None
        return self.place


def make_deps(
    redis: aioredis.Redis, prefix: str, worker: FixedWorker, token: str | None = "tok-viewer", attempts: int = 5
) -> Deps:
    settings = Settings(
        redis_prefix=prefix, topic_prefix=f"t{uuid.uuid4().hex[:8]}-", api_token=None, login_attempts=attempts
    )
    if token is not None:
        settings = settings.model_copy(update={"viewer_token": SecretStr(token)})
    config = HandlersConfig()
    store = CaseStore(redis, prefix, escalation=config.escalation, owners=config.owners)
    incidents = IncidentStore(redis, prefix, config.incidents)
    service = HandlerService(store, incidents, config)
    dispatcher = ActionDispatcher(redis, prefix, DryRunSink(settings), config.actions)
    ops = Ops(redis=redis, store=store, incidents=incidents, service=service, dispatcher=dispatcher, now=lambda: T0)
    tokens = TokenRegistry(settings)
    return Deps(
        settings=settings,
        ops=ops,
        tokens=tokens,
        sessions=SessionStore(redis, prefix, tokens, settings.session_minutes),
        limiter=LoginLimiter(redis, prefix, settings.login_attempts, settings.login_window_seconds),
        metrics=Metrics(CollectorRegistry()),
        worker=worker,
    )


@pytest.fixture
async def served() -> AsyncIterator[Any]:
    servers: list[TestServer] = []

    async def serve(deps: Deps) -> TestServer:
        app = web.Application()
        install_api(app, deps)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return server

    yield serve
    for server in servers:
        await server.close()


def _count(deps: Deps, view: str, code: str) -> float | None:
    return deps.metrics.registry.get_sample_value("orderwatch_api_requests_total", {"view": view, "code": code})


async def test_ready_is_open_and_reports_the_workers_reasons(
    redis_client: aioredis.Redis, prefix: str, served: Any
) -> None:
    worker = FixedWorker(["partitions: none assigned yet"])
    deps = make_deps(redis_client, prefix, worker)
    server = await served(deps)
    async with aiohttp.ClientSession() as s, s.get(server.make_url("/ready")) as resp:
        assert resp.status == 503
        assert await resp.json() == {"status": "not ready", "reasons": ["partitions: none assigned yet"]}
    worker.reasons = []
    async with aiohttp.ClientSession() as s, s.get(server.make_url("/ready")) as resp:
        assert (resp.status, await resp.json()) == (200, {"status": "ready", "partitions": 3})
    assert (_count(deps, "ready", "503"), _count(deps, "ready", "200")) == (1, 1)
    assert deps is server.app[DEPS]


async def test_every_route_but_ready_wants_a_token(redis_client: aioredis.Redis, prefix: str, served: Any) -> None:
    deps = make_deps(redis_client, prefix, FixedWorker([]), attempts=1000)  # no lock-out in this walk
    server = await served(deps)
    async with aiohttp.ClientSession() as s:
        for route in ROUTES:
            path = route.path.format(exception_id="x1", incident_id="i1", action="a", order_id="o1", kind="volume")
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic tok-viewer"}):
                async with s.request(route.method, server.make_url(path), headers=headers) as resp:
                    if route.permission is None:
                        assert resp.status == 200, path
                    else:
                        assert resp.status == 401, (path, headers)
                        assert resp.headers.get("WWW-Authenticate", "Bearer") == "Bearer"
            # The viewer may read, not write.
            async with s.request(
                route.method, server.make_url(path), headers={"Authorization": "Bearer tok-viewer"}
            ) as resp:
                if route.permission in ("work", "approve"):
                    assert resp.status == 403, path
                    assert "role" in (await resp.json())["error"]


async def test_no_token_configured_refuses_with_503(redis_client: aioredis.Redis, prefix: str, served: Any) -> None:
    deps = make_deps(redis_client, prefix, FixedWorker([]), token=None)
    server = await served(deps)
    async with (
        aiohttp.ClientSession() as s,
        s.get(server.make_url("/cases"), headers={"Authorization": "Bearer x"}) as resp,
    ):
        assert resp.status == 503
        assert (await resp.json())["error"].startswith("no tokens configured")
    assert _count(deps, "cases", "503") == 1


async def test_a_view_is_a_plain_function_over_deps(redis_client: aioredis.Redis, prefix: str) -> None:
    """list_cases and order_timeline called directly: the store's cases, masked; an order whose
    detector lives on another worker answers 421 with that worker's address and the cases here."""
    place = OrderPlace("o-7", "orders", 2, False, None, "partition 2 of orders is owned by another worker", "http://w2")
    deps = make_deps(redis_client, prefix, FixedWorker([], place))
    data = exception_data(order_id="o-7", evidence={"carrier": "dhl", "phone": PHONE})
    await deps.ops.service.handle(opened(data), T0)
    who = Principal("vic", frozenset({"viewer"}), "f" * 64)

    listed = await list_cases(deps, make_mocked_request("GET", "/cases?limit=5"), who)
    assert isinstance(listed, Reply) and listed.status == 200
    assert [c["exception_id"] for c in listed.body["cases"]] == [data.exception_id]
    assert PHONE not in repr(listed.body)

    request = make_mocked_request("GET", "/orders/o-7/timeline", match_info={"order_id": "o-7"})
    timeline = await order_timeline(deps, request, who)
    assert timeline.status == 421
    assert timeline.body["owner"] == "http://w2" and "another worker" in timeline.body["error"]
    assert [c["case"]["exception_id"] for c in timeline.body["cases"]] == [data.exception_id]
    assert deps.worker.asked == ["o-7"]  # type: ignore[attr-defined]

    with pytest.raises(InputError) as refused:
        await list_cases(deps, make_mocked_request("GET", "/cases?limit=999999"), who)
    assert refused.value.status == 422
    bad_id = make_mocked_request("GET", "/orders/x/timeline", match_info={"order_id": "a b"})
    with pytest.raises(InputError) as missing:
        await order_timeline(deps, bad_id, who)
    assert missing.value.status == 404


async def test_ready_called_directly_answers_from_deps_alone(redis_client: aioredis.Redis, prefix: str) -> None:
    """With the worker not ready, /ready says so whatever the request carries (it takes no input)."""
    deps = make_deps(redis_client, prefix, FixedWorker(["redis: no answer to PING (ConnectionError)"]))
    reply = await ready(deps, make_mocked_request("GET", "/ready?x=" + "9" * 5000), None)
    assert reply.status == 503 and reply.body["reasons"] == ["redis: no answer to PING (ConnectionError)"]


async def test_the_case_store_gone_answers_503_not_a_traceback(served: Any) -> None:
    dead = open_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        deps = make_deps(dead, "gone:", FixedWorker([]))
        server = await served(deps)
        async with aiohttp.ClientSession() as s:
            for path in ("/cases", "/cases/x1", "/incidents", "/actions/pending"):
                async with s.get(server.make_url(path), headers={"Authorization": "Bearer tok-viewer"}) as resp:
                    assert resp.status == 503, path
                    assert "cannot be reached" in (await resp.json())["error"]
        assert _count(deps, "cases", "503") == 1
    finally:
        await dead.aclose()
