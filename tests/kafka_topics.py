"""Per-test Kafka topics for the tests that need a few real topics of their own (handlers, the
handling agent): a fresh prefix, the topics created under it, deleted at the end."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable

import pytest

__all__ = ["BOOTSTRAP", "fresh_topics"]

BOOTSTRAP = os.environ.get("ORDERWATCH_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


@contextlib.asynccontextmanager
async def fresh_topics(
    names: Iterable[str], *, compacted: Iterable[str] = (), partitions: int = 1
) -> AsyncIterator[str]:
    """Yield a fresh topic prefix under which `names` exist (`compacted` ones compacted). Kafka
    unreachable: the test is skipped, or fails under CI (where .ci/run starts the stack)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaConnectionError

    prefix = f"t{uuid.uuid4().hex[:10]}-"
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    try:
        await admin.start()
    except KafkaConnectionError:
        await admin.close()
        if os.environ.get("CI"):
            pytest.fail(f"Kafka at {BOOTSTRAP} is not reachable: .ci/run starts it with `make stack-up`")
        pytest.skip(f"Kafka at {BOOTSTRAP} is not reachable; run `make stack-up` first")
    compact = set(compacted)
    topics = [prefix + n for n in names]
    try:
        await admin.create_topics(
            [
                NewTopic(prefix + n, partitions, 1, topic_configs={"cleanup.policy": "compact"} if n in compact else {})
                for n in names
            ]
        )
        yield prefix
        await admin.delete_topics(topics)
    finally:
        await admin.close()
