"""The wall clock under a consumer lag spike, on the real broker: a payment is read at once while
the order that clears it waits behind a backlog on the orders topic. A wall-clock worker must not
fire PAYMENT_WITHOUT_ORDER for it (the lagging partition holds the clock back), and still fires it
for a payment that really has no order."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import ensure_topics
from orderwatch.streams.worker import committed_offsets
from tests.factories import ADDRESS, raw
from tests.integration.kafka import read_json
from tests.support.worker import free_port, spawn_worker, stop_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

BACKLOG = 8000  # messages ahead of the clearing order on its partition: seconds of reading


def _partition(key: str, partitions: int) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def _ids_on(partition: int, partitions: int, prefix: str, n: int) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        key = f"{prefix}-{i}"
        if _partition(key, partitions) == partition:
            out.append(key)
        i += 1
    return out


def _paid(order: str, when: datetime) -> bytes:
    data = {
        "order_id": order,
        "payment_id": f"pay-{order}",
        "amount": "50.00",
        "currency": "EUR",
        "provider": "stripe",
        "method": "card",
    }
    return json.dumps(raw("payment.succeeded", order, when, data)).encode()


def _created(order: str, when: datetime) -> bytes:
    data = {
        "order_id": order,
        "customer_id": f"c-{order}",
        "customer_since": (when - timedelta(days=400)).isoformat(),
        "merchant_id": "m-1",
        "channel": "web",
        "items": [{"sku": "SKU-1", "quantity": 1, "unit_price": "50.00"}],
        "total_amount": "50.00",
        "currency": "EUR",
        "shipping_address": ADDRESS,
        "contact_phone": "+4915123456789",
    }
    return json.dumps(raw("order.created", order, when, data)).encode()


async def _committed(settings: Settings, topic: str, partition: int) -> int:
    return (await committed_offsets(settings)).get((topic, partition), -1)


async def _lag_gauge(port: int, topic: str, partition: int) -> float | None:
    """orderwatch_consumer_lag_messages for one partition, from the worker's /metrics."""
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
    except aiohttp.ClientError:
        return None  # not serving yet
    labels = f'partition="{partition}",topic="{topic}"'  # prometheus-client sorts labels by name
    for line in text.splitlines():
        if line.startswith(f"orderwatch_consumer_lag_messages{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_lag_spike_does_not_fire_deadlines_whose_clearing_events_wait_in_kafka(
    tmp_path: Path, kafka_settings: Settings
) -> None:
    settings = kafka_settings.model_copy(update={"web_port": free_port()})
    await ensure_topics(settings)
    parts = settings.partitions
    p = 1
    cleared = _ids_on(p, parts, "late-order", 3)
    orphan = _ids_on(p, parts, "no-order", 1)[0]
    filler = _ids_on(p, parts, "filler", 50)
    now = datetime.now(UTC)
    paid_at = now - timedelta(minutes=20)  # its 10 min deadline passed 10 min ago on the wall clock
    orders_topic = settings.topic("orders")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20)
    await producer.start()
    try:
        for order in [*cleared, orphan]:
            await producer.send(settings.topic("payments"), _paid(order, paid_at), key=order.encode(), partition=p)
        # The backlog: older status changes of other orders, ahead of the clearing orders.
        for i in range(BACKLOG):
            order = filler[i % len(filler)]
            doc = raw("order.status_changed", order, now - timedelta(minutes=40), {"order_id": order, "status": "paid"})
            await producer.send(orders_topic, json.dumps(doc).encode(), key=order.encode(), partition=p)
        for order in cleared:  # a minute after the payment: no PAYMENT_WITHOUT_ORDER
            await producer.send(
                orders_topic, _created(order, paid_at + timedelta(minutes=1)), key=order.encode(), partition=p
            )
        await producer.flush()
    finally:
        await producer.stop()
    end = BACKLOG + len(cleared)

    with (tmp_path / "worker.log").open("wb") as log:
        proc = spawn_worker(settings, "wall", log)
        try:
            deadline = time.monotonic() + 150
            lags: list[float] = []
            while time.monotonic() < deadline and await _committed(settings, orders_topic, p) < end:
                assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                lag = await _lag_gauge(settings.web_port, orders_topic, p)
                if lag is not None:
                    lags.append(lag)
                await asyncio.sleep(0.5)
            assert await _committed(settings, orders_topic, p) == end, "the backlog was not read in time"
            await asyncio.sleep(2)  # an exception fired by mistake would be out by now
            after = await _lag_gauge(settings.web_port, orders_topic, p)
            events = await read_json(settings, settings.topic("order-exceptions"))
        finally:
            stop_worker(proc)

    fired = {e["data"]["order_id"] for e in events if e["data"]["rule"] == "PAYMENT_WITHOUT_ORDER"}
    assert orphan in fired, "the worker judged nothing: the control payment without an order must fire"
    assert fired & set(cleared) == set(), "fired while the clearing order still waited in Kafka"
    # The spike showed on the consumer-lag gauge, and went away.
    assert lags and max(lags) > 0, lags
    assert after == 0
