"""The one place that reaches into faust's and aiokafka's consumer: every private attribute the
project reads or replaces, and the consumer calls the runtime makes, behind named methods.

faust-streaming has no public accessor for the committed offsets it sought to, nor a switch for
its drop-what-was-read filter; both are private attributes that a faust upgrade may rename. So
they live here only, pinned to the versions tested (`TESTED`): a worker on other versions logs a
warning at start-up naming both, and tests/streams/test_consumer_port.py checks each accessor
against the real faust objects of the installed version.

The producer's side lives here for the same reason: `NamedTopicsApp` and `NamedTopicsProducer`
override faust's private `_new_producer` methods so that the worker's producer asks the broker
for the metadata of the worker's topics instead of every topic of the cluster
(tests/integration/test_metadata_scope.py checks them on the real broker).

Why (faust-streaming 0.15.3, aiokafka 0.14.0). aiokafka's client tracks a set of topics for its
metadata requests, and an empty set means "all topics" (`AIOKafkaClient._topics`, client.py:154;
`MetadataRequest(list(topics) if topics else None)`, client.py:286). A producer adds a topic to
the set only when it sends to a topic its metadata does not know yet (`_wait_on_metadata`,
client.py:500-505). faust's producer refreshes the metadata after each topic it declares
(`Producer.create_topic` -> `producer.client.force_metadata_update()`, "Fixes #499", faust
drivers/aiokafka.py:1374), and a worker declares its changelogs, repartition and leader topics
before it sends anything: with the set still empty, each of those refreshes is answered with
every topic of the cluster (12 answers at a worker's start-up), and since that answer holds every
topic no later send adds one, so the set stays empty for the life of the worker: every later
refresh (faust's `producer_metadata_max_age_ms`, 5 minutes, and each one aiokafka forces on a
leader change or a failed send) lists every topic again. aio-libs/aiokafka issue #440 ("Producer
sends metadata requests about all topics on kafka broker") describes it; its maintainer agreed
with the reporter's workaround, `producer.client.set_topics(...)` before the producer starts,
which is what `NamedTopicsProducer` does.

The topics are the worker's own that exist before faust starts (`orderwatch topics create` or the
worker's start-up check made them, `streams.app.producer_topics`): its input topics,
order-exceptions, orders-dlq and its internal topics. Those faust creates (the tables'
changelogs) join the set as faust declares them at start-up (`NamedTopicsProducer.create_topic`),
not at their first send: a first send waits for the topic's metadata, and in an outage it gave up
after the request timeout and took the worker down. They are not named from the start, as a
refresh naming a topic faust has not created yet logs "not found" at ERROR. The input topics are
in it although the producer never writes them: faust's router asks the producer for their
partitions (`PartitionAssignor.external_key_store` -> `Producer.key_partition`, the order probe's
owner URL), which a producer knowing only the topics it writes could not answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Producer
from faust.transport.producer import ProducerBuffer
from faust.types import TP as FaustTP

from orderwatch.streams.kafka_client import retry_later

__all__ = [
    "TESTED",
    "ConsumerPort",
    "HoldingProducerBuffer",
    "NamedTopicsApp",
    "NamedTopicsProducer",
    "PatientTable",
    "committed_offset",
    "committed_offsets",
    "version_mismatch",
]

log = logging.getLogger(__name__)

TP = tuple[str, int]

TESTED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}
"""The versions this port was written and tested against (constraints.txt pins the same)."""


def version_mismatch(installed: Mapping[str, str | None] | None = None) -> str | None:
    """A sentence naming the tested and installed versions when they differ, else None."""
    if installed is None:
        installed = {name: _installed(name) for name in TESTED}
    wrong = {name: installed.get(name) for name, want in TESTED.items() if installed.get(name) != want}
    if not wrong:
        return None
    found = ", ".join(f"{name} {got or 'missing'} (tested: {TESTED[name]})" for name, got in sorted(wrong.items()))
    return (
        f"streams.consumer_port reads private consumer attributes checked only against "
        f"{', '.join(f'{n} {v}' for n, v in TESTED.items())}; installed: {found}. "
        "Run tests/streams/test_consumer_port.py before trusting offsets and rebalances."
    )


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def committed_offset(consumer: Any, tp: TP) -> int | None:
    """The committed offset faust sought to (or last committed) for `tp`, None when it knows of
    no commit. faust stores offset 0 as None (its `perform_seek` maps falsy offsets to None), so
    a key present with None is a commit at 0, a missing key no commit."""
    offsets = getattr(consumer, "_committed_offset", None)
    if offsets is None:
        return None
    key = FaustTP(tp[0], tp[1])
    if key not in offsets:  # `in`, not get: faust's mapping is a defaultdict
        return None
    off = offsets[key]
    if off is None:
        return 0
    return int(off) if off >= 0 else None


def committed_offsets(consumer: Any, topics: Iterable[str]) -> dict[TP, int | None]:
    """Every committed offset faust holds for a partition of `topics` (raw: None is 0)."""
    wanted = frozenset(topics)
    offsets = getattr(consumer, "_committed_offset", None) or {}
    return {(tp.topic, tp.partition): off for tp, off in list(offsets.items()) if tp.topic in wanted}


class _NothingRead(dict):  # type: ignore[type-arg]
    """faust's per-partition 'read up to' offsets, always answering 'nothing read yet'."""

    def __getitem__(self, key: Any) -> None:
        return None


