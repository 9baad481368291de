"""The runtime's clock: event time (watermark) or wall clock, both lag-aware.

Every input partition reports the largest event time and offset it delivered; the consumer
reports its highwater. A partition we are behind on (offset + 1 < highwater) holds the clock at
its own progress minus the lateness, so a consumer lag spike cannot fire deadlines whose clearing
events are still waiting in Kafka. A partition that is caught up holds nothing back.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["LagAwareClock", "PartitionProgress"]

TP = tuple[str, int]


@dataclass(slots=True)
class PartitionProgress:
    max_event_time: float = float("-inf")
    offset: int = -1
    first: int = -1
    """First offset delivered since the partition was assigned."""
    skipped: bool = False
    """An offset arrived more than one past the largest before it: some were not delivered."""


class _Stamps:
    """A multiset of timestamps with its smallest at hand (removals are lazy)."""

    __slots__ = ("_count", "_heap")

    def __init__(self) -> None:
        self._heap: list[int] = []
        self._count: dict[int, int] = {}

    def add(self, stamp: int) -> None:
        n = self._count.get(stamp, 0)
        self._count[stamp] = n + 1
        if not n:
            heapq.heappush(self._heap, stamp)

    def discard(self, stamp: int) -> None:
        n = self._count.get(stamp, 0)
        if n > 1:
            self._count[stamp] = n - 1
        elif n == 1:
            del self._count[stamp]

    def oldest(self) -> int | None:
        heap, count = self._heap, self._count
        while heap and heap[0] not in count:
            heapq.heappop(heap)
        return heap[0] if heap else None


@dataclass
class LagAwareClock:
    """`now(tps)` is the clock for an agent partition fed by the topic partitions `tps`.

    mode "event": the slowest lagging input's progress minus the lateness; once every input has
    been caught up for `idle_grace` seconds, the largest event time this worker has seen on any
    input minus the lateness (so the end of a replay decides every deadline it can).
    mode "wall": the wall clock minus `grace`, never past a lagging input's progress minus the
    lateness.
    """

    mode: str = "event"
    lateness: float = 60.0
    grace: float = 0.0
    highwater: Callable[[TP], int | None] = lambda tp: None
    committed: Callable[[TP], int | None] = lambda tp: None
    """Next offset to read of a partition nothing was consumed from yet (its committed offset)."""
    wall: Callable[[], float] = time.time
    max_skew: float | None = None
    """Event mode, all inputs drained: a partition whose progress is more than this ahead of every
    other partition's (one event from a clock a day fast) does not move the clock."""
    idle_grace: float = 1.0
    """Seconds every input must have been caught up before the event clock jumps to the worker's
    watermark (covers events forwarded through a repartition topic that are still in flight)."""
    progress: dict[TP, PartitionProgress] = field(default_factory=dict)
    pending: dict[TP, int] = field(default_factory=dict)
    """Messages sent to a repartition partition that the broker has not acked yet."""
    holes: dict[TP, tuple[int, int]] = field(default_factory=dict)
    """Offsets (first, last) of a partition skipped by the consumer and being read again."""
    forwarded: dict[TP, int] = field(default_factory=dict)
    """Largest offset the broker acked for a message this worker forwarded, per partition."""
    taken: dict[TP, int] = field(default_factory=dict)
    """Largest offset of a repartition partition handed to its agent (its merge may hold it)."""
    flying: dict[TP, _Stamps] = field(default_factory=dict)
    """Record timestamps (ms) of the forwards this worker sent to a partition, not handed to its
    agent yet."""
    backlog_end: dict[TP, int] = field(default_factory=dict)
    """Per repartition partition, its highwater when this worker first saw one since the
    partition was assigned: what lies below was written before (by another worker, or by this
    one before a restart), so this worker knows none of its stamps."""
    foreign: dict[TP, dict[TP, tuple[float, bool]]] = field(default_factory=dict)
    """Per repartition partition, the last watermark each upstream partition another worker owns
    sent to it: (largest event time forwarded, caught up)."""
    max_event_time: float = float("-inf")
    _last_lag: dict[object, float] = field(default_factory=dict)
    _last_now: dict[object, float] = field(default_factory=dict)

    def observe(self, tp: TP, offset: int, event_time: float | None) -> None:
        """One message delivered from `tp` (event_time None: unparseable, still progress)."""
        p = self.progress.get(tp)
        if p is None:
            p = self.progress[tp] = PartitionProgress()
        hole = self.holes.get(tp)
        if hole is not None and offset == hole[1]:
            del self.holes[tp]  # the re-read reached the end of the gap
        if p.first < 0:
            p.first = offset
        if offset > p.offset:
            if offset > p.offset + 1 and p.offset >= 0:
                p.skipped = True
            p.offset = offset
        if event_time is not None:
            if event_time > p.max_event_time:
                p.max_event_time = event_time
            if event_time > self.max_event_time:
                self.max_event_time = event_time

    def delivered_run(self, tp: TP) -> tuple[int, int] | None:
        """(first, last) offsets delivered from `tp` since it was assigned, if they were one
        unbroken run; None when nothing was delivered or offsets were skipped."""
        p = self.progress.get(tp)
        if p is None or p.first < 0 or p.skipped:
            return None
        return p.first, p.offset

    def hole(self, tp: TP, first: int, last: int) -> None:
        """Offsets first..last of `tp` were skipped and will be delivered again: lagging until then."""
        self.holes[tp] = (first, last)

    def sent(self, tp: TP, stamp_ms: int | None = None) -> None:
        """This worker handed a message for `tp` (a repartition topic partition) to its producer,
        stamped `stamp_ms` (as the broker will keep it)."""
        self.pending[tp] = self.pending.get(tp, 0) + 1
        if stamp_ms is not None:
            stamps = self.flying.get(tp)
            if stamps is None:
                stamps = self.flying[tp] = _Stamps()
            stamps.add(stamp_ms)

    def delivered(self, tp: TP, offset: int | None, stamp_ms: int | None = None) -> None:
        """The broker acked a message `sent` to `tp` at `offset` (None: the send failed, and it
        will not arrive)."""
        n = self.pending.get(tp, 0)
        if n > 0:
            self.pending[tp] = n - 1
        if offset is None and stamp_ms is not None:
            stamps = self.flying.get(tp)
            if stamps is not None:
                stamps.discard(stamp_ms)
        if offset is not None and offset > self.forwarded.get(tp, -1):
            self.forwarded[tp] = offset

    def took(self, tp: TP, offset: int, stamp_ms: int | None = None) -> None:
        """A message of repartition partition `tp` was handed to its agent (not offered yet)."""
        if offset > self.taken.get(tp, -1):
            self.taken[tp] = offset
        stamps = self.flying.get(tp)
        if stamps is not None and stamp_ms is not None:
            stamps.discard(stamp_ms)

    def oldest_flying(self, tp: TP) -> int | None:
        """Timestamp (ms) of the oldest forward this worker sent to `tp` that its agent has not
        been handed yet (None: none it knows the stamp of)."""
        stamps = self.flying.get(tp)
        return stamps.oldest() if stamps is not None else None

    def in_flight(self, tp: TP, before_ms: float = float("inf")) -> bool:
        """A message this worker forwarded to `tp`, stamped before `before_ms`, has not been
        handed to its agent yet (without stamps: any message); or the messages written to `tp`
        before this worker read it (`backlog`) have not all been handed over yet."""
        if self.backlog(tp):
            return True
        stamps = self.flying.get(tp)
        if stamps is not None and before_ms != float("inf"):
            oldest = stamps.oldest()
            return oldest is not None and oldest < before_ms
        return self.pending.get(tp, 0) > 0 or self.forwarded.get(tp, -1) > self.taken.get(tp, -1)

    def backlog(self, tp: TP) -> bool:
        """Messages of repartition partition `tp` written before this worker read it are not all
        handed to its agent yet. Their offsets are not in timestamp order (several upstream
        partitions forward into one) and their stamps are unknown here, so one still in Kafka
        may be older than a record its agent holds: after a restart or a rebalance, the forwards
        the previous owner sent and its agent had not read yet."""
        end = self.backlog_end.get(tp)
        if end is None:
            hw = self.highwater(tp)
            if hw is None:
                return False  # not fetched yet: `lagging` holds the agent back meanwhile
            end = self.backlog_end[tp] = hw
        return self.taken.get(tp, -1) + 1 < end and self._unread_below(tp, end)

    def _unread_below(self, tp: TP, end: int) -> bool:
        # Reading resumes at the committed offset: a partition whose backlog was all applied
        # before the restart has nothing below `end` to wait for.
        p = self.progress.get(tp)
        if p is not None and p.offset >= 0:
            return p.offset + 1 < end
        return (self.committed(tp) or 0) < end

    def lagging(self, tp: TP) -> bool:
        # Forwards are tracked by offset, not by count: messages other workers (or this worker
        # before a restart) forwarded to the same partition must not cancel ours out, and a
        # highwater from the last fetch may predate our own send.
        if self.pending.get(tp, 0) > 0:
            return True  # sent, not acked by the broker yet: its offset is not even known
        if tp in self.holes:
            return True  # messages below what we consumed are still to come
        p = self.progress.get(tp)
        upto = self.forwarded.get(tp)
        if upto is not None and (p is None or p.offset < upto):
            return True  # acked at an offset we have not consumed yet
        hw = self.highwater(tp)
        if hw is None:
            # Owned but not fetched yet: we cannot know what waits in it, so it holds the clock
            # (the first fetch, even of an empty partition, reports a highwater).
            return True
        if p is not None and p.offset >= 0:
            return p.offset + 1 < hw
        # Nothing consumed here yet (a fresh assignment): reading resumes at the committed offset.
        return (self.committed(tp) or 0) < hw

    def watermark(self, dest: TP, source: TP, event_time: float | None, idle: bool) -> None:
        """A watermark read from repartition partition `dest`: upstream partition `source`, owned
        by another worker, has forwarded everything up to `event_time` (`idle`: and is caught up)."""
        self.foreign.setdefault(dest, {})[source] = (float("-inf") if event_time is None else event_time, idle)

    def foreign_bound(self, dest: TP, sources: Iterable[TP]) -> float:
        """How far an agent fed through `dest` may go given upstream `sources` other workers own:
        a caught-up source bounds nothing, a busy one its watermark minus the lateness, a source
        not heard from yet everything (it may have anything in flight to us)."""
        marks = self.foreign.get(dest, {})
        bound = float("inf")
        for src in sources:
            mark = marks.get(src)
            if mark is None:
                return float("-inf")
            t, idle = mark
            if not idle and t - self.lateness < bound:
                bound = t - self.lateness
        return bound

    def now(
        self,
        tps: Iterable[TP] = (),
        who: object = None,
        repartitioned: Iterable[TP] = (),
        bound: float = float("inf"),
        aligned: Callable[[], float] | None = None,
        *,
        hold: bool = False,
    ) -> float:
        """The clock for an agent partition (`who`) whose events come from `tps` (its own input
        partitions and the upstream partitions that feed it through a repartition topic).

        A repartition topic mixes several upstream partitions, so its event times are not in
        order and its progress bounds nothing: while one of `repartitioned` lags (messages sent
        to it not consumed yet), the clock of `who` does not move at all. `bound` caps it (the
        watermarks of upstream partitions other workers own, `foreign_bound`). In event mode,
        `aligned` (the worker's arrival clock, streams.arrivals) gives the progress while inputs
        lag, instead of the slowest lagging input's; with `hold`, whatever the inputs do: the
        clock as of a record the agent took or is about to take (`streams.agents`), which a
        drained upstream must not carry past records still on their way to it."""
        tps = list(tps)
        wall = self.wall()
        if any(self.lagging(tp) for tp in repartitioned):
            self._last_lag[who] = wall
            return self._last_now.get(who, float("-inf"))
        if hold and aligned is not None and self.mode == "event":
            # Held: something is still on its way to `who`, which counts as lag for the idle
            # grace (once it arrives, the clock waits that long before it jumps to the watermark).
            self._last_lag[who] = wall
            now = min(aligned() - self.lateness, bound)
        else:
            now = min(self._now(tps, who, wall, aligned), bound)
        last = self._last_now.get(who, float("-inf"))
        if now < last:
            now = last  # a clock never runs backwards (a partition catching up lowers the bound)
        self._last_now[who] = now
        return now

    def _now(self, tps: list[TP], who: object, wall: float, aligned: Callable[[], float] | None) -> float:
        lagging = [tp for tp in tps if self.lagging(tp)]
        if lagging:
            self._last_lag[who] = wall
        if self.mode == "event":
            if lagging and aligned is not None:
                base = aligned()
            elif lagging:
                # The slowest input with data still waiting in Kafka decides.
                base = min(self._max_of(tp) for tp in lagging)
            elif wall - self._last_lag.get(who, float("-inf")) < self.idle_grace:
                # Caught up only just: forwarded events may still be in flight to us.
                if aligned is not None:
                    base = aligned()
                else:
                    known = [self._max_of(tp) for tp in tps if tp in self.progress]
                    base = min(known) if known else float("-inf")
            else:
                base = self.drained_progress()  # all inputs drained: the worker's watermark
            return base - self.lateness
        base = wall - self.grace
        for tp in lagging:
            held = self._max_of(tp) - self.lateness
            if held < base:
                base = held
        return base

    def drained_progress(self) -> float:
        """The largest progress of an input partition that another partition comes within
        `max_skew` of (the largest event time seen when `max_skew` is None): a single event far
        ahead, alone on its partition, cannot decide every deadline of a finished replay."""
        if self.max_skew is None:
            return self.max_event_time
        times = sorted(
            (p.max_event_time for p in self.progress.values() if p.max_event_time > float("-inf")), reverse=True
        )
        for ahead, behind in itertools.pairwise(times):
            if ahead - behind <= self.max_skew:
                return ahead
        return times[-1] if times else float("-inf")

    def _max_of(self, tp: TP) -> float:
        p = self.progress.get(tp)
        return p.max_event_time if p else float("-inf")

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions revoked (or newly assigned): their progress and in-flight counts start over."""
        for tp in tps:
            self.progress.pop(tp, None)
            self.pending.pop(tp, None)
            self.forwarded.pop(tp, None)
            self.taken.pop(tp, None)
            self.flying.pop(tp, None)
            self.backlog_end.pop(tp, None)
            self.holes.pop(tp, None)
            self.foreign.pop(tp, None)  # the new owners of the sources send fresh watermarks
