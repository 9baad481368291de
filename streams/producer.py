"""The worker's faust producer, asking the broker for the metadata of the worker's topics instead
of every topic of the cluster (which a shared cluster holds thousands of).

Why it is needed (faust-streaming 0.15.3, aiokafka 0.14.0). aiokafka's client tracks a set of
topics for its metadata requests, and an empty set means "all topics" (`AIOKafkaClient._topics`,
client.py:154; `MetadataRequest(list(topics) if topics else None)`, client.py:286). A producer
adds a topic to the set only when it sends to a topic its metadata does not know yet
(`_wait_on_metadata`, client.py:500-505). faust's producer refreshes the metadata after each
topic it declares (`Producer.create_topic` -> `producer.client.force_metadata_update()`, "Fixes
#499", faust drivers/aiokafka.py:1374), and a worker declares its changelogs, repartition and
leader topics before it sends anything: with the set still empty, each of those refreshes is
answered with every topic of the cluster (12 answers at a worker's start-up), and since that
answer holds every topic no later send adds one, so the set stays empty for the life of the
worker: every later refresh (faust's `producer_metadata_max_age_ms`, 5 minutes, and each one
aiokafka forces on a leader change or a failed send) lists every topic again. aio-libs/aiokafka
issue #440 ("Producer sends metadata requests about all topics on kafka broker") describes it;
its maintainer agreed with the reporter's workaround, `producer.client.set_topics(...)` before
the producer starts, which is what `NamedTopicsProducer` does.

The topics are the worker's own that exist before faust starts (`orderwatch topics create` or
the worker's start-up check made them): its input topics, order-exceptions, orders-dlq and its
internal topics. Those it sends to later (the changelogs faust creates) join the set at their
first send, as aiokafka adds any topic its metadata lacks. The input topics are in it although
the producer never writes them: faust's router asks the producer for their partitions
(`PartitionAssignor.external_key_store` -> `Producer.key_partition`, the order probe's owner
URL), which a producer that only knew the topics it sends to could not answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Producer

__all__ = ["NamedTopicsApp", "NamedTopicsProducer"]


class NamedTopicsProducer(Producer):
    """faust's aiokafka producer whose metadata requests name `topics` (and those it sends to)."""

    topics: tuple[str, ...] = ()
    """Set by NamedTopicsApp; empty: faust's own behaviour (every topic of the cluster)."""

    def _new_producer(self, transactional_id: str | None = None) -> Any:
        producer = super()._new_producer(transactional_id)
        if self.topics:
            # Before start(): the bootstrap asks for no topic, and the first refresh names these.
            producer.client.set_topics(self.topics)
        return producer


class NamedTopicsApp(faust.App):
    """A faust app whose producer is a `NamedTopicsProducer` naming `producer_topics`."""

    def __init__(self, id: str, *, producer_topics: Iterable[str] = (), **options: Any) -> None:
        super().__init__(id, **options)
        self.producer_topics = tuple(sorted(set(producer_topics)))

    def _new_producer(self) -> NamedTopicsProducer:
        # As faust.App._new_producer (`transport.create_producer`: `transport.Producer(transport,
        # **kwargs)`), with this module's class.
        producer = NamedTopicsProducer(self.transport, loop=self.loop, beacon=self.beacon)
        producer.topics = self.producer_topics
        return producer
