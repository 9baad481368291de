"""The event-time clock of an arrival sequence, without the events: what the backtest's replay
(`detectors.replay.EventTimeReplay`) and the live workers' aligned clock
(`streams.arrivals.ArrivalClock`) both compute, so that a replay through Kafka moves its clock
exactly where the backtest of the same file moved its own.

Each arrival names its source (the input topic of its type). A source's progress is the largest
event time it delivered that the `JumpGuard` accepted; the clock follows the slowest *active*
source (one that delivered any of the last `idle_after` arrivals and has accepted progress), as
Flink's and Kafka Streams' watermarks do, so a producer with a skewed clock moves only its own
source, and an event far ahead of the input's progress waits in the guard for confirmation and is
refused (`from_future`) when the input refutes it (`detectors.skew`).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from orderwatch.detectors.skew import DEFAULT_MAX_SKEW, JumpGuard

__all__ = ["DEFAULT_IDLE_AFTER", "ArrivalWatermark"]

Item = TypeVar("Item")

DEFAULT_IDLE_AFTER = 1000
"""Arrivals in a row without one from a source after which that source no longer holds the clock."""


class ArrivalWatermark(Generic[Item]):
    """`arrive(t, source, item)` one arrival at a time; `low` is the slowest active source's
    progress (-inf before any), which never matters backwards: callers keep their clock where it
    was when `low` drops (a source waking up)."""

    def __init__(self, *, max_skew: float | None = DEFAULT_MAX_SKEW, idle_after: int = DEFAULT_IDLE_AFTER) -> None:
        if idle_after < 1:
            msg = f"idle_after: expected an integer >= 1, got {idle_after!r}"
            raise ValueError(msg)
        self.guard: JumpGuard[tuple[Item, str, float]] = JumpGuard(max_skew)
        self.idle_after = idle_after
        self.refused: list[Item] = []
        """Items of jumps refused as `from_future`: the caller dead-letters and clears them."""
        self.low = float("-inf")
        """The slowest active source's progress as of the last arrival."""
        self._progress: dict[str, float] = {}
        self._arrivals = 0
        self._last_arrival: dict[str, int] = {}
        self._idle_due = 0  # arrivals at which an active source goes idle (recompute then)

    def arrive(self, t: float, source: str, item: Item) -> tuple[tuple[float, Item], ...] | list[tuple[float, Item]]:
        """One arrival (event time `t`). Returns the (time, item) pairs accepted now, in arrival
        order: this one alone (the common case), held jumps the input confirmed or caught up
        with, or nothing (this one is a jump, held)."""
        self._arrivals += 1
        last = self._last_arrival
        progress = self._progress
        # Whether the source was among the active ones before this arrival (see _slowest_active).
        was_active = last.get(source, 0) > self._arrivals - 1 - self.idle_after and source in progress
        last[source] = self._arrivals
        low = self.low
        accepted: tuple[tuple[float, Item], ...] | list[tuple[float, Item]]
        if self.guard.admit(t):
            accepted = ((t, item),)
            old = progress.get(source, float("-inf"))
            if t > old:
                progress[source] = t
                # Raising one source's progress can only change the minimum if it was the
                # minimum (or just became active); otherwise only an idle timeout can.
                if not was_active or old <= low:
                    low = self._slowest_active()
            elif not was_active:
                low = self._slowest_active()
        else:
            verdict = self.guard.offer(t, (item, source, t))
            accepted = []
            for held, src, ht in verdict.accepted:
                accepted.append((ht, held))
                if ht > progress.get(src, float("-inf")):
                    progress[src] = ht
            self.refused += [held for held, _, _ in verdict.refused]
            low = self._slowest_active()
        if self._arrivals >= self._idle_due:
            low = self._slowest_active()
        self.low = low
        return accepted

    def _slowest_active(self) -> float:
        """The smallest accepted progress among the sources that delivered one of the last
        `idle_after` arrivals (the source of the one in hand always does). Also notes the
        arrival count at which the next of them goes idle (`_idle_due`): until then, and while
        no progress that is the minimum moves, the minimum stands (`arrive` keeps it cached)."""
        horizon = self._arrivals - self.idle_after
        progress = self._progress
        low = float("inf")
        oldest = self._arrivals + self.idle_after + 1
        for s, last in self._last_arrival.items():
            # A source whose every arrival so far is held has no progress yet: it holds nothing back.
            if last > horizon and s in progress:
                if last < oldest:
                    oldest = last
                p = progress[s]
                if p < low:
                    low = p
        self._idle_due = oldest + self.idle_after
        return low if low != float("inf") else float("-inf")

    def release_all(self) -> list[tuple[float, Item]]:
        """End of input: the held jumps, to apply (nothing refuted them); they move no source,
        so the clock stays where the slowest active source put it."""
        return [(ht, held) for held, _, ht in self.guard.release_all()]

    def full_minimum(self) -> float:
        """`low` by its definition, recomputed from scratch (tests check the cache against it)."""
        horizon = self._arrivals - self.idle_after
        active = [self._progress[s] for s, last in self._last_arrival.items() if last > horizon and s in self._progress]
        return min(active, default=float("-inf"))
