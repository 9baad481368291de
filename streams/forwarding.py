"""The repartition step: events another agent keys differently are sent on, as their original
bytes, keyed for that agent, with the upstream position (topic, partition, offset) in a header and
the upstream record's timestamp as their own.

Why the upstream timestamp: a record's timestamp says when the event arrived, and the agent
downstream merges its inputs by it (streams.merge); a forward stamped with the time it was sent
would sort behind everything a replay or a catch-up reads, while the original arrival time keeps
the interleaving the events had upstream. Control messages sent on the same topics (watermarks,
adoptions) are stamped in the same time domain for the same reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiokafka.partitioner import murmur2

from orderwatch.detectors.records import Emission
from orderwatch.detectors.topology import ROUTES, DetectorName, adoption_for, forwards
from orderwatch.schemas.events import TOPIC_OF_TYPE
from orderwatch.streams.clock import LagAwareClock
from orderwatch.streams.outputs import Outputs

__all__ = ["SOURCE_HEADER", "Forwarder", "partition_of", "upstream_of", "upstream_partition"]

TP = tuple[str, int]

SOURCE_HEADER = "orderwatch-upstream"
"""Header of a forwarded message: b"<upstream topic>:<partition>:<offset>"."""


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as every client computes it."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def upstream_of(headers: Any) -> tuple[str, int] | None:
    """(upstream partition key, offset) of a forwarded message, from its header."""
    for name, value in headers or ():
        if name == SOURCE_HEADER:
            tp, _, offset = bytes(value).decode("ascii", "replace").rpartition(":")
            try:
                return tp, int(offset)
            except ValueError:
                return None  # only workers write here; a bad header costs the dedupe, not the event
    return None


def upstream_partition(key: str) -> tuple[str, int] | None:
    """(topic, partition) of an upstream partition key as `upstream_of` gives it."""
    topic, _, number = key.rpartition(":")
    return (topic, int(number)) if topic and number.isdigit() else None


class Forwarder:
    """Sends on what other keys need, and tells the clock what is in flight to the partitions
    this worker consumes itself (until the broker acks and the agent has read past it, they lag)."""

    def __init__(
        self,
        outputs: Outputs,
        clock: LagAwareClock,
        actives: Callable[[], frozenset[TP]],
        partitions: int,
        *,
        internal_prefix: str,
    ) -> None:
        self._outputs = outputs
        self._clock = clock
        self._actives = actives
        self._partitions = partitions
        self._internal = internal_prefix
        self.arrival: dict[TP, float] = {}
        """Largest record timestamp (seconds) forwarded from each upstream partition: the time
        domain of its watermarks."""

    async def send(
        self,
        topic: str,
        key: str,
        raw: bytes,
        *,
        timestamp: float | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        """One record to `topic`, partitioned here so the clock can count it in flight."""
        kb = key.encode()
        partition = partition_of(kb, self._partitions)
        tp = (topic, partition)
        fut = await self._outputs.send(topic, kb, raw, partition=partition, headers=headers, timestamp=timestamp)
        if tp in self._actives():
            # Only this worker consumes what it owns: track nothing else.
            stamp = stored_ms(timestamp)
            self._clock.sent(tp, stamp)
            _on_done(fut, lambda offset: self._clock.delivered(tp, offset, stamp))
        return fut

    async def forward(self, ev: Any, raw: bytes, source: TP, offset: int, timestamp: float | None) -> list[Any]:
        """The sends (futures) regrouping one applied-to-be event `ev` read at `source`@`offset`."""
        targets = self.targets(ev)
        if not targets:
            return []
        if timestamp is not None and timestamp > self.arrival.get(source, float("-inf")):
            self.arrival[source] = timestamp
        # The upstream position rides along: the agent downstream dedupes re-forwards after a
        # crash by it (streams.runtime.Ledger), which survives a restart where event ids do not.
        headers = [(SOURCE_HEADER, f"{source[0]}:{source[1]}:{offset}".encode())]
        return [await self.send(t, k, raw, timestamp=timestamp, headers=headers) for t, k in targets]

    def targets(self, ev: Any) -> list[tuple[str, str]]:
        """(topic, key) an event is regrouped onto: the routing table's forwarded routes."""
        return [(self._internal + str(r.forward), str(r.key(ev))) for r in forwards(ev.type)]

    def adoption(self, agent: str, em: Emission) -> tuple[str, str] | None:
        """(topic, key) an emission of `agent` is sent to for another detector to own, if any."""
        route = adoption_for(cast(DetectorName, agent), em)
        if route is None or em.record.order_id is None:
            return None
        return self._internal + route.forward, str(route.key(em.record))

    def feeds(self, topic: Callable[[str], str]) -> dict[str, set[str]]:
        """Contract topic (named by `topic`) -> the internal topics its events are forwarded to."""
        out: dict[str, set[str]] = {}
        for r in ROUTES:
            if r.forward is not None:
                for t in r.types:
                    out.setdefault(topic(TOPIC_OF_TYPE[t]), set()).add(self._internal + r.forward)
        return out


def stored_ms(timestamp: float | None) -> int | None:
    """The record timestamp the broker keeps for a send stamped `timestamp` (seconds): faust's
    own conversion (truncation), so the agent reading it back finds the same value."""
    return int(timestamp * 1000.0) if timestamp else None


def _on_done(fut: Any, then: Callable[[int | None], None]) -> None:
    def done(f: Any) -> None:
        then(None if f.cancelled() or f.exception() is not None else int(f.result().offset))

    fut.add_done_callback(done)
