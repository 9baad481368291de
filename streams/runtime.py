"""One agent partition's processing, without faust: a keyed detector, its event-time reorder
buffer and re-delivery dedupe (`detectors.reorder.ReorderBuffer`, the one the backtest uses
too) and the ledger of applied offsets.

The faust agent (streams/app.py) feeds it messages and a clock, persists what it reports as
changed, acks what it reports as applied. Keeping this part free of faust makes it testable as
lists in, lists out, and keeps the agent thin.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from orderwatch.detectors.base import KeyedDetector
from orderwatch.detectors.records import Emission
from orderwatch.detectors.reorder import ReorderBuffer
from orderwatch.detectors.topology import key_for

__all__ = ["LEDGER_KEY", "Ledger", "PartitionRuntime", "Release", "apply_routed"]

Token = TypeVar("Token")
LEDGER_KEY = "\x00ledger"  # the table key under which a partition keeps its ledger

ApplyFn = Callable[[KeyedDetector, Any, float], list[Emission]]


def apply_routed(det: KeyedDetector, ev: Any, t: float) -> list[Emission]:
    """The detector contract driven by the routing table: `ev` (an event or a
    `detectors.topology.Adopt`) under the key the table gives it for this detector, `now` = `t`
    (the event-time clock)."""
    return det.on_event(key_for(det.name, ev), ev, t, t)


class Ledger:
    """Which offsets of each source topic partition were applied: all below `low`, plus `above`.
    Events are applied in event-time order, not offset order, hence the set.

    For events forwarded through a repartition topic it also keeps which *upstream* offsets were
    applied (`src` and `src_above`, per upstream partition): after a crash the agent upstream
    forwards again what it had not committed, as new messages at new offsets, and only their
    upstream offset tells them from new events. It is persisted with the ledger, so the dedupe
    survives a kill -9 (an in-memory id set does not)."""

    def __init__(self) -> None:
        self.low: dict[str, int] = {}
        self.above: dict[str, set[int]] = {}
        self.src: dict[str, int] = {}
        """Per upstream partition: every offset up to this one that was forwarded here was applied."""
        self.src_above: dict[str, set[int]] = {}
        """Per upstream partition: offsets past `src` applied here."""

    def applied(self, tp: str, offset: int) -> bool:
        return offset < self.low.get(tp, 0) or offset in self.above.get(tp, ())

    def applied_upstream(self, source: tuple[str, int]) -> bool:
        key, offset = source
        return offset <= self.src.get(key, -1) or offset in self.src_above.get(key, ())

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

    def mark_upstream(self, source: tuple[str, int]) -> None:
        key, offset = source
        if offset > self.src.get(key, -1):
            self.src_above.setdefault(key, set()).add(offset)

    def upstream_done(self, source: tuple[str, int]) -> None:
        """A message forwarded from `source` is now below this agent's committed position, so
        every message of that upstream partition forwarded here before it was applied too (an
        upstream partition is forwarded in offset order): fold them into `src`."""
        key, offset = source
        if offset > self.src.get(key, -1):
            self.src[key] = offset
            rest = {o for o in self.src_above.get(key, ()) if o > offset}
            if rest:
                self.src_above[key] = rest
            else:
                self.src_above.pop(key, None)

    def seen_base(self, tp: str, first_offset: int) -> None:
        """The first offset ever delivered from `tp` (a fresh ledger starts there, not at 0)."""
        if tp not in self.low:
            self.low[tp] = first_offset

    def dumps(self) -> bytes:
        doc: dict[str, Any] = {tp: [low, sorted(self.above.get(tp, ()))] for tp, low in self.low.items()}
        if self.src:
            doc[_UPSTREAM] = {k: [v, sorted(self.src_above.get(k, ()))] for k, v in self.src.items()}
            doc[_UPSTREAM].update({k: [-1, sorted(v)] for k, v in self.src_above.items() if k not in self.src})
        elif self.src_above:
            doc[_UPSTREAM] = {k: [-1, sorted(v)] for k, v in self.src_above.items()}
        return json.dumps(doc).encode()

    @classmethod
    def loads(cls, blob: bytes) -> Ledger:
        led = cls()
        doc = json.loads(blob)
        for key, (offset, above) in doc.pop(_UPSTREAM, {}).items():  # ledgers written before it lack it
            if offset >= 0:
                led.src[key] = offset
            if above:
                led.src_above[key] = set(above)
        for tp, (low, above) in doc.items():
            led.low[tp] = low
            led.above[tp] = set(above)
        return led


_UPSTREAM = "\x00upstream"  # not a topic name: Kafka allows [A-Za-z0-9._-] only


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
        self,
        detector: KeyedDetector,
        apply: ApplyFn | None = None,
        dedupe_horizon: float = 24 * 3600.0,
        ledger: Ledger | None = None,
    ) -> None:
        self.detector = detector
        # Without `apply` the routing table keys each event (the way the agents are meant to
        # call detectors); streams/app.py still passes its own functions until it moves over.
        self._apply = apply or apply_routed
        self.ledger = ledger or Ledger()
        self.dedupe_horizon = dedupe_horizon
        # The reorder buffer and event-id dedupe the backtest uses too (detectors.reorder).
        self._buffer: ReorderBuffer[tuple[Any, str, int, Token]] = ReorderBuffer(dedupe_horizon)
        self.clock = float("-inf")
        self._waiting: set[tuple[str, int]] = set()  # (tp, offset) of buffered events
        self._sources: dict[tuple[str, int], tuple[str, int]] = {}  # (tp, offset) -> upstream of a forward
        self._folds: dict[str, list[tuple[int, tuple[str, int]]]] = {}  # per tp: applied forwards to fold

    def waiting(self, tp: str, offset: int) -> bool:
        """True when this very message (topic partition and offset) is already buffered: a
        re-delivery after a seek, to be acked only once the buffered copy is applied."""
        return (tp, offset) in self._waiting

    def offer(
        self, ev: Any, t: float, tp: str, offset: int, token: Token, source: tuple[str, int] | None = None
    ) -> bool:
        """Buffer one event; False when it is a re-delivery to ack and drop now. `source` is the
        upstream (partition key, offset) of an event forwarded through a repartition topic."""
        self.ledger.seen_base(tp, offset)
        buf = self._buffer
        if self.ledger.applied(tp, offset):
            # Applied before (a re-read after a restart or a rebalance): its id is still one
            # seen, or a copy of it later in the stream would be applied a second time (the
            # backtest drops it; seen as an order.created applied twice after a kill -9).
            if not buf.seen(ev.id):
                buf.remember(ev.id, t)
            return False
        if buf.seen(ev.id):
            return False
        if source is not None:
            if self.ledger.applied_upstream(source):
                return False
            self._sources[(tp, offset)] = source
        buf.remember(ev.id, t)
        buf.add(t, (ev, tp, offset, token), self.clock)
        self._waiting.add((tp, offset))
        return True

    def release(self, clock: float) -> Release[Token]:
        """Apply buffered events older than `clock` in event-time order, firing deadlines strictly
        before each first, then every deadline before `clock`."""
        out: Release[Token] = Release()
        det = self.detector
        if clock > self.clock:
            self.clock = clock
        for t, (ev, tp, offset, token) in self._buffer.release(clock):
            self._waiting.discard((tp, offset))
            out.emissions += det.on_clock(t)
            try:
                out.emissions += self._apply(det, ev, t)
            except Exception as exc:
                # A poison event must not stall the partition, nor take the batch's other events
                # and emissions with it: it goes to the dead-letter topic with the error. What
                # the rules changed before they raised stays.
                out.failed.append((token, exc))
            self.ledger.mark(tp, offset)
            source = self._sources.get((tp, offset))
            if source is not None:
                self.ledger.mark_upstream(source)
                heapq.heappush(self._folds.setdefault(tp, []), (offset, source))
            out.applied.append(token)
        self.fold_upstream()
        out.emissions += det.on_clock(clock)
        self._buffer.forget_behind(clock)
        return out

    def fold_upstream(self) -> None:
        """Upstream offsets of applied events that are now below the committed position (every
        message before them applied too) fold into the ledger's per-upstream low mark."""
        ledger, sources = self.ledger, self._sources
        for tp, heap in self._folds.items():
            low = ledger.low.get(tp, 0)
            while heap and heap[0][0] < low:
                offset, source = heapq.heappop(heap)
                sources.pop((tp, offset), None)
                ledger.upstream_done(source)

    @property
    def late(self) -> int:
        """Events offered behind the clock (applied late, still in event-time order)."""
        return self._buffer.late

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def oldest(self) -> float:
        """Event time of the oldest buffered event (inf when none)."""
        return self._buffer.oldest

    def take_dirty(self) -> list[tuple[Any, bytes | None]]:
        """(key, snapshot) for every key changed since the last call; None: the key is gone."""
        return self.detector.take_dirty()
