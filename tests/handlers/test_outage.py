"""Redis stopped for 30 s while exception events keep coming: the service waits it out, nothing is
lost and nothing doubles. Runs against a private redis-server (append-only file, SHUTDOWN SAVE),
so the shared stack is never touched."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from orderwatch.handlers.config import HandlersConfig
from orderwatch.handlers.incidents import IncidentStore
from orderwatch.handlers.service import HandlerService
from orderwatch.handlers.store import CaseStore, open_redis
from orderwatch.schemas.exception_event import ExceptionData, ExceptionEvent
from orderwatch.streams.metrics import Metrics
from tests.handlers.conftest import T0, PrivateRedis, Recorder, exception_data, opened, resolved

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_SECONDS = 30.0
EVENT_EVERY = 0.35
CASES = 100
RULES = ("DUPLICATE_PAYMENT", "TRACKING_STALLED", "DELIVERY_FAILED")  # critical, medium, high


class SimClock:
    """One real second is one simulated minute, so escalations fall due during the test."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self) -> datetime:
        return T0 + timedelta(minutes=time.monotonic() - self.start)


def _plan() -> list[tuple[float, str, int]]:
    """(real second, kind, case number): every case opens; every fourth resolves about 50 events later;
    every tenth event is sent twice (a re-delivery)."""
    steps: list[tuple[str, int]] = []
    for i in range(CASES):
        steps.append(("opened", i))
        if i >= 50 and (i - 50) % 4 == 1:
            steps.append(("resolved", i - 50))
    plan: list[tuple[float, str, int]] = []
    for n, (kind, i) in enumerate(steps):
        plan.append((n * EVENT_EVERY, kind, i))
        if n % 10 == 9:
            plan.append((n * EVENT_EVERY, kind, i))
    return plan


@pytest.mark.timeout(180)
async def test_redis_stopped_for_30_s_while_events_flow(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="orderwatch.handlers.service")
    client = open_redis(private_redis.url, timeout=1.0)
    clock = SimClock()
    recorder = Recorder()
    metrics = Metrics(CollectorRegistry())
    prefix = "ow:"
    service = HandlerService(
        CaseStore(client, prefix), IncidentStore(client, prefix), HandlersConfig(), metrics, [recorder], clock=clock
    )
    data: dict[int, ExceptionData] = {}
    queue: asyncio.Queue[ExceptionEvent | None] = asyncio.Queue()
    published: list[bytes] = []

    async def produce() -> None:
        for at, kind, i in _plan():
            await asyncio.sleep(max(0.0, at - (time.monotonic() - clock.start)))
            if i not in data:
                rule = RULES[i % 3]
                evidence = {"provider": "adyen"} if rule == "DUPLICATE_PAYMENT" else {"carrier": f"c{i % 7}"}
                data[i] = exception_data(rule=rule, detected_at=clock(), evidence=evidence, order_id=f"o-{i}")
            d = data[i]
            await queue.put(opened(d) if kind == "opened" else resolved(d, at=clock()))
        await queue.put(None)

    async def consume() -> None:
        # like a Kafka consumer: the next event only after handle() returned (then it would commit)
        while (ev := await queue.get()) is not None:
            await service.handle(ev)

    async def timers(stop: asyncio.Event) -> None:
        async def send(key: bytes, value: bytes) -> None:
            published.append(value)

        while not stop.is_set():
            await service.escalate_due()
            await service.flush_outbox(send)
            await asyncio.sleep(0.5)

    stop_timers = asyncio.Event()
    producer = asyncio.create_task(produce())
    consumer = asyncio.create_task(consume())
    timer = asyncio.create_task(timers(stop_timers))
    try:
        await asyncio.sleep(5)
        assert recorder.changes, "events flow before the outage"
        await asyncio.to_thread(private_redis.stop)
        stopped = time.monotonic()
        during = len(recorder.changes)
        await asyncio.sleep(OUTAGE_SECONDS)
        assert len(recorder.changes) == during, "no change can be recorded while Redis is down"
        assert not producer.done(), "events keep coming during the outage"
        await asyncio.to_thread(private_redis.start)
        restarted = time.monotonic()
        assert restarted - stopped >= OUTAGE_SECONDS
        await asyncio.wait_for(asyncio.gather(producer, consumer), timeout=90)
        await asyncio.sleep(1.5)  # one more timer round after the last event
        stop_timers.set()
        await asyncio.wait_for(timer, timeout=30)
    finally:
        for task in (producer, consumer, timer):
            task.cancel()
        await asyncio.gather(producer, consumer, timer, return_exceptions=True)

    # every case exists exactly once, in the state its last event says
    store = service.store
    cases, total = await store.query(limit=10_000)
    assert total == len(cases) == CASES
    assert len({c.exception_id for c in cases}) == CASES
    resolved_ids = {data[i].exception_id for _, kind, i in _plan() if kind == "resolved"}
    for case in cases:
        if case.exception_id in resolved_ids:
            assert case.status == "resolved"
        else:
            assert case.status in ("open", "escalated")

    # every move delivered to the listener exactly once, and the same moves as the stored history
    moves = Counter(recorder.moves())
    assert max(moves.values()) == 1, [m for m, n in moves.items() if n > 1]
    for case in cases:
        history = await store.history(case.exception_id)
        delivered = [(k, lvl) for (xid, k, lvl) in recorder.moves() if xid == case.exception_id]
        as_moves = [("opened" if h.from_status is None else h.to_status, h.level) for h in history]
        assert delivered == [(k if k != "open" else "opened", lvl) for k, lvl in as_moves], case.exception_id
    escalations = {(x, lvl) for (x, k, lvl) in recorder.moves() if k == "escalated"}
    assert {lvl for _, lvl in escalations} == {1, 2}, "critical cases escalated during the test"
    assert await store.pending_changes(clock() + timedelta(days=1)) == []

    # every escalated event published exactly once
    ids = Counter(ExceptionEvent.model_validate_json(v).id for v in published)
    assert max(ids.values()) == 1
    assert set(ids) == {f"{x}:escalated:{lvl}" for x, lvl in escalations}

    # the outage was noticed once, waited out, and measured
    down = [r for r in caplog.records if "unreachable" in r.getMessage()]
    back = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert (len(down), len(back)) == (1, 1)
    retries = metrics.registry.get_sample_value
    assert (retries("orderwatch_handler_store_retries_total", {"operation": "ingest"}) or 0) > 0
    outage = metrics.registry.get_sample_value("orderwatch_handler_store_outage_seconds_total")
    assert outage is not None and OUTAGE_SECONDS - 2 <= outage <= OUTAGE_SECONDS + 15
    await client.aclose()
