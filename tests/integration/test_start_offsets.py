"""`log_start_offsets` on the real broker: what the worker hands its consumer port at start-up,
so an agent never waits for offsets retention deleted (ConsumerPort.resume_offset)."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import ensure_topics
from orderwatch.streams.worker import log_start_offsets

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def test_the_log_start_is_where_deleted_records_end(kafka_settings: Settings) -> None:
    await ensure_topics(kafka_settings)
    orders = kafka_settings.topic("orders")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap)
    await producer.start()
    try:
        for _ in range(5):
            await producer.send_and_wait(orders, b"{}", partition=1)
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.kafka_bootstrap)
    await admin.start()
    try:  # what retention does to old segments, at an offset of our choosing
        await admin.delete_records({TopicPartition(orders, 1): RecordsToDelete(before_offset=3)})
    finally:
        await admin.close()
    starts = await log_start_offsets(kafka_settings, [(orders, 0), (orders, 1)])
    assert starts == {(orders, 0): 0, (orders, 1): 3}
    assert await log_start_offsets(kafka_settings, []) == {}
