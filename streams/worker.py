"""`orderwatch worker`: check the topics (creating the missing ones, stopping with a clear
message on a partition count or compaction the agents cannot run on), then run the faust worker
until stopped, within `stop_seconds` once a stop begins."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient
from mode.utils.logging import setup_logging

from orderwatch.backtest import tune_collector
from orderwatch.detectors.config import RulesConfig
from orderwatch.handlers.config import HandlersConfig
from orderwatch.streams.app import create_app, internal_topics
from orderwatch.streams.changelog_acks import ChangelogAcks
from orderwatch.streams.local_tables import LocalTables
from orderwatch.streams.publish import kafka_client_options
from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import ensure_topics

__all__ = [
    "STOP_OVERRAN",
    "BoundedStopWorker",
    "StopDeadline",
    "committed_offsets",
    "log_start_offsets",
    "pin_start_offsets",
    "run_worker",
    "worker_env",
]

log = logging.getLogger("orderwatch.worker")

STOP_OVERRAN = 75
"""The exit status of a worker whose stop did not end within its deadline (EX_TEMPFAIL)."""


class StopDeadline:
    """Ends the process `seconds` after `arm()` if it is still there, saying what was not sent.

    A stop can outlast any wait one would choose: with the broker gone, faust's "Flush producer
    buffer" waits until aiokafka gives up on the unsent batches (the producer request timeout, 20
    minutes by default), the stop waits for a commit faust began while the broker was gone, which
    never ends (aiokafka waits for a group coordinator), and an agent that crashed as the stop
    reached it was restarted by faust's supervisor mid-stop, which then never ended. A timer
    thread, not the event loop: the deadline must hold whatever the loop is stuck on. `os._exit`
    skips the rest of the stop, the clean-stop marker with it (run_worker writes it only after an
    exit 0): the next start treats the local table files as a crash's."""

    def __init__(self, seconds: float, unsent: Callable[[], str], exit: Callable[[int], Any] = os._exit) -> None:
        self.seconds = seconds
        self._unsent = unsent
        self._exit = exit
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        """Start counting (once: a second stop does not push the deadline back)."""
        if self._timer is None:
            self._timer = threading.Timer(self.seconds, self.expire)
            self._timer.daemon = True
            self._timer.start()

    def expire(self) -> None:
        log.error(
            "the stop did not end within %.0f s: %s; exiting (%s) without the clean-stop marker",
            self.seconds,
            self._unsent(),
            STOP_OVERRAN,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        self._exit(STOP_OVERRAN)


class BoundedStopWorker(faust.Worker):
    """faust's Worker, whose stop (by a signal, or after a crash) arms a `StopDeadline`."""

    def __init__(self, app: faust.App, *, deadline: StopDeadline, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.deadline = deadline

    async def on_stop(self) -> None:
        self.deadline.arm()
        await super().on_stop()


class Unsent:
    """What a stop that overran leaves unsent, in words: the changelog tally (when counted: only
    a rocksdb:// worker counts) and the records faust still buffers."""

    def __init__(self, app: faust.App, changelogs: ChangelogAcks | None) -> None:
        self._app = app
        self._changelogs = changelogs

    def __call__(self) -> str:
        try:
            buffered = self._app.producer.buffer.size
        except Exception:  # the producer was never made, or is half torn down
            buffered = 0
        tally = "changelog records not counted" if self._changelogs is None else str(self._changelogs.tally())
        return f"{tally}, {buffered} records still in the producer buffer"


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


async def log_start_offsets(settings: Settings, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Each partition's log start offset (the first one retention has not deleted), in one request."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    if not tps:
        return {}
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        starts = await consumer.beginning_offsets([TopicPartition(t, p) for t, p in tps])
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): int(off) for tp, off in starts.items()}


def run_worker(
    settings: Settings,
    rules: RulesConfig | None = None,
    loglevel: str = "info",
    *,
    detection: bool = True,
    handlers: HandlersConfig | None = None,
) -> None:
    """Run a worker: the detector's agents (unless `detection` is False) and, given a handlers
    config, the handlers and the ops API.

    The topic check comes first and fails fast (TopicsError: the CLI prints its table and exits
    2): on under-partitioned topics faust would otherwise wait for partitions that do not exist
    and the worker die much later with a timeout."""
    # faust allocates tasks, futures and messages per event that die within a few loop turns: at
    # CPython's default (700) the collector runs every few events, promotes what is still alive
    # and rescans it with every open order's state. 12-13 % less CPU per event on the bench's
    # replay (bench/results/README.md, 2026-11-27), as for `orderwatch backtest`.
    tune_collector()
    # mode's Worker sets up logging only once it runs: until then Python's last-resort handler
    # printed warnings only, and the INFO lines below (topics created, start offsets pinned) were
    # lost. The same set-up now; the Worker clears it and does it again.
    setup_logging(loglevel=loglevel)
    created = asyncio.run(ensure_topics(settings))
    if created:
        log.info("created topics: %s", ", ".join(created))
    pinned = asyncio.run(pin_start_offsets(settings))
    if pinned:
        log.info("pinned start offsets of %s partitions without a commit", sum(pinned.values()))
    # Every partition has a commit now: the agents base their ledgers on it when faust delivers
    # a partition before it knows its commit (ConsumerPort.resume_offset), without asking the
    # broker from inside the agent loop.
    starts = asyncio.run(committed_offsets(settings))
    ow = create_app(settings, rules, detection=detection, handlers=handlers)
    ow.port.start_from(starts, asyncio.run(log_start_offsets(settings, list(starts))))
    # Before faust opens a table: local files a crash left may be ahead of their changelogs.
    tables = LocalTables(Path(ow.app.conf.tabledir), settings.store)
    tables.claim()
    tables.report()
    changelogs = ChangelogAcks(ow.app.tables.changelog_topics)
    if tables.persistent:
        # Only the rocksdb:// marker reads the tally, and faust calls a sensor on every table
        # write and every send: memory:// workers go without it.
        ow.app.sensors.add(changelogs)
    deadline = StopDeadline(settings.stop_seconds, Unsent(ow.app, changelogs if tables.persistent else None))
    try:
        BoundedStopWorker(ow.app, deadline=deadline, loglevel=loglevel).execute_from_commandline()
    except SystemExit as exc:
        # mode's worker exits 0 only once it has stopped every service, the producer (flushed)
        # included; a crash re-raises its exception or exits non-zero. Exit 0 is not enough: with
        # the broker gone the flush gives up on what it could not send.
        if not exc.code:
            tables.stopped_cleanly(changelogs.tally())
        raise


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a child `orderwatch worker` configured by `settings`: this process's,
    with every ORDERWATCH_* setting the worker reads taken from `settings` (the demo runs its
    worker this way, the tests through tests.support.worker)."""
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
        "ORDERWATCH_STOP_SECONDS": str(settings.stop_seconds),
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
    return env
