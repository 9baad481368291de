"""Read a whole Kafka topic once, from its beginning to the end offsets it had when we started:
the exception events of `order-exceptions` as the report's input, without a consumer group (no
offsets are committed, nobody else's position moves)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from orderwatch.errors import InputError

if TYPE_CHECKING:
    from orderwatch.streams.settings import Settings

__all__ = ["read_topic"]


async def read_topic(settings: Settings, name: str = "order-exceptions", *, timeout: float = 60.0) -> list[bytes]:
    """Every non-tombstone value of the topic `settings.topic(name)`, partition by partition in
    offset order. InputError when Kafka or the topic cannot be reached, or reading takes longer
    than `timeout` seconds."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    from orderwatch.streams.publish import kafka_client_options

    topic = settings.topic(name)
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), group_id=None, enable_auto_commit=False)
    deadline = time.monotonic() + timeout
    try:
        partitions = await asyncio.wait_for(_partitions(settings, topic), timeout)
        await asyncio.wait_for(consumer.start(), timeout)
        if not partitions:
            raise InputError(f"topic {topic} does not exist at {settings.kafka_bootstrap}")
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        values: list[bytes] = []
        while True:
            behind = [tp for tp in tps if await consumer.position(tp) < end[tp]]
            if not behind:
                return values
            if time.monotonic() > deadline:
                raise InputError(f"topic {topic}: not read to its end within {timeout:g} s")
            batch = await consumer.getmany(*behind, timeout_ms=500, max_records=10_000)
            for tp in behind:
                for msg in batch.get(tp, []):
                    if msg.offset < end[tp] and msg.value is not None:
                        values.append(msg.value)
    except (KafkaError, OSError, TimeoutError) as exc:
        msg = f"cannot read topic {topic} at {settings.kafka_bootstrap}: {type(exc).__name__}: {exc}"
        raise InputError(msg) from exc
    finally:
        await consumer.stop()


async def _partitions(settings: Settings, topic: str) -> list[int]:
    """The topic's partition numbers from the cluster's metadata (none when it does not exist)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from orderwatch.streams.publish import kafka_client_options

    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        (desc,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if desc.get("error_code"):
        return []
    return sorted(p["partition"] for p in desc.get("partitions", []))
