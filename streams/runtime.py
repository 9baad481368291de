"""One agent partition's processing, without faust: a keyed detector, its event-time reorder
buffer, re-delivery dedupe and the ledger of applied offsets.

The faust agent (streams/app.py) feeds it messages and a clock, persists what it reports as
changed, acks what it reports as applied. Keeping this part free of faust makes it testable as
lists in, lists out, and keeps the agent thin.
"""

from __future__ import annotations

import heapq
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from detectors.base import KeyedDetector
from detectors.records import Emission

__all__ = ["LEDGER_KEY", "Ledger", "PartitionRuntime", "Release"]

Token = TypeVar("Token")
LEDGER_KEY = "\x00ledger"  # the table key under which a partition keeps its ledger

ApplyFn = Callable[[KeyedDetector, Any, float], list[Emission]]


class Ledger:
    """Which offsets of each source topic partition were applied: all below `low`, plus `above`.
    Events are applied in event-time order, not offset order, hence the set."""

    def __init__(self) -> None:
        self.low: dict[str, int] = {}
        self.above: dict[str, set[int]] = {}

    def applied(self, tp: str, offset: int) -> bool:
        return offset < self.low.get(tp, 0) or offset in self.above.get(tp, ())

    def mark(self, tp: str, offset: int) -> None:
        above = self.above.setdefault(tp, set())
        above.add(offset)
        low = self.low.get(tp, 0)
        if offset < low:
            return
        while low in above:
            above.discard(low)
            low += 1
        self.low[tp] = low

    def seen_base(self, tp: str, first_offset: int) -> None:
        """The first offset ever delivered from `tp` (a fresh ledger starts there, not at 0)."""
        if tp not in self.low:
            self.low[tp] = first_offset

    def dumps(self) -> bytes:
        return json.dumps({tp: [low, sorted(self.above.get(tp, ()))] for tp, low in self.low.items()}).encode()

    @classmethod
    def loads(cls, blob: bytes) -> Ledger:
        led = cls()
        for tp, (low, above) in json.loads(blob).items():
            led.low[tp] = low
            led.above[tp] = set(above)
        return led


@dataclass
class Release(Generic[Token]):
    emissions: list[Emission] = field(default_factory=list)
    applied: list[Token] = field(default_factory=list)
    dropped: list[Token] = field(default_factory=list)  # duplicates: ack them, apply nothing
    failed: list[tuple[Token, Exception]] = field(default_factory=list)
    """Events whose rules raised: the agent dead-letters them; they count as applied (marked)."""


class PartitionRuntime(Generic[Token]):
    """Reorder buffer + detector for one partition of one agent."""

    def __init__(
        self, detector: KeyedDetector, apply: ApplyFn, dedupe_horizon: float = 24 * 3600.0, ledger: Ledger | None = None
    ) -> None:
        self.detector = detector
        self._apply = apply
        self.ledger = ledger or Ledger()
        self.dedupe_horizon = dedupe_horizon
        self._buffer: list[tuple[float, int, Any, str, int, Token]] = []
        self._seq = 0
        self._seen: dict[str, float] = {}
        self._seen_order: deque[tuple[float, str]] = deque()
        self.clock = float("-inf")
        self.late = 0
        self._waiting: set[tuple[str, int]] = set()  # (tp, offset) of buffered events

    def waiting(self, tp: str, offset: int) -> bool:
        """True when this very message (topic partition and offset) is already buffered: a
        re-delivery after a seek, to be acked only once the buffered copy is applied."""
        return (tp, offset) in self._waiting

    def offer(self, ev: Any, t: float, tp: str, offset: int, token: Token) -> bool:
        """Buffer one event; False when it is a re-delivery to ack and drop now."""
        self.ledger.seen_base(tp, offset)
        if self.ledger.applied(tp, offset) or ev.id in self._seen:
            return False
        self._seen[ev.id] = t
        self._seen_order.append((t, ev.id))
        self._seq += 1
        if t < self.clock:
            self.late += 1
        heapq.heappush(self._buffer, (t, self._seq, ev, tp, offset, token))
        self._waiting.add((tp, offset))
        return True

    def release(self, clock: float) -> Release[Token]:
        """Apply buffered events older than `clock` in event-time order, firing deadlines strictly
        before each first, then every deadline before `clock`."""
        out: Release[Token] = Release()
        det, buf = self.detector, self._buffer
        if clock > self.clock:
            self.clock = clock
        while buf and buf[0][0] < clock:
            t, _, ev, tp, offset, token = heapq.heappop(buf)
            self._waiting.discard((tp, offset))
            out.emissions += det.advance(t)
            try:
                out.emissions += self._apply(det, ev, t)
            except Exception as exc:
                # A poison event must not stall the partition, nor take the batch's other events
                # and emissions with it: it goes to the dead-letter topic with the error. What
                # the rules changed before they raised stays.
                out.failed.append((token, exc))
            self.ledger.mark(tp, offset)
            out.applied.append(token)
        out.emissions += det.advance(clock)
        self._forget(clock - self.dedupe_horizon)
        return out

    def _forget(self, before: float) -> None:
        order, seen = self._seen_order, self._seen
        while order and order[0][0] < before:
            seen.pop(order.popleft()[1], None)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def oldest(self) -> float:
        """Event time of the oldest buffered event (inf when none)."""
        return self._buffer[0][0] if self._buffer else float("inf")

    def take_dirty(self) -> list[tuple[Any, bytes | None]]:
        """(key, snapshot) for every key changed since the last call; None: the key is gone."""
        det = self.detector
        out = [(key, det.snapshot(key) if key in det.states else None) for key in det.dirty]
        det.dirty.clear()
        return out
