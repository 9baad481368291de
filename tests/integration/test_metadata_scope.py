"""With many other topics on the cluster, the worker's metadata requests are answered with its own
topics only: faust's producer, declaring topics and sending as the worker does (streams.consumer_port),
and the topic checks the worker and `orderwatch topics` run (streams.topics). Observed on the real
broker by recording the topics each metadata answer lists (aiokafka's connection, wrapped)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import AIOKafkaConnection
from aiokafka.protocol.metadata import MetadataRequest

from orderwatch.errors import InputError
from orderwatch.streams.consumer_port import NamedTopicsApp, NamedTopicsProducer
from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import check_topics, topic_metadata, topic_plan, wait_for_leaders
from tests.integration.conftest import BOOTSTRAP

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

STALE = 60
"""Other topics created on the cluster for each test (one partition each)."""


@dataclass
class Cluster:
    prefix: str
    stale: list[str]
    """Other topics of the cluster (one partition each)."""
    existing: list[str]
    """The worker's topics that exist before it starts (4 partitions each)."""
    declared: str
    """A topic faust creates and then writes (as a table's changelog)."""


@dataclass
class MetadataAnswers:
    """The topics listed by every metadata answer any aiokafka connection of this process gets."""

    answers: list[frozenset[str]] = field(default_factory=list)

    async def record(self, pending: Awaitable[Any]) -> Any:
        response = await pending
        self.answers.append(frozenset(t["topic"] for t in response.to_object()["topics"]))
        return response

    def listed(self) -> frozenset[str]:
        return frozenset().union(*self.answers)


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> MetadataAnswers:
    seen = MetadataAnswers()
    send = AIOKafkaConnection.send

    def recording_send(conn: AIOKafkaConnection, request: Any, expect_response: bool = True) -> Any:
        pending = send(conn, request, expect_response)
        return seen.record(pending) if isinstance(request, MetadataRequest) and expect_response else pending

    monkeypatch.setattr(AIOKafkaConnection, "send", recording_send)
    return seen


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """`STALE` other topics and two of the worker's under a fresh prefix; every topic under the
    prefix is deleted at the end."""
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    c = Cluster(
        prefix,
        [f"{prefix}stale-{i}" for i in range(STALE)],
        [f"{prefix}orders", f"{prefix}order-exceptions"],
        f"{prefix}declared-changelog",
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in c.stale] + [NewTopic(t, 4, 1) for t in c.existing])
        # As `orderwatch topics create` leaves them: every partition led and serving.
        await wait_for_leaders(Settings(kafka_bootstrap=BOOTSTRAP), c.existing)
        yield c
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


async def _as_a_worker(app: faust.App, c: Cluster, declare: str) -> AIOKafkaClient:
    """What a worker's producer does: declare a topic (faust creates it when missing, then
    refreshes the metadata), send to it and to another existing topic, and later refresh again
    (as every `producer_metadata_max_age_ms`, or as aiokafka forces on a leader change). Returns
    the producer's aiokafka client, started."""
    producer = app.producer
    await producer.start()
    await producer.create_topic(declare, 4, 1)
    await producer.send_and_wait(declare, b"k", b"x", None, None, None)
    await producer.send_and_wait(c.existing[1], b"k", b"x", None, None, None)
    client: AIOKafkaClient = producer._ensure_producer().client
    await client.force_metadata_update()
    return client


@pytest.mark.parametrize("start", ["restart", "first start"])
async def test_producer_metadata_names_only_the_worker_topics_and_those_it_sends_to(
    cluster: Cluster, answers: MetadataAnswers, start: str
) -> None:
    # A restart finds its changelog; on the first start faust creates it.
    declare = cluster.existing[0] if start == "restart" else cluster.declared
    app = NamedTopicsApp(
        f"{cluster.prefix}app", producer_topics=cluster.existing, broker=f"kafka://{BOOTSTRAP}", store="memory://"
    )
    try:
        client = await _as_a_worker(app, cluster, declare)
        assert isinstance(app.producer, NamedTopicsProducer)
        assert set(client.cluster.topics()) == {*cluster.existing, declare}
        assert answers.answers, "no metadata answer recorded: the wrapper is not on aiokafka's path"
        assert answers.listed() <= {*cluster.existing, declare}
        assert not answers.listed() & set(cluster.stale)
        # faust's router asks the producer for the partitions of an input topic it never writes
        # (the order probe's owner URL): known, as the topic is among the producer's.
        tp = app.producer.key_partition(cluster.existing[0], b"o-1")
        assert 0 <= tp.partition < 4
    finally:
        await app.producer.stop()


async def test_faust_stock_producer_lists_every_topic_for_life_which_is_why_the_worker_does_not_use_it(
    cluster: Cluster, answers: MetadataAnswers
) -> None:
    """The behaviour streams.consumer_port works around, as faust 0.15.3 / aiokafka 0.14.0 have it (a
    restarted worker, whose topics all exist): the refresh after the declaration lists every
    topic, no send adds one, so the later refresh lists every topic again. If this fails after
    an upgrade, upstream fixed it and NamedTopicsProducer may be dropped."""
    app = faust.App(f"{cluster.prefix}app", broker=f"kafka://{BOOTSTRAP}", store="memory://")
    try:
        client = await _as_a_worker(app, cluster, cluster.existing[0])
        assert set(cluster.stale) <= set(client.cluster.topics())
        assert set(cluster.stale) <= answers.answers[-1]
        assert sum(1 for a in answers.answers if set(cluster.stale) <= a) >= 2
    finally:
        await app.producer.stop()


async def test_topic_checks_ask_for_the_plan_topics_only(cluster: Cluster, answers: MetadataAnswers) -> None:
    settings = Settings(kafka_bootstrap=BOOTSTRAP, topic_prefix=cluster.prefix, app_id=f"ow-{cluster.prefix[:-1]}")
    problems = await check_topics(settings)
    plan = {s.name for s in topic_plan(settings)}
    required = {s.name for s in topic_plan(settings) if s.required}
    assert {p.topic for p in problems if p.kind == "missing"} == required - set(cluster.existing)
    # order-exceptions exists, uncompacted: described (its configs read) although listed by name only.
    assert [(p.topic, p.kind) for p in problems if p.kind != "missing"] == [(cluster.existing[1], "compaction")]
    assert answers.answers
    assert answers.listed() <= plan  # the missing plan topics come back unknown, no other topic
    assert not answers.listed() & set(cluster.stale)


async def test_topic_metadata_bad_names_repeated_names_and_none(cluster: Cluster, answers: MetadataAnswers) -> None:
    sent = cluster.existing[1]
    client = AIOKafkaClient(bootstrap_servers=BOOTSTRAP)
    await client.bootstrap()
    try:
        assert await topic_metadata(client, []) == {}
        assert not answers.answers[1:], "an empty list must send no request (it would mean every topic)"
        got = await topic_metadata(
            client,
            [sent, sent, f"{cluster.prefix}missing", "bad name/with*chars", "x" * 300],
        )
        assert set(got) == {sent}
        assert len(got[sent]["partitions"]) == 4
        missing = await topic_metadata(client, [f"{cluster.prefix}missing"])
        assert missing == {}
    finally:
        await client.close()
    assert answers.listed() <= {sent, f"{cluster.prefix}missing", "bad name/with*chars", "x" * 300}


async def test_topic_checks_with_kafka_gone_say_so() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="t-", app_id="ow-t")
    with pytest.raises(InputError, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        await check_topics(settings)
