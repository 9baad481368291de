"""The consumer port against the real faust objects of the installed version: each private
attribute it reads or replaces exists with the shape it expects, written the way faust's own
code writes it. A faust upgrade that renames one fails here, not in production."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import faust
import pytest
from aiokafka.errors import MessageSizeTooLargeError, UnknownTopicOrPartitionError
from faust.assignor.client_assignment import ClientAssignment
from faust.exceptions import PartitionsMismatch, ProducerSendError
from faust.types import TP
from faust.types.tuples import FutureMessage, PendingMessage

from orderwatch.streams.consumer_port import (
    TESTED,
    ConsumerPort,
    HoldingProducerBuffer,
    NamedTopicsApp,
    NamedTopicsProducer,
    PatientTable,
    committed_offset,
    committed_offsets,
    version_mismatch,
)


@pytest.fixture
async def app() -> AsyncIterator[faust.App]:
    # Built inside the test's event loop: faust's services bind the running loop.
    app = faust.App("port-test", broker="kafka://127.0.0.1:1", store="memory://")
    yield app
    # A consumer that was never started still made its fetch thread's event loop: close it.
    thread = getattr(app._consumer, "_thread", None) if app._consumer is not None else None
    if thread is not None:
        thread.thread_loop.close()


def test_the_installed_versions_are_the_tested_ones_and_a_mismatch_names_both() -> None:
    assert version_mismatch() is None, version_mismatch()
    text = version_mismatch({"faust-streaming": "0.16.0", "aiokafka": TESTED["aiokafka"]})
    assert text is not None and "faust-streaming 0.16.0 (tested: 0.15.3)" in text
    assert "aiokafka" not in text.split("installed:")[1]
    assert "missing" in (version_mismatch({}) or "")


def test_the_version_pin_matches_the_lock() -> None:
    with open("constraints.txt", encoding="utf-8") as fh:
        lock = {line.split("==")[0]: line.split("==")[1].strip() for line in fh if "==" in line}
    assert {name: lock[name] for name in TESTED} == TESTED


async def test_committed_reads_what_faust_perform_seek_stores_offset_zero_included(app: faust.App) -> None:
    consumer = app.consumer
    port = ConsumerPort(app)
    assert port.committed(("orders", 0)) is None  # nothing sought yet: no commit known

    async def seek_to_committed() -> dict[TP, int]:  # the broker's answer, the one thing replaced
        return {TP("orders", 0): 0, TP("orders", 1): 17, TP("payments", 2): -1}

    consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    await consumer.perform_seek()  # faust's own code writes _committed_offset (0 stored as None)
    assert port.committed(("orders", 0)) == 0
    assert port.committed(("orders", 1)) == 17
    assert port.committed(("payments", 2)) is None  # -1: no commit
    assert port.committed(("orders", 3)) is None
    assert committed_offset(consumer, ("orders", 1)) == 17
    assert committed_offsets(consumer, ["orders"]) == {("orders", 0): None, ("orders", 1): 17}
    assert committed_offset(object(), ("orders", 0)) is None  # not a faust consumer: nothing known


async def test_deliver_everything_replaces_the_read_offsets_faust_filters_by(app: faust.App) -> None:
    consumer = app.consumer
    assert isinstance(consumer._read_offset, dict)  # the attribute faust's fetch loop reads
    ConsumerPort(app).deliver_everything()
    consumer._read_offset[TP("orders", 0)] = 41  # what faust writes after handing offset 41 on
    assert consumer._read_offset[TP("orders", 0)] is None  # ... and reads back: never filtered


async def test_deliver_everything_refuses_a_consumer_without_the_attribute(app: faust.App) -> None:
    del app.consumer._read_offset
    with pytest.raises(RuntimeError, match="not the one tested"):
        ConsumerPort(app).deliver_everything()


async def test_actives_is_empty_before_the_first_assignment_then_follows_the_assignor(app: faust.App) -> None:
    port = ConsumerPort(app)
    assert port.actives() == frozenset()
    # What faust's on_assignment stores (decoded from the group's assignment).
    app.assignor._assignment = ClientAssignment(actives={"orders": [1], "payments": [1]}, standbys={"orders": [0]})
    assert port.actives() == {("orders", 1), ("payments", 1)}


async def test_highwater_is_none_until_the_consumer_has_fetched(app: faust.App) -> None:
    port = ConsumerPort(app)
    assert port.highwater(("orders", 0)) is None  # not started: no answer, no exception


async def test_generation_and_rebalancing_are_the_apps(app: faust.App) -> None:
    port = ConsumerPort(app)
    assert port.generation() == app.consumer_generation_id
    assert port.rebalancing() is False


async def test_resume_offset_is_faust_s_commit_else_the_one_the_worker_read_at_start_up(app: faust.App) -> None:
    port = ConsumerPort(app)
    assert port.resume_offset(("orders", 0)) is None  # nothing known: the caller goes on without
    port.start_from({("orders", 0): 0, ("orders", 1): 5})
    assert port.resume_offset(("orders", 0)) == 0
    assert port.resume_offset(("orders", 2)) is None

    async def seek_to_committed() -> dict[TP, int]:
        return {TP("orders", 1): 17}

    app.consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    await app.consumer.perform_seek()
    assert port.resume_offset(("orders", 1)) == 17  # faust's, once it knows one


async def test_resume_offset_never_goes_below_the_log_start_retention_left(app: faust.App) -> None:
    # A worker down longer than retention: its commit (0) was deleted; waiting for it is forever.
    port = ConsumerPort(app)
    port.start_from({("orders", 0): 0, ("orders", 1): 900}, log_starts={("orders", 0): 742, ("orders", 1): 742})
    assert port.resume_offset(("orders", 0)) == 742
    assert port.resume_offset(("orders", 1)) == 900


async def test_named_topics_app_builds_a_producer_whose_client_tracks_its_topics() -> None:
    """faust's private `_new_producer` methods, as NamedTopicsApp and NamedTopicsProducer override
    them: the aiokafka producer comes out of faust with its client naming the worker's topics
    before it starts (an empty set would mean every topic of the cluster)."""
    app = NamedTopicsApp("port-test", producer_topics=["b", "a", "b"], broker="kafka://127.0.0.1:1")
    producer = app.producer
    assert isinstance(producer, NamedTopicsProducer)
    assert producer.topics == ("a", "b")
    aio = producer._new_producer()
    try:
        assert aio.client._topics == {"a", "b"}
    finally:
        await aio.stop()
    bare = NamedTopicsApp("port-test", broker="kafka://127.0.0.1:1").producer
    assert bare.topics == ()
    aio = bare._new_producer()
    try:
        assert aio.client._topics == set()  # faust's own behaviour, untouched
    finally:
        await aio.stop()


class _RefusingChannel:
    """A channel the broker refuses `refusals` times (as faust's aiokafka producer raises it),
    then takes: records what it took, in order."""

    def __init__(self, refusals: int, error: Exception) -> None:
        self.refusals = refusals
        self.error = error
        self.took: list[str] = []

    async def publish_message(self, fut: FutureMessage, wait: bool = False) -> None:
        if self.refusals:
            self.refusals -= 1
            raise ProducerSendError(f"Error while sending: {self.error!r}") from self.error
        self.took.append(str(fut.message.value))


def _record(channel: _RefusingChannel, value: str) -> FutureMessage:
    return FutureMessage(PendingMessage(channel, None, value, None, None, None, None, None, None, None))  # type: ignore[arg-type]


async def test_the_holding_buffer_sends_a_refused_record_again_before_those_behind_it() -> None:
    """faust's ProducerBuffer task died on the first error (and the worker with it): this one
    holds a record the broker cannot take yet, in order."""
    app = NamedTopicsApp("port-test", producer_topics=["a"], broker="kafka://127.0.0.1:1")
    buffer = app.producer.buffer
    assert isinstance(buffer, HoldingProducerBuffer)
    buffer.retry_seconds = 0.01
    channel = _RefusingChannel(3, UnknownTopicOrPartitionError())
    await buffer.start()
    try:
        for value in ("first", "second", "third"):
            buffer.put(_record(channel, value))
        for _ in range(500):
            if len(channel.took) == 3:
                break
            await asyncio.sleep(0.01)
        assert channel.took == ["first", "second", "third"]
        assert buffer.held == 3
        assert not buffer.crash_reason
    finally:
        await buffer.stop()


async def test_the_holding_buffer_still_crashes_on_an_error_of_the_record() -> None:
    app = NamedTopicsApp("port-test", producer_topics=["a"], broker="kafka://127.0.0.1:1")
    buffer = app.producer.buffer
    channel = _RefusingChannel(1, MessageSizeTooLargeError())
    await buffer.start()
    try:
        buffer.put(_record(channel, "huge"))
        for _ in range(500):
            if buffer.crash_reason is not None:
                break
            await asyncio.sleep(0.01)
        assert isinstance(buffer.crash_reason, ProducerSendError)
        assert channel.took == []
    finally:
        await buffer.stop()


class _Snapshot:
    """Partition counts as aiokafka's group-coordinator snapshot holds them (what faust's
    `Consumer.topic_partitions` answers from)."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def __call__(self, topic: str) -> int | None:
        return self.counts.get(topic)


