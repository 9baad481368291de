"""worker_progress on the real broker: what the worker wrote (its inbox, its outputs) and what
its group committed both count, its ticks topics do not, and nothing of another test's topics."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from orderwatch.streams.settings import Settings
from tests.integration.conftest import _require_stack, kafka_settings
from tests.support.progress import worker_progress

pytestmark = [pytest.mark.integration]

__fixtures__ = (_require_stack, kafka_settings)


async def _send(settings: Settings, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for i in range(n):  # keyed: compacted topics (order-exceptions) refuse records without one
            await producer.send_and_wait(topic, b"{}", key=f"k{i}".encode(), partition=i % settings.partitions)
    finally:
        await producer.stop()


async def _commit(settings: Settings, offsets: dict[tuple[str, int], int]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(t, p) for t, p in offsets])
        await consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "") for (t, p), o in offsets.items()})
    finally:
        await consumer.stop()


async def test_written_and_committed_count_ticks_do_not(kafka_settings: Settings) -> None:
    s = kafka_settings
    assert await worker_progress(s) == (0, 0)
    await _send(s, f"{s.app_id}-order-inbox", 5)
    await _send(s, s.topic("order-exceptions"), 3)
    await _send(s, f"{s.app_id}-ticks-orders", 50)  # a waiting merge's ticks: not progress
    assert await worker_progress(s) == (0, 8)

    await _commit(s, {(s.topic("orders"), 0): 7, (s.topic("orders"), 1): 2, (f"{s.app_id}-ticks-orders", 0): 40})
    assert await worker_progress(s) == (9, 8)


async def test_another_prefix_counts_nothing_of_this_one(kafka_settings: Settings) -> None:
    await _send(kafka_settings, kafka_settings.topic("order-exceptions"), 4)
    other = kafka_settings.model_copy(update={"topic_prefix": "tnone000000-", "app_id": "orderwatch-tnone000000"})
    assert await worker_progress(other) == (0, 0)
