"""The faust application, wired from named parts (this module only wires them).

Agents and their keys (all topics co-partitioned, `settings.partitions` each):

    orders agent     orders + payments + logistics + <app>-order-inbox    key order id
    inventory agent  inventory                                             key sku
    address agent    <app>-by-address     (order.created, forwarded)      key address fingerprint
    customer agent   <app>-by-customer    (order.created, forwarded)      key customer id
    provider agent   <app>-by-provider    (payments, forwarded)           key provider

Each also reads its own `<app>-ticks-<agent>` topic (streams.ticks). The parts:

    streams.driver          AgentDriver: merge, decode, offer, flush, resume
    streams.acks            OrderedAcks: each partition's acks in offset order, once applied
    streams.merge           TimestampMerge: co-partitioned inputs in record-timestamp order
    streams.agents          AgentSpec (what each agent is) and AgentClocks (its clock)
    streams.consumer_port   ConsumerPort: every faust/aiokafka private access, version-pinned;
                            NamedTopicsApp: the producer asks for its topics' metadata only
    streams.forwarding      Forwarder: the repartition sends
    streams.emissions       EmissionPublisher: order-exceptions and DUPLICATE_ORDER adoptions
    streams.dead_letters    DeadLetters: orders-dlq
    streams.watermarks      WatermarkSender: progress of owned upstreams to other workers
    streams.ticks           Ticker: wakes partitions with due work
    streams.blocklist_follower  BlocklistFollower: the global blocklist
    streams.rebalance       RewindAfterRebalance: reads again what faust lost in a rebalance
    streams.views           /metrics, /clock, /health, /ready and the stall check
XX
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import faust

from orderwatch.detectors.base import KeyedDetector
from orderwatch.detectors.blocklist import Blocklist
from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.orders import OrderDetector
from orderwatch.detectors.stock import StockDetector
from orderwatch.detectors.topology import DETECTORS, ROUTES, direct_topics, forward_topics
from orderwatch.detectors.windows import AddressDetector, CustomerDetector, ProviderDetector
from orderwatch.handlers.config import HandlersConfig
from orderwatch.schemas.events import INPUT_TOPICS, TOPIC_OF_TYPE
from orderwatch.streams.agents import AgentClocks, AgentSpec
from orderwatch.streams.arrivals import ArrivalClock
from orderwatch.streams.blocklist_follower import BlocklistFollower
from orderwatch.streams.clock import LagAwareClock
from orderwatch.streams.commits import CommitSensor
from orderwatch.streams.consumer_port import ConsumerPort, NamedTopicsApp
from orderwatch.streams.dead_letters import DLQ_MAX_BYTES, DeadLetters, dead_letter_record
from orderwatch.streams.driver import AgentDriver, StateStore
from orderwatch.streams.emissions import EmissionPublisher
from orderwatch.streams.forwarding import Forwarder
from orderwatch.streams.health import CrashLoop, StallWatch
from orderwatch.streams.metrics import Metrics
from orderwatch.streams.outputs import KafkaOutputs, Outputs
from orderwatch.streams.rebalance import RewindAfterRebalance
from orderwatch.streams.settings import Settings
from orderwatch.streams.stamps import RecordStamps
from orderwatch.streams.ticks import INTERVAL as TICK_INTERVAL
from orderwatch.streams.ticks import MERGE_INTERVAL, Ticker
from orderwatch.streams.views import STALL_CHECK_SECONDS, RuntimeViews, page
from orderwatch.streams.watermarks import WatermarkSender

__all__ = [
    "AGENTS",
    "DLQ_MAX_BYTES",
    "Orderwatch",
    "create_app",
    "dead_letter_record",
    "internal_topics",
    "producer_topics",
]

AGENTS = ("orders", "inventory", "address", "customer", "provider")

TP = tuple[str, int]


def internal_topics(settings: Settings) -> list[str]:
    """Topics the runtime needs besides the contract's: repartitions, inbox, ticks."""
    app = settings.app_id
    names = [f"{app}-order-inbox", f"{app}-by-address", f"{app}-by-customer", f"{app}-by-provider"]
    return names + [f"{app}-ticks-{agent}" for agent in AGENTS]


class OwnedPartitions:
    """The partitions this worker actively owns, read on every event and tick: cached, refreshed
    when the assignment changes (faust rebuilds the set on every call to assigned_actives())."""

    def __init__(self, port: ConsumerPort) -> None:
        self._port = port
        self._now: frozenset[TP] = frozenset()

    def __call__(self) -> frozenset[TP]:
        if not self._now:  # not assigned yet, or the signal has not run: ask faust
            self._now = self._port.actives()
        return self._now

    def refresh(self) -> None:
        self._now = self._port.actives()


