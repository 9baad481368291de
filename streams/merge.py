"""Record-timestamp merge of one agent partition's co-partitioned inputs, as Kafka Streams'
PartitionGroup does (timestamp synchronisation, `max.task.idle.ms`).

The orders agent reads partition p of orders, payments, logistics and its inbox. faust hands it
whatever it fetched, so a small partition is drained ahead of a big one and a replay (or a worker
catching up) sees another interleaving than the one the events arrived in: an order.created the
order service delivered 30 minutes late is applied before the payments that arrived before it.
Kafka records when each record arrived (its timestamp; `publish` keeps the file's order in them),
so the agent releases what it was handed in record-timestamp order: the head with the smallest
timestamp across the inputs, once every input either has something queued or has nothing left to
read (caught up). An input with lag but nothing fetched yet is waited for, at most `idle_wait`
seconds (then its records may come out of order: counted as `idle`); more than `max_held` records
held release the oldest anyway (counted as `overflow`). No faust here: lists in, lists out.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

__all__ = ["Alignment", "Forced", "TimestampMerge"]

Item = TypeVar("Item")


@dataclass
class Forced:
    """Records released before the merge could tell they were next: why, how many."""

    idle: int = 0
    """An input with lag had nothing fetched for `idle_wait` seconds."""
    overflow: int = 0
    """More than `max_held` records were held."""
    align: int = 0
    """A record waited `idle_wait` seconds for another partition to be read past its timestamp."""


class Alignment(Protocol):
    """Whether a record may go before records of other partitions (streams.arrivals)."""

    def may_go(self, topic: str, ts_ms: int) -> bool:
        """No record stamped earlier is still to come."""
        ...

    def moved_at(self) -> float:
        """When the partitions last moved (the merge's `wall` clock)."""
        ...


@dataclass
class _Input(Generic[Item]):
    heap: list[tuple[int, int, int, Item]] = field(default_factory=list)
    """(offset, or timestamp ms for an input `by_time`; offset; timestamp ms; item)"""
    offsets: set[int] = field(default_factory=set)
    blocked_since: float | None = None
    """When this input was first found empty with lag while others had records."""


class TimestampMerge(Generic[Item]):
    """Holds records of several inputs (topic names, one partition each) and releases them in
    record-timestamp order. Each input's own records keep their offset order (a record re-read
    after a seek goes back in front); a record already held (same offset) is not held twice.

    `lagging(topic)`: the input may have records in Kafka this merge has not been handed yet
    (what the lag-aware clock says of the partition). Inputs `by_time` (repartition topics: several
    upstream partitions forwarded into one, their offsets not in timestamp order) are taken in
    timestamp order instead, and waited for while `in_flight(topic)`: a record sent to it has not
    been handed to the merge yet, and may be older than what it holds."""

    def __init__(
        self,
        inputs: Sequence[str],
        lagging: Callable[[str], bool],
        *,
        idle_wait: float = 3.0,
        max_held: int = 10_000,
        wall: Callable[[], float] = time.monotonic,
        aligned: Alignment | None = None,
        by_time: Collection[str] = (),
        in_flight: Callable[[str], bool] = lambda topic: False,
    ) -> None:
        if idle_wait < 0 or max_held < 1:
            msg = f"idle_wait >= 0 and max_held >= 1 expected, got {idle_wait!r}, {max_held!r}"
            raise ValueError(msg)
        self._inputs: dict[str, _Input[Item]] = {t: _Input() for t in inputs}
        self._order = {t: i for i, t in enumerate(inputs)}  # ties: the inputs' order, deterministic
        self._lagging = lagging
        self.idle_wait = idle_wait
        self.max_held = max_held
        self._wall = wall
        self.held = 0
        self.forced = Forced()
        self._aligned = aligned
        self._unaligned_since: float | None = None
        self._forcing = False
        self._by_time = frozenset(by_time)
        self._in_flight = in_flight

    def push(self, topic: str, offset: int, timestamp_ms: int, item: Item) -> bool:
        """Hold one record; False when that offset of `topic` is held already (a re-delivery)."""
        box = self._inputs[topic]
        if offset in box.offsets:
            return False
        box.offsets.add(offset)
        heapq.heappush(box.heap, (timestamp_ms if topic in self._by_time else offset, offset, timestamp_ms, item))
        box.blocked_since = None
        self.held += 1
        return True

    def holds(self, topic: str, offset: int) -> bool:
        return offset in self._inputs[topic].offsets

    def release(self) -> list[tuple[str, Item]]:
        """(topic, item) of every record that may go now, in the order they must be applied.
        (Only when handling a record changes nothing `lagging` reads; the agent driver, whose
        offers move the clock, takes them one at a time with `next`.)"""
        out: list[tuple[str, Item]] = []
        while (one := self.next()) is not None:
            out.append(one)
        return out

    def next(self) -> tuple[str, Item] | None:
        """The record that must be applied next, if it may go now."""
        if not self.held:
            return None
        now = self._wall()
        waiting = self._waiting_for(now)
        if waiting and self.held <= self.max_held:
            return None
        topic = self._head()
        box = self._inputs[topic]
        aligned = self._aligned
        if not waiting and aligned is not None and not aligned.may_go(topic, box.heap[0][2]):
            # Another partition has not been read past this record's timestamp yet (the aligned
            # clock, streams.arrivals): wait for it while the partitions move; once none moved
            # for idle_wait (one stalled), stop waiting until they are aligned again.
            if self._unaligned_since is None:
                self._unaligned_since = now
            # Once given up, go on until aligned again: a partition that moves only as records
            # are forced past it would otherwise restart the wait for every record.
            since = self._unaligned_since if self._forcing else max(self._unaligned_since, aligned.moved_at())
            if now - since < self.idle_wait and self.held <= self.max_held:
                return None
            self._forcing = True
            waiting = self.held > self.max_held
            if not waiting:
                self.forced.align += 1
        else:
            self._unaligned_since = None
            self._forcing = False
        if waiting:
            self.forced.overflow += 1
        elif self._expired:
            self.forced.idle += 1
        _, offset, _, item = heapq.heappop(box.heap)
        box.offsets.discard(offset)
        self.held -= 1
        return topic, item

    def _waiting_for(self, now: float) -> bool:
        """True while an empty input with lag is still within its idle wait. Sets `_expired`:
        some empty input with lag is released past (its wait is over)."""
        self._expired = False
        waiting = False
        for topic, box in self._inputs.items():
            if topic in self._by_time:
                if not self._in_flight(topic) and (box.heap or not self._lagging(topic)):
                    box.blocked_since = None
                    continue
            elif box.heap:
                continue
            elif not self._lagging(topic):
                box.blocked_since = None
                continue
            if box.blocked_since is None:
                box.blocked_since = now
            if now - box.blocked_since < self.idle_wait:
                waiting = True
            else:
                self._expired = True
        return waiting

    _expired = False

    def _head(self) -> str:
        best: tuple[int, int] | None = None
        choice = ""
        for topic, box in self._inputs.items():
            if box.heap:
                key = (box.heap[0][2], self._order[topic])
                if best is None or key < best:
                    best, choice = key, topic
        return choice

    def waiting(self) -> bool:
        """Records are held: the caller must come back (a tick) to release them once the wait is over."""
        return self.held > 0

    def clear(self) -> None:
        """The partition was revoked: what is held goes back to Kafka (never acked)."""
        for box in self._inputs.values():
            box.heap.clear()
            box.offsets.clear()
            box.blocked_since = None
        self.held = 0
        self._unaligned_since = None
        self._forcing = False
