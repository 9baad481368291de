"""The case store's export on the real Redis: cases with their history, actions and incidents,
masked, read back by the review's analytics; and what happens when Redis is gone."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from orderwatch.cli import main
from orderwatch.errors import StoreUnavailable
from orderwatch.handlers.actions import ActionDispatcher, DryRunSink
from orderwatch.handlers.config import HandlersConfig, IncidentConfig
from orderwatch.handlers.export import export_case_store
from orderwatch.handlers.incidents import IncidentStore
from orderwatch.handlers.policy import ActionPolicy
from orderwatch.handlers.service import HandlerService
from orderwatch.handlers.store import CaseStore, open_redis
from orderwatch.review import Analytics, Period, read_case_set
from orderwatch.review.service import AnalyticsService, StoreLoader
from orderwatch.streams.metrics import Metrics
from tests.handlers.conftest import REDIS_URL, T0, PrivateRedis, exception_data, opened, resolved

PHONE = "+4915112345678"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.integration
async def test_export_carries_history_actions_and_incidents(redis_client: aioredis.Redis, prefix: str) -> None:
    clock = Clock()
    store = CaseStore(redis_client, prefix)
    incidents = IncidentStore(redis_client, prefix, IncidentConfig())
    dispatcher = ActionDispatcher(redis_client, prefix, DryRunSink(), ActionPolicy.default(), clock=clock)
    service = HandlerService(
        store, incidents, HandlersConfig(), Metrics(CollectorRegistry()), [dispatcher], clock=clock
    )
    evidence = {"carrier": "dhl", "shipment_id": "s-1", "contact_phone": PHONE}
    datas = [exception_data(order_id=f"o-{i}", evidence=evidence) for i in range(3)]
    for d in datas:
        await service.handle(opened(d), T0)
    clock.now = T0 + timedelta(minutes=10)
    await service.acknowledge(datas[0].exception_id, "ana", note="on it")
    clock.now = T0 + timedelta(minutes=30)
    await service.resolve(datas[0].exception_id, "ana")
    await service.handle(resolved(datas[1], at=T0 + timedelta(minutes=20)), T0 + timedelta(minutes=20))

    out = io.StringIO()
    counts = await export_case_store(redis_client, prefix, out, page=2)  # pages of 2: more than one
    text = out.getvalue()
    assert PHONE not in text, "evidence is masked in the export"
    records = [json.loads(line) for line in text.splitlines()]
    assert counts["case"] == 3 == sum(r["kind"] == "case" for r in records)
    assert counts["action"] == sum(r["kind"] == "action" for r in records) >= 3
    assert counts["incident"] == sum(r["kind"] == "incident" for r in records)
    assert all("command" not in r for r in records if r["kind"] == "action")

    cs = read_case_set(line.encode() for line in text.splitlines())
    an = Analytics(cs)
    (row,) = an.handling(Period(T0.timestamp(), T0.timestamp() + 3600), by=None)
    assert (row["cases"], row["acknowledged"], row["resolved"]) == (3, 1, 2)
    assert row["tta_median"] == pytest.approx(600.0)
    assert (row["manual_resolved"], row["auto_resolved"]) == (1, 1)
    assert sum(r["requested"] for r in an.actions(Period(T0.timestamp(), T0.timestamp() + 3600))) == counts["action"]


@pytest.mark.integration
async def test_an_empty_store_exports_nothing(redis_client: aioredis.Redis, prefix: str) -> None:
    out = io.StringIO()
    assert await export_case_store(redis_client, prefix, out) == {"case": 0, "action": 0, "incident": 0}
    assert out.getvalue() == ""


@pytest.mark.integration
async def test_export_with_redis_gone_raises_store_unavailable(private_redis: PrivateRedis) -> None:
    client = open_redis(private_redis.url, timeout=1.0)
    try:
        service = HandlerService(CaseStore(client, "ow:"), IncidentStore(client, "ow:"), HandlersConfig())
        await service.handle(opened(exception_data()), T0)
        private_redis.stop()
        with pytest.raises(StoreUnavailable, match="case store unavailable while listing cases"):
            await export_case_store(client, "ow:", io.StringIO())
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_report_on_the_live_case_store(
    redis_client: aioredis.Redis, prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    service = HandlerService(CaseStore(redis_client, prefix), IncidentStore(redis_client, prefix), clock=clock)
    datas = [exception_data(order_id=f"o-{i}", detected_at=T0 + timedelta(minutes=i)) for i in range(4)]
    for d in datas:
        await service.handle(opened(d), d.detected_at)
    clock.now = T0 + timedelta(minutes=20)
    await service.acknowledge(datas[0].exception_id, "ana")
    md = tmp_path / "r.md"
    argv = ["report", "--redis", REDIS_URL, "--prefix", prefix, "--period", "1h"]
    argv += ["--end", (T0 + timedelta(hours=1)).isoformat(), "--markdown", str(md)]
    assert await asyncio.to_thread(main, argv) == 0
    text = md.read_text()
    assert "| Exceptions | 4 | 0 | +4 |" in text
    assert "| Time to acknowledge, median | 20m | - |  |" in text
    assert "Source: exception events only" not in text


@pytest.mark.integration
async def test_report_with_the_case_store_gone_exits_1(
    private_redis: PrivateRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    private_redis.stop()
    argv = ["report", "--redis", private_redis.url, "--prefix", "ow:"]
    assert await asyncio.to_thread(main, argv) == 1
    assert "case store unavailable while listing cases" in capsys.readouterr().err


@pytest.mark.integration
async def test_analytics_service_reads_the_live_store(redis_client: aioredis.Redis, prefix: str) -> None:
    service = HandlerService(CaseStore(redis_client, prefix), IncidentStore(redis_client, prefix))
    for i in range(3):
        await service.handle(opened(exception_data(order_id=f"o-{i}")), T0)
    svc = AnalyticsService(StoreLoader(redis_client, prefix), clock=lambda: T0.timestamp() + 3600)
    answer = await svc.answer("summary", {"period": "1d"})
    assert answer["source"] == "cases" and answer["result"]["current"]["cases"] == 3
