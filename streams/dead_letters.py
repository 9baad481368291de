"""Dead-lettering: a message the runtime cannot use (it broke the contract, a control message did
not validate, the rules raised on it) goes to `orders-dlq` with where it came from and why."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from typing import Any

from orderwatch.detectors.records import iso
from orderwatch.errors import InvalidEvent
from orderwatch.streams.metrics import Metrics
from orderwatch.streams.outputs import Outputs

__all__ = ["DLQ_MAX_BYTES", "DeadLetters", "dead_letter_record"]

log = logging.getLogger(__name__)

DLQ_MAX_BYTES = 512 * 1024
"""Largest dead-letter record: half the broker's default limit, whatever the bad message was."""


def dead_letter_record(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes, exc: InvalidEvent
) -> bytes:
    """The `orders-dlq` value for one bad message: where it came from, why, and its bytes (text
    when UTF-8, else base64), truncated until the record fits DLQ_MAX_BYTES; the original length
    and SHA-256 always identify the message, so a consumer can tell a copy is partial."""
    keep = len(value)
    while True:
        part = value[:keep]
        try:
            original: dict[str, Any] = {"original": part.decode("utf-8")}
        except UnicodeDecodeError as err:
            if keep < len(value) and err.start >= len(part) - 3:
                original = {"original": part[: err.start].decode("utf-8")}  # cut inside a character
            else:
                original = {"original_base64": base64.b64encode(part).decode("ascii")}
        record = {
            "reason": exc.reason,
            "error": exc.detail,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": (key or b"")[:1024].decode("utf-8", "replace"),
            "received_at": iso(time.time()),
            "original_length": len(value),
            "original_sha256": hashlib.sha256(value).hexdigest(),
            "truncated": keep < len(value),
            **original,
        }
        blob = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if len(blob) <= DLQ_MAX_BYTES:
            return blob
        keep = keep * DLQ_MAX_BYTES // len(blob) // 2  # escapes can make a byte six: shrink fast


class DeadLetters:
    """Sends one bad message to `orders-dlq` and waits for the broker: the caller acks it only
    afterwards, so a crash re-reads it rather than losing it."""

    def __init__(self, outputs: Outputs, topic: str, metrics: Metrics) -> None:
        self._outputs = outputs
        self.topic = topic
        self._metrics = metrics

    async def send(self, msg: Any, exc: InvalidEvent) -> None:
        value = msg.value if isinstance(msg.value, bytes) else bytes(msg.value or b"")
        record = dead_letter_record(msg.topic, msg.partition, msg.offset, msg.key, value, exc)
        log.warning("dead-lettered %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, exc.reason)
        await (await self._outputs.send(self.topic, msg.key, record))
        self._metrics.invalid.labels(msg.topic, exc.reason).inc()  # counted once the broker has it
