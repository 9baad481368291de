"""The faust application: thin agents that decode, hand events to `streams.runtime`, persist
what changed in changelog-backed tables, emit exceptions, and dead-letter bad input.

Agents and their keys (all topics co-partitioned, `settings.partitions` each):

    orders agent     orders + payments + logistics + <app>-order-inbox    key order id
    inventory agent  inventory                                             key sku
    address agent    <app>-by-address     (order.created, forwarded)      key address fingerprint
    customer agent   <app>-by-customer    (order.created, forwarded)      key customer id
    provider agent   <app>-by-provider    (payments, forwarded)           key provider

Each also reads its own `<app>-ticks-<agent>` topic: a timer sends a tick to every partition
this worker actively owns, so deadlines fire inside that partition's stream context (faust only
lets a stream write a table, and the changelog partition must be the key's partition). Standby
partitions receive no ticks and never fire.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import heapq
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from aiokafka.partitioner import murmur2
from prometheus_client import generate_latest

from orderwatch.detectors.base import KeyedDetector
from orderwatch.detectors.blocklist import Blocklist
from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.ids import address_fingerprint
from orderwatch.detectors.orders import OrderDetector
from orderwatch.detectors.records import Emission, ExceptionRecord, iso, to_cloudevent
from orderwatch.detectors.stock import StockDetector
from orderwatch.detectors.windows import AddressDetector, CustomerDetector, ProviderDetector
from orderwatch.errors import InvalidEvent
from orderwatch.handlers.config import HandlersConfig
from orderwatch.schemas.events import ENTITY_FIELD, INPUT_TOPICS, TOPIC_OF_TYPE, entity_of, parse_event
from orderwatch.streams.clock import LagAwareClock
from orderwatch.streams.commits import CommitSensor
from orderwatch.streams.console.access import TokenRegistry, bearer_token
from orderwatch.streams.health import CrashLoop, StallWatch
from orderwatch.streams.metrics import Metrics
from orderwatch.streams.rebalance import RewindAfterRebalance
from orderwatch.streams.runtime import LEDGER_KEY, Ledger, PartitionRuntime
from orderwatch.streams.settings import Settings

__all__ = ["AGENTS", "DLQ_MAX_BYTES", "Orderwatch", "create_app", "dead_letter_record", "internal_topics"]

log = logging.getLogger("orderwatch.streams")

AGENTS = ("orders", "inventory", "address", "customer", "provider")
TICK_INTERVAL = 0.1  # seconds between ticks: bounds deadline detection latency
WATERMARK_HEARTBEAT = 1.0  # seconds: an unchanged watermark is sent again this often
FLUSH_SECONDS = 0.02  # under load, an agent partition flushes at most this often
FLUSH_EVERY = 500  # events an agent partition buffers at most before it flushes, under load
STALL_CHECK_SECONDS = 5.0  # how often the input partitions are checked for stalled commits


def internal_topics(settings: Settings) -> list[str]:
    """Topics the runtime needs besides the contract's: repartitions, inbox, ticks."""
    app = settings.app_id
    names = [f"{app}-order-inbox", f"{app}-by-address", f"{app}-by-customer", f"{app}-by-provider"]
    return names + [f"{app}-ticks-{agent}" for agent in AGENTS]


class _Adopt:
    """An `order-inbox` control message: a DUPLICATE_ORDER record for the order to own."""

    __slots__ = ("data", "id", "time_ts", "type")

    def __init__(self, doc: dict[str, Any]) -> None:
        self.id = doc["id"]
        self.type = "orderwatch.adopt"
        self.data = doc["data"]
        self.time_ts = float(doc["t"])


class _Held:
    """Messages of one topic partition waiting for their ack, smallest offset first."""

    __slots__ = ("events", "offsets")

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.events: dict[int, Any] = {}

    def add(self, offset: int, event: Any) -> None:
        if offset not in self.events:
            heapq.heappush(self.offsets, offset)
        self.events[offset] = event  # a re-delivery replaces its copy: either ack does

    def below(self, low: int) -> list[Any]:
        """Pop every message with an offset below `low`, in offset order."""
        out = []
        offsets = self.offsets
        while offsets and offsets[0] < low:
            out.append(self.events.pop(heapq.heappop(offsets)))
        return out


@dataclass
class _Agent:
    name: str
    inputs: list[str]
    ticks: str
    upstream: list[str]
    repartitioned: list[str]
    make: Callable[[], KeyedDetector]
    apply: Callable[[KeyedDetector, Any, float], list[Emission]]
    table: Any = None
    runtimes: dict[int, PartitionRuntime[Any]] = field(default_factory=dict)
    held: dict[str, _Held] = field(default_factory=dict)  # "topic:partition" -> messages not acked yet
    bounded_by: list[str] = field(default_factory=list)
    ready: asyncio.Event | None = None
    partitions: int = 1  # of every topic (co-partitioned): the upstream partitions there are


