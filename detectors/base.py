"""Shared machinery of the keyed detectors: a lazy-deletion timer heap and record building.

Each detector owns its states (a dict by key) and one heap of `(when, key)`; the state's
own `wake` field is the truth, a heap entry whose time differs from it is stale and skipped.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any

from orderwatch.detectors.catalog import RULES
from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.ids import exception_id
from orderwatch.detectors.records import Emission, ExceptionRecord

__all__ = ["KeyedDetector"]


class KeyedDetector:
    """Base of the order, stock, address, customer and provider detectors."""

    def __init__(self, config: RulesConfig) -> None:
        self.config = config
        self.states: dict[Any, Any] = {}
        # (when, key): no tie-breaking counter, keys of one detector compare fine, and an int
        # per entry is memory the open-order budget cannot spare.
        self._heap: list[tuple[float, Any]] = []
        # Keys changed since the runtime last persisted them (a dropped key: changed to absent).
        self.dirty: set[Any] = set()

    # -- timers -----------------------------------------------------------------------------
    def _wake_at(self, key: Any, state: Any, when: float | None) -> None:
        """Make sure `state` is woken at `when` (None: no timer needed)."""
        if when is None:
            return
        if state.wake is None or when < state.wake:
            state.wake = when
            heapq.heappush(self._heap, (when, key))

    def _due(self, now: float) -> Iterator[tuple[Any, Any]]:
        """Pop keys whose timer is strictly before `now` (a deadline fires once the clock passes it)."""
        heap = self._heap
        while heap and heap[0][0] < now:
            when, key = heapq.heappop(heap)
            state = self.states.get(key)
            if state is None or state.wake != when:
                continue  # stale: the state was dropped or rescheduled earlier
            state.wake = None
            self.dirty.add(key)
            yield key, state

    def advance(self, now: float) -> list[Emission]:
        """Fire what the clock `now` has passed (detectors with timers override this)."""
        return []

    def snapshot(self, key: Any) -> bytes:
        """The stored form of one key's state (a changelog / RocksDB value)."""
        raise NotImplementedError

    def restore(self, key: Any, blob: bytes) -> None:
        """Rebuild one key from `snapshot` output and schedule its timer."""
        raise NotImplementedError

    def timers(self) -> int:
        """Heap size, stale entries included (the deadline-queue gauge)."""
        return len(self._heap)

    def next_timer(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    # -- records ----------------------------------------------------------------------------
    @staticmethod
    def _record(
        rule: str,
        subject: str,
        start_id: str,
        order_id: str | None,
        now: float,
        event_time: float,
        summary: str,
        evidence: dict[str, Any],
        severity: str | None = None,
    ) -> ExceptionRecord:
        return ExceptionRecord(
            exception_id=exception_id(rule, subject, start_id),
            rule=rule,
            subject=subject,
            order_id=order_id,
            severity=severity or RULES[rule].severity,
            detected_at=now,
            event_time=event_time,
            summary=summary,
            evidence=evidence,
        )

    @staticmethod
    def _emit(out: list[Emission], kind: Any, record: ExceptionRecord) -> None:
        out.append(Emission.of(kind, record))
