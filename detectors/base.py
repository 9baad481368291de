"""The detector contract every keyed detector implements, and the machinery they share (a
lazy-deletion timer heap, record building).

In the spirit of bytewax's `StatefulLogic` (an item in, emissions out; a notification in,
emissions out; `notify_at`; `snapshot`), but keyed: one detector holds the states of many keys
(the keys of one partition), because the rules' budget is memory per open order and one timer
heap per detector is cheaper than one object per key.

- `on_event(key, event, t, now)`: one event (or an adoption, `detectors.topology.Adopt`) for one
  key, whose event time is `t`; `now` is the clock for `detected_at`. Emissions out.
- `on_clock(now)`: the clock passed `now`: fire every deadline, window and expiry before it.
  Emissions out.
- `notify_at()`: the earliest time `on_clock` has anything to do (None: nothing scheduled).
- `snapshot(key)` / `restore(key, blob)`: one key's state as bytes and back (a changelog or
  RocksDB value; versioned, see `detectors.snapshots`). `take_dirty()` lists the keys changed
  since its last call with their snapshots (None: the key is gone).

Which detector gets which event, by which key, is the routing table (`detectors.topology`);
the callers (the backtest's `Engine`, `streams.runtime.PartitionRuntime`) drive detectors only
through this contract.

Each detector owns its states (a dict by key) and one heap of `(when, key)`; the state's
own `wake` field is the truth, a heap entry whose time differs from it is stale and skipped.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator
from typing import Any, ClassVar, Generic, Protocol, TypeAlias, TypeVar

from orderwatch.detectors.catalog import RULES
from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.ids import exception_id
from orderwatch.detectors.records import Emission, ExceptionRecord
from orderwatch.detectors.topology import DetectorName

__all__ = ["Detector", "Incoming", "KeyedDetector", "Timed", "Untracked"]


class Untracked(set[Any]):
    """A `dirty` set that keeps nothing, for a caller that never persists state (the backtest's
    `Engine`): tracking there would hold every key ever touched, about 100 bytes per open order
    per detector, for a `take_dirty` nobody calls."""

    # `discard` of a set that is always empty: a no-op like the method it replaces, but a C
    # one (every event calls it once per detector).
    add = set.discard


class Incoming(Protocol):
    """What `on_event` reads of its input: a validated event (schemas.events) or an adoption."""

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def data(self) -> Any: ...


class Timed(Protocol):
    """A key's state: it carries the time of its one live timer (None: none)."""

    wake: float | None


K = TypeVar("K", bound=Hashable)
S = TypeVar("S", bound=Timed)


class Detector(ABC, Generic[K, S]):
    """Base of the order, stock, address, customer and provider detectors (the contract above),
    generic in the key and the per-key state."""

    name: ClassVar[DetectorName]
    """The detector's name in the routing table (`detectors.topology`) and its agent's name live."""

    def __init__(self, config: RulesConfig) -> None:
        self.config = config
        self.states: dict[K, S] = {}
        # (when, key): no tie-breaking counter, keys of one detector compare fine, and an int
        # per entry is memory the open-order budget cannot spare.
        self._heap: list[tuple[float, K]] = []
        # Keys changed since the runtime last persisted them (a dropped key: changed to absent).
        self.dirty: set[K] = set()

    # -- the contract -----------------------------------------------------------------------
    @abstractmethod
    def on_event(self, key: K, ev: Incoming, t: float, now: float) -> list[Emission]:
        """Apply one event for `key` with event time `t`; `now` is the clock (`detected_at`)."""

    def on_clock(self, now: float) -> list[Emission]:
        """Fire what the clock `now` has passed: deadlines, closed windows, state expiry."""
        heap = self._heap
        if not heap or heap[0][0] >= now:
            return []
        return self._fire(now)

    def notify_at(self) -> float | None:
        """When `on_clock` next has work (a stale timer may make it find none)."""
        return self._heap[0][0] if self._heap else None

    @abstractmethod
    def snapshot(self, key: K) -> bytes:
        """The stored form of one key's state (a changelog / RocksDB value)."""

    @abstractmethod
    def restore(self, key: K, blob: bytes) -> None:
        """Rebuild one key from `snapshot` output (of this or an earlier format) and schedule
        its timer."""

    def take_dirty(self) -> list[tuple[K, bytes | None]]:
        """(key, snapshot) for every key changed since the last call; None: the key is gone."""
        states = self.states
        out = [(key, self.snapshot(key) if key in states else None) for key in self.dirty]
        self.dirty.clear()
        return out

    @abstractmethod
    def open_exceptions(self) -> int:
        """Exceptions this detector holds open (the open-exceptions gauge)."""

    def timers(self) -> int:
        """Heap size, stale entries included (the deadline-queue gauge)."""
        return len(self._heap)

    # -- timers -----------------------------------------------------------------------------
    def _fire(self, now: float) -> list[Emission]:
        """The clock passed at least one timer (detectors with timers override this)."""
        return []

    def _wake_at(self, key: K, state: S, when: float | None) -> None:
        """Make sure `state` is woken at `when` (None: no timer needed)."""
        if when is None:
            return
        if state.wake is None or when < state.wake:
            state.wake = when
            heapq.heappush(self._heap, (when, key))

    def _due(self, now: float) -> Iterator[tuple[K, S]]:
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


KeyedDetector: TypeAlias = Detector[Any, Any]
"""Any keyed detector, whatever its key and state types (what a runtime holding one calls)."""
