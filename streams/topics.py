"""The topics orderwatch needs, and checking or creating them (`orderwatch topics check|create`).

The plan is derived from the settings: the contract's topics (with ORDERWATCH_TOPIC_PREFIX), the
runtime's internal ones (`streams.app.internal_topics`, named after ORDERWATCH_APP_ID) and the
changelogs of the agents' tables.

Co-partitioning. Each agent reads its inputs, its tick topic and its table's changelog as one
faust stream per partition number: partition p of every one of them is the same set of keys.
So every topic an agent reads has exactly ORDERWATCH_PARTITIONS partitions:

- orders agent: orders, payments, logistics, <app>-order-inbox, <app>-ticks-orders
- inventory agent: inventory, <app>-ticks-inventory
- address / customer / provider agents: <app>-by-<name>, <app>-ticks-<name>
- each agent's table changelog <app>-<agent>-state-changelog (faust creates it; checked if present)

The other topics (order-exceptions, blocklist, orders-dlq, order-actions) are read whole or by the
handlers and may have any count; order-exceptions and blocklist must be compacted (the latest
record of a key is its state).

A partition count is never changed here: adding partitions to a topic moves keys to other
partitions (the partition is hash(key) mod count), so an order's past events would sit in
another partition than its next ones, and the agents' state for it with them. The fix is to
recreate the topic (its records are lost: publish them again) or to start over under a new
ORDERWATCH_TOPIC_PREFIX, and this module says so instead of doing it.

The checks read the metadata of the plan's topics only, in one request that names them with
allow_auto_topic_creation=false: a missing topic comes back as unknown instead of being created
(aiokafka's own `describe_topics` sends true, and brokers default to
auto.create.topics.enable=true), and the answer does not list the cluster's other topics, which
a shared cluster holds thousands of (listing them all cost a metadata answer of every topic at
each check, and one every 0.2 s while waiting for leaders).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from orderwatch.errors import ConfigError, InputError
from orderwatch.streams.app import AGENTS, internal_topics
from orderwatch.streams.kafka_client import kafka_client_options
from orderwatch.streams.settings import Settings

__all__ = [
    "Broker",
    "Found",
    "Problem",
    "TopicSpec",
    "TopicsError",
    "check_topics",
    "create_topics",
    "describe_topics",
    "diagnose",
    "ensure_topics",
    "format_problems",
    "require_topics",
    "topic_metadata",
    "topic_plan",
    "wait_for_leaders",
]

INPUTS = ("orders", "payments", "inventory", "logistics")
COMPACTED = ("order-exceptions", "blocklist")
ANY_COUNT = ("orders-dlq", "order-exceptions", "blocklist", "order-actions")


class TopicsError(ConfigError):
    """Topics exist in a shape the worker cannot run on (partition count, compaction); the message
    is the table of what is wrong and how to fix it."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the plan."""

    name: str
    partitions: int | None
    """The exact count the agents need; None: any count (created with ORDERWATCH_PARTITIONS)."""
    create_partitions: int
    compacted: bool
    required: bool
    """False: faust creates it at start; checked only when it exists."""
    role: str


@dataclass(frozen=True)
class Found:
    """What the broker has for one topic."""

    name: str
    partitions: int
    compacted: bool
    leaderless: int
    """Partitions without a leader right now (just created, or a broker down)."""


@dataclass(frozen=True)
class Problem:
    topic: str
    kind: Literal["missing", "partitions", "compaction"]
    found: str
    expected: str
    fix: str


def changelog_topics(settings: Settings) -> list[str]:
    """The changelogs faust creates for the agents' tables (`<agent>-state` in streams.app)."""
    return [f"{settings.app_id}-{agent}-state-changelog" for agent in AGENTS]


def topic_plan(settings: Settings) -> list[TopicSpec]:
    """Every topic a worker with these settings reads or writes, with what it must look like."""
    n = settings.partitions
    plan = [TopicSpec(settings.topic(t), n, n, False, True, "input, co-partitioned") for t in INPUTS]
    for t in ANY_COUNT:
        role = "output, compacted" if t in COMPACTED else "output"
        plan.append(TopicSpec(settings.topic(t), None, n, t in COMPACTED, True, role))
    plan += [TopicSpec(t, n, n, False, True, "internal, co-partitioned") for t in internal_topics(settings)]
    plan += [TopicSpec(t, n, n, True, False, "table changelog (faust creates it)") for t in changelog_topics(settings)]
    return plan


def _plural(n: int) -> str:
    return f"{n} partition" if n == 1 else f"{n} partitions"


