"""WatermarkSender: what each owned upstream partition tells the repartition partitions another
worker owns."""

from __future__ import annotations

from orderwatch.schemas.control import Watermark, decode_control
from orderwatch.streams.clock import LagAwareClock
from orderwatch.streams.forwarding import Forwarder
from orderwatch.streams.outputs import MemoryOutputs
from orderwatch.streams.watermarks import WatermarkSender

ORDERS = ("orders", 0)
OWNED = frozenset({ORDERS, ("by-customer", 0)})  # by-customer[1] is the other worker's


def sender(aligned: float | None) -> tuple[WatermarkSender, MemoryOutputs, LagAwareClock]:
    out = MemoryOutputs()
    clock = LagAwareClock(mode="event", highwater=lambda tp: 10)
    forwarder = Forwarder(out, clock, lambda: OWNED, 2, internal_prefix="app-")
    send = WatermarkSender(
        out,
        clock,
        forwarder,
        lambda: OWNED,
        {"orders": ["by-customer"]},
        2,
        aligned=(lambda: aligned) if aligned is not None else None,
    )
    return send, out, clock


def marks(out: MemoryOutputs) -> list[tuple[int | None, Watermark]]:
    found = []
    for rec in out.records:
        control = decode_control(rec.headers, rec.value)
        assert isinstance(control, Watermark)
        found.append((rec.partition, control))
    return found


async def test_a_watermark_says_how_far_the_upstream_partition_went_to_the_other_workers_partitions() -> None:
    send, out, clock = sender(None)
    clock.observe(ORDERS, 3, 500.0)
    assert await send.send() == 1
    [(partition, mark)] = marks(out)
    assert partition == 1  # by-customer[0] is read here: its agent sees the source itself
    got = (mark.source_topic, mark.source_partition, mark.forwarded_upto, mark.caught_up)
    assert got == ("orders", 0, 500.0, False)


async def test_in_event_mode_a_watermark_goes_no_further_than_the_senders_arrival_clock() -> None:
    # orders[0] delivered an event at 500, but a record of it still to come may be older (an
    # order delivered 30 minutes late): this worker's own agents wait for it at the arrival
    # clock (200 here), so the other worker's must too. Seen in bench_scaleout: order.created
    # forwarded 29 minutes behind the watermark that had let the other worker's agents on.
    send, out, clock = sender(200.0)
    clock.observe(ORDERS, 3, 500.0)
    await send.send()
    [(_, mark)] = marks(out)
    assert mark.forwarded_upto == 200.0
