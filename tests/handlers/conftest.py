"""Fixtures for the handler tests against the real local stack (`make stack-up`): a Redis key
prefix and Kafka topics of their own per test, removed afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.settings import Settings

REDIS_URL = os.environ.get("ORDERWATCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BOOTSTRAP = os.environ.get("ORDERWATCH_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def _unreachable(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not reachable: .ci/run starts it with `make stack-up`")
    pytest.skip(f"{what} is not reachable; run `make stack-up` first")


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (RedisConnectionError, OSError):
        await client.aclose()
        _unreachable(f"Redis at {REDIS_URL}")
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; every key under it is deleted at the end."""
    prefix = f"t{uuid.uuid4().hex}:"
    yield prefix
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*", count=500)]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
async def kafka_topics() -> AsyncIterator[Settings]:
    """Settings with a fresh topic prefix under which `order-actions` and the compacted
    `blocklist` exist (one partition each); both are deleted at the end."""
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    try:
        await admin.start()
    except KafkaConnectionError:
        await admin.close()
        _unreachable(f"Kafka at {BOOTSTRAP}")
    names = [prefix + "order-actions", prefix + "blocklist"]
    try:
        await admin.create_topics(
            [
                NewTopic(names[0], 1, 1),
                NewTopic(names[1], 1, 1, topic_configs={"cleanup.policy": "compact"}),
            ]
        )
        yield Settings(kafka_bootstrap=BOOTSTRAP, topic_prefix=prefix, partitions=1)
        await admin.delete_topics(names)
    finally:
        await admin.close()


@pytest.fixture
async def producer(kafka_topics: Settings) -> AsyncIterator[AIOKafkaProducer]:
    prod = AIOKafkaProducer(bootstrap_servers=kafka_topics.kafka_bootstrap, acks="all", enable_idempotence=True)
    await prod.start()
    yield prod
    await prod.stop()
