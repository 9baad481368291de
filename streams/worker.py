"""`orderwatch worker`: make sure every topic exists, then run the faust worker until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from detectors.config import RulesConfig
from streams.app import create_app, internal_topics
from streams.publish import kafka_client_options
from streams.settings import Settings

__all__ = ["ensure_topics", "run_worker"]

log = logging.getLogger("orderwatch.worker")

CONTRACT_TOPICS = (
    "orders",
    "payments",
    "inventory",
    "logistics",
    "orders-dlq",
    "order-exceptions",
    "blocklist",
    "order-actions",
)
COMPACTED = ("order-exceptions", "blocklist")


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the contract's topics (with the prefix) and the runtime's internal ones if missing,
    all with `settings.partitions` partitions (the co-partitioning the agents rely on)."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {
            settings.topic(t): (settings.topic(t) in {settings.topic(c) for c in COMPACTED}) for t in CONTRACT_TOPICS
        }
        wanted.update(dict.fromkeys(internal_topics(settings), False))
        missing = [
            NewTopic(name, settings.partitions, 1, topic_configs={"cleanup.policy": "compact"} if compact else {})
            for name, compact in wanted.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(missing)
        return [t.name for t in missing]
    finally:
        await admin.close()


def run_worker(settings: Settings, rules: RulesConfig | None = None, loglevel: str = "info") -> None:
    created = asyncio.run(ensure_topics(settings))
    if created:
        log.info("created topics: %s", ", ".join(created))
    ow = create_app(settings, rules)
    from faust import Worker

    Worker(ow.app, loglevel=loglevel).execute_from_commandline()
