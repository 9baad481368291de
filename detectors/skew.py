"""Event-time plausibility: no single event, and no single producer with a skewed clock, can move
the clock of a replay. Pure: the replay (`detectors.replay`) and the live agents both use it.

The rule (docs/rules.md, "A clock no single event can hijack"): a guard watches one input (the
whole file in a backtest, the input partitions of one agent partition live) and keeps its
progress, the largest event time it *accepted*. An event more than `max_skew` seconds ahead of
that progress is a *jump*: it is held aside and moves nothing. It is accepted when the input
catches up (the progress comes within `max_skew` of it) or confirms it (another jump within
`max_skew` of it: the input really moved on, e.g. after a quiet night). Once `refute_after`
ordinary events arrived while it was held, it was one event from the future: it is refused
(`from_future`). The first event is always accepted. Progress is the input's, not each topic's,
because a sparse topic (a few shipments an hour) jumps ahead of its own last event all the time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["DEFAULT_MAX_SKEW", "REFUTE_AFTER", "JumpGuard", "Verdict"]

Item = TypeVar("Item")

DEFAULT_MAX_SKEW = 3600.0
"""Seconds an event may be ahead of the input's progress before it must be confirmed."""
REFUTE_AFTER = 20
"""Ordinary events after which the jumps held are refused as `from_future`."""


@dataclass(slots=True)
class Verdict(Generic[Item]):
    """What one offer decided: items to apply now, in arrival order, and items refused."""

    accepted: list[Item] = field(default_factory=list)
    refused: list[Item] = field(default_factory=list)


class JumpGuard(Generic[Item]):
    """Holds events far ahead of the input's progress until it confirms or refutes them."""

    def __init__(self, max_skew: float | None = DEFAULT_MAX_SKEW, refute_after: int = REFUTE_AFTER) -> None:
        if max_skew is not None and max_skew <= 0:
            msg = f"max_skew: expected seconds > 0 or None (off), got {max_skew!r}"
            raise ValueError(msg)
        if refute_after < 1:
            msg = f"refute_after: expected an integer >= 1, got {refute_after!r}"
            raise ValueError(msg)
        self.max_skew = max_skew
        self.refute_after = refute_after
        self.progress = float("-inf")
        """The largest accepted event time (-inf before the first event)."""
        self._held: list[tuple[float, Item]] = []
        self._ordinary = 0  # ordinary events since the last jump was held
        self.refused = 0

    def offer(self, t: float, item: Item) -> Verdict[Item]:
        out: Verdict[Item] = Verdict()
        skew = self.max_skew
        if skew is None or self.progress == float("-inf") or t <= self.progress + skew:
            out.accepted.append(item)
            if t > self.progress:
                self.progress = t
                if self._held and skew is not None:
                    limit = t + skew  # caught up with what was held this near
                    out.accepted += [it for _, it in self._take(lambda ht: ht <= limit)]
            if self._held:
                self._ordinary += 1
                if self._ordinary >= self.refute_after:
                    out.refused = [it for _, it in self._held]
                    self.refused += len(out.refused)
                    self._held.clear()
            return out
        close = self._take(lambda ht: abs(ht - t) <= skew)
        if not close:
            self._held.append((t, item))
            self._ordinary = 0
            return out
        # Confirmed: the input moved on. What was held near it goes through, in arrival order.
        out.accepted = [*(it for _, it in close), item]
        self.progress = max(t, *(ht for ht, _ in close))
        limit = self.progress + skew
        out.accepted += [it for _, it in self._take(lambda ht: ht <= limit)]
        return out

    def _take(self, keep: Callable[[float], bool]) -> list[tuple[float, Item]]:
        taken = [(ht, it) for ht, it in self._held if keep(ht)]
        if taken:
            self._held = [(ht, it) for ht, it in self._held if not keep(ht)]
            if not self._held:
                self._ordinary = 0
        return taken

    @property
    def held(self) -> int:
        return len(self._held)

    def release_all(self) -> list[Item]:
        """End of input: every held jump is applied (nothing refuted it); progress stays put."""
        out = [it for _, it in self._held]
        self._held.clear()
        self._ordinary = 0
        return out
