"""`orderwatch worker`: make sure every topic exists, then run the faust worker until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import IO, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from orderwatch.detectors.config import RulesConfig
from orderwatch.handlers.config import HandlersConfig
from orderwatch.streams.app import create_app, internal_topics
from orderwatch.streams.publish import kafka_client_options
from orderwatch.streams.settings import Settings

__all__ = [
    "committed_offsets",
    "ensure_topics",
    "free_port",
    "pin_start_offsets",
    "run_worker",
    "spawn_worker",
    "stop_worker",
]

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


async def pin_start_offsets(settings: Settings) -> dict[str, int]:
    """Give every partition the worker group reads a committed offset before faust starts.

    faust resumes fetching before it seeks stream partitions to their committed offsets
    (faust-streaming issue #216), so an agent can see a partition start past where it should.
    The runtime detects that by comparing the first offset it gets with the committed one and
    reads the gap again (streams.app), which needs a committed offset to compare with: a group
    that never committed has none. Committing the beginning (the end for tick topics, which
    carry no data) gives it one. Only possible while the group has no members; a running group
    has committed offsets of its own by then, so refusal is fine.

    Returns the number of partitions pinned per topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError
    from aiokafka.structs import OffsetAndMetadata

    ticks = {t for t in internal_topics(settings) if "-ticks-" in t}
    topics = [settings.topic(t) for t in ("orders", "payments", "inventory", "logistics")]
    topics += internal_topics(settings)
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), group_id=settings.app_id, enable_auto_commit=False)
    await consumer.start()
    pinned: dict[str, int] = {}
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(settings.partitions)]
        consumer.assign(tps)
        committed = await committed_offsets(settings)  # one request, not one per partition
        missing = [tp for tp in tps if (tp.topic, tp.partition) not in committed]
        if not missing:
            return pinned
        starts = await consumer.beginning_offsets([tp for tp in missing if tp.topic not in ticks])
        starts.update(await consumer.end_offsets([tp for tp in missing if tp.topic in ticks]))
        try:
            await consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in starts.items()})
        except KafkaError as exc:
            log.info("start offsets not pinned (%s): the group is running and commits its own", exc)
            return {}
        for tp in starts:
            pinned[tp.topic] = pinned.get(tp.topic, 0) + 1
        return pinned
    finally:
        await consumer.stop()


async def committed_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """The worker group's committed offsets, per (topic, partition), in one request."""
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        for attempt in range(60):
            try:
                offsets = await admin.list_consumer_group_offsets(settings.app_id)
                break
            except KafkaError as exc:
                # A new broker has no group coordinator until it has created its offsets
                # topic (GroupCoordinatorNotAvailable): retriable, for a while.
                if not exc.retriable or attempt == 59:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def run_worker(
    settings: Settings,
    rules: RulesConfig | None = None,
    loglevel: str = "info",
    *,
    detection: bool = True,
    handlers: HandlersConfig | None = None,
) -> None:
    """Run a worker: the detector's agents (unless `detection` is False) and, given a handlers
    config, the handlers and the ops API."""
    created = asyncio.run(ensure_topics(settings))
    if created:
        log.info("created topics: %s", ", ".join(created))
    pinned = asyncio.run(pin_start_offsets(settings))
    if pinned:
        log.info("pinned start offsets of %s partitions without a commit", sum(pinned.values()))
    ow = create_app(settings, rules, detection=detection, handlers=handlers)
    from faust import Worker

    Worker(ow.app, loglevel=loglevel).execute_from_commandline()


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (for a worker's web port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_worker(
    settings: Settings, clock: str, log: IO[bytes] | Any, *, handlers: bool = False, args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """`orderwatch worker --clock CLOCK [ARGS]` as a child process configured by `settings` (the
    demo, the runtime benchmark and the integration tests run a real worker this way).

    Detection only (`--no-handlers`) unless `handlers`: then the handlers run too, with the
    settings' Redis URL and prefix, API token, handlers config file and dry run."""
    env = {
        **os.environ,
        "ORDERWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ORDERWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "ORDERWATCH_APP_ID": settings.app_id,
        "ORDERWATCH_PARTITIONS": str(settings.partitions),
        "ORDERWATCH_STORE": settings.store,
        "ORDERWATCH_WEB_PORT": str(settings.web_port),
        "ORDERWATCH_REDIS_URL": settings.redis_url,
        "ORDERWATCH_REDIS_PREFIX": settings.redis_prefix,
        "ORDERWATCH_DRY_RUN": "1" if settings.dry_run else "0",
        "ORDERWATCH_STALL_SECONDS": str(settings.stall_seconds),
        "ORDERWATCH_MAX_FUTURE_SECONDS": str(settings.max_future_seconds),
        "ORDERWATCH_MAX_SKEW_SECONDS": str(settings.max_skew_seconds),
    }
    for name, value in (
        ("API_TOKEN", settings.api_token),
        ("HANDLERS_CONFIG", settings.handlers_config),
        ("DATA_DIR", settings.data_dir),
    ):
        env.pop(f"ORDERWATCH_{name}", None)  # the settings say, not whatever the parent had
        if value is not None:
            env[f"ORDERWATCH_{name}"] = value if isinstance(value, str) else value.get_secret_value()
    # Role tokens and the tokens file: from the settings when they name one, else as inherited.
    for name, value in (
        ("VIEWER_TOKEN", settings.viewer_token),
        ("OPERATOR_TOKEN", settings.operator_token),
        ("APPROVER_TOKEN", settings.approver_token),
        ("TOKENS_FILE", settings.tokens_file),
    ):
        if value is not None:
            env[f"ORDERWATCH_{name}"] = value if isinstance(value, str) else value.get_secret_value()
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orderwatch.cli",
            "worker",
            "--clock",
            clock,
            *([] if handlers else ["--no-handlers"]),
            *args,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGINT (faust shuts down cleanly), then SIGKILL if it has not exited within `timeout`."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
