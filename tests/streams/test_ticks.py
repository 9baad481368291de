"""The Ticker: a merge tick goes to an agent partition whose merge holds records only when that
partition got no message since the last tick (its own messages let the merge go on); deadline
ticks go every INTERVAL whatever the partition does."""

from __future__ import annotations

from orderwatch.streams.ticks import Ticker
from tests.factories import T0, at, created
from tests.streams.agent_harness import AgentHarness

START = T0.timestamp()


def _ticks(h: AgentHarness) -> int:
    return len(h.outputs.on(h.driver.spec.ticks))


async def test_a_merge_tick_goes_only_to_a_partition_that_got_no_message_since_the_last_tick() -> None:
    h = AgentHarness("orders", START)
    h.highwaters[(h.topic("payments"), 0)] = 1  # payments has lag: the merge holds what comes
    ticker = Ticker(h.outputs, {"orders": h.driver})
    async with h.running():
        await h.event("orders", created("o-1", at(0)))
        assert h.driver.merges[0].held == 1
        assert await ticker.tick() == 0  # a message came since the last tick: it was its own wake-up
        assert await ticker.tick() == 1  # none since: the tick lets the merge's wait run out
        assert await ticker.tick() == 1
        await h.event("orders", created("o-2", at(1)))
        assert await ticker.tick() == 0
        assert await ticker.tick() == 1
    assert _ticks(h) == 3


async def test_a_deadline_tick_goes_every_interval_busy_or_not() -> None:
    h = AgentHarness("orders", START)
    ticker = Ticker(h.outputs, {"orders": h.driver})
    async with h.running():
        await h.event("orders", created("o-1", at(0)))  # nothing to wait for: applied
        assert h.driver.merges[0].held == 0
        assert [await ticker.tick() for _ in range(5)] == [0, 0, 0, 0, 0]  # no deadline due yet
        h.wall = START + 86_400  # a day later: the unpaid order's deadlines are due
        sent = []
        for _ in range(10):
            await h.event("orders", created(f"o-{len(sent) + 2}", at(1)))  # busy all along
            sent.append(await ticker.tick())
    # Every INTERVAL (each 5th call, MERGE_INTERVAL apart) the partition's clock and timers are
    # asked, and the ticks the clock made due go, however busy the partition is.
    assert sent == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