def diagnose(plan: Sequence[TopicSpec], found: dict[str, Found], settings: Settings) -> list[Problem]:
    """What is wrong with `found` against `plan`, one problem per topic and kind (pure)."""
    problems: list[Problem] = []
    for spec in plan:
        have = found.get(spec.name)
        shape = _plural(spec.create_partitions) + (", compacted" if spec.compacted else "")
        if have is None:
            if spec.required:
                problems.append(Problem(spec.name, "missing", "missing", shape, "orderwatch topics create"))
            continue
        if spec.partitions is not None and have.partitions != spec.partitions:
            problems.append(
                Problem(
                    spec.name,
                    "partitions",
                    _plural(have.partitions),
                    f"{_plural(spec.partitions)} (ORDERWATCH_PARTITIONS)",
                    f"recreate: kafka-topics.sh --bootstrap-server {settings.kafka_bootstrap} --delete "
                    f"--topic {spec.name}; orderwatch topics create",
                )
            )
        if spec.compacted and not have.compacted:
            problems.append(
                Problem(
                    spec.name,
                    "compaction",
                    "cleanup.policy=delete",
                    "cleanup.policy=compact",
                    f"kafka-configs.sh --bootstrap-server {settings.kafka_bootstrap} --alter --entity-type topics "
                    f"--entity-name {spec.name} --add-config cleanup.policy=compact",
                )
            )
    return problems


def format_problems(problems: Sequence[Problem]) -> str:
    """The table `topics check` prints and the worker stops with, and why counts are not fixed."""
    rows = [("topic", "found", "expected", "fix"), *((p.topic, p.found, p.expected, p.fix) for p in problems)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows]
    if any(p.kind == "partitions" for p in problems):
        lines.append(
            "A partition count cannot be changed in place: adding partitions moves keys to other partitions "
            "(hash(key) mod count), so an order's earlier events and state would sit in another partition than "
            "its next events. Recreate the topic (its records are lost: publish them again), or start over under "
            "a new ORDERWATCH_TOPIC_PREFIX."
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Broker:
    """The clients of one command: the admin client (create, configs, cluster) and a plain client
    for metadata requests aiokafka's admin client cannot send (see `describe_topics`)."""

    admin: AIOKafkaAdminClient
    client: AIOKafkaClient


class _Admin:
    """The clients of one command, closed on exit; Kafka unreachable is an InputError."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        opts = {**kafka_client_options(settings), "request_timeout_ms": 15000}
        self.broker = Broker(AIOKafkaAdminClient(**opts), AIOKafkaClient(**opts))

    async def __aenter__(self) -> Broker:
        try:
            await self.broker.admin.start()
            await self.broker.client.bootstrap()
        except KafkaError as exc:
            await self.__aexit__()
            msg = f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {type(exc).__name__}: {exc}"
            raise InputError(msg) from exc
        return self.broker

    async def __aexit__(self, *exc: object) -> None:
        await self.broker.admin.close()
        await self.broker.client.close()


async def topic_metadata(client: AIOKafkaClient, names: Iterable[str]) -> dict[str, Any]:
    """The metadata of the topics `names` that exist and answer without error, by name: one
    request naming them, with allow_auto_topic_creation=false (Kafka >= 1.0, metadata v4), so
    a missing one comes back UNKNOWN_TOPIC_OR_PARTITION instead of being created, and the
    answer lists no other topic of the cluster."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    request = MetadataRequest(wanted, allow_auto_topic_creation=False)
    response = await client.send(client.get_random_node(), request)
    return {t["topic"]: t for t in response.to_object()["topics"] if t["error_code"] == 0}


async def describe_topics(broker: Broker, names: Iterable[str]) -> dict[str, Found]:
    """Partitions, compaction and leaderless partitions of those of `names` that exist (asking
    for these topics only, see `topic_metadata`)."""
    meta = await topic_metadata(broker.client, names)
    if not meta:
        return {}
    admin = broker.admin
    policies: dict[str, str] = {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, t, {"cleanup.policy": None}) for t in meta]
    for response in await admin.describe_configs(resources):
        for res in response.to_object()["resources"]:
            for entry in res["config_entries"]:
                if entry["config_names"] == "cleanup.policy":
                    policies[res["resource_name"]] = str(entry["config_value"])
    return {
        name: Found(
            name,
            len(t["partitions"]),
            "compact" in policies.get(name, "delete").split(","),
            sum(1 for p in t["partitions"] if p["leader"] < 0 or p["error_code"] != 0),
        )
        for name, t in meta.items()
    }


