"""The handlers, live, in the detector's faust app: an agent on `order-exceptions` that feeds the
case store, a timer that escalates overdue cases and publishes the outbox, and the listeners.

`HandlerRuntime` holds the Redis client, the service and the listeners; `install_handler_agent`
adds its agent, task and revoke listener to the worker app (`streams.host.Host`, read through a
protocol). `streams.wiring.install_handlers` composes them with the ops API and the console.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from orderwatch.handlers.actions import ActionDispatcher, ActionSink, DryRunSink, KafkaActionSink
from orderwatch.handlers.config import HandlersConfig
from orderwatch.handlers.incidents import IncidentStore
from orderwatch.handlers.notify import Notifier
from orderwatch.handlers.service import HandlerService
from orderwatch.handlers.store import CaseStore, open_redis
from orderwatch.schemas.exception_event import ExceptionEvent
from orderwatch.streams.kafka_client import kafka_client_options

if TYPE_CHECKING:
    from orderwatch.streams.host import Host

__all__ = ["HANDLER_AGENT", "HandlerRuntime", "install_handler_agent"]

log = logging.getLogger("orderwatch.handlers")

HANDLER_AGENT = "orderwatch.handlers"
REDELIVER_EVERY = 60.0  # seconds between sweeps for changes a crash left undelivered (wall clock)


class _Producer:
    """The handlers' own aiokafka producer (escalations, re-published resolutions, commands),
    started on first use so that a worker whose handlers never publish needs no second client."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _get(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**self._options, acks="all", enable_idempotence=True)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()  # a client that failed to start still holds sockets
                    raise
                self._producer = producer
            return self._producer

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        return await (await self._get()).send_and_wait(topic, value=value, key=key)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class HandlerRuntime:
    """The handlers of one worker, started by the app's task (`install_handler_agent`).

    Its clock (`now`) is the escalation time base: the wall clock with `--clock wall`; with
    `--clock event` the detector's event clock, never wall time, so a replay escalates what was
    overdue in event time (see `escalation_clock`)."""

    def __init__(
        self,
        host: Host,
        config: HandlersConfig,
        *,
        detection: bool = True,
        tick_interval: float = 1.0,
        redis_max_connections: int = 32,
    ) -> None:
        settings = host.settings
        self.host = host
        self.settings = settings
        self.config = config
        self.metrics = host.metrics
        self.detection = detection
        self.event_clock = settings.clock == "event"
        self.tick_interval = tick_interval
        self.topic = settings.topic("order-exceptions")
        self.redis = open_redis(settings.redis_url, max_connections=redis_max_connections)
        prefix = settings.redis_prefix
        self.store = CaseStore(self.redis, prefix, escalation=config.escalation, owners=config.owners)
        self.incidents = IncidentStore(self.redis, prefix, config.incidents)
        self.service = HandlerService(self.store, self.incidents, config, host.metrics, clock=self.now)
        self.producer = _Producer(kafka_client_options(settings))
        sink: ActionSink = (
            DryRunSink(settings)
            if settings.dry_run
            else KafkaActionSink(cast(AIOKafkaProducer, self.producer), settings)
        )
        self.dispatcher = ActionDispatcher(self.redis, prefix, sink, config.actions, host.metrics)
        self.service.add_listener(self.dispatcher)
        self.notifier: Notifier | None = None
        self.session: aiohttp.ClientSession | None = None
        self.started = asyncio.Event()
        self.positions: dict[int, int] = {}
        """order-exceptions partition -> next offset to read: everything below it is handled."""
        self.watermark = float("-inf")
        """Largest `time` of the exception events read (the event clock of a handlers-only worker)."""
        self._republished: dict[str, tuple[int, int]] = {}
        """exception id -> (partition, offset) of a resolution published again, until read back."""
        self._metadata: AIOKafkaConsumer | None = None
        self._proposed: float | None = None
        self._gate: tuple[float, dict[int, int]] | None = None
        self._last_redeliver = time.monotonic()

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP session, hand out the changes a previous process left undelivered, then
        let the agent run. Waits out a Redis outage (the agent waits with it)."""
        if self.started.is_set():
            return
        if self.config.webhooks:
            self.session = aiohttp.ClientSession()
            self.notifier = Notifier(
                self.redis,
                self.settings.redis_prefix,
                self.config.webhooks,
                self.session,
                self.metrics,
                dry_run=self.settings.dry_run,
            )
            self.service.add_listener(self.notifier)
        redelivered = await self.service.redeliver_pending(everything=True)
        if redelivered:
            log.warning("handlers: %s changes left undelivered by a previous run handed out again", redelivered)
        log.info(
            "handlers: started (clock %s, %s webhook channels%s)",
            self.settings.clock,
            len(self.config.webhooks),
            ", dry run" if self.settings.dry_run else "",
        )
        self.started.set()

    async def close(self) -> None:
        self.started.clear()
        with contextlib.suppress(Exception):
            await self.producer.stop()
        if self._metadata is not None:
            with contextlib.suppress(Exception):
                await self._metadata.stop()
            self._metadata = None
        if self.session is not None:
            await self.session.close()
            self.session = None
        await self.redis.aclose()

    async def run(self) -> None:
        """The app task: start, then tick every `tick_interval` until cancelled."""
        try:
            await self.start()
            while True:
                await asyncio.sleep(self.tick_interval)
                try:
                    await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug or a broker hiccup must not stop escalation for good
                    log.exception("handlers: timer failed; trying again in %s s", self.tick_interval)
        finally:
            await self.close()

    # -- the agent -----------------------------------------------------------------------------

    async def consume(self, stream: Any) -> AsyncIterator[str]:
        """The agent's body: each `order-exceptions` message once the handlers have started."""
        await self.started.wait()
        # faust acks an event when the loop asks for the next one: after `on_message` returned,
        # so an offset is never committed before the case store has the event.
        async for event in stream.events():
            msg = event.message
            yield await self.on_message(msg.value, msg.partition, msg.offset)

    async def on_message(self, value: bytes | None, partition: int, offset: int) -> str:
        """One `order-exceptions` message; returns the outcome (changed, unchanged, invalid,
        tombstone). Returns only when the case store recorded it: ack after it."""
        outcome = await self._on_message(value, partition, offset)
        self.positions[partition] = offset + 1
        self.metrics.handler_messages.labels(outcome).inc()
        return outcome

    async def _on_message(self, value: bytes | None, partition: int, offset: int) -> str:
        if value is None:
            return "tombstone"
        try:
            event = ExceptionEvent.model_validate_json(value)
        except ValidationError as exc:
            # The values may be anything, personal data included: only where and how many errors.
            log.warning(
                "handlers: %s[%s]@%s is not an exception event (%s validation errors), skipped",
                self.topic,
                partition,
                offset,
                exc.error_count(),
            )
            return "invalid"
        t = event.time.timestamp()
        if t > self.watermark:
            self.watermark = t
        xid = event.data.exception_id
        # A replay records each move at the time its event carries, so the history reads the same
        # however fast the replay went; live, when it was handled.
        at = event.time if self.event_clock else self.now()
        change = await self.service.handle(event, at, position=(partition, offset), escalate_overdue=self.event_clock)
        if event.type == "exception.resolved":
            self._republished.pop(xid, None)
        elif event.type == "exception.escalated" and not self._republished_after(xid, partition, offset):
            again = await self.service.superseded_resolution(event, (partition, offset))
            if again is not None:
                meta = await self._publish_until_done(xid.encode(), again.model_dump_json().encode())
                # Level 2 read back right after level 1 needs no second copy of the resolution.
                self._republished[xid] = (int(meta.partition), int(meta.offset))
                self.metrics.resolutions_republished.inc()
                log.info(
                    "handlers: %s escalated after its resolution on %s[%s]@%s: resolution published again",
                    xid,
                    self.topic,
                    partition,
                    offset,
                )
        return "unchanged" if change is None else "changed"

    def _republished_after(self, xid: str, partition: int, offset: int) -> bool:
        """Did this worker already publish the resolution again after this offset?"""
        where = self._republished.get(xid)
        return where is not None and where[0] == partition and where[1] > offset

    # -- clock and timer -----------------------------------------------------------------------

    def clock_value(self) -> float | None:
        """The handlers' clock as a Unix time; None in event time before anything was seen.

        Event time with detection on this worker: the detector's watermark
        (`max_event_time - lateness`), held back to the oldest event an agent partition still
        buffers and to its earliest timer, because what those release later carries their time
        (`detected_at`) and may be the resolution of a case that would otherwise escalate first.
        Handlers only: the largest exception event time read."""
        if not self.event_clock:
            return time.time()
        if not self.detection:
            return self.watermark if self.watermark != float("-inf") else None
        now = self.host.clock.max_event_time - self.settings.lateness_seconds
        for spec in self.host.agents.values():
            for rt in list(spec.runtimes.values()):
                nxt = rt.detector.notify_at()
                now = min(now, rt.oldest, nxt if nxt is not None else now)
        return None if now == float("-inf") else now

    def now(self) -> datetime:
        """The handlers' clock (wall time until an event clock has seen anything)."""
        t = self.clock_value()
        return datetime.now(UTC) if t is None else datetime.fromtimestamp(t, UTC)

    async def escalation_clock(self) -> datetime | None:
        """Up to when escalation may run now, or None (not yet).

        Wall clock: now. Event clock: a clock value taken one tick ago, and only once this worker
        has handled `order-exceptions` up to the end offsets read after it, so every exception
        the detector emitted before that time (a resolution, say) is in the store first. The
        outcome is what was overdue in event time, whatever the speed of the replay."""
        if not self.event_clock:
            return datetime.now(UTC)
        if self._gate is None and self._proposed is not None:
            ends = await self._end_offsets()
            self._gate = (self._proposed, ends)
        self._proposed = self.clock_value()
        if self._gate is None or not self._caught_up(self._gate[1]):
            return None
        at, self._gate = self._gate[0], None
        return datetime.fromtimestamp(at, UTC)

    async def tick(self) -> None:
        """Escalate what is due, publish the outbox, and now and then re-deliver stuck changes."""
        if not self.started.is_set():
            return
        now = await self.escalation_clock()
        if now is not None:
            self.metrics.handler_clock.set(now.timestamp())
            await self.service.escalate_due(now)
        await self.service.flush_outbox(self._publish)
        if not self.event_clock and time.monotonic() - self._last_redeliver > REDELIVER_EVERY:
            # A replay's changes carry event times; a sweep by them would catch changes in flight.
            self._last_redeliver = time.monotonic()
            await self.service.redeliver_pending()

    async def _publish(self, key: bytes, value: bytes) -> None:
        await self.producer.send_and_wait(self.topic, value=value, key=key)

    async def _publish_until_done(self, key: bytes, value: bytes) -> Any:
        """Publish on `order-exceptions` from the agent, retrying (0.5 s doubling to 10 s) until the
        broker takes it: the agent does not move on, so the offset that asked for it stays
        uncommitted until it is out."""
        delay = 0.5
        while True:
            try:
                return await self.producer.send_and_wait(self.topic, value=value, key=key)
            except KafkaError as exc:
                log.warning("handlers: publishing on %s failed (%s); retrying in %.1f s", self.topic, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _owned(self) -> list[int]:
        return sorted(p for t, p in self.host.port.actives() if t == self.topic)

    async def _end_offsets(self) -> dict[int, int]:
        owned = self._owned()
        if not owned:
            return {}
        if self._metadata is None:
            consumer = AIOKafkaConsumer(**kafka_client_options(self.settings), enable_auto_commit=False)
            await consumer.start()
            self._metadata = consumer
        tps = [TopicPartition(self.topic, p) for p in owned]
        ends = await self._metadata.end_offsets(tps)
        return {tp.partition: int(end) for tp, end in ends.items()}

    def _caught_up(self, ends: dict[int, int]) -> bool:
        for partition, end in ends.items():
            position = self.positions.get(partition)
            if position is None:
                position = self._committed(partition)
            if position < end:
                return False
        return True

    def _committed(self, partition: int) -> int:
        """Where this consumer group resumed a partition nothing was read from since (0: unknown)."""
        return self.host.port.committed((self.topic, partition)) or 0

    async def on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        """faust's partitions-revoked signal: forget this topic's revoked partitions."""
        self.forget([tp.partition for tp in revoked if tp.topic == self.topic])

    def forget(self, partitions: list[int]) -> None:
        """Partitions revoked: what was read from them says nothing about the next owner's work."""
        for p in partitions:
            self.positions.pop(p, None)
        self._gate = None


def install_handler_agent(host: Host, rt: HandlerRuntime) -> None:
    """Add the handlers to the app: the `order-exceptions` agent (`rt.consume`), the task that
    starts them and runs their timer (`rt.run`), and the listener that forgets revoked partitions
    (`rt.on_revoked`). Every piece of state stays in `rt`."""
    app = host.app
    channel = app.topic(rt.topic, key_type=bytes, value_type=bytes)
    app.agent(channel, name=HANDLER_AGENT)(rt.consume)
    app.task(rt.run)
    app.on_partitions_revoked.connect(rt.on_revoked)  # type: ignore[arg-type]