@dataclass
class Orderwatch:
    """What `create_app` builds: the faust app plus the pieces tests and the CLI reach for."""

    app: faust.App
    settings: Settings
    metrics: Metrics
    clock: LagAwareClock
    agents: dict[str, _Agent]
    actives: Callable[[], frozenset[tuple[str, int]]] = frozenset
    handlers: Any = None  # streams.handling.HandlerRuntime when the handlers run in this app
    stalls: StallWatch = field(default_factory=StallWatch)
    crash_loop: CrashLoop = field(default_factory=CrashLoop)
    stalled: list[tuple[str, int]] = field(default_factory=list)
    """Input partitions found stalled by the last check (streams.health)."""

    def problems(self) -> list[str]:
        """Why this worker is not healthy (/health); empty when it is."""
        out = [f"partition {t}[{p}] stalled: committed offset unmoved while messages wait" for t, p in self.stalled]
        out += [f"agent {a} restarting in a loop" for a in self.crash_loop.looping()]
        return out

    def readiness(self, *, detection: bool = True) -> tuple[list[str], int]:
        """(why the detector side is not ready, partitions assigned), for /ready: the blocklist
        not loaded yet, no partition assigned, an agent restarting in a loop."""
        reasons = []
        if detection:
            loaded = self.agents["orders"].ready
            if loaded is not None and not loaded.is_set():
                reasons.append("blocklist: not loaded yet")
        assigned = len(_actives(self.app))
        if not assigned:
            reasons.append("partitions: none assigned yet")
        reasons += [f"agent {a}: restarting in a loop" for a in self.crash_loop.looping()]
        return reasons, assigned


