"""Event-time clock for backtests and `--clock event` workers: a reorder buffer plus watermark.

Events are held until the watermark (largest event time seen minus the allowed lateness) passes
them, then applied in event-time order with the deadlines interleaved, so any arrival order
within the lateness gives the same exceptions. Re-delivered events (same id) are dropped; an
event older than the dedupe horizon behind the watermark is refused (`InvalidEvent("too_late")`),
since it can no longer be told apart from a re-delivery.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

from detectors.engine import Engine
from detectors.records import Emission
from orderwatch.errors import InvalidEvent

__all__ = ["EventTimeReplay"]


class EventTimeReplay:
    def __init__(self, engine: Engine, lateness: float = 60.0, dedupe_horizon: float = 24 * 3600.0) -> None:
        if lateness < 0:
            msg = f"lateness: expected seconds >= 0, got {lateness!r}"
            raise ValueError(msg)
        self.engine = engine
        self.lateness = lateness
        self.dedupe_horizon = dedupe_horizon
        self.max_seen = float("-inf")
        self.watermark = float("-inf")
        self.duplicates = 0
        self.late = 0
        self.too_late = 0
        self._buffer: list[tuple[float, int, Any]] = []
        self._seq = 0
        self._seen: dict[str, float] = {}
        self._seen_order: deque[tuple[float, str]] = deque()

    def push(self, ev: Any) -> list[Emission]:
        """Offer one validated event; returns what the clock's progress made happen."""
        eid = ev.id
        seen = self._seen
        if eid in seen:
            self.duplicates += 1
            return []
        t = ev.time.timestamp()
        if t < self.watermark - self.dedupe_horizon:
            # Its id may have been forgotten already, so it cannot be told from a re-delivery:
            # refuse it (the caller dead-letters it) rather than risk applying an event twice.
            self.too_late += 1
            msg = f"event time is more than {self.dedupe_horizon:g} s behind the watermark, the dedupe horizon"
            raise InvalidEvent("too_late", msg)
        seen[eid] = t
        self._seen_order.append((t, eid))
        if t < self.watermark:
            self.late += 1
        self._seq += 1
        heapq.heappush(self._buffer, (t, self._seq, ev))
        if t > self.max_seen:
            self.max_seen = t
            self.watermark = t - self.lateness
            order = self._seen_order
            if order[0][0] < self.watermark - self.dedupe_horizon:
                self._forget(self.watermark - self.dedupe_horizon)
        if self._buffer[0][0] >= self.watermark:
            return self.engine.advance(self.watermark)  # nothing to release; the clock still moves
        return self._release(self.watermark, self.watermark)

    def finish(self, until: float | None = None) -> list[Emission]:
        """End of input: apply every buffered event, then move the clock to the last watermark
        (or `until`, when later); deadlines after it stay pending."""
        clock = self.watermark if until is None else max(self.watermark, until)
        self.watermark = clock
        return self._release(float("inf"), clock)

    def _release(self, upto: float, clock: float) -> list[Emission]:
        out: list[Emission] = []
        buf, engine = self._buffer, self.engine
        while buf and buf[0][0] < upto:
            t, _, ev = heapq.heappop(buf)
            # Deadlines strictly before the event fire first: an event at exactly D still clears.
            # The event-time clock is the event's own time here, so the output (detected_at
            # included) depends only on the events, not on how they were interleaved.
            out += engine.advance(min(t, clock))
            out += engine.apply(ev, t, t)
        out += engine.advance(clock)
        return out

    def _forget(self, before: float) -> None:
        order, seen = self._seen_order, self._seen
        while order and order[0][0] < before:
            _, eid = order.popleft()
            seen.pop(eid, None)

    @property
    def buffered(self) -> int:
        return len(self._buffer)