async def test_a_table_checks_its_changelog_s_partitions_only_once_the_snapshot_knows_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """faust's private `_verify_source_topic_partitions`, as PatientTable overrides it: a broker
    back from an outage can leave 0 partitions for a changelog in the snapshot, on which faust's
    check raised PartitionsMismatch at every write (agents crash-looping for minutes)."""
    app = NamedTopicsApp("port-test", broker="kafka://127.0.0.1:1", store="memory://")
    try:
        table = app.Table("state", partitions=4)
        assert isinstance(table, PatientTable)
        changelog = table.changelog_topic_name
        snapshot = _Snapshot({"orders": 4, changelog: 0})
        monkeypatch.setattr(app.consumer, "topic_partitions", snapshot)
        table._verify_source_topic_partitions("orders")  # not known yet: left for later
        assert "orders" not in table._verified_source_topics_for_partitions
        with pytest.raises(PartitionsMismatch):  # what faust's own table does with it
            faust.Table._verify_source_topic_partitions(table, "orders")
        snapshot.counts[changelog] = 4  # the next refresh
        table._verify_source_topic_partitions("orders")
        assert "orders" in table._verified_source_topics_for_partitions
        snapshot.counts["payments"] = 8  # a real mismatch still stops the agent
        with pytest.raises(PartitionsMismatch):
            table._verify_source_topic_partitions("payments")
    finally:
        thread = getattr(app._consumer, "_thread", None) if app._consumer is not None else None
        if thread is not None:
            thread.thread_loop.close()
