"""What each detector agent is (inputs, upstreams, its detector) and its clock: the lag-aware
clock of one agent partition, bounded by the agents and upstream partitions that feed it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from orderwatch.detectors.base import KeyedDetector
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
    bounded_by: list[str] = field(default_factory=list)
    """Agents whose clock this one never runs ahead of (they feed its inbox)."""
    partitions: int = 1
    """Of every topic (co-partitioned): the upstream partitions there are."""


class AgentClocks:
    """The clock of each agent partition (`now`), from the worker's one LagAwareClock."""

    def __init__(self, specs: dict[str, AgentSpec], clock: LagAwareClock, actives: Callable[[], frozenset[TP]]) -> None:
        self._specs = specs
        self.clock = clock
        self._actives = actives

    def tps(self, name: str, partition: int) -> tuple[list[TP], list[TP]]:
        """(bounding, repartitioned) partitions of this agent partition's clock: its own contract
        inputs and every owned partition of the upstream topics bound it; its own repartition
        inputs (forwarded by another agent, times out of order) freeze it while they lag."""
        spec = self._specs[name]
        own = [(t, partition) for t in spec.inputs if t not in spec.repartitioned]
        actives = self._actives()
        return own + [tp for tp in actives if tp[0] in spec.upstream], [(t, partition) for t in spec.repartitioned]

    def now(self, name: str, partition: int) -> float:
        """The clock of one agent partition. An agent whose inbox another agent feeds (the orders
        agent gets DUPLICATE_ORDER records from the customer agent) never runs ahead of that
        agent's clocks on this worker, or a record could reach an order that finished and was
        dropped. An agent fed through a repartition topic is also capped by the watermarks of the
        upstream partitions other workers own."""
        spec = self._specs[name]
        clock = self.clock
        actives = self._actives()
        tps, frozen = self.tps(name, partition)
        bound = float("inf")
        foreign = [(u, q) for u in spec.upstream for q in range(spec.partitions) if (u, q) not in actives]
        if foreign:
            for dest in frozen:
                bound = min(bound, clock.foreign_bound(dest, foreign))
        now = clock.now(tps, (name, partition), frozen, bound)
        for other in spec.bounded_by:
            first_input = self._specs[other].inputs[0]
            for topic, q in actives:
                if topic == first_input:
                    # That agent's own clock, watermark cap included: asking the clock without the
                    # cap would also move the remembered, never-backwards value past it.
                    now = min(now, self.now(other, q))
        return now
