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
    """An input with lag had nothing fetched for `idle_wait` seconds (a forward in flight:
    `flight_wait`)."""
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
    (what the lag-aware clock says of the partition); the idle wait counts from `received_at()`
    (when the agent last got a record of any input) when later. Inputs `by_time` (repartition topics: several
    upstream partitions forwarded into one, their offsets not in timestamp order) are taken in
    timestamp order instead, and waited for while `in_flight(topic, before_ms)`: a record sent to
    it, stamped before the next record of another input, has not been handed to the merge yet.
    That wait is bounded by `flight_wait`, not `idle_wait`: the record is this worker's own
    forward, in Kafka or on its way, so it will come; only a loaded consumer can be seconds late
    with it, and a merge that went on without it had its agent decide deadlines without records
    that were certain to come (a loaded replay: hundreds of late inbox records)."""

    def __init__(
        self,
        inputs: Sequence[str],
        lagging: Callable[[str], bool],
        *,
        idle_wait: float = 3.0,
        flight_wait: float = 30.0,
        max_held: int = 10_000,
        wall: Callable[[], float] = time.monotonic,
        aligned: Alignment | None = None,
        by_time: Collection[str] = (),
        in_flight: Callable[[str, float], bool] = lambda topic, before_ms: False,
        received_at: Callable[[], float] | None = None,
    ) -> None:
        if idle_wait < 0 or flight_wait < 0 or max_held < 1:
            msg = (
                f"idle_wait, flight_wait >= 0 and max_held >= 1 expected, "
                f"got {idle_wait!r}, {flight_wait!r}, {max_held!r}"
            )
            raise ValueError(msg)
        self._inputs: dict[str, _Input[Item]] = {t: _Input() for t in inputs}
        self._order = {t: i for i, t in enumerate(inputs)}  # ties: the inputs' order, deterministic
        self._lagging = lagging
        self.idle_wait = idle_wait
        self.flight_wait = flight_wait
        self.max_held = max_held
        self._wall = wall
        self.held = 0
        self.forced = Forced()
        self._aligned = aligned
        self._unaligned_since: float | None = None
        self._forcing = False
        self._by_time = frozenset(by_time)
        self._in_flight = in_flight
        self._received_at = received_at

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
        """True while an input that may still deliver a record older than the next one is within
        its idle wait: an empty one with lag, or one `by_time` with a forward on its way stamped
        before the next record. Sets `_expired`: such an input is released past (its wait is over)."""
        self._expired = False
        waiting = False
        next_ts = min((box.heap[0][2] for box in self._inputs.values() if box.heap), default=float("inf"))
        for topic, box in self._inputs.items():
            bound = self.idle_wait
            if topic in self._by_time and self._in_flight(topic, next_ts):
                bound = self.flight_wait  # a forward older than the next record is on its way: wait for it
            elif box.heap or not self._lagging(topic):
                box.blocked_since = None
                continue
            if box.blocked_since is None:
                box.blocked_since = now
            since = box.blocked_since
            if self._received_at is not None:
                # Records still reaching the agent (a backlog faust queued ahead of this input's)
                # are not a stalled input: the wait counts from the last one.
                since = max(since, self._received_at())
            if now - since < bound:
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

    def restart_waits(self) -> None:
        """The agent got nothing for a while, not even its own ticks (its delivery stalled): what
        its inputs and the other partitions did not deliver meanwhile was held up by the same
        stall, so every wait (idle, flight, alignment) counts again from the next look."""
        for box in self._inputs.values():
            box.blocked_since = None
        self._unaligned_since = None
        self._forcing = False

    def clear(self) -> None:
        """The partition was revoked: what is held goes back to Kafka (never acked)."""
        for box in self._inputs.values():
            box.heap.clear()
            box.offsets.clear()
            box.blocked_since = None
        self.held = 0
        self._unaligned_since = None
        self._forcing = False
