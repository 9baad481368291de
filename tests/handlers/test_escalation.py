"""Escalation timing and the outbox of exception.escalated events, through the service against
the real Redis: due at handle_by, again at twice the handling time, once each, never after an
acknowledgement; the outbox keeps an event until a send succeeds."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest

from orderwatch.handlers.config import EscalationConfig, HandlersConfig
from orderwatch.handlers.incidents import IncidentStore
from orderwatch.handlers.service import HandlerService
from orderwatch.handlers.store import CaseStore
from orderwatch.schemas.exception_event import ExceptionEvent
from tests.handlers.conftest import T0, Recorder, exception_data, opened

pytestmark = pytest.mark.integration

S = timedelta(seconds=1)


async def test_level_1_at_handle_by_level_2_at_twice_the_handling_time(
    service: HandlerService, recorder: Recorder
) -> None:
    data = exception_data(rule="DUPLICATE_PAYMENT")  # critical: 15 min to handle
    xid = data.exception_id
    assert data.handle_by == T0 + timedelta(minutes=15)
    await service.handle(opened(data), T0)

    assert await service.escalate_due(data.handle_by - S) == []
    first = await service.escalate_due(data.handle_by)
    assert [(c.data.exception_id, c.kind, c.level, c.status) for c in first] == [(xid, "escalated", 1, "escalated")]
    assert await service.escalate_due(data.handle_by + timedelta(minutes=5)) == []
    assert await service.escalate_due(T0 + timedelta(minutes=30) - S) == []
    second = await service.escalate_due(T0 + timedelta(minutes=30))
    assert [(c.kind, c.level) for c in second] == [("escalated", 2)]
    assert await service.escalate_due(T0 + timedelta(days=3)) == []

    assert recorder.moves() == [(xid, "opened", 0), (xid, "escalated", 1), (xid, "escalated", 2)]
    history = await service.store.history(xid)
    assert [(h.to_status, h.level, h.at) for h in history] == [
        ("open", 0, T0),
        ("escalated", 1, T0 + timedelta(minutes=15)),
        ("escalated", 2, T0 + timedelta(minutes=30)),
    ]
    metrics = service.metrics
    assert metrics is not None
    esc = metrics.registry.get_sample_value
    assert esc("orderwatch_case_escalations_total", {"level": "1", "severity": "critical"}) == 1
    assert esc("orderwatch_case_escalations_total", {"level": "2", "severity": "critical"}) == 1


async def test_both_levels_once_each_when_the_timer_was_late(service: HandlerService, recorder: Recorder) -> None:
    data = exception_data(rule="PAYMENT_NOT_CONFIRMED")  # high: 1 h
    await service.handle(opened(data), T0)
    changes = await service.escalate_due(T0 + timedelta(hours=9))
    assert [(c.kind, c.level) for c in changes] == [("escalated", 1), ("escalated", 2)]
    assert await service.escalate_due(T0 + timedelta(hours=10)) == []
    assert [k for k in recorder.moves() if k[1] == "escalated"] == [
        (data.exception_id, "escalated", 1),
        (data.exception_id, "escalated", 2),
    ]


async def test_never_after_acknowledge_or_resolve(service: HandlerService, recorder: Recorder) -> None:
    acked, escalated_then_acked, resolved_case = (exception_data() for _ in range(3))
    for data in (acked, escalated_then_acked, resolved_case):
        await service.handle(opened(data), T0)
    service.clock = lambda: T0 + timedelta(minutes=5)
    await service.acknowledge(acked.exception_id, "ana", "looking")
    await service.resolve(resolved_case.exception_id, "ana", "fixed")
    moved = await service.escalate_due(T0 + timedelta(hours=4))  # medium: 4 h
    assert [(c.data.exception_id, c.level) for c in moved] == [(escalated_then_acked.exception_id, 1)]
    service.clock = lambda: T0 + timedelta(hours=5)
    await service.acknowledge(escalated_then_acked.exception_id, "bo", None)
    assert await service.escalate_due(T0 + timedelta(days=5)) == []
    assert [k for k in recorder.moves() if k[1] == "escalated"] == [(escalated_then_acked.exception_id, "escalated", 1)]
    for data in (acked, escalated_then_acked, resolved_case):
        assert await service.store.next_escalation_at(data.exception_id) is None


async def test_level_2_factor_from_config(store: CaseStore, incidents: IncidentStore, prefix: str) -> None:
    cfg = HandlersConfig(escalation=EscalationConfig(level_2_factor=3.0))
    store3 = CaseStore(store.redis, prefix, escalation=cfg.escalation)
    service = HandlerService(store3, incidents, cfg)
    data = exception_data(rule="PAYMENT_NOT_CONFIRMED")  # high: 1 h
    await service.handle(opened(data), T0)
    assert [c.level for c in await service.escalate_due(T0 + timedelta(hours=1))] == [1]
    assert await service.escalate_due(T0 + timedelta(hours=3) - S) == []
    assert [c.level for c in await service.escalate_due(T0 + timedelta(hours=3))] == [2]


async def test_disabled_escalation_schedules_nothing(store: CaseStore, incidents: IncidentStore, prefix: str) -> None:
    cfg = HandlersConfig(escalation=EscalationConfig(enabled=False))
    service = HandlerService(CaseStore(store.redis, prefix, escalation=cfg.escalation), incidents, cfg)
    data = exception_data()
    await service.handle(opened(data), T0)
    assert await service.escalate_due(T0 + timedelta(days=9)) == []
    assert await service.store.due_escalations(T0 + timedelta(days=9)) == []


class Sink:
    """The caller's publish function: fails while `failing` is set, records what it accepted."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[tuple[bytes, bytes]] = []
        self.fail_after = fail_after

    async def __call__(self, key: bytes, value: bytes) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ConnectionError("broker unreachable")
        self.sent.append((key, value))


