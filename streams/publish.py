"""`orderwatch publish`: send a CloudEvents JSONL file to the input topics, keyed by `subject`,
as an upstream service would. The topic comes from the event type (CONTRACT.md).

Topics are never created here: the input topics must exist as `orderwatch topics create` makes
them (checked first; the producer then only ever asks for metadata of topics that exist).

Record timestamps keep the file's order at the time of publishing, as a live upstream's producer
stamps its records: record i is stamped `ts_i = max(ts_(i-1) + 1, wall_clock_ms)`, strictly
increasing in file order whatever the events' own times say. The orders agent merges its
co-partitioned inputs by record timestamp (streams/merge.py), so a replay sees the file's
interleaving; and no record is older than the broker's retention (a historical file stamped with
its event times would be, and Kafka deletes such segments mid-replay). Past 1,000 records a
second the stamps run ahead of the wall clock by a millisecond per record; once `max_lead_ms`
ahead, publishing waits for the wall clock (1,000 records/s), so no record comes near the
broker's future bound (`log.message.timestamp.after.max.ms`: unbounded up to Kafka 3.9, one hour
by default from Kafka 4.0, which rejects a record further ahead) (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from orderwatch.schemas.events import ENTITY_FIELD, TOPIC_OF_TYPE
from orderwatch.streams.kafka_client import kafka_client_options
from orderwatch.streams.settings import Settings

__all__ = ["MAX_LEAD_MS", "PublishResult", "RecordClock", "kafka_client_options", "publish_lines"]


@dataclass
class PublishResult:
    sent: Counter[str] = field(default_factory=Counter)
    unroutable: int = 0
    key_mismatch: int = 0
    """Lines whose subject is not the entity in their data: refused, never sent."""
    seconds: float = 0.0


MAX_LEAD_MS = 30 * 60 * 1000
"""How far ahead of the wall clock publishing may stamp before it waits: half of Kafka 4's
default `log.message.timestamp.after.max.ms` (one hour), leaving room for a skewed clock."""


class RecordClock:
    """The record timestamps of one publishing run, in file order (the module's docstring has
    the rule). One clock given to several `publish_lines` calls continues one run's stamps."""

    __slots__ = ("_wall", "last", "max_lead_ms")

    def __init__(self, wall: Callable[[], float] = time.time, max_lead_ms: int = MAX_LEAD_MS) -> None:
        if max_lead_ms < 0:
            msg = f"max_lead_ms must be 0 or more, got {max_lead_ms}"
            raise ValueError(msg)
        self._wall = wall
        self.last: int | None = None
        self.max_lead_ms = max_lead_ms

    def now_ms(self) -> int:
        return int(self._wall() * 1000)

    def stamp(self) -> int:
        now = self.now_ms()
        self.last = now if self.last is None else max(self.last + 1, now)
        return self.last

    def wait_seconds(self) -> float:
        """How long to wait before the next stamp so it is at most `max_lead_ms` ahead of the
        wall clock (0 when it is not ahead that far). Waits a second more than needed, so a
        paced run sleeps once per about 1,000 records, not once per record."""
        if self.last is None:
            return 0.0
        over = self.last + 1 - self.now_ms() - self.max_lead_ms
        return 0.0 if over <= 0 else (over + 1000) / 1000


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
    """Send each line to its topic, stamped by `clock` (a fresh RecordClock by default: pass one
    to continue another call's stamps); lines
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
            wait = clock.wait_seconds()
            if wait:
                await asyncio.sleep(wait)  # stamps a max_lead_ms ahead of the wall clock: pace
            stamp = clock.stamp()
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
