"""The blocklist follower. The blocklist is global: every worker needs every entry, whatever
partitions it owns. faust's GlobalTable cannot adopt an existing compacted topic as its changelog
(assignment hangs), so a plain consumer reads all its partitions from the start into a dict."""

from __future__ import annotations

import asyncio
import json
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from orderwatch.streams.kafka_client import kafka_client_options
from orderwatch.streams.settings import Settings

__all__ = ["BlocklistFollower"]

log = logging.getLogger(__name__)


class BlocklistFollower:
    """Owns the entries (key -> (reason, expiry)) and `loaded`, set once the topic was read to
    the end offsets it had when the follower started."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.entries: dict[str, tuple[str, float | None]] = {}
        self.loaded = asyncio.Event()

    def lookup(self, key: str) -> tuple[str, float | None] | None:
        return self.entries.get(key)

    def apply(self, key: str, value: bytes | None, where: str = "") -> None:
        """One record of the topic: an entry, or a tombstone removing one."""
        if value is None:
            self.entries.pop(key, None)
            return
        try:
            doc = json.loads(value)
            self.entries[key] = (str(doc.get("reason", "")), None)
        except (ValueError, AttributeError):
            log.warning("blocklist%s: not a JSON object, ignored", where)

    async def run(self) -> None:
        settings = self._settings
        topic = settings.topic("blocklist")
        consumer = AIOKafkaConsumer(
            **kafka_client_options(settings), enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            if all(end == 0 for end in ends.values()):
                self.loaded.set()
            async for msg in consumer:
                key = (msg.key or b"").decode("utf-8", "replace")
                self.apply(key, msg.value, f"[{msg.partition}]@{msg.offset}")
                if not self.loaded.is_set():
                    behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
                    if not behind:
                        log.info("blocklist loaded: %s entries", len(self.entries))
                        self.loaded.set()
        finally:
            await consumer.stop()
