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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Forced", "TimestampMerge"]

Item = TypeVar("Item")


@dataclass
class Forced:
    """Records released before the merge could tell they were next: why, how many."""

    idle: int = 0
    """An input with lag had nothing fetched for `idle_wait` seconds."""
    overflow: int = 0
    """More than `max_held` records were held."""


@dataclass
class _Input(Generic[Item]):
    heap: list[tuple[int, int, Item]] = field(default_factory=list)  # (offset, timestamp ms, item)
    offsets: set[int] = field(default_factory=set)
    blocked_since: float | None = None
    """When this input was first found empty with lag while others had records."""


class TimestampMerge(Generic[Item]):
    """Holds records of several inputs (topic names, one partition each) and releases them in
    record-timestamp order. Each input's own records keep their offset order (a record re-read
    after a seek goes back in front); a record already held (same offset) is not held twice.

    `lagging(topic)`: the input may have records in Kafka this merge has not been handed yet
    (what the lag-aware clock says of the partition)."""

    def __init__(
        self,
        inputs: Sequence[str],
        lagging: Callable[[str], bool],
        *,
        idle_wait: float = 3.0,
        max_held: int = 10_000,
        wall: Callable[[], float] = time.monotonic,
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

    def push(self, topic: str, offset: int, timestamp_ms: int, item: Item) -> bool:
        """Hold one record; False when that offset of `topic` is held already (a re-delivery)."""
        box = self._inputs[topic]
        if offset in box.offsets:
            return False
        box.offsets.add(offset)
        heapq.heappush(box.heap, (offset, timestamp_ms, item))
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
        waiting = self._waiting_for(self._wall())
        if waiting and self.held <= self.max_held:
            return None
        if waiting:
            self.forced.overflow += 1
        elif self._expired:
            self.forced.idle += 1
        topic = self._head()
        box = self._inputs[topic]
        offset, _, item = heapq.heappop(box.heap)
        box.offsets.discard(offset)
        self.held -= 1
        return topic, item

    def _waiting_for(self, now: float) -> bool:
        """True while an empty input with lag is still within its idle wait. Sets `_expired`:
        some empty input with lag is released past (its wait is over)."""
        self._expired = False
        waiting = False
        for topic, box in self._inputs.items():
            if box.heap:
                continue
            if not self._lagging(topic):
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
                key = (box.heap[0][1], self._order[topic])
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
