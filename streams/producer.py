"""The worker's faust producer, asking the broker for the metadata of its own topics only instead
of every topic of the cluster (which a shared cluster holds thousands of).

Why it is needed (faust-streaming 0.15.3, aiokafka 0.14.0). aiokafka's client tracks a set of
topics for its metadata requests and an empty set means "all topics" (`AIOKafkaClient._topics`,
client.py:154, `MetadataRequest(list(topics) if topics else None)` at client.py:286). A producer
fills that set only when it sends to a topic its metadata does not know yet (client.py:500-505,
`_wait_on_metadata`). faust's producer refreshes the metadata after every topic it declares
(`Producer.create_topic` -> `producer.client.force_metadata_update()`, "Fixes #499", faust
drivers/aiokafka.py:1374), which the worker does for its changelogs and internal topics before
it sends anything: with the set still empty, each of those refreshes lists every topic of the
cluster, and once the answer holds them all no send ever adds a topic, so the set stays empty
for the life of the worker. Every later refresh (faust's `producer_metadata_max_age_ms`, 5
minutes, and each one aiokafka forces on a leader change or a send error) then lists every
topic again. aio-libs/aiokafka issue #440 ("Producer sends metadata requests about all topics")
names this; its maintainer's workaround is to give the producer's client its topics, as here.

`NamedTopicsProducer` adds each topic faust declares to the client's set before faust declares
it, so the set is never empty when a refresh runs: refreshes name the declared topics and, as
aiokafka adds them, the topics the worker sends to. faust's own refresh after the declaration
is kept (the fix of faust #499 it stands for still holds: the partitions of a topic the worker
just created are known before the first send). `NamedTopicsApp` is the faust app that builds
its producer from this class, as `faust.App._new_producer` builds faust's own.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers.aiokafka import Producer

__all__ = ["NamedTopicsApp", "NamedTopicsProducer"]


class NamedTopicsProducer(Producer):
    """faust's aiokafka producer whose metadata requests name its topics (see the module)."""

    async def create_topic(self, topic: str, partitions: int, replication: int, **kwargs: Any) -> None:
        # Awaited so that faust's own existence check below finds the topic in the answer and
        # skips the CreateTopics round trip when it exists (an update already in flight may
        # answer without it: faust then asks the controller, which says it exists).
        await self._ensure_producer().client.add_topic(topic)
        await super().create_topic(topic, partitions, replication, **kwargs)


class NamedTopicsApp(faust.App):
    """A faust app whose producer is a `NamedTopicsProducer`."""

    def _new_producer(self) -> NamedTopicsProducer:
        # As faust.App._new_producer (`transport.create_producer`, which is `transport.Producer(
        # transport, **kwargs)`), with this module's class.
        return NamedTopicsProducer(self.transport, loop=self.loop, beacon=self.beacon)