class ConsumerPort:
    """The consumer of one faust app, as the runtime needs it."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._start: dict[TP, int] = {}
        self._log_start: dict[TP, int] = {}
        mismatch = version_mismatch()
        if mismatch is not None:
            log.warning("%s", mismatch)

    def deliver_everything(self) -> None:
        """Make faust deliver every message it fetches, re-deliveries included.

        faust drops a fetched message at or below the last offset it handed to a stream. After a
        rebalance it resumes fetching before it seeks back to the committed offset (faust-streaming
        issue #216), and a batch fetched before the seek keeps moving that mark past the offsets
        the seek is about to re-read, so they are dropped: seen as a joining or restarted worker
        whose order topics started at offset 5, 6 or 18 while 0 was committed, and false
        exceptions for the events it never saw. The runtime dedupes by offset and event id anyway
        (Ledger, PartitionRuntime.waiting), so faust's own filter is switched off. Must run before
        the worker starts its fetcher (which binds the mapping's methods once)."""
        consumer: Any = self._app.consumer
        if not hasattr(consumer, "_read_offset"):
            msg = "faust's consumer has no _read_offset: this faust version is not the one tested (see TESTED)"
            raise RuntimeError(msg)
        consumer._read_offset = _NothingRead()

    def actives(self) -> frozenset[TP]:
        """The partitions this worker actively owns (empty before the first assignment)."""
        try:
            return frozenset((tp.topic, tp.partition) for tp in self._app.assignor.assigned_actives())
        except Exception:  # faust raises before its first assignment (no assignment object yet)
            return frozenset()

    def highwater(self, tp: TP) -> int | None:
        """The partition's highwater (offset of the next message to be written), None before the
        consumer has fetched it."""
        try:
            hw = self._app.consumer.highwater(FaustTP(tp[0], tp[1]))
        except Exception:  # consumer not started, or the partition unknown to it yet
            return None
        return int(hw) if hw is not None else None

    def committed(self, tp: TP) -> int | None:
        """See `committed_offset`."""
        try:
            consumer = self._app.consumer
        except Exception:  # the app has no consumer yet (not configured to run one)
            return None
        return committed_offset(consumer, tp)

    def start_from(self, committed: Mapping[TP, int], log_starts: Mapping[TP, int] | None = None) -> None:
        """What the worker read before faust started (streams.worker.run_worker): the group's
        committed offsets (every partition has one once pinned) and each partition's log start
        offset. `resume_offset` answers from them while faust does not know a commit yet."""
        self._start = dict(committed)
        self._log_start = dict(log_starts or {})

    def resume_offset(self, tp: TP) -> int | None:
        """Where reading `tp` must start, as far as known without asking the broker: the
        committed offset faust sought to, else the group's commit at start-up, else None; never
        below the partition's log start at start-up (what retention deleted cannot be read again,
        and a reader waiting for it would wait forever).

        faust resumes fetching before it seeks to the committed offsets (faust-streaming issue
        #216), so an agent's first message of a partition can come before faust knows its
        commit. The agent loop does not ask the broker then: faust runs such calls on its
        consumer thread, which a rebalance keeps busy while it waits for the agents, and the
        loop must not wait on that (a 4-minute stall once blamed on it turned out to be
        retention deleting a test's input topics, docs/operations.md; the hazard stays). The
        start-up commit may be older than a later member's: reading from it reads more again,
        which the runtime drops as applied, never less."""
        committed = self.committed(tp)
        if committed is None:
            committed = self._start.get(tp)
        if committed is None:
            return None
        return max(committed, self._log_start.get(tp, 0))

    async def seek(self, tp: TP, offset: int) -> None:
        await self._app.consumer.seek(FaustTP(tp[0], tp[1]), offset)

    async def earliest_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        consumer: Any = self._app.consumer
        earliest = await consumer.earliest_offsets(*(FaustTP(t, p) for t, p in tps))
        return {(tp.topic, tp.partition): int(off) for tp, off in earliest.items()}

    async def seek_wait(self, targets: Mapping[TP, int]) -> None:
        """Seek each partition and wait until the fetcher has moved there."""
        consumer: Any = self._app.consumer
        await consumer.seek_wait({FaustTP(t, p): off for (t, p), off in targets.items()})

    def generation(self) -> int:
        return int(self._app.consumer_generation_id)

    def rebalancing(self) -> bool:
        return bool(self._app.rebalancing)


class HoldingProducerBuffer(ProducerBuffer):
    """faust's buffer of the records it sends in the background (every table write's changelog
    record), which holds a record the broker cannot take yet instead of dying.

    faust's `_handle_pending` task sends one record at a time and raises whatever the send
    raises: a mode service task that raises crashes its service, and the producer buffer's crash
    stopped the worker (exit 1). An outage raises there: aiokafka waits for the metadata of a
    topic it has not sent to yet and gives up after the producer's request timeout
    (UnknownTopicOrPartitionError), and a record waiting for room in a full batch gives up after
    it too (KafkaTimeoutError). Such a record is sent again after `retry_seconds`, the records
    behind it waiting: a changelog is a table's writes in the order they were made, and a later
    write of a key must not come before an earlier one. Any other error crashes as before."""

    retry_seconds = 1.0
    held = 0
    """Records refused by the broker so far (each counted once per refusal)."""
    holding = False
    """A refused record waits to be sent again (it has left faust's queue)."""

    async def _send_pending(self, fut: Any) -> None:
        while True:
            try:
                await super()._send_pending(fut)
                self.holding = False
                return
            except Exception as exc:
                if not retry_later(exc):
                    raise
                if self.should_stop:  # unsent: on_stop counted it (raised, it would crash the stop)
                    return
                self.holding = True
                self.held += 1
                if self.held == 1 or self.held % 100 == 0:
                    log.warning(
                        "producer buffer: the broker did not take a changelog record (%r, %s times so far):"
                        " holding it and the %s records behind it",
                        exc,
                        self.held,
                        self.size,
                    )
                await self.sleep(self.retry_seconds)
                if self.should_stop:
                    return

    async def on_stop(self) -> None:
        unsent = self.size + self.holding
        if unsent:
            # faust's flush gives up within 0.1 s of no progress: what stays here never reaches
            # the changelog (streams.changelog_acks counts it as written, not acknowledged).
            log.warning("producer buffer: %s records not sent at the stop", unsent)
        await super().on_stop()


class NamedTopicsProducer(Producer):
    """faust's aiokafka producer whose metadata requests name `topics` (and those it sends to or
    declares), with a `HoldingProducerBuffer`."""

    topics: tuple[str, ...] = ()
    """Set by NamedTopicsApp; empty: faust's own behaviour (every topic of the cluster)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # As faust's Producer.__init__ builds its buffer (not threaded: faust's default).
        self.buffer = HoldingProducerBuffer(loop=self.loop, beacon=self.beacon)
        self.buffer.app = self.app

    def _new_producer(self, transactional_id: str | None = None) -> Any:
        producer = super()._new_producer(transactional_id)
        if self.topics:
            # Before start(): the bootstrap asks for no topic, and the first refresh names these.
            producer.client.set_topics(self.topics)
        return producer

    async def create_topic(self, topic: str, partitions: int, replication: int, **kwargs: Any) -> None:
        await super().create_topic(topic, partitions, replication, **kwargs)
        if self.topics:
            # The topic exists now (faust declares each topic it writes at start-up, the tables'
            # changelogs among them): learn its partitions while the broker is there. aiokafka
            # asks for a topic's metadata at the first send to it, and a first send during an
            # outage waited for it until the request timeout, then failed.
            await self._ensure_producer().partitions_for(topic)


class PatientTable(faust.Table):  # type: ignore[type-arg]
    """faust's Table, whose check that its changelog has as many partitions as a source topic
    waits until the consumer knows both counts.

    faust compares the counts in aiokafka's group-coordinator metadata snapshot at a table's first
    write from each source topic, and raises PartitionsMismatch when they differ. A broker that
    comes back from an outage can answer a metadata request before it has loaded some topics, and
    the snapshot then holds 0 partitions for them (`partitions_for_topic(...) or []`) until the
    next refresh, 5 minutes later: the agents writing from a source topic not checked yet
    crashed on every message until then. A topic has at least one partition, so 0 means "not
    known yet": the check is left for a later write, by when it is."""

    def _verify_source_topic_partitions(self, source_topic: str) -> None:
        if source_topic in self._verified_source_topics_for_partitions:
            return
        consumer = self.app.consumer
        if consumer.topic_partitions(source_topic) == 0 or consumer.topic_partitions(self.changelog_topic_name) == 0:
            return
        super()._verify_source_topic_partitions(source_topic)


class NamedTopicsApp(faust.App):
    """A faust app whose producer is a `NamedTopicsProducer` naming `producer_topics`, and whose
    tables are `PatientTable`s."""

    def __init__(self, id: str, *, producer_topics: Iterable[str] = (), **options: Any) -> None:
        options.setdefault("Table", PatientTable)
        super().__init__(id, **options)
        self.producer_topics = tuple(sorted(set(producer_topics)))

    def _new_producer(self) -> NamedTopicsProducer:
        # As faust.App._new_producer (`transport.create_producer`: `transport.Producer(transport,
        # **kwargs)`), with this module's class.
        producer = NamedTopicsProducer(self.transport, loop=self.loop, beacon=self.beacon)
        producer.topics = self.producer_topics
        return producer