async def check_topics(settings: Settings) -> list[Problem]:
    """What is wrong with the broker's topics against the plan (missing topics included)."""
    plan = topic_plan(settings)
    async with _Admin(settings) as broker:
        found = await describe_topics(broker, (s.name for s in plan))
    return diagnose(plan, found, settings)


@dataclass
class Created:
    created: list[str]
    problems: list[Problem]
    """What remains wrong after creating the missing topics (what create cannot fix)."""


async def create_topics(settings: Settings, *, replication: int | None = None, wait: float = 60.0) -> Created:
    """Create the plan's missing topics (idempotent: an existing topic is left alone, a race with
    another creator is fine), wait until each has a leader on every partition, and report what
    is still wrong. `replication`: default min(3, brokers)."""
    plan = topic_plan(settings)
    async with _Admin(settings) as broker:
        found = await describe_topics(broker, (s.name for s in plan))
        missing = [s for s in plan if s.required and s.name not in found]
        if missing:
            if replication is None:
                # The brokers the bootstrap answer named (the admin client's describe_cluster
                # would ask for the metadata of every topic to count them).
                replication = min(3, len(broker.client.cluster.brokers()) or 1)
            new = [
                NewTopic(
                    s.name,
                    s.create_partitions,
                    replication,
                    topic_configs={"cleanup.policy": "compact"} if s.compacted else {},
                )
                for s in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker or command won the race
                await broker.admin.create_topics(new)
            await _wait_for_leaders(broker, settings, [s.name for s in missing], wait)
            found = await describe_topics(broker, (s.name for s in plan))
    return Created([s.name for s in missing], diagnose(plan, found, settings))


async def _wait_for_leaders(broker: Broker, settings: Settings, names: Sequence[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = await describe_topics(broker, names)
        waiting = [n for n in names if n not in found or found[n].leaderless]
        if not waiting:
            break
        if time.monotonic() > deadline:
            msg = f"topics without a leader on every partition after {timeout:.0f} s: {', '.join(waiting)}"
            raise InputError(msg)
        await asyncio.sleep(0.2)
    # The metadata names a leader a moment before that broker serves the partition (KRaft
    # publishes the metadata image before the replica manager applies it): a produce in that
    # moment is answered NotLeaderForPartition. A ListOffsets request meets the same check, and
    # aiokafka retries it quietly, so its answer is the sign that the leaders serve.
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(n, p) for n in names for p in range(found[n].partitions)]
        await asyncio.wait_for(consumer.end_offsets(tps), max(1.0, deadline - time.monotonic()))
    except TimeoutError as exc:
        msg = f"the leaders of {', '.join(names)} did not serve their partitions within {timeout:.0f} s"
        raise InputError(msg) from exc
    finally:
        await consumer.stop()


async def wait_for_leaders(settings: Settings, names: Sequence[str], timeout: float = 60.0) -> None:
    """Return once every partition of every topic in `names` has a leader. Just-created topics
    elect theirs within a moment; a client using them before that gets NotLeaderForPartition."""
    async with _Admin(settings) as broker:
        await _wait_for_leaders(broker, settings, names, timeout)


def _raise_if(problems: Sequence[Problem], settings: Settings, what: str) -> None:
    if problems:
        msg = f"{what}:\n{format_problems(problems)}"
        raise TopicsError(msg)


async def ensure_topics(settings: Settings, *, replication: int | None = None) -> list[str]:
    """What the worker runs before it starts: create the missing topics, then stop with a
    TopicsError naming every topic in a shape the agents cannot run on. Returns the created."""
    res = await create_topics(settings, replication=replication)
    _raise_if(res.problems, settings, "the topics are not provisioned as the worker needs them")
    return res.created


async def require_topics(settings: Settings, names: Sequence[str]) -> None:
    """What `publish` runs first: every topic it is about to write exists as the plan wants
    (nothing is created), else a TopicsError saying what to run."""
    plan = [s for s in topic_plan(settings) if s.name in set(names)]
    known = {s.name for s in plan}
    plan += [TopicSpec(n, None, settings.partitions, False, True, "extra") for n in names if n not in known]
    async with _Admin(settings) as broker:
        found = await describe_topics(broker, (s.name for s in plan))
    problems = [
        p
        if p.topic in known or p.kind != "missing"
        else Problem(
            p.topic,
            p.kind,
            p.found,
            p.expected,
            f"kafka-topics.sh --bootstrap-server {settings.kafka_bootstrap} --create --topic {p.topic}",
        )
        for p in diagnose(plan, found, settings)
    ]
    _raise_if(problems, settings, "publish creates no topics, and these are not ready")