class ContractPartitions:
    """The contract topic partitions this worker owns (what the arrival clock aligns), re-read
    only when the owned set changes."""

    def __init__(self, owned: OwnedPartitions, contract: frozenset[str]) -> None:
        self._owned = owned
        self._contract = contract
        self._of: frozenset[TP] | None = None
        self._tps: tuple[TP, ...] = ()

    def __call__(self) -> tuple[TP, ...]:
        now = self._owned()
        if now is not self._of:
            self._of = now
            self._tps = tuple(sorted(tp for tp in now if tp[0] in self._contract))
        return self._tps


@dataclass
class Orderwatch:
    """What `create_app` builds: the faust app plus the parts tests, the CLI and the handlers reach for."""

    app: faust.App
    settings: Settings
    metrics: Metrics
    clock: LagAwareClock
    agents: dict[str, AgentDriver]
    port: ConsumerPort
    clocks: AgentClocks
    actives: Callable[[], frozenset[TP]] = frozenset
    detection: bool = True
    handlers: Any = None  # streams.handling.HandlerRuntime when the handlers run in this app
    blocklist: BlocklistFollower | None = None
    stalls: StallWatch = field(default_factory=StallWatch)
    crash_loop: CrashLoop = field(default_factory=CrashLoop)
    stalled: list[TP] = field(default_factory=list)
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
        assigned = len(self.port.actives())
        if not assigned:
            reasons.append("partitions: none assigned yet")
        reasons += [f"agent {a}: restarting in a loop" for a in self.crash_loop.looping()]
        return reasons, assigned


def agent_specs(settings: Settings, config: RulesConfig, blocklist: Blocklist) -> dict[str, AgentSpec]:
    """Each agent as the routing table (detectors.topology) says: the contract topics it reads
    itself, the internal topics forwards and adoptions reach it by, the upstream topics those
    forwards come from (they bound its clock), the agents whose adoptions it owns (it never runs
    ahead of their clocks). Contract inputs first, in the contract's order (the merge's ties)."""
    app = settings.app_id
    make: dict[str, Callable[[], KeyedDetector]] = {
        "orders": lambda: OrderDetector(config, blocklist),
        "inventory": lambda: StockDetector(config),
        "address": lambda: AddressDetector(config),
        "customer": lambda: CustomerDetector(config),
        "provider": lambda: ProviderDetector(config),
    }
    specs: dict[str, AgentSpec] = {}
    for name in DETECTORS:
        direct = direct_topics(name)
        internal = sorted(forward_topics(name))
        upstream = sorted(
            {TOPIC_OF_TYPE[t] for r in ROUTES if r.detector == name and r.forward is not None for t in r.types}
        )
        specs[name] = AgentSpec(
            name,
            [settings.topic(t) for t in INPUT_TOPICS if t in direct] + [f"{app}-{t}" for t in internal],
            f"{app}-ticks-{name}",
            [settings.topic(t) for t in upstream],
            [f"{app}-{t}" for t in internal],
            make[name],
            partitions=settings.partitions,
        )
    return specs


class PartitionChanges:
    """What a rebalance changes in the parts: revoked partitions' state goes (it belongs to the new
    owner), progress starts over, the watermarks are sent again, the owned set is re-read."""

    def __init__(self, ow: Orderwatch, owned: OwnedPartitions, watermarks: WatermarkSender | None) -> None:
        self._ow = ow
        self._owned = owned
        self._watermarks = watermarks

    async def on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        tps = [(tp.topic, tp.partition) for tp in revoked]
        for driver in self._ow.agents.values():
            driver.revoke(tps)
        self._ow.clock.forget(tps)
        self._forget_arrivals(tps)
        self._moved()

    async def on_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        # Reading resumes at the committed offset, which the clock asks for.
        tps = [(tp.topic, tp.partition) for tp in assigned]
        self._ow.clock.forget(tps)
        self._forget_arrivals(tps)
        self._moved()

    def _forget_arrivals(self, tps: list[TP]) -> None:
        arrivals = self._ow.clocks.arrivals
        if arrivals is not None:
            arrivals.forget(tps)

    def _moved(self) -> None:
        if self._watermarks is not None:
            self._watermarks.reset()  # the receivers forget theirs: tell them again
        self._owned.refresh()


def producer_topics(settings: Settings) -> list[str]:
    """The topics whose metadata the worker's producer asks for from the start
    (streams.consumer_port.NamedTopicsProducer): the worker's topics that exist before it starts,
    not the changelogs faust may create."""
    contract = [settings.topic(t) for t in (*INPUT_TOPICS, "order-exceptions", "orders-dlq")]
    return contract + internal_topics(settings)


