"""Event-time clock for backtests and `--clock event` workers: a reorder buffer plus watermark.

Events are held (`detectors.reorder.ReorderBuffer`, the same buffer and dedupe the live agents
use) until the watermark (largest event time seen minus the allowed lateness) passes them, then
applied in event-time order with the deadlines interleaved, so any arrival order
within the lateness gives the same exceptions. Re-delivered events (same id) are dropped; an
event older than the dedupe horizon behind the watermark is refused (`InvalidEvent("too_late")`),
since it can no longer be told apart from a re-delivery.

Given `source_of` (the backtest passes the input topic of each event type), the watermark is
`detectors.arrivals.ArrivalWatermark`'s: per-source progress, the slowest *active* source, a
jump guard (an event far ahead of the input's progress waits for confirmation and is refused as
`from_future` when the input refutes it). A `--clock event` worker computes the same clock over
the records of its partitions in record-timestamp order (`streams.arrivals`). Without
`source_of` (the rule tests) the watermark is the largest event time seen, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop
from typing import Any

from orderwatch.detectors.arrivals import DEFAULT_IDLE_AFTER, ArrivalWatermark
from orderwatch.detectors.engine import Engine
from orderwatch.detectors.records import Emission
from orderwatch.detectors.reorder import ReorderBuffer
from orderwatch.detectors.skew import DEFAULT_MAX_SKEW, JumpGuard
from orderwatch.errors import InvalidEvent

__all__ = ["DEFAULT_IDLE_AFTER", "EventTimeReplay"]


class EventTimeReplay:
    def __init__(
        self,
        engine: Engine,
        lateness: float = 60.0,
        dedupe_horizon: float = 24 * 3600.0,
        *,
        source_of: Callable[[Any], str] | None = None,
        max_skew: float | None = DEFAULT_MAX_SKEW,
        idle_after: int = DEFAULT_IDLE_AFTER,
    ) -> None:
        if lateness < 0:
            msg = f"lateness: expected seconds >= 0, got {lateness!r}"
            raise ValueError(msg)
        self.engine = engine
        self.source_of = source_of
        # The clock of the arrivals (per-source progress, jump guard): the live aligned clock
        # (streams.arrivals) computes the same one, so a replay through Kafka moves as this does.
        self.arrivals: ArrivalWatermark[tuple[Any, Any]] = ArrivalWatermark(
            max_skew=max_skew if source_of is not None else None, idle_after=idle_after
        )
        self.refused = self.arrivals.refused
        """(event, token) of jumps refused as `from_future`: the caller dead-letters and clears them."""
        self.lateness = lateness
        self.dedupe_horizon = dedupe_horizon
        self.max_seen = float("-inf")
        self.watermark = float("-inf")
        self.duplicates = 0
        self.too_late = 0
        self._buffer: ReorderBuffer[Any] = ReorderBuffer(dedupe_horizon)
        # Bound once: push runs once per event.
        buf = self._buffer
        self._ids = buf.ids
        self._heap = buf.heap
        self._remember, self._hold, self._forget_behind = buf.remember, buf.add, buf.forget_behind
        self._arrive = self.arrivals.arrive
        self._advance, self._apply = engine.advance, engine.apply

    @property
    def guard(self) -> JumpGuard[tuple[tuple[Any, Any], str, float]]:
        return self.arrivals.guard

    @property
    def idle_after(self) -> int:
        return self.arrivals.idle_after

    def push(self, ev: Any, token: Any = None, t: float | None = None) -> list[Emission]:
        """Offer one validated event; returns what the clock's progress made happen. `token`
        comes back with the event if it is later refused (see `refused`); `t` is its event time
        in epoch seconds when the caller has it already (`ev.time.timestamp()` otherwise)."""
        # The hot path of the backtest (once per line): the buffer's dedupe, hold and release
        # are used through bound methods and its heap directly, no call that only forwards.
        eid = ev.id
        if eid in self._ids:
            self.duplicates += 1
            return []
        if t is None:
            t = ev.time.timestamp()
        watermark = self.watermark
        if t < watermark - self.dedupe_horizon:
            # Its id may have been forgotten already, so it cannot be told from a re-delivery:
            # refuse it (the caller dead-letters it) rather than risk applying an event twice.
            self.too_late += 1
            msg = f"event time is more than {self.dedupe_horizon:g} s behind the watermark, the dedupe horizon"
            raise InvalidEvent("too_late", msg)
        self._remember(eid, t)
        source_of = self.source_of
        if source_of is None:
            if t > self.max_seen:
                self._move(t - self.lateness)
                watermark = self.watermark
            self._buffer_event(t, ev)
        else:
            for ht, (held_ev, _) in self._arrive(t, source_of(ev), (ev, token)):
                self._buffer_event(ht, held_ev)
            self._move(self.arrivals.low - self.lateness)
            watermark = self.watermark
        heap = self._heap
        if not heap or heap[0][0] >= watermark:
            return self._advance(watermark)  # nothing to release; the clock still moves
        return self._release(watermark, watermark)

    def _buffer_event(self, t: float, ev: Any) -> None:
        if t > self.max_seen:
            self.max_seen = t
        self._hold(t, ev, self.watermark)

    def _move(self, watermark: float) -> None:
        if watermark <= self.watermark:
            return  # a clock never runs backwards (a source waking up lowers the minimum)
        self.watermark = watermark
        self._forget_behind(watermark)

    def finish(self, until: float | None = None) -> list[Emission]:
        """End of input: apply every buffered event, then move the clock to the last watermark
        (or `until`, when later); deadlines after it stay pending."""
        if self.source_of is not None:
            # The clock stays where the slowest active source put it: a source running ahead
            # (a producer whose clock is a day fast) must not decide the end either. Held jumps
            # are applied (nothing refuted them) but move no source.
            for ht, (ev, _) in self.arrivals.release_all():
                self._buffer_event(ht, ev)
        clock = self.watermark if until is None else max(self.watermark, until)
        self.watermark = clock
        return self._release(float("inf"), clock)

    def _release(self, upto: float, clock: float) -> list[Emission]:
        out: list[Emission] = []
        advance, apply = self._advance, self._apply
        # ReorderBuffer.release, without its generator: pop in event-time order what is before `upto`.
        heap = self._heap
        while heap and heap[0][0] < upto:
            t, _, ev = heappop(heap)
            # Deadlines strictly before the event fire first: an event at exactly D still clears.
            # The event-time clock is the event's own time here, so the output (detected_at
            # included) depends only on the events, not on how they were interleaved.
            fired = advance(t if t < clock else clock)
            if fired:
                out += fired
            done = apply(ev, t, t)
            if done:
                out += done
        out += advance(clock)
        return out

    @property
    def late(self) -> int:
        """Events buffered behind the watermark (applied late, still in event-time order)."""
        return self._buffer.late

    @property
    def buffered(self) -> int:
        return len(self._buffer)
