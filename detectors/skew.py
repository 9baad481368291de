"""Event-time plausibility: no single event, and no single producer with a skewed clock, can move
the clock of a backtest. Pure: the replay (`detectors.replay`) uses it.

The rule (docs/rules.md, "A clock no single event can hijack"): a guard watches one input (the
whole file in a backtest) and keeps its
progress, the largest event time it *accepted*. An event more than `max_skew` seconds ahead of
that progress is a *jump*: it is held aside and moves nothing. It is accepted when the input
catches up (the progress comes within `max_skew` of it) or confirms it (`confirm` jumps in a row,
no ordinary event between them, all within `max_skew` of the last: the input really moved on,
e.g. after a quiet night; scattered jumps among ordinary events never confirm). Once `refute_after`
ordinary events arrived while it was held, it was one event from the future: it is refused
(`from_future`). The first event is always accepted. Progress is the input's, not each topic's,
because a sparse topic (a few shipments an hour) jumps ahead of its own last event all the time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["CONFIRM", "DEFAULT_MAX_SKEW", "JUMP_REFUSED", "REFUTE_AFTER", "JumpGuard", "Verdict"]

Item = TypeVar("Item")

DEFAULT_MAX_SKEW = 3600.0
"""Seconds an event may be ahead of the input's progress before it must be confirmed."""
REFUTE_AFTER = 20
CONFIRM = 3
JUMP_REFUSED = "event time far ahead of its input's progress, not confirmed by the events after it"
"""The dead-letter message of a refused jump (reason `from_future`)."""
"""Jumps in a row, close together, that show the input itself moved on."""
"""Ordinary events after which the jumps held are refused as `from_future`."""


@dataclass(slots=True)
class Verdict(Generic[Item]):
    """What one offer decided: items to apply now, in arrival order, and items refused."""

    accepted: list[Item] = field(default_factory=list)
    refused: list[Item] = field(default_factory=list)


class JumpGuard(Generic[Item]):
    """Holds events far ahead of the input's progress until it confirms or refutes them."""

    def __init__(
        self, max_skew: float | None = DEFAULT_MAX_SKEW, refute_after: int = REFUTE_AFTER, confirm: int = CONFIRM
    ) -> None:
        if max_skew is not None and max_skew <= 0:
            msg = f"max_skew: expected seconds > 0 or None (off), got {max_skew!r}"
            raise ValueError(msg)
        if refute_after < 1:
            msg = f"refute_after: expected an integer >= 1, got {refute_after!r}"
            raise ValueError(msg)
        if confirm < 2:
            msg = f"confirm: expected an integer >= 2, got {confirm!r}"
            raise ValueError(msg)
        self.confirm = confirm
        self._streak = 0  # jumps since the last ordinary event
        self.max_skew = max_skew
        self.refute_after = refute_after
        self.progress = float("-inf")
        """The largest accepted event time (-inf before the first event)."""
        self._held: list[tuple[float, Item]] = []
        self._ordinary = 0  # ordinary events since the last jump was held
        self.refused = 0

    def admit(self, t: float) -> bool:
        """The common case, decided without building a `Verdict`: nothing is held and `t` is no
        jump. Then the event is accepted (progress moves) and True is returned; otherwise nothing
        changes and the caller must `offer` it. Same outcome as `offer` accepting it alone."""
        if self._held:
            return False
        progress = self.progress
        skew = self.max_skew
        if skew is None or progress == float("-inf") or t <= progress + skew:
            self._streak = 0
            if t > progress:
                self.progress = t
            return True
        return False

    def offer(self, t: float, item: Item) -> Verdict[Item]:
        out: Verdict[Item] = Verdict()
        skew = self.max_skew
        if skew is None or self.progress == float("-inf") or t <= self.progress + skew:
            out.accepted.append(item)
            self._streak = 0
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
        self._held.append((t, item))
        self._ordinary = 0
        self._streak += 1
        if self._streak < self.confirm:
            return out
        run = self._held[-self._streak :]
        close = [(ht, it) for ht, it in run if abs(ht - t) <= skew]
        if len(close) < self.confirm:
            return out
        # Confirmed: the input moved on. The run goes through, in arrival order.
        ids = {id(it) for _, it in close}
        taken = self._take(lambda ht: False, ids)
        out.accepted = [it for _, it in taken]
        self.progress = max(ht for ht, _ in taken)
        limit = self.progress + skew
        out.accepted += [it for _, it in self._take(lambda ht: ht <= limit)]
        self._streak = 0
        return out

    def _take(self, keep: Callable[[float], bool], ids: set[int] | None = None) -> list[tuple[float, Item]]:
        """Remove and return (in arrival order) what was held that `keep` selects by time, or
        whose item is one of `ids`."""

        def chosen(ht: float, it: Item) -> bool:
            return keep(ht) or (ids is not None and id(it) in ids)

        taken = [(ht, it) for ht, it in self._held if chosen(ht, it)]
        if taken:
            self._held = [(ht, it) for ht, it in self._held if not chosen(ht, it)]
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
        self._streak = 0
        return out
