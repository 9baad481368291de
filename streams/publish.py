"""`orderwatch publish`: send a CloudEvents JSONL file to the input topics, keyed by `subject`,
as an upstream service would. The topic comes from the event type (CONTRACT.md).

Topics are never created here: the input topics must exist as `orderwatch topics create` makes
them (checked first; the producer then only ever asks for metadata of topics that exist).

Record timestamps keep the file's order across topics: record i is stamped
`ts_i = max(ts_{i-1} + 1, event_time_ms_i)`, strictly increasing in file order and never behind
the event's own time; a line without a valid time gets `ts_{i-1} + 1`, and the first line's base
is its event time, else the wall clock. The orders agent merges its co-partitioned inputs by
record timestamp, so a replay sees the file's interleaving (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from orderwatch.schemas.events import ENTITY_FIELD, TOPIC_OF_TYPE
from orderwatch.streams.kafka_client import kafka_client_options
from orderwatch.streams.settings import Settings

__all__ = ["PublishResult", "RecordClock", "kafka_client_options", "publish_lines"]


@dataclass
class PublishResult:
    sent: Counter[str] = field(default_factory=Counter)
    unroutable: int = 0
    key_mismatch: int = 0
    """Lines whose subject is not the entity in their data: refused, never sent."""
    seconds: float = 0.0


class RecordClock:
    """The record timestamps of one file, in file order (the module's docstring has the rule)."""

    __slots__ = ("last", "wall_ms")

    def __init__(self, wall_ms: int | None = None) -> None:
        self.last: int | None = None
        self.wall_ms = wall_ms

    def stamp(self, event_ms: int | None) -> int:
        if self.last is None:
            base = event_ms if event_ms is not None else (self.wall_ms or int(time.time() * 1000))
            self.last = base
        else:
            self.last = self.last + 1 if event_ms is None else max(self.last + 1, event_ms)
        return self.last


MAX_TIMESTAMP_MS = 4102444800000
"""2100-01-01: an event time from 1970 up to this is used for stamping (the contract's range)."""


def event_time_ms(doc: Any) -> int | None:
    """The event's `time` in epoch milliseconds, None when it has none in the contract's range."""
    raw = doc.get("time") if isinstance(doc, dict) else None
    if not isinstance(raw, str):
        return None
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    ms = int(dt.timestamp() * 1000)
    return ms if 0 <= ms < MAX_TIMESTAMP_MS else None


KEY_MISMATCH = ("", b"")
"""What `route` returns for a line whose subject names another entity than its data."""


def route(raw: bytes) -> tuple[str, bytes] | None:
    """(topic, key) of one line, None when the line names no known type and subject, or
    KEY_MISMATCH when its data names another entity than its subject (its key would lie to the
    agents about which partition owns it)."""
    return _route(_decode(raw))


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _route(doc: Any) -> tuple[str, bytes] | None:
    try:
        topic = TOPIC_OF_TYPE[doc["type"]]
        subject = str(doc["subject"])
    except (ValueError, KeyError, TypeError):
        return None
    data = doc.get("data")
    entity = data.get(ENTITY_FIELD[doc["type"]]) if isinstance(data, dict) else None
    if isinstance(entity, str) and entity != subject:
        # Otherwise invalid lines are still sent: the worker dead-letters them with a reason.
        return KEY_MISMATCH
    return topic, subject.encode()


async def publish_lines(
    lines: Iterable[bytes],
    settings: Settings,
    *,
    unroutable_topic: str | None = None,
    progress: Callable[[int, float], None] | None = None,
    clock: RecordClock | None = None,
) -> PublishResult:
    """Send each line to its topic, stamped by `clock` (a fresh RecordClock by default); lines
    with no known type or subject go to `unroutable_topic` (unkeyed) when given, else they are
    counted and skipped. The topics must exist (TopicsError otherwise): nothing is created."""
    from orderwatch.streams.topics import INPUTS, require_topics

    extra = [unroutable_topic] if unroutable_topic else []
    await require_topics(settings, [settings.topic(t) for t in INPUTS] + extra)
    clock = clock or RecordClock()
    res = PublishResult()
    producer = AIOKafkaProducer(
        **kafka_client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=10,
        max_batch_size=256 * 1024,
        compression_type=None,
    )
    await producer.start()
    started = time.perf_counter()
    pending: list[asyncio.Future[Any]] = []
    try:
        for n, raw in enumerate(lines, 1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            doc = _decode(raw)
            routed = _route(doc)
            if routed is KEY_MISMATCH:
                res.key_mismatch += 1
                continue
            if routed is None:
                res.unroutable += 1
                if unroutable_topic is None:
                    continue
                topic, key = unroutable_topic, None
            else:
                topic, key = settings.topic(routed[0]), routed[1]
            stamp = clock.stamp(event_time_ms(doc))
            pending.append(await producer.send(topic, raw, key=key, timestamp_ms=stamp))
            res.sent[topic] += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
            if progress is not None and n % 100_000 == 0:
                progress(n, time.perf_counter() - started)
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    res.seconds = time.perf_counter() - started
    return res
