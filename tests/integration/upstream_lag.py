"""Streams in which one upstream lags, and their publisher: `orderwatch publish` itself, whose
record timestamps keep the file's order at the wall clock of publishing (streams/publish.py)."""

from __future__ import annotations

import json
from datetime import datetime

from orderwatch.streams.publish import RecordClock, publish_lines
from orderwatch.streams.settings import Settings

__all__ = ["SkewedProducerClock", "delay_created", "publish_stamped"]


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


_CLOCKS: dict[tuple[str, str], RecordClock] = {}
"""One publishing run's clock per broker and topic prefix: a later call continues its stamps."""


class SkewedProducerClock(RecordClock):
    """`publish`'s stamps, except the records at `skewed` (their index among those sent), which a
    producer whose clock is `ahead_ms` fast stamps: ahead by that much, and not moving the others
    (they come from the producers whose clocks are right)."""

    def __init__(self, skewed: set[int], ahead_ms: int) -> None:
        super().__init__()
        self._skewed = skewed
        self._ahead_ms = ahead_ms
        self._n = 0

    def stamp(self) -> int:
        n, self._n = self._n, self._n + 1
        if n in self._skewed:
            return self.now_ms() + self._ahead_ms
        return super().stamp()


async def publish_stamped(lines: list[bytes], settings: Settings, *, start: int = 0) -> int:
    """Publish the lines from `start` on as `orderwatch publish` does; two calls with the same
    settings continue one run's stamps (strictly increasing across both, whatever the lead the
    first one built). Returns how many were sent."""
    clock = _CLOCKS.setdefault((settings.kafka_bootstrap, settings.topic_prefix), RecordClock())
    res = await publish_lines(lines[start:], settings, clock=clock)
    return sum(res.sent.values())
