"""Each detector agent in-process under faust's `test_context()` (tests/streams/agent_harness.py:
what runs and what does not): events in, exceptions out, deadlines by a driven clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from orderwatch.schemas.control import CONTROL_HEADER, Adoption, Watermark, encode
from orderwatch.streams.arrivals import ArrivalClock
from tests.factories import T0, at, created, failed, level, paid, reserved
from tests.streams.agent_harness import AgentHarness

START = T0.timestamp()
MIN = 60.0


def without_order(h: AgentHarness) -> list[tuple[str, str]]:
    return [e for e in h.exceptions() if e[0] == "PAYMENT_WITHOUT_ORDER"]


async def test_orders_agent_raises_payment_without_order_at_its_deadline_and_resolves_it() -> None:
    h = AgentHarness("orders", START)
    async with h.running():
        await h.event("payments", paid("o-1", at(0)))
        await h.tick(START + 5 * MIN)
        assert h.exceptions() == []  # 10 minutes to go
        await h.tick(START + 11.5 * MIN)  # past the deadline plus the lateness
        assert without_order(h) == [("PAYMENT_WITHOUT_ORDER", "opened")]
        await h.event("orders", created("o-1", at(12)))
        await h.tick(START + 14 * MIN)
        assert without_order(h) == [("PAYMENT_WITHOUT_ORDER", "opened"), ("PAYMENT_WITHOUT_ORDER", "resolved")]
    # What other agents need went on, keyed for them, with the upstream record's timestamp.
    forwards = h.outputs.on(h.topic("by-customer"))
    assert [(f.key, f.timestamp) for f in forwards] == [(b"c-1", at(12).timestamp())]
    assert h.outputs.on(h.topic("by-address"))
    # The state is in the agent's table, the ledger says both payments[0]@0 and orders[0]@0 applied.
    assert h.driver.runtimes[0].ledger.low == {h.topic("payments") + ":0": 1, h.topic("orders") + ":0": 1}


async def test_orders_agent_merges_its_inputs_in_record_timestamp_order() -> None:
    # The orders partition is handed over first (faust drains a small partition first), but the
    # order.created arrived 30 minutes late: the merge must apply the payment first.
    h = AgentHarness("orders", START)
    h.highwaters[(h.topic("payments"), 0)] = 1  # the payment is in Kafka, not fetched yet
    async with h.running():
        await h.event("orders", created("o-1", at(0)), arrived=START + 30 * MIN)
        assert h.driver.merges[0].held == 1  # held: payments has lag and nothing fetched
        h.highwaters[(h.topic("payments"), 0)] = 0  # (the harness counts it again on put)
        await h.event("payments", paid("o-1", at(1)), arrived=START + 1 * MIN)
        assert h.driver.merges[0].held == 0
        await h.tick(START + 40 * MIN)
    # Applied (and so forwarded) in arrival order: the payment's forward before the order's.
    order = [rec.topic for rec in h.outputs.records if "-by-" in rec.topic]
    assert order == [h.topic("by-provider"), h.topic("by-address"), h.topic("by-customer")]
    assert h.ow.metrics.registry.get_sample_value(
        "orderwatch_merge_forced_total", {"agent": "orders", "reason": "idle"}
    ) in (None, 0.0)


async def test_orders_agent_stops_waiting_for_an_input_with_lag_after_the_idle_wait() -> None:
    h = AgentHarness("orders", START, merge_idle_seconds=0.0)
    h.highwaters[(h.topic("payments"), 0)] = 5  # payments has lag, nothing of it is fetched
    async with h.running():
        await h.event("orders", created("o-1", at(0)))
        await h.tick()
    assert h.driver.merges[0].held == 0
    assert h.outputs.on(h.topic("by-customer"))  # applied, without the payments
    assert (
        h.ow.metrics.registry.get_sample_value("orderwatch_merge_forced_total", {"agent": "orders", "reason": "idle"})
        == 1.0
    )


async def test_orders_agent_dead_letters_a_malformed_control_message_and_goes_on() -> None:
    h = AgentHarness("orders", START)
    async with h.running():
        await h.put("inbox", b'{"source_topic":"x"}', key=b"o-1", headers=[(CONTROL_HEADER, b"watermark/1")])
        await h.put("inbox", b"\xff\xfe", key=b"o-1", headers=[(CONTROL_HEADER, b"adoption/9")])
        await h.put("ticks", b"tock")
        await h.event("payments", paid("o-2", at(0)))
        await h.tick(START + 12 * MIN)
    assert [d["reason"] for d in h.dead_letters()] == ["invalid_control"] * 3
    assert without_order(h) == [("PAYMENT_WITHOUT_ORDER", "opened")]


async def test_orders_agent_adopts_a_duplicate_order_record_from_its_inbox() -> None:
    h = AgentHarness("orders", START)
    record = {
        "exception_id": "dup-1",
        "rule": "DUPLICATE_ORDER",
        "subject": "c-1",
        "order_id": "o-1",
        "severity": "medium",
        "detected_at": at(2).timestamp(),
        "event_time": at(2).timestamp(),
        "summary": "two orders alike",
        "evidence": {"order_ids": ["o-0", "o-1"]},
    }
    async with h.running():
        await h.event("orders", created("o-1", at(0)))
        headers, value = encode(Adoption(id="adopt:dup-1", event_time=at(2).timestamp(), exception=record))
        await h.put("inbox", value, key=b"o-1", headers=headers, timestamp=at(2).timestamp())
        await h.tick(START + 4 * MIN)
        # A watermark on the inbox is control, not an event: the clock takes it, nothing else.
        headers, value = encode(Watermark(source_topic="inventory", source_partition=0, caught_up=True))
        await h.put("inbox", value, headers=headers)
    assert h.dead_letters() == []
    held = h.driver.runtimes[0].detector.describe("o-1")["open_exceptions"]  # type: ignore[index]
    assert [x["exception_id"] for x in held] == ["dup-1"]  # the order owns the record now


async def test_inventory_agent_raises_stock_oversold_and_forwards_reservations_to_the_inbox() -> None:
    h = AgentHarness("inventory", START)
    async with h.running():
        await h.event("inventory", level("SKU-1", at(0), on_hand=2, reserved_=1))
        await h.event("inventory", reserved("o-a", at(1)))
        await h.event("inventory", reserved("o-b", at(2)))
        await h.tick(START + 4 * MIN)
    assert h.exceptions() == [("STOCK_OVERSOLD", "opened")]
    inbox = h.outputs.on(h.topic("inbox"))
    assert [f.key for f in inbox] == [b"o-a", b"o-b"]
    assert all(any(name == "orderwatch-upstream" for name, _ in f.headers or ()) for f in inbox)


async def test_address_agent_raises_address_cluster_on_the_fifth_order() -> None:
    h = AgentHarness("address", START)
    async with h.running():
        for i, (hours, customer) in enumerate([(0, "c-1"), (1, "c-2"), (2, "c-3"), (3, "c-1"), (4, "c-2")]):
            await h.event("by-address", created(f"o-{i}", at(hours=hours), customer=customer))
        await h.tick(START + 5 * 3600)
    assert h.exceptions() == [("ADDRESS_CLUSTER", "opened")]


async def test_customer_agent_raises_a_new_account_burst_and_sends_duplicate_orders_to_the_inbox() -> None:
    h = AgentHarness("customer", START)
    young = T0 - timedelta(days=2)
    async with h.running():
        for i, minutes in enumerate([0, 11, 22, 33, 44]):
            await h.event("by-customer", created(f"n-{i}", at(minutes), customer="c-new", since=young))
        await h.tick(START + 50 * MIN)
        assert ("NEW_ACCOUNT_BURST", "opened") in h.exceptions()
        # Two orders alike from one customer minutes apart: DUPLICATE_ORDER, adopted by the order.
        await h.event("by-customer", created("d-1", at(60), customer="c-dup", total="80.00"))
        await h.event("by-customer", created("d-2", at(62), customer="c-dup", total="80.00"))
        await h.tick(START + 64 * MIN)
    assert ("DUPLICATE_ORDER", "opened") in h.exceptions()
    adoptions = [f for f in h.outputs.on(h.topic("inbox")) if (CONTROL_HEADER, b"adoption/1") in (f.headers or [])]
    assert len(adoptions) == 1 and adoptions[0].key in (b"d-1", b"d-2")
    assert adoptions[0].timestamp == at(62).timestamp()  # the arrival time of what the agent had read


async def test_provider_agent_raises_a_payment_failure_spike() -> None:
    h = AgentHarness("provider", START)
    async with h.running():
        for i in range(25):
            await h.event("by-provider", failed(f"f-{i}", at(i / 10), provider="acme"))
        await h.tick(START + 4 * MIN)
        assert h.exceptions() == []  # judged when the 5-minute window closes
        await h.tick(START + 6.5 * MIN)
    assert h.exceptions()[:1] == [("PAYMENT_FAILURE_SPIKE", "opened")]


async def test_a_partition_delivered_before_faust_knows_its_commit_is_read_from_the_start_up_commit() -> None:
    # A fresh group: the worker pinned inventory[0] at 0 before faust started, faust has not
    # sought yet (no commit known to it), and the first message the agent gets is offset 2:
    # 0 and 1 were fetched and cleared from its queue in the rebalance. Seen in test_worker as
    # a ledger based at 742 and the re-read of 0..741 dropped as already applied.
    h = AgentHarness("inventory", START)
    tp = (h.topic("inventory"), 0)
    h.ow.port.start_from({tp: 0})
    seeks: list[tuple[tuple[str, int], int]] = []

    async def seek(tp: tuple[str, int], offset: int) -> None:
        seeks.append((tp, offset))

    async def broker_busy(tps: Any) -> dict[tuple[str, int], int]:
        # faust's consumer calls run on its consumer thread, which a rebalance keeps busy: an
        # agent that awaits one there hangs (seen: test_recovery's restarted worker, 4 minutes).
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    h.ow.port.seek = seek  # type: ignore[method-assign]
    h.ow.port.earliest_offsets = broker_busy  # type: ignore[method-assign]
    async with h.running():
        await h.event("inventory", reserved("o-b", at(2)), offset=2)
        assert seeks == [(tp, 0)]  # read again from the start-up commit, at once
        await h.event("inventory", level("SKU-1", at(0), on_hand=2, reserved_=1), offset=0)
        await h.event("inventory", reserved("o-a", at(1)), offset=1)
        await h.event("inventory", reserved("o-b", at(2)), offset=2)  # the re-delivery after the seek
        await h.tick(START + 4 * MIN)
    assert h.exceptions() == [("STOCK_OVERSOLD", "opened")]  # all three applied
    assert h.driver.runtimes[0].ledger.low == {f"{tp[0]}:0": 3}
    assert h.ow.metrics.registry.get_sample_value("orderwatch_events_duplicate_total", {"agent": "inventory"}) in (
        None,
        0.0,
    )


async def test_the_merge_counters_start_at_zero_for_the_agent_that_merges_only() -> None:
    # rate() sees a counter's first increase only from a sample before it: the series exist from
    # the start (the SRE dashboard's panel and its live test rely on them).
    h = AgentHarness("orders", START)
    registry = h.ow.metrics.registry
    for reason in ("idle", "overflow"):
        assert registry.get_sample_value("orderwatch_merge_forced_total", {"agent": "orders", "reason": reason}) == 0
        assert (
            registry.get_sample_value("orderwatch_merge_forced_total", {"agent": "inventory", "reason": reason}) is None
        )


async def test_an_event_mode_orders_agent_releases_at_once_what_each_release_unblocks() -> None:
    # Two partitions whose records wait for each other (streams.arrivals): each record that goes
    # lets one of the other partition go, and that one the next of the first. Everything is in
    # Kafka and handed over; no tick comes. Every record must be released by the message that
    # unblocked the chain, not one per tick (a replay went at the pace of the 20 ms ticks).
    h = AgentHarness("orders", START, partitions=2, clock="event")
    h.highwaters[(h.topic("orders"), 0)] = 2
    h.highwaters[(h.topic("orders"), 1)] = 2
    async with h.running():
        await h.event("orders", created("o-2", at(2)), partition=1, offset=0)
        await h.event("orders", created("o-4", at(4)), partition=1, offset=1)
        assert h.driver.merges[1].held == 2  # orders[0] is not read yet: it may hold older ones
        await h.event("orders", created("o-1", at(1)), partition=0, offset=0)
        await h.event("orders", created("o-3", at(3)), partition=0, offset=1)
        assert {p: m.held for p, m in h.driver.merges.items()} == {0: 0, 1: 0}


async def test_a_restarted_event_mode_worker_counts_what_it_applied_before_as_arrivals() -> None:
    # A worker killed after applying orders[0]@0..1 starts again: its arrival clock is empty,
    # its table (restored from the changelog) says both were applied, and it reads them again
    # from the last commit. They are duplicates to the rules, but still arrivals of the orders
    # topic for the clock, as in the backtest: without them the clock followed only the sources
    # with new records and ran ahead of the backtest's (seen in CI: test_recovery's restarted
    # worker forwarded order.created 600-770 s behind the address agent's clock).
    h = AgentHarness("orders", START, clock="event")
    orders = (h.topic("orders"), 0)
    h.highwaters[orders] = 3
    async with h.running():
        await h.event("orders", created("o-1", at(1)), offset=0)
        await h.event("orders", created("o-2", at(2)), offset=1)
        await h.event("orders", created("o-3", at(5)), offset=2)
        await h.tick(START + 10 * MIN)
        ledger = h.driver.runtimes[0].ledger
        assert ledger.applied(f"{orders[0]}:0", 1)
        assert not ledger.applied(f"{orders[0]}:0", 2)  # at 5 min, behind a clock at 4
        first = h.driver._arrivals
        assert first is not None

        # The restart: the partition is assigned again, the worker's arrival clock is new, and
        # offset 2 is not read yet (it holds the clock at what came before it).
        h.driver.revoke([orders])
        restarted = ArrivalClock(first._tracked, first._lagging, first._source_of)
        h.driver._arrivals = h.driver._clocks.arrivals = restarted
        await h.event("orders", created("o-1", at(1)), offset=0)
        await h.event("orders", created("o-2", at(2)), offset=1)
    assert h.ow.metrics.registry.get_sample_value("orderwatch_events_duplicate_total", {"agent": "orders"}) == 2.0
    assert restarted.low() == at(2).timestamp()
    assert restarted.watermark._progress == {"orders": at(2).timestamp()}