async def test_outbox_holds_escalated_events_until_a_send_succeeds(service: HandlerService) -> None:
    cases = [exception_data(rule="DUPLICATE_PAYMENT") for _ in range(3)]
    for data in cases:
        await service.handle(opened(data), T0)
    await service.escalate_due(T0 + timedelta(minutes=15))
    await service.escalate_due(T0 + timedelta(minutes=30))
    expected = {f"{d.exception_id}:escalated:{lvl}" for d in cases for lvl in (1, 2)}

    assert await service.flush_outbox(Sink(fail_after=0)) == 0
    assert {m.id for m in await service.store.outbox_pending()} == expected

    partial = Sink(fail_after=2)
    assert await service.flush_outbox(partial) == 2
    assert len(await service.store.outbox_pending()) == 4

    sink = Sink()
    assert await service.flush_outbox(sink) == 4
    assert await service.flush_outbox(sink) == 0
    assert await service.store.outbox_pending() == []

    published = partial.sent + sink.sent
    events = [ExceptionEvent.model_validate_json(v) for _, v in published]
    assert {e.id for e in events} == expected
    assert len(events) == len(expected)
    for (key, _), ev in zip(published, events, strict=True):
        assert key.decode() == ev.data.exception_id
        assert ev.type == "exception.escalated"
        assert ev.data.status == "escalated"
        assert ev.id.endswith(":escalated:1") == (ev.time == T0 + timedelta(minutes=15))
        source = next(d for d in cases if d.exception_id == ev.data.exception_id)
        assert ev.data == source.model_copy(update={"status": "escalated"})


async def test_escalated_events_read_back_from_the_topic_change_nothing(
    service: HandlerService, recorder: Recorder
) -> None:
    data = exception_data(rule="DUPLICATE_PAYMENT")
    await service.handle(opened(data), T0)
    await service.escalate_due(T0 + timedelta(minutes=15))
    sink = Sink()
    await service.flush_outbox(sink)
    before = recorder.moves()
    for _, value in sink.sent:
        assert await service.handle(ExceptionEvent.model_validate_json(value), T0 + timedelta(minutes=16)) is None
    assert recorder.moves() == before


@pytest.mark.slow
async def test_outbox_through_the_real_broker(service: HandlerService) -> None:
    """flush_outbox with an aiokafka producer: the escalated event comes back from Kafka, keyed by
    exception id, and reading it back changes nothing."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from tests.integration.conftest import BOOTSTRAP, _kafka_up

    if not _kafka_up():
        if os.environ.get("CI"):
            pytest.fail(f"Kafka is not reachable at {BOOTSTRAP}")
        pytest.skip(f"Kafka is not reachable at {BOOTSTRAP}")
    topic = f"t{uuid.uuid4().hex[:10]}-order-exceptions"
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()

    data = exception_data(rule="DUPLICATE_PAYMENT")
    await service.handle(opened(data), T0)
    await service.escalate_due(T0 + timedelta(minutes=15))
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True)
    await producer.start()
    try:

        async def send(key: bytes, value: bytes) -> None:
            await producer.send_and_wait(topic, value, key=key)

        assert await service.flush_outbox(send) == 1
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        records = []
        for _ in range(20):
            batch = await consumer.getmany(timeout_ms=500, max_records=10)
            records += [r for rs in batch.values() for r in rs]
            if records:
                break
    finally:
        await consumer.stop()
    assert len(records) == 1
    assert records[0].key == data.exception_id.encode()
    ev = ExceptionEvent.model_validate_json(records[0].value)
    assert (ev.id, ev.type) == (f"{data.exception_id}:escalated:1", "exception.escalated")
    assert await service.handle(ev, T0 + timedelta(minutes=16)) is None
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
