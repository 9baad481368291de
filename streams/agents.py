"""What each detector agent is (inputs, upstreams, its detector) and its clock: the lag-aware
clock of one agent partition, bounded by the upstream partitions that feed it, or in event mode
the worker's arrival clock (streams.arrivals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orderwatch.detectors.base import KeyedDetector
from orderwatch.streams.arrivals import ArrivalClock
from orderwatch.streams.clock import LagAwareClock

__all__ = ["AgentClocks", "AgentSpec"]

TP = tuple[str, int]


@dataclass
class AgentSpec:
    """One detector agent, as configuration: no state."""

    name: str
    inputs: list[str]
    """Topics it consumes, co-partitioned: its contract inputs first, then its repartition inputs."""
    ticks: str
    upstream: list[str]
    """Topics whose events reach it forwarded by another agent (their progress bounds its clock)."""
    repartitioned: list[str]
    """Its inputs fed by forwards: several upstream partitions mixed, times out of order."""
    make: Callable[[], KeyedDetector]
    partitions: int = 1
    """Of every topic (co-partitioned): the upstream partitions there are."""


class AgentClocks:
    """The clock of each agent partition (`now`), from the worker's one LagAwareClock."""

    def __init__(
        self,
        specs: dict[str, AgentSpec],
        clock: LagAwareClock,
        actives: Callable[[], frozenset[TP]],
        arrivals: ArrivalClock | None = None,
    ) -> None:
        self._specs = specs
        self.clock = clock
        self._actives = actives
        self.arrivals = arrivals
        """The worker's arrival clock (event mode): every agent's clock."""

    def tps(self, name: str, partition: int) -> tuple[list[TP], list[TP]]:
        """(bounding, repartitioned) partitions of this agent partition's clock: its own contract
        inputs and every owned partition of the upstream topics bound it; its own repartition
        inputs (forwarded by another agent, times out of order) freeze it while they lag."""
        spec = self._specs[name]
        own = [(t, partition) for t in spec.inputs if t not in spec.repartitioned]
        actives = self._actives()
        return own + [tp for tp in actives if tp[0] in spec.upstream], [(t, partition) for t in spec.repartitioned]

    def now(
        self,
        name: str,
        partition: int,
        *,
        taken_ms: int | None = None,
        before_ms: int | None = None,
        upstream: TP | None = None,
    ) -> float:
        """The clock of one agent partition. In event mode every agent follows the worker's
        arrival clock (the backtest's clock over the contract records in the order they
        arrived), so a replay and a catch-up apply each record where the backtest would: as of
        every record that is safe, or, while records forwarded to its repartition inputs are in
        flight, as of `taken_ms` (the timestamp of the last record it took: nothing forwarded
        before that can still come); `before_ms`: as of just before the record stamped so, which
        it is about to take (`upstream`: the partition it was forwarded from, when it was). Wall
        mode follows the lag-aware clock. An agent fed through a repartition topic is also capped
        by the watermarks of the upstream partitions other workers own."""
        spec = self._specs[name]
        clock = self.clock
        actives = self._actives()
        tps, frozen = self.tps(name, partition)
        bound = float("inf")
        foreign = [(u, q) for u in spec.upstream for q in range(spec.partitions) if (u, q) not in actives]
        if foreign:
            for dest in frozen:
                bound = min(bound, clock.foreign_bound(dest, foreign))
        arrivals = self.arrivals
        if arrivals is None:
            return clock.now(tps, (name, partition), frozen, bound)
        # As of one record, the clock holds there even when every upstream partition is drained
        # (the clock would then jump to the worker's watermark): after a restart, the agent
        # upstream can have decided every record it reads while the forwards it sent, and those
        # the previous run left, still wait for this agent to take them.
        if before_ms is not None:
            # Only a record another worker forwarded says nothing of this worker's forwards in
            # flight. Capping every catch-up (this worker's inventory agent forwards to the inbox
            # out of stamp order) let a record delivered late go before deadlines the backtest
            # fired ahead of it (test_upstream_lag, the skewed producer: an extra exception).
            from_other = upstream is not None and upstream not in actives
            upto = _before_own_forwards(clock, frozen, before_ms) if from_other else before_ms
            return clock.now(tps, (name, partition), (), bound, _LowAt(arrivals, upto - 1), hold=True)
        if not any(clock.lagging(tp) for tp in frozen):
            return clock.now(tps, (name, partition), (), bound, arrivals.low)
        if taken_ms is not None:
            # Only with several workers (upstream partitions another worker owns): one worker's
            # held clock stays as it was (capping it there too made test_recovery's restarted
            # worker lose an exception in 2 runs of 2).
            upto = _before_own_forwards(clock, frozen, taken_ms) if foreign else taken_ms
            return clock.now(tps, (name, partition), (), bound, _LowAt(arrivals, upto - 1), hold=True)
        return clock.now(tps, (name, partition), frozen, bound)  # in flight, nothing taken: hold


def _before_own_forwards(clock: LagAwareClock, frozen: list[TP], stamp_ms: int) -> int:
    """`stamp_ms` (the record an agent took last, or is about to take), or the stamp of the
    oldest of this worker's own forwards to `frozen` still on their way when that is older. With
    several workers the record in hand can be another worker's, stamped after forwards of ours
    the producer has not delivered yet: a clock as of it passed them (bench_scaleout: a worker's
    order.created stamped 08:02 reached its own customer agent behind the other worker's 11:05
    ones, 2,576 forwards came late, and the pair lost 7 DUPLICATE_ORDER). Asked only with
    several workers: one worker's own forwards reach a partition out of stamp order (the
    inventory agent's to the order inbox: inventory partitions are not aligned), and there the
    cap held its clocks below the backtest's."""
    upto = stamp_ms
    for dest in frozen:
        oldest = clock.oldest_flying(dest)
        if oldest is not None and oldest < upto:
            upto = oldest
    return upto


class _LowAt:
    """The arrival clock's progress as of one record timestamp, asked only when needed."""

    __slots__ = ("_arrivals", "_ts")

    def __init__(self, arrivals: ArrivalClock, ts_ms: int) -> None:
        self._arrivals, self._ts = arrivals, ts_ms

    def __call__(self) -> float:
        return self._arrivals.low_at(self._ts)
