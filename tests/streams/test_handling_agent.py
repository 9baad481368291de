"""The handler agent driven by faust's `test_context()` (no broker between the test and the agent)
against the real Redis: an exception event becomes a case, a value that is not one is skipped and
counted, and the compaction race (an escalation read back after its case's resolution) publishes
the resolution again, on the real Kafka, exactly when the topic would otherwise end on the escalation.
Also the pure pieces the ops API shows: `OrderDetector.describe`."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from faust.types import TP
from prometheus_client import CollectorRegistry

from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.orders import OrderDetector
from orderwatch.handlers.config import HandlersConfig
from orderwatch.schemas.exception_event import ExceptionEvent
from orderwatch.streams.app import Orderwatch, create_app
from orderwatch.streams.handling import HANDLER_AGENT, HandlerRuntime
from orderwatch.streams.metrics import Metrics
from orderwatch.streams.settings import Settings
from tests.factories import at, created, paid
from tests.handlers.conftest import _require_redis, delete_prefix, exception_data, opened, redis_client, resolved
from tests.integration.kafka import read_json, read_records
from tests.kafka_topics import BOOTSTRAP, fresh_topics

# The Redis fixtures of the handler tests (a client on the local stack; skip when it is down).
__fixtures__ = (_require_redis, redis_client)


def _escalated(data: Any, level: int) -> ExceptionEvent:
    when = data.handle_by if level == 1 else data.handle_by + (data.handle_by - data.detected_at)
    return ExceptionEvent(
        id=f"{data.exception_id}:escalated:{level}",
        type="exception.escalated",
        time=when,
        subject=data.subject,
        data=data.model_copy(update={"status": "escalated"}),
    )


def _raw(event: ExceptionEvent) -> bytes:
    return event.model_dump_json().encode()


@pytest.fixture
async def settings(redis_client: aioredis.Redis) -> AsyncIterator[Settings]:
    """A topic prefix whose `order-exceptions` exists (one partition) with the topics the actions
    write (a broker that does not auto-create refuses them otherwise), a Redis prefix of its own."""
    topics = ["order-exceptions", "order-actions", "blocklist"]
    async with fresh_topics(topics, compacted=["order-exceptions", "blocklist"]) as topic_prefix:
        redis_prefix = f"t{uuid.uuid4().hex}:"
        yield Settings(
            kafka_bootstrap=BOOTSTRAP,
            topic_prefix=topic_prefix,
            partitions=1,
            app_id=f"ow-{topic_prefix[:-1]}",
            redis_prefix=redis_prefix,
            web_port=1,  # never started
        )
        await delete_prefix(redis_client, redis_prefix)


@pytest.fixture
async def handlers(settings: Settings) -> AsyncIterator[tuple[Orderwatch, HandlerRuntime]]:
    ow = create_app(settings, metrics=Metrics(CollectorRegistry()), detection=False, handlers=HandlersConfig())
    rt = ow.handlers
    assert isinstance(rt, HandlerRuntime)
    await rt.start()
    try:
        yield ow, rt
    finally:
        await rt.close()


def _count(ow: Orderwatch, outcome: str) -> float:
    value = ow.metrics.registry.get_sample_value("orderwatch_handler_messages_total", {"outcome": outcome})
    return value or 0.0


@pytest.mark.integration
async def test_an_exception_event_becomes_a_case_and_garbage_is_skipped(
    handlers: tuple[Orderwatch, HandlerRuntime],
) -> None:
    ow, rt = handlers
    data = exception_data(exception_id=f"x{uuid.uuid4().hex[:12]}")
    agent = ow.app.agents[HANDLER_AGENT]
    async with agent.test_context() as test:
        await test.put(b"{this is not json", key=b"k")
        await test.put(json.dumps({"type": "exception.opened", "data": {}}).encode(), key=b"k")
        await test.put(_raw(opened(data)), key=data.exception_id.encode())
        await test.put(_raw(opened(data)), key=data.exception_id.encode())  # re-delivered
    assert list(test.results.values()) == ["invalid", "invalid", "changed", "unchanged"]
    case = await rt.store.get(data.exception_id)
    assert (case.status, case.rule, case.order_id) == ("open", data.rule, data.order_id)
    assert [h.to_status for h in await rt.store.history(data.exception_id)] == ["open"]
    assert (_count(ow, "invalid"), _count(ow, "changed"), _count(ow, "unchanged")) == (2, 1, 1)
    # the auto action was decided (wall clock worker, no dry run): one command, recorded in Redis
    assert await rt.redis.hget(rt.dispatcher.action_key(data.exception_id, data.recommended_action), "state") in (
        b"sent",
        b"capped",
    )


async def _publish(settings: Settings, events: list[ExceptionEvent]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for ev in events:
            await producer.send_and_wait(
                settings.topic("order-exceptions"), _raw(ev), key=ev.data.exception_id.encode()
            )
    finally:
        await producer.stop()


async def _consume(test: Any, settings: Settings) -> None:
    """Play the consumer: hand the agent every message of the (one-partition) topic it has not
    seen, with its real offset, including what the agent itself publishes meanwhile."""
    while True:
        records = await read_records(settings, [settings.topic("order-exceptions")])
        fresh = records[test.sent_offset :]
        if not fresh:
            return
        for r in fresh:
            assert r.offset == test.sent_offset
            await test.put(r.value, key=r.key, partition=r.partition)


@pytest.mark.integration
async def test_an_escalation_read_back_after_the_resolution_publishes_the_resolution_again(
    handlers: tuple[Orderwatch, HandlerRuntime], settings: Settings
) -> None:
    ow, rt = handlers
    topic = settings.topic("order-exceptions")
    raced = exception_data(exception_id=f"x{uuid.uuid4().hex[:12]}", rule="DELIVERY_FAILED")
    ordered = exception_data(exception_id=f"x{uuid.uuid4().hex[:12]}", rule="DELIVERY_FAILED")
    raced_resolution = resolved(raced, at=raced.handle_by + timedelta(minutes=5))
    # `raced`: the escalations land after the resolution (the handler escalated before it read the
    # resolution); `ordered`: the resolution is the latest
    await _publish(
        settings,
        [
            opened(raced),
            raced_resolution,
            _escalated(raced, 1),
            _escalated(raced, 2),
            opened(ordered),
            _escalated(ordered, 1),
            resolved(ordered, at=ordered.handle_by + timedelta(minutes=5)),
        ],
    )
    agent = ow.app.agents[HANDLER_AGENT]
    async with agent.test_context() as test:
        await _consume(test, settings)
    events = await read_json(settings, topic)
    assert len(events) == 8
    again = ExceptionEvent.model_validate(events[-1])
    # one copy (level 2 read back right after level 1 needs none), the same resolution: id, time
    # and data (status, resolution, evidence) as the detector sent it
    assert again.id == f"{raced.exception_id}:resolved"
    assert again.time == raced_resolution.time
    assert again.data == raced_resolution.data
    assert ow.metrics.registry.get_sample_value("orderwatch_handler_resolutions_republished_total") == 1
    # `raced` was resolved when its escalations were read back (they change nothing any more)
    assert [(c.status, c.level) for c in [await rt.store.get(raced.exception_id)]] == [("resolved", 0)]
    assert [(c.status, c.level) for c in [await rt.store.get(ordered.exception_id)]] == [("resolved", 1)]
    # the latest value per key, what compaction keeps, is the resolution for both
    latest = {e["data"]["exception_id"]: e["type"] for e in events}
    assert latest == {raced.exception_id: "exception.resolved", ordered.exception_id: "exception.resolved"}

    # a new consumer group replays the whole topic: nothing is published again
    async with agent.test_context() as replay:
        await _consume(replay, settings)
    assert len(await read_json(settings, topic)) == 8
    assert ow.metrics.registry.get_sample_value("orderwatch_handler_resolutions_republished_total") == 1


def test_describe_shows_the_order_state_without_personal_data() -> None:
    det = OrderDetector(RulesConfig())
    order = created("o-7", at(0), phone="+4915123456789")
    det.on_event("o-7", order, order.time.timestamp(), order.time.timestamp())
    pay = paid("o-7", at(1), amount="10.00", payment="pay-7")
    det.on_event("o-7", pay, pay.time.timestamp(), pay.time.timestamp())
    doc = det.describe("o-7")
    assert doc is not None
    assert doc["status"] is None or isinstance(doc["status"], str)
    assert doc["paid"] == "10.00" and doc["payment_ids"] == ["pay-7"]
    assert {"created", "paid"} <= set(doc["flags"])
    assert doc["last_event_time"] == at(1).isoformat()
    rules = [d["rule"] for d in doc["deadlines"]]
    assert "ORDER_STUCK" in rules and rules == sorted(rules, key=rules.index)
    assert all(d["due"] > at(1).isoformat() for d in doc["deadlines"])
    text = json.dumps(doc)
    assert "4915123456789" not in text and "fp-1" not in text
    assert det.describe("o-unknown") is None


@pytest.mark.integration
async def test_revoked_partitions_are_forgotten_through_fausts_signal(
    handlers: tuple[Orderwatch, HandlerRuntime],
) -> None:
    """The app's partitions-revoked signal reaches the runtime: what was read from a revoked
    partition of `order-exceptions` is forgotten (the next owner's work), other topics' are not
    this runtime's business, and the escalation gate starts over."""
    ow, rt = handlers
    rt.positions.update({0: 41, 1: 7})
    rt._gate = (1.0, {0: 41})
    revoked = {TP(rt.topic, 0), TP(ow.settings.topic("orders"), 1)}
    await ow.app.on_partitions_revoked.send(revoked)
    assert rt.positions == {1: 7}
    assert rt._gate is None
