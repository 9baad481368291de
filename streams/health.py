"""Health of the detector's agents, for /health, /ready and the metrics: partitions that stopped
committing, and agents restarting in a loop. Only time and offsets in, verdicts out."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["CrashLoop", "StallWatch"]

TP = tuple[str, int]


@dataclass
class StallWatch:
    """A partition is *stalled* when its committed offset has not moved for `after` seconds while
    messages wait past it, and the first of them is not explained by the reorder buffer (an event
    waiting for the clock is not a stall: it shows as buffered, and in a replay the last minutes
    of event time wait there for good)."""

    after: float = 60.0
    wall: Callable[[], float] = time.monotonic
    _since: dict[TP, tuple[int | None, float]] = field(default_factory=dict)

    def check(self, tp: TP, committed: int | None, highwater: int | None, explained: bool) -> bool:
        now = self.wall()
        last = self._since.get(tp)
        if last is None or last[0] != committed:
            self._since[tp] = (committed, now)
            return False
        if highwater is None or committed is None or committed >= highwater or explained:
            self._since[tp] = (committed, now)
            return False
        return now - last[1] >= self.after

    def forget(self, tps: list[TP]) -> None:
        for tp in tps:
            self._since.pop(tp, None)


@dataclass
class CrashLoop:
    """An agent is restarting in a loop when it crashed `limit` times within `window` seconds."""

    limit: int = 3
    window: float = 60.0
    wall: Callable[[], float] = time.monotonic
    _crashes: dict[str, deque[float]] = field(default_factory=dict)

    def crashed(self, agent: str) -> None:
        self._crashes.setdefault(agent, deque(maxlen=self.limit)).append(self.wall())

    def looping(self) -> list[str]:
        now = self.wall()
        return sorted(
            agent
            for agent, times in self._crashes.items()
            if len(times) >= self.limit and now - times[0] <= self.window
        )