def create_app(
    settings: Settings,
    rules: RulesConfig | None = None,
    metrics: Metrics | None = None,
    *,
    detection: bool = True,
    handlers: HandlersConfig | None = None,
) -> Orderwatch:
    """The faust app: the detector's agents (unless `detection` is False) and, given a handlers
    config, the handlers and the ops API (streams.handling)."""
    config = rules or RulesConfig()
    metrics = metrics or Metrics()
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        broker_credentials=_credentials(settings),
        store=settings.store,
        **_datadir(settings),
        topic_partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host=settings.web_host,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        # A killed worker holds its partitions until its session expires: keep that short.
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_seconds / 4),
        table_standby_replicas=1,
    )
    _deliver_everything(app)
    prefix = settings.topic
    inbox = f"{settings.app_id}-order-inbox"
    by = {k: f"{settings.app_id}-by-{k}" for k in ("address", "customer", "provider")}
    exceptions_topic = app.topic(prefix("order-exceptions"), key_type=bytes, value_type=bytes)
    dlq_topic = app.topic(prefix("orders-dlq"), key_type=bytes, value_type=bytes)
    inbox_topic = app.topic(inbox, key_type=bytes, value_type=bytes)
    by_topics = {k: app.topic(v, key_type=bytes, value_type=bytes) for k, v in by.items()}
    clock = LagAwareClock(
        mode=settings.clock,
        lateness=settings.lateness_seconds,
        max_skew=settings.max_skew_seconds or None,
        highwater=lambda tp: _highwater(app, tp),
        committed=lambda tp: _committed(app, tp),
    )
    # The blocklist is global: every worker needs every entry, whatever partitions it owns. faust's
    # GlobalTable cannot adopt an existing compacted topic as its changelog (assignment hangs), so a
    # plain consumer reads all its partitions from the start into a dict.
    blocklist_entries: dict[str, tuple[str, float | None]] = {}

    def blocklist_lookup(key: str) -> tuple[str, float | None] | None:
        return blocklist_entries.get(key)

    blocklist_loaded = asyncio.Event()

    @app.task  # type: ignore[untyped-decorator]
    async def follow_blocklist() -> None:
        await _follow_blocklist(settings, blocklist_entries, blocklist_loaded)

    blocklist = Blocklist(lookup=blocklist_lookup)

    def apply_order(det: KeyedDetector, ev: Any, t: float) -> list[Emission]:
        orders = cast(OrderDetector, det)  # this agent's runtimes are built by its own factory
        if ev.type == "orderwatch.adopt":
            return orders.adopt(ExceptionRecord.from_dict(ev.data))
        fp = None
        if ev.type == "order.created":
            a = ev.data.shipping_address
            fp = address_fingerprint(a.line1, a.postal_code, a.country)
        return orders.apply(ev, t, t, fp)

    def apply_address(det: KeyedDetector, ev: Any, t: float) -> list[Emission]:
        a = ev.data.shipping_address
        return cast(AddressDetector, det).apply(ev, t, t, address_fingerprint(a.line1, a.postal_code, a.country))

    def apply_plain(det: KeyedDetector, ev: Any, t: float) -> list[Emission]:
        return det.apply(ev, t, t)  # type: ignore[attr-defined, no-any-return]

    agents = {
        "orders": _Agent(
            "orders",
            [prefix("orders"), prefix("payments"), prefix("logistics"), inbox],
            f"{settings.app_id}-ticks-orders",
            [prefix("inventory")],
            [inbox],
            lambda: OrderDetector(config, blocklist),
            apply_order,
        ),
        "inventory": _Agent(
            "inventory",
            [prefix("inventory")],
            f"{settings.app_id}-ticks-inventory",
            [],
            [],
            lambda: StockDetector(config),
            apply_plain,
        ),
        "address": _Agent(
            "address",
            [by["address"]],
            f"{settings.app_id}-ticks-address",
            [prefix("orders")],
            [by["address"]],
            lambda: AddressDetector(config),
            apply_address,
        ),
        "customer": _Agent(
            "customer",
            [by["customer"]],
            f"{settings.app_id}-ticks-customer",
            [prefix("orders")],
            [by["customer"]],
            lambda: CustomerDetector(config),
            apply_plain,
        ),
        "provider": _Agent(
            "provider",
            [by["provider"]],
            f"{settings.app_id}-ticks-provider",
            [prefix("payments")],
            [by["provider"]],
            lambda: ProviderDetector(config),
            apply_plain,
        ),
    }
    agents["orders"].bounded_by = ["customer"]
    for spec in agents.values():
        spec.partitions = settings.partitions
    agents["orders"].ready = blocklist_loaded
    forward_inputs = {prefix("orders"), prefix("payments"), prefix("inventory")}
    agent_inputs = {t for spec in agents.values() for t in spec.inputs}
    if detection:
        metrics.initialise((prefix(t) for t in ("orders", "payments", "inventory", "logistics")), agents=AGENTS)
    ow = Orderwatch(app, settings, metrics, clock, agents, stalls=StallWatch(after=settings.stall_seconds))

    partitions = settings.partitions
    # The partitions this worker actively owns, read on every event and tick: cached, refreshed
    # when the assignment changes (faust rebuilds the set on every call to assigned_actives()).
    owned: dict[str, frozenset[tuple[str, int]]] = {"now": frozenset()}

    def actives() -> frozenset[tuple[str, int]]:
        if not owned["now"]:  # not assigned yet, or the signal has not run: ask faust
            owned["now"] = _actives(app)
        return owned["now"]

    ow.actives = actives

    async def send_forward(topic: Any, key: str, raw: bytes, source: bytes | None = None) -> Any:
        # The partition is computed here (Kafka's default murmur2, as every client uses) so the
        # clock can count what is in flight to it until the agent downstream consumes it.
        kb = key.encode()
        partition = (murmur2(kb) & 0x7FFFFFFF) % partitions
        tp = (topic.get_topic_name(), partition)
        # force: published now, not held back until the source offset commits (faust's default
        # inside an agent), which would freeze the downstream clock for a commit interval.
        # The upstream position rides along: the agent downstream dedupes re-forwards after a
        # crash by it (streams.runtime.Ledger), which survives a restart where event ids do not.
        # (An adoption record has none: adopting an exception twice changes nothing.)
        headers = [(SOURCE_HEADER, source)] if source is not None else None
        fut = await topic.send(key=kb, value=raw, partition=partition, headers=headers, force=True)
        if tp in actives():
            # Only this worker consumes what it owns: track nothing else. Until the broker acks,
            # and then until we have consumed past that offset, the partition lags.
            clock.sent(tp)
            fut.add_done_callback(lambda f: clock.delivered(tp, _offset_of(f)))
        return fut

    async def forward(ev: Any, raw: bytes, source: bytes) -> list[Any]:
        """Regroup what other keys need: the repartition step of the design (explicit sends of
        the original bytes, keyed for the agent downstream, `source` naming the upstream topic,
        partition and offset). Returns the sends' futures."""
        kind = ev.type
        if kind == "order.created":
            a = ev.data.shipping_address
            fp = address_fingerprint(a.line1, a.postal_code, a.country)
            return [
                await send_forward(by_topics["address"], fp, raw, source),
                await send_forward(by_topics["customer"], ev.data.customer_id, raw, source),
            ]
        if kind in ("payment.succeeded", "payment.failed"):
            return [await send_forward(by_topics["provider"], ev.data.provider, raw, source)]
        if kind in ("inventory.reserved", "inventory.reservation_failed", "inventory.released"):
            return [await send_forward(inbox_topic, ev.data.order_id, raw, source)]
        return []

    async def emit(agent: str, emissions: list[Emission]) -> None:
        """Publish and wait for the broker's ack: the caller writes state only afterwards, so a
        crash can repeat an emission (same ids, consumers dedupe) but never lose one."""
        now = time.time()
        pending = []
        for em in emissions:
            rec = em.record
            if em.kind == "opened":
                metrics.opened.labels(rec.rule, rec.severity).inc()
                metrics.lag_seconds.labels("opened").observe(max(0.0, now - rec.event_time))
            elif em.kind == "resolved":
                metrics.resolved.labels(rec.rule, rec.severity).inc()
            if agent == "customer" and rec.rule == "DUPLICATE_ORDER" and em.kind == "opened":
                msg = {"id": f"adopt:{rec.exception_id}", "t": rec.event_time, "data": rec.to_dict()}
                await send_forward(inbox_topic, rec.order_id or "", json.dumps(msg, separators=(",", ":")).encode())
            pending.append(
                await exceptions_topic.send(
                    key=rec.exception_id.encode(),
                    value=json.dumps(to_cloudevent(em), separators=(",", ":")).encode(),
                    force=True,
                )
            )
        for fut in pending:
            await fut

    async def dead_letter(event: Any, exc: InvalidEvent) -> None:
        msg = event.message
        value = msg.value if isinstance(msg.value, bytes) else bytes(msg.value or b"")
        record = dead_letter_record(msg.topic, msg.partition, msg.offset, msg.key, value, exc)
        log.warning("dead-lettered %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, exc.reason)
        await (await dlq_topic.send(key=msg.key, value=record, force=True))
        metrics.invalid.labels(msg.topic, exc.reason).inc()  # counted once the broker has it

    for spec in agents.values() if detection else ():
        spec.table = app.Table(f"{spec.name}-state", key_type=bytes, value_type=bytes, partitions=settings.partitions)
        _install_agent(
            ow, spec, forward if spec.name in ("orders", "inventory") else None, forward_inputs, emit, dead_letter
        )

    tick_topics = {name: app.topic(spec.ticks, key_type=bytes, value_type=bytes) for name, spec in agents.items()}

    @app.timer(interval=TICK_INTERVAL)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        # Events already move the clock: a tick is only sent to an actively owned partition that
        # has work the clock may have made due (buffered events, or a timer before the clock),
        # so an idle worker sends nothing and a busy one few.
        for name, spec in agents.items():
            for partition, rt in list(spec.runtimes.items()):
                now = _agent_now(actives, agents, clock, name, partition)
                nxt = rt.detector.next_timer()
                if (rt.buffered and rt.oldest < now) or (nxt is not None and nxt < now):
                    await tick_topics[name].send(key=None, value=b"tick", partition=partition, force=True)

    # Watermarks: an agent fed through a repartition topic is bounded by the upstream partitions
    # this worker owns through their progress (the clock sees them), but it cannot see those
    # another worker owns. So each owned upstream partition tells the repartition partitions
    # other workers own how far it has forwarded (and whether it is caught up), on the same
    # producer as its forwards, hence after them in every partition. A worker that owns every
    # partition sends none, and its clocks are exactly what they were without them.
    feeds = {
        prefix("orders"): [by_topics["address"], by_topics["customer"]],
        prefix("payments"): [by_topics["provider"]],
        prefix("inventory"): [inbox_topic],
    }
    sent_marks: dict[tuple[str, int, str, int], tuple[float, bool, float]] = {}

    @app.timer(interval=TICK_INTERVAL)  # type: ignore[untyped-decorator]
    async def send_watermarks() -> None:
        owned_now = actives()
        wall = time.monotonic()
        for upstream, targets in feeds.items() if detection else ():
            for q in range(partitions):
                if (upstream, q) not in owned_now:
                    continue
                progress = clock.progress.get((upstream, q))
                t = progress.max_event_time if progress is not None else float("-inf")
                idle = not clock.lagging((upstream, q))
                for target in targets:
                    dest = target.get_topic_name()
                    for p in range(partitions):
                        if (dest, p) in owned_now:
                            continue  # our own agent reads the source's progress directly
                        key = (upstream, q, dest, p)
                        last = sent_marks.get(key)
                        if last is not None and last[:2] == (t, idle) and wall - last[2] < WATERMARK_HEARTBEAT:
                            continue
                        sent_marks[key] = (t, idle, wall)
                        mark = {"wm": upstream, "q": q, "t": t if t > float("-inf") else None, "idle": idle}
                        await target.send(
                            key=None, value=json.dumps(mark, separators=(",", ":")).encode(), partition=p, force=True
                        )

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        metrics.report_partitions(_lags(clock, ow.actives(), agent_inputs), ow.stalled)
        for spec in agents.values():
            rts = list(spec.runtimes.values())
            metrics.deadline_queue.labels(spec.name).set(sum(rt.detector.timers() for rt in rts))
            metrics.buffered.labels(spec.name).set(sum(rt.buffered for rt in rts))
            metrics.open_exceptions.labels(spec.name).set(sum(rt.detector.open_exceptions() for rt in rts))
            clocks = [_agent_now(ow.actives, agents, clock, spec.name, p) for p in list(spec.runtimes)]
            if clocks and min(clocks) > 0:
                metrics.event_clock.labels(spec.name).set(min(clocks))
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain; version=0.0.4")

    clock_tokens = TokenRegistry(settings)

    @app.page("/clock")
    async def clock_view(web: Any, request: Any) -> Any:
        # For operators: why a partition's deadlines have not fired yet (which input holds it).
        # Only /health, /ready and /metrics are open: any role's token reads this (no Redis
        # here, so no failed-token limiter: the tokens are long random secrets).
        if not clock_tokens.configured:
            return web.json({"error": "no tokens configured: /clock is closed"}, status=503)
        if clock_tokens.lookup(bearer_token(request.headers)) is None:
            body = {"error": "a valid bearer token is required (Authorization: Bearer <token>)"}
            return web.json(body, status=401, headers={"WWW-Authenticate": "Bearer"})
        actives = ow.actives()
        doc: dict[str, Any] = {
            "mode": clock.mode,
            "max_event_time": iso(clock.max_event_time) if clock.max_event_time > 0 else None,
            "agents": {},
        }
        for name, spec in agents.items():
            parts = {}
            for partition, rt in sorted(spec.runtimes.items()):
                tps, frozen = _clock_tps(spec, partition, clock, actives)
                now = _agent_now(ow.actives, agents, clock, name, partition)
                marks = {src: mark for dest in frozen for src, mark in clock.foreign.get(dest, {}).items()}
                parts[str(partition)] = {
                    "clock": iso(now) if now > 0 else None,
                    "buffered": rt.buffered,
                    # upstream partitions other workers own: how far they say they have forwarded
                    "watermarks": {
                        f"{u}[{q}]": {"forwarded_upto": iso(t) if t > 0 else None, "caught_up": idle}
                        for (u, q), (t, idle) in sorted(marks.items())
                    },
                    "holding": [
                        {
                            "tp": f"{t}[{p}]",
                            "pending": clock.pending.get((t, p), 0),
                            "forwarded_upto": clock.forwarded.get((t, p)),
                            "highwater": clock.highwater((t, p)),
                            "offset": clock.progress[(t, p)].offset if (t, p) in clock.progress else None,
                        }
                        for t, p in tps + frozen
                        if clock.lagging((t, p))
                    ],
                }
            doc["agents"][name] = parts
        return web.json(doc)

    @app.timer(interval=STALL_CHECK_SECONDS)  # type: ignore[untyped-decorator]
    async def check_stalls() -> None:
        ow.stalled = _stalled(ow, agent_inputs)
        for topic, partition in ow.stalled:
            metrics.partition_stalled.labels(topic, str(partition)).set(1)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        problems = ow.problems()
        if problems:
            return web.json({"status": "unhealthy", "problems": problems}, status=503)
        return web.json({"status": "ok"})

    if handlers is None:
        # With the handlers, the ops API answers /ready (Redis and the handlers count too).
        @app.page("/ready")
        async def ready(web: Any, request: Any) -> Any:
            reasons, assigned = ow.readiness(detection=detection)
            if reasons:
                return web.json({"status": "not ready", "reasons": reasons}, status=503)
            return web.json({"status": "ready", "partitions": assigned})

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # A revoked partition's state and timers belong to its new owner: drop them here.
        for spec in agents.values():
            for tp in revoked:
                if tp.topic in spec.inputs:
                    spec.runtimes.pop(tp.partition, None)
                spec.held.pop(f"{tp.topic}:{tp.partition}", None)
        clock.forget((tp.topic, tp.partition) for tp in revoked)
        sent_marks.clear()  # the receivers forget theirs: tell them again
        owned["now"] = _actives(app)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        # Progress starts over: reading resumes at the committed offset, which the clock asks for.
        clock.forget((tp.topic, tp.partition) for tp in assigned)
        sent_marks.clear()
        owned["now"] = _actives(app)

    if handlers is not None:
        from orderwatch.streams.wiring import install_handlers

        ow.handlers = install_handlers(ow, handlers, detection=detection)
    # faust can drop what it fetched during a rebalance: once one is over, the agents read their
    # inputs again from the first offset they did not get (streams.rebalance). Not the handlers'
    # topic: a seek back re-delivers what faust already queued for the agent, and the handlers
    # do not skip offsets they have handled (harmless to their state, they are idempotent, but
    # processed and counted again). Their own exposure to the loss is an open question.
    if detection:
        app.sensors.add(CommitSensor(metrics, agent_inputs))
        app.sensors.add(RewindAfterRebalance(app, agent_inputs, lambda tp: _committed(app, tp), clock.delivered_run))
    return ow


def _install_agent(
    ow: Orderwatch, spec: _Agent, forward: Any, forward_inputs: set[str], emit: Any, dead_letter: Any
) -> None:
    app, metrics, clock = ow.app, ow.metrics, ow.clock
    channel = app.topic(*spec.inputs, spec.ticks, key_type=bytes, value_type=bytes)
    table = spec.table
    name = spec.name
    inbox_name = f"{ow.settings.app_id}-order-inbox"

    def runtime(partition: int) -> PartitionRuntime[Any]:
        rt = spec.runtimes.get(partition)
        if rt is None:
            # First event of a partition since it was assigned: rebuild state and timers from the
            # table (recovered from its changelog by now), for this partition only.
            det = spec.make()
            ledger = Ledger()
            tag = f"{partition}|".encode()
            for key, value in table.items():
                if key == f"{LEDGER_KEY}:{partition}".encode():
                    ledger = Ledger.loads(value)
                elif value and value.startswith(tag):
                    det.restore(key.decode(), value[len(tag) :])
            det.dirty.clear()
            rt = spec.runtimes[partition] = PartitionRuntime(det, spec.apply, ledger=ledger)
            log.info("%s: partition %s ready, %s keys restored", name, partition, len(det.states))
        return rt

    async def flush(rt: PartitionRuntime[Any], partition: int, stream: Any) -> None:
        if spec.runtimes.get(partition) is not rt:
            return  # revoked meanwhile: its new owner reads what was not acked
        released = rt.release(_agent_now(ow.actives, ow.agents, clock, name, partition))
        forwards = pending_forwards.pop(partition, [])
        if released.emissions:
            await emit(name, released.emissions)  # before the state that says they happened
        for event, exc in released.failed:
            log.error("%s: the rules raised on %s[%s]@%s", name, event.message.topic, partition, event.message.offset)
            reason = InvalidEvent("processing_error", f"{type(exc).__name__} while the rules applied it")
            await dead_letter(event, reason)
        # The forwards of the events applied here, before the ledger that says they were: a
        # re-read skips applied events, so a forward lost in a crash would never be sent again.
        for fut in forwards:
            await fut
        if spec.runtimes.get(partition) is not rt:
            return  # revoked while waiting for the broker: the table partition is not ours now
        tag = f"{partition}|".encode()
        for key, blob in rt.take_dirty():
            kb = str(key).encode()
            if blob is None:
                table.pop(kb, None)
            else:
                table[kb] = tag + blob
        if released.applied:
            table[f"{LEDGER_KEY}:{partition}".encode()] = rt.ledger.dumps()
        await ack_in_order(rt, stream)

    # faust commits the first run of consecutive acked offsets even when it does not start at
    # the first unacked one (before a partition's first commit), which would commit past events
    # still waiting in the reorder buffer. So acks go out strictly in offset order per partition:
    # an event is acked once every offset below it has been applied, dropped or dead-lettered.
    held = spec.held

    def hold(tpkey: str, offset: int, event: Any) -> None:
        box = held.get(tpkey)
        if box is None:
            box = held[tpkey] = _Held()
        box.add(offset, event)

    async def ack_in_order(rt: PartitionRuntime[Any], stream: Any) -> None:
        # Per event, so it must not scan what is held: each partition's heap pops from its head.
        for tpkey, low in rt.ledger.low.items():
            box = held.get(tpkey)
            if box is not None and box.offsets and box.offsets[0] < low:
                for event in box.below(low):
                    await stream.ack(event)

    repartitioned = set(spec.repartitioned)
    pending_forwards: dict[int, list[Any]] = {}  # partition -> forwards sent since its last flush
    contract_topics = {ow.settings.topic(t): t for t in INPUT_TOPICS}
    max_future = ow.settings.max_future_seconds or float("inf")

    def check_placement(ev: Any, t: float, topic: str, key: bytes | None) -> None:
        """A valid event on a contract topic must sit on its type's topic, under its entity's key,
        and not come from the future: otherwise the wrong partition would own it."""
        if TOPIC_OF_TYPE[ev.type] != topic:
            raise InvalidEvent("wrong_topic", f"{ev.type} belongs on {TOPIC_OF_TYPE[ev.type]}, not on {topic}")
        if key is not None and key != entity_of(ev).encode():
            raise InvalidEvent("key_mismatch", f"the Kafka key is not data.{ENTITY_FIELD[ev.type]}")
        if t > time.time() + max_future:
            msg = f"event time is more than {ow.settings.max_future_seconds:g} s ahead of the wall clock"
            raise InvalidEvent("from_future", msg)

    def watermark(topic: str, partition: int, value: bytes, offset: int) -> None:
        try:
            mark = json.loads(value)
            source = (str(mark["wm"]), int(mark["q"]))
            t = None if mark["t"] is None else float(mark["t"])
            clock.watermark((topic, partition), source, t, bool(mark["idle"]))
        except (ValueError, KeyError, TypeError):
            # Only workers write here; a bad one is skipped (it carried no event to lose).
            log.warning("%s: %s[%s]@%s: not a watermark, skipped", name, topic, partition, offset)

    async def settle(rt: PartitionRuntime[Any], stream: Any, tpkey: str, offset: int, event: Any) -> None:
        """A message handled without entering the buffer (dead letter, re-delivery)."""
        rt.ledger.seen_base(tpkey, offset)
        rt.ledger.mark(tpkey, offset)
        hold(tpkey, offset, event)
        await ack_in_order(rt, stream)

    async def resume(rt: PartitionRuntime[Any], tpkey: str, topic: str, partition: int, offset: int) -> None:
        """The first message of a partition since assignment. faust resumes fetching before it
        seeks to the committed offset, and what it delivered in between can be cleared from
        the agent's queue and then skipped as already read (faust-streaming issue #216; seen
        here as a restarted worker starting its order topics at offset 5 or 18 with nothing
        committed past 0). So the ledger starts at the committed offset, never past it, and a
        gap is read again: nothing after it is acked until it is filled."""
        committed = _committed(app, (topic, partition))
        start = offset if committed is None else min(committed, offset)
        rt.ledger.seen_base(tpkey, start)
        if start < offset:
            log.warning(
                "%s: %s[%s] delivered from offset %s but committed at %s: reading the gap again",
                name,
                topic,
                partition,
                offset,
                start,
            )
            from faust.types import TP

            # The clock must not count the partition as caught up before the gap is read.
            clock.hole((topic, partition), start, offset - 1)
            await app.consumer.seek(TP(topic, partition), start)
        else:
            log.info("%s: %s[%s] resumes at offset %s", name, topic, partition, offset)

    async def process(stream: Any) -> None:
        try:
            await consume(stream)
        except Exception:
            # faust's supervisor restarts the agent; a loop of restarts makes /health unhealthy.
            metrics.agent_crashes.labels(name).inc()
            ow.crash_loop.crashed(name)
            log.exception("%s: the agent loop raised; faust restarts it", name)
            raise

    async def consume(stream: Any) -> None:
        manual = stream.noack()
        if spec.ready is not None:
            # Orders are checked against the blocklist as they are applied: read it all first.
            await spec.ready.wait()
        # A flush (apply what the clock allows, emit, write the changed keys and the ledger, ack)
        # costs several produced messages, and faust hands the agent one message per loop turn
        # whatever is queued, so under load a partition's events are flushed together: at most
        # once per FLUSH_SECONDS, or after FLUSH_EVERY events. The first event after a quiet
        # spell is flushed at once, so a lone event is judged without delay; the tail of a burst
        # is flushed by the next tick (the timer sends one while buffered events are due).
        # A partition is only ever flushed while its own message is processed: faust sends a
        # table write to the changelog partition of the current message.
        loop_time = asyncio.get_running_loop().time
        batches: dict[int, list[float]] = {}  # partition -> [events offered since its flush, its flush time]
        async for event in manual.events():
            msg = event.message
            partition = msg.partition
            rt = runtime(partition)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = [0, 0.0]
            if msg.topic == spec.ticks:
                await flush(rt, partition, manual)
                batch[0], batch[1] = 0, loop_time()
                await manual.ack(event)
                continue
            if await offer(rt, manual, event, msg, partition):
                batch[0] += 1
            if batch[0] and (batch[0] >= FLUSH_EVERY or loop_time() - batch[1] >= FLUSH_SECONDS):
                await flush(rt, partition, manual)
                batch[0], batch[1] = 0, loop_time()

    async def offer(rt: PartitionRuntime[Any], manual: Any, event: Any, msg: Any, partition: int) -> bool:
        """Decode one message and buffer it; True when it entered the reorder buffer."""
        value = msg.value
        tpkey = f"{msg.topic}:{partition}"
        if tpkey not in rt.ledger.low:
            await resume(rt, tpkey, msg.topic, partition, msg.offset)
            if spec.runtimes.get(partition) is not rt:
                return False  # revoked while seeking: the new owner reads it again
        if msg.topic in repartitioned and value and value.startswith(b'{"wm":'):
            watermark(msg.topic, partition, value, msg.offset)
            clock.observe((msg.topic, partition), msg.offset, None)
            await settle(rt, manual, tpkey, msg.offset, event)
            return False
        try:
            if msg.topic == inbox_name and value and value.startswith(b'{"id":"adopt:'):
                ev: Any = _Adopt(json.loads(value))
                t = ev.time_ts
            else:
                ev = parse_event(value or b"")
                t = ev.time.timestamp()
                contract_topic = contract_topics.get(msg.topic)
                if contract_topic is not None:
                    check_placement(ev, t, contract_topic, msg.key)
        except InvalidEvent as exc:
            clock.observe((msg.topic, partition), msg.offset, None)
            await dead_letter(event, exc)
            await settle(rt, manual, tpkey, msg.offset, event)
            return False
        if not isinstance(ev, _Adopt):
            metrics.events_in.labels(msg.topic, ev.type).inc()
        return await admit(rt, manual, ev, t, msg, event, partition)

    async def admit(
        rt: PartitionRuntime[Any], manual: Any, ev: Any, t: float, msg: Any, event: Any, partition: int
    ) -> bool:
        """Buffer one decoded event; True when it entered the reorder buffer."""
        tpkey = f"{msg.topic}:{partition}"
        if rt.waiting(tpkey, msg.offset):
            clock.observe((msg.topic, partition), msg.offset, t)
            hold(tpkey, msg.offset, event)  # acked with the buffered copy, once applied
            return False
        source = _upstream_of(msg) if msg.topic in repartitioned else None
        if not rt.offer(ev, t, tpkey, msg.offset, event, source):
            # Already applied or buffered, so already forwarded: a re-read after a rebalance
            # or restart must not hand agents downstream a copy they may take for a late event.
            clock.observe((msg.topic, partition), msg.offset, t)
            metrics.duplicates.labels(name).inc()
            await settle(rt, manual, tpkey, msg.offset, event)
            return False
        if forward is not None and msg.topic in forward_inputs:
            sends = await forward(ev, msg.value, f"{msg.topic}:{partition}:{msg.offset}".encode())
            if sends:
                pending_forwards.setdefault(partition, []).extend(sends)
            if spec.runtimes.get(partition) is not rt:
                return False  # revoked while sending: the new owner reads it again (not acked)
        # After the forward: the progress the clock (and the watermarks) report covers only
        # events already handed to the producer.
        clock.observe((msg.topic, partition), msg.offset, t)
        if t < rt.clock:
            # The clock promised nothing older would come: deadlines may have fired without it.
            metrics.late.labels(name, msg.topic).inc()
            log.warning(
                "%s: late event %s[%s]@%s, %.1f s behind the clock",
                name,
                msg.topic,
                partition,
                msg.offset,
                rt.clock - t,
            )
        hold(tpkey, msg.offset, event)
        return True

    process.__name__ = process.__qualname__ = f"{name}_agent"
    app.agent(channel, name=f"orderwatch.{name}")(process)


async def _follow_blocklist(
    settings: Settings, entries: dict[str, tuple[str, float | None]], loaded: asyncio.Event
) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from orderwatch.streams.kafka_client import kafka_client_options

    topic = settings.topic("blocklist")
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        if all(end == 0 for end in ends.values()):
            loaded.set()
        async for msg in consumer:
            key = (msg.key or b"").decode("utf-8", "replace")
            if msg.value is None:
                entries.pop(key, None)
                continue
            try:
                doc = json.loads(msg.value)
                entries[key] = (str(doc.get("reason", "")), None)
            except (ValueError, AttributeError):
                log.warning("blocklist[%s]@%s: not a JSON object, ignored", msg.partition, msg.offset)
            if not loaded.is_set():
                behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
                if not behind:
                    log.info("blocklist loaded: %s entries", len(entries))
                    loaded.set()
    finally:
        await consumer.stop()


def _clock_tps(
    spec: _Agent, partition: int, clock: LagAwareClock, actives: frozenset[tuple[str, int]]
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(bounding, repartitioned) partitions of this agent partition's clock: its own contract
    inputs and every owned partition of the upstream topics bound it; its own repartition
    inputs (forwarded by another agent, times out of order) freeze it while they lag."""
    own = [(t, partition) for t in spec.inputs if t not in spec.repartitioned]
    return own + [tp for tp in actives if tp[0] in spec.upstream], [(t, partition) for t in spec.repartitioned]


def _agent_now(
    ow_actives: Callable[[], frozenset[tuple[str, int]]],
    agents: dict[str, _Agent],
    clock: LagAwareClock,
    name: str,
    partition: int,
) -> float:
    """The clock of one agent partition; an agent whose inbox another agent feeds (the orders
    agent gets DUPLICATE_ORDER records from the customer agent) never runs ahead of that agent's
    clocks on this worker, or a record could reach an order that finished and was dropped. An
    agent fed through a repartition topic is also capped by the watermarks of the upstream
    partitions other workers own."""
    spec = agents[name]
    actives = ow_actives()
    tps, frozen = _clock_tps(spec, partition, clock, actives)
    bound = float("inf")
    foreign = [(u, q) for u in spec.upstream for q in range(spec.partitions) if (u, q) not in actives]
    if foreign:
        for dest in frozen:
            bound = min(bound, clock.foreign_bound(dest, foreign))
    now = clock.now(tps, (name, partition), frozen, bound)
    for other in spec.bounded_by:
        ospec = agents[other]
        for topic, q in actives:
            if topic == ospec.inputs[0]:
                # That agent's own clock, watermark cap included: asking the clock without the
                # cap would also move the remembered, never-backwards value past it.
                now = min(now, _agent_now(ow_actives, agents, clock, other, q))
    return now


class _NothingRead(dict):  # type: ignore[type-arg]
    """faust's per-partition 'read up to' offsets, always answering 'nothing read yet'."""

    def __getitem__(self, key: Any) -> None:
        return None


def _deliver_everything(app: faust.App) -> None:
    """Make faust deliver every message it fetches, re-deliveries included.

    faust drops a fetched message at or below the last offset it handed to a stream. After a
    rebalance it resumes fetching before it seeks back to the committed offset (faust-streaming
    issue #216), and a batch fetched before the seek keeps moving that mark past the offsets the
    seek is about to re-read, so they are dropped: seen here as a joining or restarted worker
    whose order topics started at offset 5, 6 or 18 while 0 was committed, and false
    exceptions for the events it never saw. The runtime dedupes by offset and event id anyway
    (Ledger, PartitionRuntime.waiting), so faust's own filter is switched off."""
    consumer: Any = app.consumer  # created here, before the worker starts its fetcher
    consumer._read_offset = _NothingRead()


def _offset_of(fut: Any) -> int | None:
    if fut.cancelled() or fut.exception() is not None:
        return None
    return int(fut.result().offset)


def _actives(app: faust.App) -> frozenset[tuple[str, int]]:
    try:
        return frozenset((tp.topic, tp.partition) for tp in app.assignor.assigned_actives())
    except Exception:  # before the first assignment
        return frozenset()


def _highwater(app: faust.App, tp: tuple[str, int]) -> int | None:
    try:
        from faust.types import TP

        hw = app.consumer.highwater(TP(tp[0], tp[1]))
    except Exception:  # consumer not started, or partition unknown to it yet
        return None
    return int(hw) if hw is not None else None


def _committed(app: faust.App, tp: tuple[str, int]) -> int | None:
    try:
        from faust.types import TP

        # faust keeps the committed offsets it sought to on assignment (no public accessor),
        # storing offset 0 as None: a key with None is a commit at 0, a missing key no commit.
        offsets = getattr(app.consumer, "_committed_offset", {})
        key = TP(tp[0], tp[1])
        if key not in offsets:
            return None
        off = offsets[key]
    except Exception:  # consumer not started
        return None
    if off is None:
        return 0
    return int(off) if off >= 0 else None


def _lags(
    clock: LagAwareClock, actives: frozenset[tuple[str, int]], inputs: set[str]
) -> list[tuple[tuple[str, int], int]]:
    """Messages behind the highwater per actively owned partition, from what the agents consumed
    (the clock's progress) or, before the first message, the committed offset."""
    out = []
    for tp in sorted(actives):
        if tp[0] not in inputs:
            continue  # ticks, changelogs, the handlers' topic: not what the agents consume
        hw = clock.highwater(tp)
        if hw is None:
            continue
        p = clock.progress.get(tp)
        position = p.offset + 1 if p is not None and p.offset >= 0 else (clock.committed(tp) or 0)
        out.append((tp, max(0, hw - position)))
    return out


DLQ_MAX_BYTES = 512 * 1024
"""Largest dead-letter record: half the broker's default limit, whatever the bad message was."""


def dead_letter_record(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes, exc: InvalidEvent
) -> bytes:
    """The `orders-dlq` value for one bad message: where it came from, why, and its bytes (text
    when UTF-8, else base64), truncated until the record fits DLQ_MAX_BYTES; the original length
    and SHA-256 always identify the message, so a consumer can tell a copy is partial."""
    keep = len(value)
    while True:
        part = value[:keep]
        try:
            original: dict[str, Any] = {"original": part.decode("utf-8")}
        except UnicodeDecodeError as err:
            if keep < len(value) and err.start >= len(part) - 3:
                original = {"original": part[: err.start].decode("utf-8")}  # cut inside a character
            else:
                original = {"original_base64": base64.b64encode(part).decode("ascii")}
        record = {
            "reason": exc.reason,
            "error": exc.detail,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": (key or b"")[:1024].decode("utf-8", "replace"),
            "received_at": iso(time.time()),
            "original_length": len(value),
            "original_sha256": hashlib.sha256(value).hexdigest(),
            "truncated": keep < len(value),
            **original,
        }
        blob = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if len(blob) <= DLQ_MAX_BYTES:
            return blob
        keep = keep * DLQ_MAX_BYTES // len(blob) // 2  # escapes can make a byte six: shrink fast


SOURCE_HEADER = "orderwatch-upstream"
"""Header of a forwarded message: b"<upstream topic>:<partition>:<offset>"."""


def _upstream_of(msg: Any) -> tuple[str, int] | None:
    """(upstream partition key, offset) of a forwarded message, from its header."""
    for name, value in msg.headers or ():
        if name == SOURCE_HEADER:
            tp, _, offset = bytes(value).decode("ascii", "replace").rpartition(":")
            try:
                return tp, int(offset)
            except ValueError:
                return None  # only workers write here; a bad header costs the dedupe, not the event
    return None


def _stalled(ow: Orderwatch, inputs: set[str]) -> list[tuple[str, int]]:
    """The owned input partitions whose commits stopped although messages wait (StallWatch), each
    explained or not by an event the agent holds on purpose (the reorder buffer)."""
    out = []
    actives = ow.actives()
    for spec in ow.agents.values():
        for tp in sorted(actives):
            topic, partition = tp
            if topic not in spec.inputs or topic not in inputs:
                continue
            rt = spec.runtimes.get(partition)
            committed = _committed(ow.app, tp)
            explained = rt is not None and committed is not None and rt.waiting(f"{topic}:{partition}", committed)
            if ow.stalls.check(tp, committed, ow.clock.highwater(tp), explained):
                out.append(tp)
            elif tp in ow.stalled:
                ow.metrics.partition_stalled.labels(topic, str(partition)).set(0)
    return out


def _datadir(settings: Settings) -> dict[str, Any]:
    """faust's `datadir` (where rocksdb:// keeps its files) when set; faust's default otherwise."""
    return {"datadir": settings.data_dir} if settings.data_dir else {}


def _credentials(settings: Settings) -> Any:
    if settings.sasl_mechanism:
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        return faust.SASLCredentials(
            username=settings.sasl_username or "", password=password, mechanism=settings.sasl_mechanism
        )
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        return faust.SSLCredentials(create_ssl_context(cafile=settings.ssl_cafile))
    return None
