"""AgentClocks in event mode: an agent fed through a repartition topic follows the arrival clock,
and while forwards still wait for it, as of the last record it took; that holds even once every
upstream partition is drained (a restarted worker: the orders agent ran through its backlog,
the provider agent had not taken the forwards yet)."""

from __future__ import annotations

from orderwatch.streams.agents import AgentClocks, AgentSpec
from orderwatch.streams.arrivals import ArrivalClock
from orderwatch.streams.clock import LagAwareClock

PAY = ("payments", 0)
FWD = ("by-provider", 0)


class World:
    def __init__(self, partitions: int = 1) -> None:
        self.wall = 1_000_000.0
        self.hw: dict[tuple[str, int], int] = {}
        self.clock = LagAwareClock(mode="event", lateness=60.0, highwater=self.hw.get, wall=lambda: self.wall)
        self.arrivals = ArrivalClock(lambda: [PAY], self.clock.lagging, lambda topic: topic, wall=lambda: self.wall)
        spec = AgentSpec(
            name="provider",
            inputs=["by-provider"],
            ticks="ticks-provider",
            upstream=["payments"],
            repartitioned=["by-provider"],
            make=lambda: None,  # type: ignore[arg-type,return-value]
            partitions=partitions,  # more than 1: payments[1] and up are another worker's
        )
        self.clocks = AgentClocks({"provider": spec}, self.clock, lambda: frozenset({PAY, FWD}), self.arrivals)

    def payments_decided_and_drained(self, records: list[tuple[int, float]]) -> None:
        """The agent upstream read and decided every payment (stamp ms, event time) and forwarded
        each one to by-provider[0]."""
        for offset, (stamp, t) in enumerate(records):
            self.arrivals.received(PAY, offset, stamp)
            self.clock.observe(PAY, offset, t)
            self.arrivals.done(PAY, offset, stamp, t)
        self.hw[PAY] = len(records)
        self.hw[FWD] = len(records)
        # Another agent's input, read further (not one of the provider's clock inputs): the
        # worker's watermark once everything is drained.
        self.clock.observe(("inventory", 0), 0, 9_000.0)
        self.wall += 10.0  # long past the idle grace: the upstream is drained


PAYMENTS = [(1_000, 100.0), (2_000, 200.0), (3_000, 300.0)]


def test_an_agent_behind_its_forwards_stays_at_the_record_it_took_though_the_upstream_is_drained() -> None:
    w = World()
    w.payments_decided_and_drained(PAYMENTS)
    w.clock.observe(FWD, 0, 100.0)  # it took the first forward (stamped 1000); two more wait
    assert w.clock.lagging(FWD)
    # As of the record it took: the backtest's clock just before stamp 1000 had seen nothing yet;
    # the worker's watermark (9000 - 60) would make the two waiting forwards hours late.
    assert w.clocks.now("provider", 0, taken_ms=1_000) == float("-inf")
    assert w.clocks.now("provider", 0, taken_ms=2_000) == 100.0 - 60.0


def test_the_catch_up_before_a_record_is_the_clock_as_of_its_stamp_not_the_drained_watermark() -> None:
    w = World()
    w.payments_decided_and_drained(PAYMENTS)
    assert w.clocks.now("provider", 0, before_ms=3_000) == 200.0 - 60.0


def test_once_every_forward_is_taken_the_drained_upstream_moves_the_clock_to_the_watermark() -> None:
    w = World()
    w.payments_decided_and_drained(PAYMENTS)
    for offset, (_stamp, t) in enumerate(PAYMENTS):
        w.clock.observe(FWD, offset, t)
    assert not w.clock.lagging(FWD)
    assert w.clocks.now("provider", 0) == 9_000.0 - 60.0
    # And a clock never runs backwards: a later question as of an older record keeps it there.
    assert w.clocks.now("provider", 0, before_ms=2_000) == 9_000.0 - 60.0


def test_a_held_agent_waits_the_idle_grace_after_its_last_forward_before_the_watermark() -> None:
    # Held counts as lag: the moment the last forward is taken, forwards sent just now may
    # still be in flight, so the clock follows the arrival clock for the idle grace (1 s).
    w = World()
    w.payments_decided_and_drained(PAYMENTS)
    w.clock.observe(FWD, 0, 100.0)
    assert w.clocks.now("provider", 0, taken_ms=2_000) == 100.0 - 60.0
    for offset, (_stamp, t) in enumerate(PAYMENTS):
        w.clock.observe(FWD, offset, t)
    assert w.clocks.now("provider", 0) == 300.0 - 60.0  # the arrival clock
    w.wall += 2.0
    assert w.clocks.now("provider", 0) == 9_000.0 - 60.0  # drained: the worker's watermark


def test_an_agent_that_took_another_workers_later_forward_waits_for_its_own_older_one() -> None:
    # Two workers: the other one's forward (stamped 3500) reached the provider agent before this
    # worker's own (stamped 1000), which its producer has not delivered yet. The record taken
    # last says nothing about ours: the clock stays as of ours (the backtest had seen nothing
    # before stamp 1000), not as of 3500 (the three payments, 300 - 60), which would make our
    # forward 200 s late when it comes.
    w = World(partitions=2)
    w.clock.watermark(FWD, ("payments", 1), None, True)  # the other worker's payments[1]: caught up
    w.payments_decided_and_drained(PAYMENTS)
    w.clock.sent(FWD, 1_000)
    assert w.clock.lagging(FWD)
    assert w.clocks.now("provider", 0, taken_ms=3_500) == float("-inf")
    # Nor does the catch-up before the other worker's next record (stamped 3600) pass ours.
    assert w.clocks.now("provider", 0, before_ms=3_600, upstream=("payments", 1)) == float("-inf")
    # A record this worker forwarded itself (from payments[0], which it owns) or one of its own
    # contract inputs: the catch-up is as of its stamp.
    assert w.clocks.now("provider", 0, before_ms=3_600, upstream=PAY) == 300.0 - 60.0
    w.clock.delivered(FWD, 3, 1_000)
    w.clock.took(FWD, 3, 1_000)  # now handed over: nothing of ours is on its way
    w.hw[FWD] = 4
    w.clock.observe(FWD, 2, 300.0)
    assert w.clocks.now("provider", 0, taken_ms=3_500) == 300.0 - 60.0


def test_one_worker_holds_as_of_the_record_it_took_even_with_older_forwards_of_its_own_in_flight() -> None:
    # One worker's forwards can reach a partition out of stamp order (its inventory agent's to
    # the order inbox): there the clock as of the record taken is the backtest's, and capping it
    # at an older forward in flight held it below (test_recovery lost an exception).
    w = World()
    w.payments_decided_and_drained(PAYMENTS)
    w.clock.sent(FWD, 1_000)
    assert w.clocks.now("provider", 0, taken_ms=3_500) == 300.0 - 60.0
