"""The aligned event-time clock of a `--clock event` worker: the backtest's clock
(`detectors.arrivals.ArrivalWatermark`) over the contract records of every partition this worker
reads, taken in record-timestamp order across topics and partitions.

Kafka records when each record arrived (its timestamp; `publish` keeps the file's order in it).
The agents that read contract topics (the orders agent: orders, payments, logistics; the
inventory agent: inventory) report each record twice: when it is handed to them (`received`) and
once decided (`done`: with its event time when it entered a reorder buffer or had been applied
before a restart; without when it was dead-lettered or a duplicate). A record is folded into the
watermark only once every contract partition this worker reads has been read past its timestamp
(`safe`), so the watermark at each record is the backtest's at that line of the file, whatever
order faust fetched the partitions in. The agents' merges let a contract record go only when no
earlier one is still to come (`may_go`): a record the order service delivered 30 minutes late
then finds the clock where the backtest had it, and the deadlines that fired before it arrived
fire before it is applied.

A partition with nothing fetched that is not caught up holds `safe` back (it may hold older
records); a caught-up partition holds nothing. Partitions other workers read are not seen here:
with several workers, each follows the arrivals of its own partitions (docs/operations.md).
"""

from __future__ import annotations

import heapq
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from typing import Final

from orderwatch.detectors.arrivals import DEFAULT_IDLE_AFTER, ArrivalWatermark
from orderwatch.detectors.skew import DEFAULT_MAX_SKEW

__all__ = ["ArrivalClock"]

TP = tuple[str, int]

_NEVER: Final = float("-inf")
_STEPS_KEPT: Final = 8192
"""Steps of the watermark kept for `low_at` (records of a repartition input ask for the clock
as of their upstream record's timestamp, which is at most a merge's worth behind)."""


class _Pending:
    """Records of one partition handed to an agent and not decided yet: (timestamp ms, offset)."""

    __slots__ = ("decided", "heap")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int]] = []
        self.decided: dict[int, int] = {}  # offset -> decisions not matched yet (a re-read counts twice)

    def decide(self, offset: int) -> None:
        self.decided[offset] = self.decided.get(offset, 0) + 1

    def oldest(self) -> int | None:
        heap, decided = self.heap, self.decided
        while heap and heap[0][1] in decided:
            offset = heapq.heappop(heap)[1]
            n = decided[offset]
            if n > 1:
                decided[offset] = n - 1
            else:
                del decided[offset]
        return heap[0][0] if heap else None


