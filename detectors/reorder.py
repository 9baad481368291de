"""The one reorder buffer and re-delivery dedupe of the project, shared by the backtest's
event-time clock (`detectors.replay.EventTimeReplay`) and each live agent partition
(`streams.runtime.PartitionRuntime`).

Items are held until a clock passes their event time, then released in event-time order (ties
in the order they were offered, so a replay is deterministic). Event ids are remembered with
their event time until the caller's clock is `dedupe_horizon` past them: within that horizon a
re-delivered id is recognised; older ids are forgotten, so memory is bounded by the horizon,
not by the stream (the callers refuse or ledger-check what is older).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["ReorderBuffer"]

T = TypeVar("T")


class ReorderBuffer(Generic[T]):
    def __init__(self, dedupe_horizon: float = 24 * 3600.0) -> None:
        if dedupe_horizon < 0:
            msg = f"dedupe_horizon: expected seconds >= 0, got {dedupe_horizon!r}"
            raise ValueError(msg)
        self.dedupe_horizon = dedupe_horizon
        self.late = 0
        """Items added behind the clock their caller passed (applied late, still in time order)."""
        self.heap: list[tuple[float, int, T]] = []
        """(event time, arrival number, item), a heap: read-only for callers (the backtest's replay
        pops it itself, in `release`'s order, to spare a generator per event)."""
        self._seq = 0
        self.ids: dict[str, float] = {}
        """Remembered event ids and their event times: read-only for callers (`seen`)."""
        self._seen_order: deque[tuple[float, str]] = deque()

    # -- dedupe -----------------------------------------------------------------------------
    def seen(self, event_id: str) -> bool:
        """True when this id was remembered and not forgotten yet: a re-delivery."""
        return event_id in self.ids

    def remember(self, event_id: str, t: float) -> None:
        self.ids[event_id] = t
        self._seen_order.append((t, event_id))

    def forget_behind(self, clock: float) -> None:
        """Forget the ids whose event time is more than the horizon behind `clock`."""
        order = self._seen_order
        before = clock - self.dedupe_horizon
        if not order or order[0][0] >= before:
            return
        seen = self.ids
        while order and order[0][0] < before:
            seen.pop(order.popleft()[1], None)

    # -- reorder ----------------------------------------------------------------------------
    def add(self, t: float, item: T, clock: float) -> None:
        """Hold `item` (event time `t`) until a release passes it; `clock` is where the caller's
        clock stands now (an item behind it counts as late)."""
        if t < clock:
            self.late += 1
        self._seq += 1
        heapq.heappush(self.heap, (t, self._seq, item))

    def release(self, upto: float) -> Iterator[tuple[float, T]]:
        """Pop, in event-time order, every item whose time is strictly before `upto` (lazily:
        an item the caller adds meanwhile is released in its turn)."""
        heap = self.heap
        while heap and heap[0][0] < upto:
            t, _, item = heapq.heappop(heap)
            yield t, item

    def due(self, upto: float) -> bool:
        """Whether a release up to `upto` would pop anything."""
        return bool(self.heap) and self.heap[0][0] < upto

    @property
    def oldest(self) -> float:
        """Event time of the oldest held item (inf when none)."""
        return self.heap[0][0] if self.heap else float("inf")

    def __len__(self) -> int:
        return len(self.heap)