def _faust_app(settings: Settings) -> faust.App:
    # NamedTopicsApp: its producer's metadata requests name these topics, not the whole cluster's.
    return NamedTopicsApp(
        settings.app_id,
        producer_topics=producer_topics(settings),
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


def create_app(
    settings: Settings,
    rules: RulesConfig | None = None,
    metrics: Metrics | None = None,
    *,
    detection: bool = True,
    handlers: HandlersConfig | None = None,
    outputs: Outputs | None = None,
    wall: Callable[[], float] | None = None,
) -> Orderwatch:
    """The faust app: the detector's agents (unless `detection` is False) and, given a handlers
    config, the handlers and the ops API (streams.handling). `outputs` replaces the Kafka producer
    (MemoryOutputs for in-process agent tests); `wall` the clock's wall time (a driven clock)."""
    config = rules or RulesConfig()
    metrics = metrics or Metrics()
    app = _faust_app(settings)
    port = ConsumerPort(app)
    port.deliver_everything()
    clock = LagAwareClock(
        mode=settings.clock,
        lateness=settings.lateness_seconds,
        max_skew=settings.max_skew_seconds or None,
        highwater=port.highwater,
        committed=port.committed,
    )
    if wall is not None:
        clock.wall = wall
    owned = OwnedPartitions(port)
    follower = BlocklistFollower(settings)
    specs = agent_specs(settings, config, Blocklist(lookup=follower.lookup))
    arrivals: ArrivalClock | None = None
    if settings.clock == "event":
        contract = {settings.topic(t): t for t in INPUT_TOPICS}
        arrivals = ArrivalClock(
            ContractPartitions(owned, frozenset(contract)),
            clock.lagging,
            contract.__getitem__,
            max_skew=settings.max_skew_seconds or None,
        )
    clocks = AgentClocks(specs, clock, owned, arrivals)
    out = outputs if outputs is not None else KafkaOutputs(app)
    prefix, app_id = settings.topic, settings.app_id
    forwarder = Forwarder(out, clock, owned, settings.partitions, internal_prefix=f"{app_id}-")
    crash_loop = CrashLoop()
    stamps = RecordStamps(wall or time.time, counted=metrics.count_restamp)
    publisher = EmissionPublisher(out, prefix("order-exceptions"), metrics, forwarder)
    dead_letters = DeadLetters(out, prefix("orders-dlq"), metrics)
    feeds = forwarder.feeds(prefix)  # contract topic -> the internal topics it is forwarded to
    forward_inputs = frozenset(feeds)
    contract_topics = {prefix(t): t for t in INPUT_TOPICS}
    drivers = {
        name: AgentDriver(
            spec,
            clocks=clocks,
            port=port,
            metrics=metrics,
            publisher=publisher,
            dead_letters=dead_letters,
            forwarder=forwarder if forward_inputs & set(spec.inputs) else None,
            forward_inputs=forward_inputs,
            contract_topics=contract_topics,
            max_future_seconds=settings.max_future_seconds,
            crash_loop=crash_loop,
            stamps=stamps,
            merge_idle_seconds=settings.merge_idle_seconds,
            merge_flight_seconds=settings.merge_flight_seconds,
            merge_max_held=settings.merge_max_held,
        )
        for name, spec in specs.items()
    }
    drivers["orders"].ready = follower.loaded
    ow = Orderwatch(
        app,
        settings,
        metrics,
        clock,
        drivers,
        port,
        clocks,
        actives=owned,
        detection=detection,
        blocklist=follower,
        stalls=StallWatch(after=settings.stall_seconds),
        crash_loop=crash_loop,
    )
    agent_inputs = {t for spec in specs.values() for t in spec.inputs}
    watermarks: WatermarkSender | None = None
    if detection:
        metrics.initialise((prefix(t) for t in ("orders", "payments", "inventory", "logistics")), agents=AGENTS)
        for driver in drivers.values():
            _install_agent(app, driver, settings.partitions)
        app.task(follower.run)
        app.timer(interval=MERGE_INTERVAL)(Ticker(out, drivers).tick)
        watermarks = WatermarkSender(
            out,
            clock,
            forwarder,
            owned,
            {topic: sorted(targets) for topic, targets in feeds.items()},
            settings.partitions,
            aligned=arrivals.low if arrivals is not None else None,
        )
        app.timer(interval=TICK_INTERVAL)(watermarks.send)
    views = RuntimeViews(ow, agent_inputs)
    app.page("/metrics")(page(views.metrics))
    app.page("/clock")(page(views.clock))
    app.page("/health")(page(views.health))
    if handlers is None:
        app.page("/ready")(page(views.ready))  # with the handlers, the ops API answers /ready
    app.timer(interval=STALL_CHECK_SECONDS)(views.check_stalls)
    changes = PartitionChanges(ow, owned, watermarks)
    app.on_partitions_revoked.connect(changes.on_revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(changes.on_assigned)  # type: ignore[arg-type]
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
        app.sensors.add(RewindAfterRebalance(port, agent_inputs, clock.delivered_run))
    return ow


def _install_agent(app: faust.App, driver: AgentDriver, partitions: int) -> None:
    spec = driver.spec
    driver.table = cast(
        StateStore, app.Table(f"{spec.name}-state", key_type=bytes, value_type=bytes, partitions=partitions)
    )
    channel = app.topic(*spec.inputs, spec.ticks, key_type=bytes, value_type=bytes)
    app.agent(channel, name=f"orderwatch.{spec.name}")(driver.process)


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