class ArrivalClock:
    """`tracked()` are the contract partitions this worker reads now; `lagging(tp)` whether one
    may still deliver records it has not handed over (the lag-aware clock's view)."""

    def __init__(
        self,
        tracked: Callable[[], Iterable[TP]],
        lagging: Callable[[TP], bool],
        source_of: Callable[[str], str],
        *,
        max_skew: float | None = DEFAULT_MAX_SKEW,
        idle_after: int = DEFAULT_IDLE_AFTER,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tracked = tracked
        self._wall = wall
        self._safe = _NEVER
        self._safe_moved_at = wall()
        self._lagging = lagging
        self._source_of = source_of
        self.watermark: ArrivalWatermark[None] = ArrivalWatermark(max_skew=max_skew, idle_after=idle_after)
        self._pending: dict[TP, _Pending] = {}
        self._decided: dict[TP, int] = {}  # largest timestamp decided per partition
        self._stream_time: dict[TP, int] = {}  # largest timestamp received per partition
        self._fold: list[tuple[int, int, float, str]] = []  # (ts ms, seq, event time, source)
        self._seq = 0
        self.folded = -(2**63)
        """Timestamp (ms) of the last record folded."""
        self._steps_ts: list[int] = []  # where `low` changed: timestamps (ms), ascending
        self._steps_low: list[float] = []  # and the value from there on
        self._floor = _NEVER  # `low` before the first step kept
        self._memo: float | None = None  # `safe` until something it reads changes (see refresh)

    # -- what the agents report ---------------------------------------------------------------

    def received(self, tp: TP, offset: int, ts_ms: int) -> None:
        """A record of contract partition `tp` was handed to its agent (its merge holds it)."""
        box = self._pending.get(tp)
        if box is None:
            box = self._pending[tp] = _Pending()
        # A partition's records come in offset order, so one stamped earlier than a record
        # before it (another producer's clock; a message written after a fast publish) counts at
        # the partition's time, as Kafka Streams does: otherwise it would hold every partition
        # back until the records before it in its own partition went, which wait for it.
        stamp = max(ts_ms, self._stream_time.get(tp, ts_ms))
        self._stream_time[tp] = stamp
        heapq.heappush(box.heap, (stamp, offset))
        self._memo = None

    def done(self, tp: TP, offset: int, ts_ms: int, event_time: float | None = None) -> None:
        """That record was decided: with `event_time` when it entered a reorder buffer or had
        been applied before (a re-read after a restart: it then counts as an arrival of its
        topic), without when it was dead-lettered, a duplicate event or a re-delivery of one
        still buffered."""
        box = self._pending.get(tp)
        if box is not None:
            box.decide(offset)
        self._memo = None
        if ts_ms > self._decided.get(tp, -(2**63)):
            self._decided[tp] = ts_ms
        if event_time is not None:
            self._seq += 1
            heapq.heappush(self._fold, (ts_ms, self._seq, event_time, self._source_of(tp[0])))

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions revoked: what their agent held goes back to Kafka (the new owner reads it)."""
        for tp in tps:
            self._pending.pop(tp, None)
            self._decided.pop(tp, None)
            self._stream_time.pop(tp, None)
        self._memo = None

    def refresh(self) -> None:
        """Which partitions lag may have changed (the consumer fetched: highwaters moved, or
        partitions were assigned): `safe` asks `tracked` and `lagging` again. The agent driver
        calls it for every message it is handed. Until then, `safe` answers from its last
        value while no record is received, decided or forgotten: the merges ask it for every
        record they may let go, over every partition this worker reads (15 % of a worker's CPU
        on a stream with empty topics, most of it in `lagging`)."""
        self._memo = None

    # -- what they ask ------------------------------------------------------------------------

    def safe(self) -> float:
        """Every record with a timestamp (ms) up to this one, of every contract partition this
        worker reads, has been handed over (inf: every one is caught up). As of the last
        `refresh` for what `lagging` answers."""
        if self._memo is not None:
            return self._memo
        low = float("inf")
        for tp in self._tracked():
            box = self._pending.get(tp)
            oldest = box.oldest() if box is not None else None
            if oldest is not None:
                p: float = oldest - 1
            elif self._lagging(tp):
                p = self._decided.get(tp, _NEVER)
            else:
                continue
            if p < low:
                low = p
        if low > self._safe:
            self._safe, self._safe_moved_at = low, self._wall()
        self._memo = low
        return low

    def moved_at(self) -> float:
        """When `safe` last moved (the `wall` clock's time): a merge waiting for an earlier
        record stops waiting once nothing moved for its idle wait (a stalled partition)."""
        self.safe()
        return self._safe_moved_at

    def may_go(self, ts_ms: int) -> bool:
        """Whether the contract record stamped `ts_ms` is next: none older is still to come."""
        return ts_ms - 1 <= self.safe()

    def low(self) -> float:
        """The slowest active source's progress (event time) once every record that is safe is
        folded: the backtest's clock (before its lateness) at the last record folded."""
        fold = self._fold
        if fold:
            upto = self.safe()
            arrive = self.watermark.arrive
            steps_ts, steps_low = self._steps_ts, self._steps_low
            while fold and fold[0][0] <= upto:
                ts, _, t, source = heapq.heappop(fold)
                before = self.watermark.low
                arrive(t, source, None)
                if ts > self.folded:
                    self.folded = ts
                if self.watermark.low != before:
                    steps_ts.append(self.folded)
                    steps_low.append(self.watermark.low)
            # Live, a jump the guard refuses is in a reorder buffer already and is applied (the
            # backtest dead-letters it as from_future): it moved no source, so the clock is right.
            self.watermark.refused.clear()
            if len(steps_ts) > 2 * _STEPS_KEPT:
                self._floor = steps_low[-_STEPS_KEPT - 1]
                del steps_ts[:-_STEPS_KEPT], steps_low[:-_STEPS_KEPT]
        return self.watermark.low

    def low_at(self, ts_ms: int) -> float:
        """`low` as it stood once every record stamped up to `ts_ms` was folded (for a record
        forwarded from upstream, whose timestamp is its upstream record's). Older than the steps
        kept: the value before the oldest step kept."""
        current = self.low()
        if ts_ms >= self.folded:
            return current
        i = bisect_right(self._steps_ts, ts_ms)
        return self._steps_low[i - 1] if i else self._floor
