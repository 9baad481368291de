"""Reading topics back in the integration tests: everything from the beginning up to the end
offsets as of the call (one helper instead of one per test file)."""

from __future__ import annotations

import json
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from streams.settings import Settings

__all__ = ["read_json", "read_records"]


async def read_records(settings: Settings, topics: list[str]) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topics` (full names) present now, per partition in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += records
        return out
    finally:
        await consumer.stop()


async def read_json(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """The values of one topic (full name), decoded as JSON."""
    return [json.loads(r.value) for r in await read_records(settings, [topic]) if r.value is not None]
