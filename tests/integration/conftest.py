"""Fixtures for tests against the real local stack (`make stack-up`): each test gets its own
topic prefix, so tests never see each other's messages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import ensure_topics

BOOTSTRAP = os.environ.get("ORDERWATCH_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PARTITIONS = 4
INPUT_TOPICS = ("orders", "payments", "inventory", "logistics")


def _kafka_up() -> bool:
    host, _, port = BOOTSTRAP.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def _require_stack() -> Iterator[None]:
    if not _kafka_up():
        if os.environ.get("CI"):
            pytest.fail(f"Kafka is not reachable at {BOOTSTRAP}: .ci/run starts it with `make stack-up`")
        pytest.skip(f"Kafka is not reachable at {BOOTSTRAP}; run `make stack-up` first")
    yield


@pytest.fixture
async def kafka_settings() -> AsyncIterator[Settings]:
    """Settings with a fresh topic prefix; every topic of the plan exists as `orderwatch topics
    create` makes it (co-partitioned, compacted where needed), each partition with a leader."""
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    app_id = f"orderwatch-{prefix[:-1]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        settings = Settings(kafka_bootstrap=BOOTSTRAP, topic_prefix=prefix, partitions=PARTITIONS, app_id=app_id)
        await ensure_topics(settings, replication=1)
        yield settings
        # The test's topics and the worker's internal ones (changelogs, repartitions, ticks) go:
        # a single broker keeps a file open per partition, and a suite's worth of them left behind
        # exhausts its 20,000 open files (seen: the shared broker died of it mid-run).
        with contextlib.suppress(KafkaError):
            mine = [t for t in await admin.list_topics() if t.startswith((prefix, app_id + "-"))]
            if mine:
                await admin.delete_topics(mine)
    finally:
        await admin.close()
    await asyncio.sleep(0)
