"""Streams in which one upstream lags, and a publisher that keeps a file's order in the record
timestamps (the contract of `orderwatch publish`: ts_i = max(ts_{i-1} + 1, event time), in ms)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import datetime

from aiokafka import AIOKafkaProducer

from orderwatch.streams.publish import KEY_MISMATCH, route
from orderwatch.streams.settings import Settings

__all__ = ["delay_created", "publish_stamped", "stamps"]


def _time(line: bytes) -> float | None:
    try:
        return datetime.fromisoformat(json.loads(line)["time"]).timestamp()
    except (ValueError, KeyError, TypeError):
        return None


def delay_created(lines: list[bytes], every: int, delay: float) -> tuple[list[bytes], list[str]]:
    """The arrival-ordered stream in which the order service delivered every `every`-th
    order.created `delay` seconds late (its other events on time): the line moves to just before
    the first line at least `delay` seconds of event time after its own. Returns the new order of
    lines and the delayed order ids."""
    created = [i for i, line in enumerate(lines) if b'"type":"order.created"' in line.replace(b" ", b"")]
    chosen = set(created[::every])
    out: list[bytes] = []
    moving: list[tuple[float, bytes]] = []  # (deliver at, line)
    delayed: list[str] = []
    for i, line in enumerate(lines):
        t = _time(line)
        if t is not None:
            while moving and moving[0][0] <= t:
                out.append(moving.pop(0)[1])
        if i in chosen and t is not None:
            moving.append((t + delay, line))
            moving.sort(key=lambda m: m[0])
            delayed.append(str(json.loads(line)["subject"]))
            continue
        out.append(line)
    out += [line for _, line in moving]
    return out, delayed


def stamps(lines: Iterable[bytes], base_ms: int | None = None) -> list[int]:
    """Record timestamps (ms) of `lines` in order: strictly increasing, never behind the event's own
    time; a line without a valid time takes the previous one's + 1."""
    out: list[int] = []
    last = base_ms
    for line in lines:
        t = _time(line)
        ms = round(t * 1000) if t is not None else None
        if last is None:
            last = ms if ms is not None else 0
            out.append(last)
            continue
        last = max(last + 1, ms) if ms is not None else last + 1
        out.append(last)
    return out


async def publish_stamped(lines: list[bytes], settings: Settings, *, start: int = 0, shift_to_now: bool = True) -> int:
    """Send each routable line from `start` on to its topic with its record timestamp (`stamps`
    over the whole list, so two calls continue one run's stamps); returns how many."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=10)
    await producer.start()
    sent = 0
    try:
        pending = []
        # Shifted so that the last record is stamped now: the order and spacing are the file's,
        # and no record is older than the broker's retention (7 days), which would delete a
        # historical stream's segments at its next retention check, mid-test.
        stamped = stamps(lines)
        shift = round(time.time() * 1000) - stamped[-1] if shift_to_now else 0
        for line, ts in list(zip(lines, stamped, strict=True))[start:]:
            ts += shift
            routed = route(line)
            if routed is None or routed is KEY_MISMATCH:
                continue
            topic, key = routed
            pending.append(await producer.send(settings.topic(topic), line, key=key, timestamp_ms=ts))
            sent += 1
        for fut in pending:
            await fut
    finally:
        await producer.stop()
    return sent
