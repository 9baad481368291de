"""The timestamp each input record counts at: its own, unless it lies in the future.

A record timestamp says when the record arrived (the producer's clock, `publish` keeps the file's
order in it), and the worker orders by it: the orders merge takes its inputs in timestamp order,
the arrival clock (`--clock event`) folds records in it, a forward carries it downstream. One
upstream producer whose clock runs days ahead (or a hostile one) would stamp a record in the
future; taken at face value, it would set its partition's time days ahead, so that partition's
later records would no longer wait for the others (they would all count as days later), and the
arrival clock would file every later step of its history after it (`low_at` would answer with
the clock as of before it). A record cannot have arrived after it was read: one stamped more than
`FUTURE_BOUND_MS` ahead of the wall clock counts at its partition's time instead (the largest
timestamp read there before it; the wall clock for a partition's first record), as Kafka Streams'
`UsePartitionTimeOnInvalidTimestamp` does for an invalid one. It is counted
(`orderwatch_records_restamped_total{topic}`) and logged once per topic.

The stamp a record got is remembered until it is decided, so every part sees the same one even as
the wall clock moves (only restamped records are remembered).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Final

__all__ = ["FUTURE_BOUND_MS", "RecordStamps"]

log = logging.getLogger(__name__)

TP = tuple[str, int]

FUTURE_BOUND_MS: Final = 60 * 60 * 1000
"""One hour: Kafka 4's default `log.message.timestamp.after.max.ms` (a Kafka 4 broker refuses a
record further ahead; up to Kafka 3.9 it takes any), and twice `publish`'s largest lead
(`streams.publish.MAX_LEAD_MS`), so no stamp `publish` gives is ever restamped."""


class RecordStamps:
    """`of(...)` is the timestamp (ms) a record counts at; `settled(...)` once it is decided;
    `forget(tps)` when partitions are revoked. `counted(topic)` is called for each record
    restamped."""

    __slots__ = ("_bound_ms", "_counted", "_fixed", "_horizon", "_logged", "_time", "_wall")

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        bound_ms: int = FUTURE_BOUND_MS,
        counted: Callable[[str], object] = lambda topic: None,
    ) -> None:
        self._wall = wall
        self._bound_ms = bound_ms
        self._counted = counted
        self._logged: set[str] = set()
        self._horizon = -(2**63)  # a stamp up to here is not in the future (it only grows)
        self._time: dict[TP, int] = {}  # largest stamp counted per partition
        self._fixed: dict[tuple[str, int, int], int] = {}  # (topic, partition, offset) -> stamp

    def of(self, topic: str, partition: int, offset: int, timestamp: float | None) -> int:
        """The timestamp (ms) the record at `offset` counts at; `timestamp` is faust's (seconds)."""
        ms = round(float(timestamp) * 1000) if timestamp is not None else 0
        if self._fixed:
            fixed = self._fixed.get((topic, partition, offset))
            if fixed is not None:
                return fixed
        tp = (topic, partition)
        if ms > self._horizon:
            # The horizon is refreshed only when a stamp passes it: a stamp under an older
            # horizon is under the current one too, so the wall clock is read rarely.
            self._horizon = round(self._wall() * 1000) + self._bound_ms
            if ms > self._horizon:
                return self._restamp(topic, partition, offset, ms)
        if ms > self._time.get(tp, -(2**63)):
            self._time[tp] = ms
        return ms

    def _restamp(self, topic: str, partition: int, offset: int, ms: int) -> int:
        tp = (topic, partition)
        wall_ms = self._horizon - self._bound_ms
        at = self._time.get(tp)
        if at is None:
            at = self._time[tp] = wall_ms
        self._fixed[(topic, partition, offset)] = at
        self._counted(topic)
        if topic not in self._logged:
            self._logged.add(topic)
            log.warning(
                "%s[%s]@%s: record timestamp %.0f s ahead of the wall clock, counted at its partition's time "
                "(an upstream producer's clock is off; later ones are counted in orderwatch_records_restamped_total)",
                topic,
                partition,
                offset,
                (ms - wall_ms) / 1000,
            )
        return at

    def restamp_of(self, topic: str, partition: int, offset: int) -> int | None:
        """The stamp (ms) a restamped record counts at; None for one at its own."""
        return self._fixed.get((topic, partition, offset)) if self._fixed else None

    def settled(self, topic: str, partition: int, offset: int) -> None:
        """The record was decided: no part asks for its stamp again."""
        if self._fixed:
            self._fixed.pop((topic, partition, offset), None)

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions revoked: the new owner counts their records."""
        gone = set(tps)
        for tp in gone:
            self._time.pop(tp, None)
        if self._fixed:
            for key in [k for k in self._fixed if (k[0], k[1]) in gone]:
                del self._fixed[key]
