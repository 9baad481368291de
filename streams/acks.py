"""Acks in offset order, per input partition.

faust commits the first run of consecutive acked offsets even when it does not start at the first
unacked one (before a partition's first commit), which would commit past events still waiting in
a reorder buffer. So the agent driver holds every message back and acks it only once every offset
below it in its partition has been applied, dropped or dead-lettered (the ledger's low mark)."""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

__all__ = ["OrderedAcks"]


class _Held:
    """Messages of one topic partition waiting for their ack, smallest offset first."""

    __slots__ = ("events", "offsets")

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.events: dict[int, Any] = {}

    def add(self, offset: int, event: Any) -> None:
        if offset not in self.events:
            heapq.heappush(self.offsets, offset)
        self.events[offset] = event  # a re-delivery replaces its copy: either ack does

    def below(self, low: int) -> list[Any]:
        """Pop every message with an offset below `low`, in offset order."""
        out = []
        offsets = self.offsets
        while offsets and offsets[0] < low:
            out.append(self.events.pop(heapq.heappop(offsets)))
        return out


class OrderedAcks:
    """The messages one agent holds back, by "topic:partition"."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}

    def hold(self, tpkey: str, offset: int, event: Any) -> None:
        box = self._held.get(tpkey)
        if box is None:
            box = self._held[tpkey] = _Held()
        box.add(offset, event)

    async def ack_below(self, low: Mapping[str, int], stream: Any) -> None:
        """Ack, in offset order, every held message below its partition's `low` offset."""
        # Per event, so it must not scan what is held: each partition's heap pops from its head.
        for tpkey, mark in low.items():
            box = self._held.get(tpkey)
            if box is not None and box.offsets and box.offsets[0] < mark:
                for event in box.below(mark):
                    await stream.ack(event)

    def drop(self, tpkey: str) -> None:
        """The partition was revoked: what is held goes back to Kafka (never acked)."""
        self._held.pop(tpkey, None)
