"""`orderwatch publish`: send a CloudEvents JSONL file to the input topics, keyed by `subject`,
as an upstream service would. The topic comes from the event type (CONTRACT.md).
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
from orderwatch.streams.settings import Settings

__all__ = ["PublishResult", "kafka_client_options", "publish_lines"]


@dataclass
class PublishResult:
    sent: Counter[str] = field(default_factory=Counter)
    unroutable: int = 0
    key_mismatch: int = 0
    """Lines whose subject is not the entity in their data: refused, never sent."""
    seconds: float = 0.0


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka connection options (SASL/SSL for a real cluster) from the settings."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        opts["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        opts["ssl_context"] = create_ssl_context(cafile=settings.ssl_cafile)
    return opts


KEY_MISMATCH = ("", b"")
"""What `route` returns for a line whose subject names another entity than its data."""


def route(raw: bytes) -> tuple[str, bytes] | None:
    """(topic, key) of one line, None when the line names no known type and subject, or
    KEY_MISMATCH when its data names another entity than its subject (its key would lie to the
    agents about which partition owns it)."""
    try:
        doc = json.loads(raw)
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
) -> PublishResult:
    """Send each line to its topic; lines with no known type or subject go to `unroutable_topic`
    (unkeyed) when given, else they are counted and skipped."""
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
            routed = route(raw)
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
            pending.append(await producer.send(topic, raw, key=key))
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
