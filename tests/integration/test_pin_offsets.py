"""`pin_start_offsets` on the real broker: a group that never committed gets a committed offset
for every partition it will read (the beginning of data topics, the end of tick topics), and a
group that has committed offsets keeps them."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from orderwatch.streams.app import internal_topics
from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import ensure_topics
from orderwatch.streams.worker import committed_offsets, pin_start_offsets

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def test_a_new_group_is_pinned_at_the_start_of_data_and_the_end_of_ticks(kafka_settings: Settings) -> None:
    await ensure_topics(kafka_settings)
    ticks = next(t for t in internal_topics(kafka_settings) if t.endswith("-ticks-orders"))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap)
    await producer.start()
    try:
        for _ in range(3):
            await producer.send_and_wait(ticks, b"tick", partition=1)
            await producer.send_and_wait(kafka_settings.topic("orders"), b"{}", partition=1)
    finally:
        await producer.stop()

    pinned = await pin_start_offsets(kafka_settings)

    topics = [kafka_settings.topic(t) for t in ("orders", "payments", "inventory", "logistics")]
    topics += internal_topics(kafka_settings)
    assert pinned == dict.fromkeys(topics, kafka_settings.partitions)
    committed = await committed_offsets(kafka_settings)
    assert committed[(kafka_settings.topic("orders"), 1)] == 0  # data: read from the beginning
    assert committed[(ticks, 1)] == 3  # ticks carry nothing to replay: start at the end
    assert len(committed) == len(topics) * kafka_settings.partitions


async def test_a_group_with_commits_keeps_them(kafka_settings: Settings) -> None:
    await ensure_topics(kafka_settings)
    await pin_start_offsets(kafka_settings)
    before = await committed_offsets(kafka_settings)

    assert await pin_start_offsets(kafka_settings) == {}
    assert await committed_offsets(kafka_settings) == before
