"""OrderedAcks: a message is acked only once every offset below it in its partition is done, and
acks go out in offset order (the agents' real path runs in tests/streams/test_agents.py)."""

from __future__ import annotations

from typing import Any

from orderwatch.streams.acks import OrderedAcks


class _Acked:
    """What a faust stream's `ack` was called with, in order."""

    def __init__(self) -> None:
        self.acked: list[Any] = []

    async def ack(self, event: Any) -> bool:
        self.acked.append(event)
        return True


async def test_acks_go_out_in_offset_order_and_only_below_the_low_mark() -> None:
    acks, stream = OrderedAcks(), _Acked()
    for offset in (3, 0, 2, 1):
        acks.hold("orders:0", offset, f"orders@{offset}")
    acks.hold("payments:0", 0, "payments@0")
    await acks.ack_below({"orders:0": 2}, stream)
    assert stream.acked == ["orders@0", "orders@1"]
    await acks.ack_below({"orders:0": 2, "payments:0": 1}, stream)  # nothing new below 2
    assert stream.acked == ["orders@0", "orders@1", "payments@0"]
    await acks.ack_below({"orders:0": 10}, stream)
    assert stream.acked[3:] == ["orders@2", "orders@3"]


async def test_a_redelivered_offset_is_acked_once_with_its_latest_copy() -> None:
    acks, stream = OrderedAcks(), _Acked()
    acks.hold("orders:0", 0, "first copy")
    acks.hold("orders:0", 0, "re-delivered copy")
    await acks.ack_below({"orders:0": 1}, stream)
    assert stream.acked == ["re-delivered copy"]


async def test_a_revoked_partition_acks_nothing_it_held() -> None:
    acks, stream = OrderedAcks(), _Acked()
    acks.hold("orders:0", 0, "orders@0")
    acks.hold("orders:1", 0, "orders1@0")
    acks.drop("orders:0")
    await acks.ack_below({"orders:0": 5, "orders:1": 5}, stream)
    assert stream.acked == ["orders1@0"]
