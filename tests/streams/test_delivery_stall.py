"""A merge's waits and a stall of the agent's own delivery (tests/streams/agent_harness.py).

faust hands a fetched batch to the agents one message at a time and waits while the queue of the
agent a message is for is full, so one slow agent holds back every other agent's messages, its
ticks included. Seen in a replay under load: the inventory agent's 13,000 records filled its
queue, the orders agent got nothing for minutes (neither its inbox nor a tick), and its first tick
after that forced out every record its merge held (637) before the inbox records right behind
it; the replay ended with 39 of the backtest's 47 exception events."""

from __future__ import annotations

import asyncio

from orderwatch.schemas.control import Tick, encode
from orderwatch.streams.merge import TimestampMerge
from tests.factories import T0, at, created, paid
from tests.streams.agent_harness import AgentHarness

START = T0.timestamp()
MIN = 60.0
IDLE = 0.5
STALL = 2.0  # how late the tick comes (driven wall clock): past the idle wait and STALLED_TICK_SECONDS


def forced_idle(h: AgentHarness) -> float:
    value = h.ow.metrics.registry.get_sample_value(
        "orderwatch_merge_forced_total", {"agent": "orders", "reason": "idle"}
    )
    return value or 0.0


async def late_tick(h: AgentHarness, sent: float) -> None:
    """A tick the Ticker sent at `sent` (driven wall clock) that reaches the agent only now."""
    headers, value = encode(Tick())
    await h.put("ticks", value, headers=headers, timestamp=sent)


async def test_a_tick_that_comes_late_does_not_force_out_what_the_merge_waits_for() -> None:
    h = AgentHarness("orders", START, merge_idle_seconds=IDLE)
    h.highwaters[(h.topic("payments"), 0)] = 1  # the payment is in Kafka, not handed over yet
    async with h.running():
        await h.event("orders", created("o-1", at(0)), arrived=START + 30 * MIN)
        assert h.driver.merges[0].held == 1
        # Nothing reaches the agent for twice its idle wait; then its own tick, sent before that.
        await asyncio.sleep(2 * IDLE)
        h.wall += STALL
        await late_tick(h, sent=h.wall - STALL)
        assert h.driver.merges[0].held == 1  # still waiting: the payments' silence meant nothing
        h.highwaters[(h.topic("payments"), 0)] = 0  # (the harness counts it again on put)
        await h.event("payments", paid("o-1", at(1)), arrived=START + 1 * MIN)
        assert h.driver.merges[0].held == 0
        await h.tick(START + 40 * MIN)
    assert forced_idle(h) == 0.0
    # Applied in arrival order: the payment's forward before the order's.
    order = [rec.topic for rec in h.outputs.records if "-by-" in rec.topic]
    assert order == [h.topic("by-provider"), h.topic("by-address"), h.topic("by-customer")]


async def test_the_idle_wait_still_ends_once_ticks_come_on_time_again() -> None:
    h = AgentHarness("orders", START, merge_idle_seconds=IDLE)
    h.highwaters[(h.topic("payments"), 0)] = 5  # payments has lag and never delivers
    async with h.running():
        await h.event("orders", created("o-1", at(0)))
        await asyncio.sleep(2 * IDLE)
        h.wall += STALL
        await late_tick(h, sent=h.wall - STALL)
        assert h.driver.merges[0].held == 1  # the wait starts again with the stall over
        await h.tick()  # on time, but the wait is not over yet
        assert h.driver.merges[0].held == 1
        await asyncio.sleep(2 * IDLE)
        h.wall += 2 * IDLE
        await h.tick()  # on time, past the idle wait: the order goes without the payments
        assert h.driver.merges[0].held == 0
    assert forced_idle(h) == 1.0
    assert h.outputs.on(h.topic("by-customer"))


class Wall:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Unaligned:
    """Another partition is never read past any record (streams.arrivals), and never moves."""

    def may_go(self, topic: str, ts_ms: int) -> bool:
        return False

    def moved_at(self) -> float:
        return 0.0


def test_restarting_the_waits_gives_a_forward_in_flight_its_whole_flight_wait_again() -> None:
    wall = Wall()
    m: TimestampMerge[str] = TimestampMerge(
        ["orders", "inbox"],
        lambda topic: False,
        idle_wait=3.0,
        flight_wait=30.0,
        wall=wall,
        by_time={"inbox"},
        in_flight=lambda topic, before_ms: topic == "inbox",
    )
    m.push("orders", 0, 100, "o@100")
    assert m.next() is None  # a forward of ours stamped before it is on its way
    wall.t = 31.0
    m.restart_waits()  # the agent's own delivery stalled all that time
    assert m.next() is None
    wall.t = 60.0
    assert m.next() is None  # 29 s since the stall ended
    wall.t = 62.0
    assert m.next() == ("orders", "o@100")
    assert m.forced.idle == 1


def test_restarting_the_waits_gives_an_unaligned_record_its_whole_idle_wait_again() -> None:
    wall = Wall()
    m: TimestampMerge[str] = TimestampMerge(["orders", "payments"], lambda topic: False, wall=wall, aligned=Unaligned())
    m.push("orders", 0, 100, "o@100")
    assert m.next() is None  # another partition is not read past it yet
    wall.t = 4.0
    m.restart_waits()
    assert m.next() is None
    wall.t = 6.5
    assert m.next() is None
    wall.t = 7.5
    assert m.next() == ("orders", "o@100")
    assert m.forced.align == 1


async def test_without_an_idle_wait_a_tick_a_little_late_does_not_restart_the_flight_wait() -> None:
    # Every tick is a little late (sent, fetched, handed over): with the idle wait at 0 that
    # must not restart the wait for a forward in flight at every tick, or it would never end.
    h = AgentHarness("orders", START, merge_idle_seconds=0.0, merge_flight_seconds=IDLE)
    inbox = (h.topic("inbox"), 0)
    h.ow.clock.sent(inbox, int(START * 1000))  # a reservation of ours on its way to the inbox
    async with h.running():
        await h.event("orders", created("o-1", at(0)), arrived=START + 1 * MIN)
        assert h.driver.merges[0].held == 1  # the forward stamped before it is waited for
        await asyncio.sleep(2 * IDLE)
        h.wall += 0.3
        await late_tick(h, sent=h.wall - 0.3)
        assert h.driver.merges[0].held == 0  # the flight wait is over: it went on without it
    assert forced_idle(h) == 1.0
