"""The agent driver: what one detector agent does with each message faust hands it.

Per agent partition it owns a PartitionRuntime (reorder buffer + detector + ledger), a
TimestampMerge of its co-partitioned inputs (agents with several), the acks it holds back and the
forwards sent since its last flush. A message is merged by record timestamp, decoded (event or
control message), offered to the runtime (forwarded first if another agent needs it); a flush
applies what the clock allows, publishes the emissions, writes the changed state and the ledger,
then acks in offset order. Revocation drops a partition's state: its new owner reads again what
was not acked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from orderwatch.detectors.base import KeyedDetector
from orderwatch.detectors.records import ExceptionRecord
from orderwatch.detectors.topology import Adopt
from orderwatch.errors import InvalidEvent
from orderwatch.schemas.control import Adoption, Watermark, decode_control, decode_tick
from orderwatch.schemas.events import ENTITY_FIELD, TOPIC_OF_TYPE, entity_of, parse_event
from orderwatch.streams.acks import OrderedAcks
from orderwatch.streams.agents import AgentClocks, AgentSpec
from orderwatch.streams.arrivals import ArrivalClock
from orderwatch.streams.clock import LagAwareClock
from orderwatch.streams.consumer_port import ConsumerPort
from orderwatch.streams.dead_letters import DeadLetters
from orderwatch.streams.emissions import EmissionPublisher
from orderwatch.streams.forwarding import Forwarder, upstream_of, upstream_partition
from orderwatch.streams.health import CrashLoop
from orderwatch.streams.merge import TimestampMerge
from orderwatch.streams.metrics import Metrics
from orderwatch.streams.runtime import LEDGER_KEY, Ledger, PartitionRuntime, Release
from orderwatch.streams.stamps import RecordStamps

__all__ = ["FLUSH_EVERY", "FLUSH_SECONDS", "AgentDriver", "StateStore"]

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.02  # under load, an agent partition flushes at most this often
FLUSH_EVERY = 500  # events an agent partition buffers at most before it flushes, under load
STALLED_TICK_SECONDS = 1.0  # a tick this late (and later than the idle wait): the agent's delivery stalled


class StateStore(Protocol):
    """The agent's changelog-backed table (a faust Table), as the driver uses it."""

    def items(self) -> Any: ...

    def __setitem__(self, key: bytes, value: bytes) -> None: ...

    def pop(self, key: bytes, default: Any = None) -> Any: ...


class _Aligned:
    """Whether a record of input `topic` stamped `ts_ms` may go now: records of contract topics
    go in record-timestamp order across the worker's partitions (streams.arrivals); the others
    (repartition inputs) are not aligned."""

    __slots__ = ("_arrivals", "_contract")

    def __init__(self, arrivals: ArrivalClock, contract: frozenset[str]) -> None:
        self._arrivals, self._contract = arrivals, contract

    def may_go(self, topic: str, ts_ms: int) -> bool:
        return topic not in self._contract or self._arrivals.may_go(ts_ms)

    def moved_at(self) -> float:
        return self._arrivals.moved_at()


class _Lagging:
    """Whether input `topic` of one agent partition may have records not handed to the agent yet."""

    __slots__ = ("_clock", "_partition")

    def __init__(self, clock: LagAwareClock, partition: int) -> None:
        self._clock, self._partition = clock, partition

    def __call__(self, topic: str) -> bool:
        return self._clock.lagging((topic, self._partition))


class _InFlight:
    """Whether a record this worker forwarded to input `topic` of one agent partition is on its way."""

    __slots__ = ("_clock", "_partition")

    def __init__(self, clock: LagAwareClock, partition: int) -> None:
        self._clock, self._partition = clock, partition

    def __call__(self, topic: str, before_ms: float) -> bool:
        return self._clock.in_flight((topic, self._partition), before_ms)


@dataclass
class _Batch:
    """Events offered to a partition since its last flush, and when that was (loop time)."""

    offered: int = 0
    flushed_at: float = 0.0
    forwards: list[Any] = field(default_factory=list)
    """Sends of the forwards of events offered since the last flush."""
    arrival: float | None = None
    """Largest record timestamp (seconds) of what this partition was handed."""
    taken_ms: int | None = None
    """Largest record timestamp (ms) it took (its merge let go): the arrival clock's `taken_ms`."""
    early: list[Release[Any]] = field(default_factory=list)
    """What releases before a late record applied (published and acked with the next flush)."""
    received: int = 0
    """Input messages (not ticks) handed to this partition so far: the Ticker's sign of a busy one."""


class AgentDriver:
    """Drives one detector agent's partitions. `process(stream)` is the faust agent's body."""

    def __init__(
        self,
        spec: AgentSpec,
        *,
        clocks: AgentClocks,
        port: ConsumerPort,
        metrics: Metrics,
        publisher: EmissionPublisher,
        dead_letters: DeadLetters,
        forwarder: Forwarder | None,
        forward_inputs: frozenset[str],
        contract_topics: dict[str, str],
        max_future_seconds: float,
        crash_loop: CrashLoop,
        stamps: RecordStamps,
        merge_idle_seconds: float = 3.0,
        merge_flight_seconds: float = 30.0,
        merge_max_held: int = 10_000,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self._clocks = clocks
        self._clock: LagAwareClock = clocks.clock
        self._port = port
        self._metrics = metrics
        self._publisher = publisher
        self._dead_letters = dead_letters
        self._forwarder = forwarder
        self._forward_inputs = forward_inputs
        self._contract_topics = contract_topics
        self._max_future = max_future_seconds or float("inf")
        self._max_future_seconds = max_future_seconds
        self._crash_loop = crash_loop
        self._stamps = stamps
        self._repartitioned = frozenset(spec.repartitioned)
        self._merge_idle = merge_idle_seconds
        self._merge_flight = merge_flight_seconds
        self._merge_max = merge_max_held
        self._arrivals = clocks.arrivals
        self._pumped_at = float("-inf")  # the arrival clock's `safe` when the merges were last pumped
        self.last_input = time.monotonic()
        """When the agent last got a message of an input (not a tick): its merges' idle waits count from it."""
        self._lateness = clocks.clock.lateness
        if len(spec.inputs) > 1:
            # At zero from the start, as Metrics.initialise does for the other counters: rate()
            # sees a counter's first increase only from a sample before it.
            for reason in ("idle", "overflow", "align"):
                metrics.merge_forced.labels(self.name, reason)
        self.table: StateStore | None = None
        self.ready: asyncio.Event | None = None
        """Set when the agent may start (the orders agent waits for the blocklist)."""
        self.runtimes: dict[int, PartitionRuntime[Any]] = {}
        self.merges: dict[int, TimestampMerge[Any]] = {}
        self._acks = OrderedAcks()
        self._batches: dict[int, _Batch] = {}

    @property
    def inputs(self) -> list[str]:
        return self.spec.inputs

    # -- partitions ------------------------------------------------------------------------

    def runtime(self, partition: int) -> PartitionRuntime[Any]:
        rt = self.runtimes.get(partition)
        if rt is None:
            # First message of a partition since it was assigned: rebuild state and timers from
            # the table (recovered from its changelog by now), for this partition only.
            det: KeyedDetector = self.spec.make()
            ledger = Ledger()
            tag = f"{partition}|".encode()
            ledger_key = f"{LEDGER_KEY}:{partition}".encode()
            for key, value in self._table().items():
                if key == ledger_key:
                    ledger = Ledger.loads(value)
                elif value and value.startswith(tag):
                    det.restore(key.decode(), value[len(tag) :])
            det.dirty.clear()
            # No apply function: the runtime keys each event by the routing table.
            rt = self.runtimes[partition] = PartitionRuntime(det, ledger=ledger)
            self._batches[partition] = _Batch()
            if len(self.spec.inputs) > 1:
                aligned = None
                if self._arrivals is not None:
                    aligned = _Aligned(self._arrivals, frozenset(self._contract_topics).intersection(self.spec.inputs))
                self.merges[partition] = TimestampMerge(
                    self.spec.inputs,
                    _Lagging(self._clock, partition),
                    idle_wait=self._merge_idle,
                    flight_wait=self._merge_flight,
                    max_held=self._merge_max,
                    aligned=aligned,
                    by_time=self.spec.repartitioned,
                    in_flight=_InFlight(self._clock, partition),
                    received_at=self._received_at,
                )
            log.info("%s: partition %s ready, %s keys restored", self.name, partition, len(det.states))
        return rt

    def revoke(self, tps: list[tuple[str, int]]) -> None:
        """Partitions taken away: their state, timers and held messages belong to the new owner."""
        for topic, partition in tps:
            if topic in self.spec.inputs:
                self.runtimes.pop(partition, None)
                self._batches.pop(partition, None)
                merge = self.merges.pop(partition, None)
                if merge is not None:
                    merge.clear()
            self._acks.drop(f"{topic}:{partition}")
        self._stamps.forget(tp for tp in tps if tp[0] in self.spec.inputs)

    def _received_at(self) -> float:
        return self.last_input

    def _owns(self, partition: int, rt: PartitionRuntime[Any]) -> bool:
        return self.runtimes.get(partition) is rt

    def _table(self) -> StateStore:
        if self.table is None:
            msg = f"agent {self.name}: no table attached (create_app attaches one before it starts)"
            raise RuntimeError(msg)
        return self.table

    def received(self, partition: int) -> int:
        """Input messages handed to `partition` since it was assigned (ticks not counted)."""
        batch = self._batches.get(partition)
        return batch.received if batch is not None else 0

    def wants_tick(self, partition: int, rt: PartitionRuntime[Any]) -> bool:
        """Work the clock may have made due: buffered events, a timer, or records the merge holds."""
        batch = self._batches.get(partition)
        now = self._clocks.now(self.name, partition, taken_ms=batch.taken_ms if batch is not None else None)
        nxt = rt.detector.notify_at()
        merge = self.merges.get(partition)
        return (
            (rt.buffered > 0 and rt.oldest < now)
            or (nxt is not None and nxt < now)
            or (merge is not None and merge.waiting())
        )

    # -- the agent loop --------------------------------------------------------------------

    async def process(self, stream: Any) -> None:
        try:
            await self._consume(stream)
        except Exception:
            # faust's supervisor restarts the agent; a loop of restarts makes /health unhealthy.
            self._metrics.agent_crashes.labels(self.name).inc()
            self._crash_loop.crashed(self.name)
            log.exception("%s: the agent loop raised; faust restarts it", self.name)
            raise

    async def _consume(self, stream: Any) -> None:
        manual = stream.noack()
        if self.ready is not None:
            # Orders are checked against the blocklist as they are applied: read it all first.
            await self.ready.wait()
        # A flush (apply what the clock allows, emit, write the changed keys and the ledger, ack)
        # costs several produced messages, and faust hands the agent one message per loop turn
        # whatever is queued, so under load a partition's events are flushed together: at most
        # once per FLUSH_SECONDS, or after FLUSH_EVERY events. The first event after a quiet
        # spell is flushed at once, so a lone event is judged without delay; the tail of a burst
        # is flushed by the next tick (the timer sends one while buffered events are due).
        # A partition is only ever flushed while its own message is processed: faust sends a
        # table write to the changelog partition of the current message.
        loop_time = asyncio.get_running_loop().time
        arrivals = self._arrivals
        async for event in manual.events():
            if arrivals is not None:
                arrivals.refresh()  # the consumer may have fetched since: lag may have changed
            msg = event.message
            partition = msg.partition
            rt = self.runtime(partition)
            batch = self._batches[partition]
            if msg.topic == self.spec.ticks:
                await self._tick(rt, manual, event)
                batch.offered, batch.flushed_at = 0, loop_time()
                continue
            self.last_input = time.monotonic()
            batch.received += 1
            batch.offered += await self._receive(rt, manual, event)
            if batch.offered and (batch.offered >= FLUSH_EVERY or loop_time() - batch.flushed_at >= FLUSH_SECONDS):
                await self.flush(rt, partition, manual)
                batch.offered, batch.flushed_at = 0, loop_time()

    async def _tick(self, rt: PartitionRuntime[Any], stream: Any, event: Any) -> None:
        msg = event.message
        try:
            decode_tick(msg.headers, msg.value)
        except InvalidEvent as exc:
            await self._dead_letters.send(msg, exc)
        partition = msg.partition
        merge = self.merges.get(partition)
        if merge is not None:
            late = max(self._merge_idle, STALLED_TICK_SECONDS)  # ticks are always a little late
            if msg.timestamp is not None and self._clock.wall() - msg.timestamp > late:
                # Its own tick took longer than the idle wait to reach it: its delivery stalled
                # (faust hands a fetched batch over in order and waits while another agent's
                # queue is full), so its inputs' silence says nothing, and the records it waits
                # for may be right behind this tick. The waits start again (seen: 637 records
                # forced out after minutes without a message, in a replay under load).
                for waiting in self.merges.values():
                    waiting.restart_waits()
            self._batches[partition].offered += await self._offer_released(rt, stream, partition, merge)
            await self._pump(stream)
        await self.flush(rt, partition, stream)
        await stream.ack(event)  # a tick is not held in order: its topic is the agent's own

    async def _receive(self, rt: PartitionRuntime[Any], stream: Any, event: Any) -> int:
        """One message of an input: merged (agents with several inputs) or offered at once.
        Returns how many events entered the reorder buffer."""
        msg = event.message
        partition = msg.partition
        tpkey = f"{msg.topic}:{partition}"
        if tpkey not in rt.ledger.low:
            await self._resume(rt, tpkey, msg.topic, partition, msg.offset)
            if not self._owns(partition, rt):
                return 0  # revoked while seeking: the new owner reads it again
        ms = self._stamps.of(msg.topic, partition, msg.offset, msg.timestamp)
        batch = self._batches[partition]
        if msg.timestamp is not None and (batch.arrival is None or ms > batch.arrival * 1000):
            batch.arrival = ms / 1000
        merge = self.merges.get(partition)
        if merge is None:
            if batch.taken_ms is None or ms > batch.taken_ms:
                batch.taken_ms = ms
            return int(await self._offer(rt, stream, event, ms))
        if not merge.push(msg.topic, msg.offset, ms, event):
            return 0  # this very offset is held already: the held copy is acked once applied
        if msg.topic in self._repartitioned:
            self._clock.took((msg.topic, partition), msg.offset, ms)
        elif self._arrivals is not None and msg.topic in self._contract_topics:
            self._arrivals.received((msg.topic, partition), msg.offset, ms)
        entered = await self._offer_released(rt, stream, partition, merge)
        await self._pump(stream)
        return entered

    async def _pump(self, stream: Any) -> None:
        """Aligned merges (event mode): what one partition took may be what the others were
        waiting for (streams.arrivals), and no message of theirs may come to ask again (the end
        of a replay, or all of it fetched and held already): let them go on now, every merge,
        until a pass moves the clock no further. One pass is not enough: what a second partition
        lets go can unblock the first again, which then waited for the next tick (every 20 ms),
        and a replay went at the pace of the ticks (bench/results/README.md, 2026-11-27). Their
        events are flushed by their own next message or tick (a table write belongs to its own
        partition's message)."""
        arrivals = self._arrivals
        if arrivals is None or len(self.merges) < 2:
            return
        # Ends: `safe` only grows, and only as held records are let go.
        while (safe := arrivals.safe()) > self._pumped_at:
            self._pumped_at = safe
            for other, merge in list(self.merges.items()):
                rt = self.runtimes.get(other)
                if merge.held and rt is not None:
                    self._batches[other].offered += await self._offer_released(rt, stream, other, merge)

    async def _offer_released(
        self, rt: PartitionRuntime[Any], stream: Any, partition: int, merge: TimestampMerge[Any]
    ) -> int:
        entered = 0
        batch = self._batches[partition]
        # One at a time: offering a record moves the clock's view of its input, which the merge
        # asks (`lagging`) before it lets the next one go.
        while self._owns(partition, rt) and (released := merge.next()) is not None:
            msg = released[1].message
            ms = self._stamps.of(msg.topic, partition, msg.offset, msg.timestamp)
            if batch.taken_ms is None or ms > batch.taken_ms:
                batch.taken_ms = ms
            entered += int(await self._offer(rt, stream, released[1], ms))
        forced = merge.forced
        if forced.idle or forced.overflow or forced.align:
            for reason in ("idle", "overflow", "align"):
                self._metrics.merge_forced.labels(self.name, reason).inc(getattr(forced, reason))
            forced.idle = forced.overflow = forced.align = 0
        return entered

    async def _offer(self, rt: PartitionRuntime[Any], stream: Any, event: Any, ms: int) -> bool:
        """Decode one message and buffer it; True when it entered the reorder buffer. `ms`: the
        timestamp it counts at (streams.stamps)."""
        msg = event.message
        partition = msg.partition
        tp = (msg.topic, partition)
        tpkey = f"{msg.topic}:{partition}"
        try:
            control = decode_control(msg.headers, msg.value) if msg.topic in self._repartitioned else None
            if isinstance(control, Watermark):
                source = (control.source_topic, control.source_partition)
                self._clock.watermark(tp, source, control.forwarded_upto, control.caught_up)
                self._clock.observe(tp, msg.offset, None)
                self._stamps.settled(msg.topic, partition, msg.offset)
                await self._settle(rt, stream, tpkey, msg.offset, event)
                return False
            if control is not None and not isinstance(control, Adoption):
                raise InvalidEvent("invalid_control", f"a {control.kind} does not belong on {msg.topic}")
            if isinstance(control, Adoption):
                ev: Any = Adopt(control.id, ExceptionRecord.from_dict(control.exception), control.event_time)
                t = control.event_time
            else:
                ev = parse_event(msg.value or b"")
                t = ev.time.timestamp()
                contract_topic = self._contract_topics.get(msg.topic)
                if contract_topic is not None:
                    self._check_placement(ev, t, contract_topic, msg.key)
        except InvalidEvent as exc:
            self._clock.observe(tp, msg.offset, None)
            self._decided(msg, ms)
            await self._dead_letters.send(msg, exc)
            await self._settle(rt, stream, tpkey, msg.offset, event)
            return False
        if not isinstance(ev, Adopt):
            self._metrics.events_in.labels(msg.topic, ev.type).inc()
        return await self._admit(rt, stream, ev, t, event, ms)

    def _check_placement(self, ev: Any, t: float, topic: str, key: bytes | None) -> None:
        """A valid event on a contract topic must sit on its type's topic, under its entity's key,
        and not come from the future: otherwise the wrong partition would own it."""
        if TOPIC_OF_TYPE[ev.type] != topic:
            raise InvalidEvent("wrong_topic", f"{ev.type} belongs on {TOPIC_OF_TYPE[ev.type]}, not on {topic}")
        if key is not None and key != entity_of(ev).encode():
            raise InvalidEvent("key_mismatch", f"the Kafka key is not data.{ENTITY_FIELD[ev.type]}")
        if t > time.time() + self._max_future:
            msg = f"event time is more than {self._max_future_seconds:g} s ahead of the wall clock"
            raise InvalidEvent("from_future", msg)

    async def _admit(self, rt: PartitionRuntime[Any], stream: Any, ev: Any, t: float, event: Any, ms: int) -> bool:
        """Buffer one decoded event; True when it entered the reorder buffer."""
        msg = event.message
        partition = msg.partition
        tp = (msg.topic, partition)
        tpkey = f"{msg.topic}:{partition}"
        clock = self._clock
        if rt.waiting(tpkey, msg.offset):
            clock.observe(tp, msg.offset, t)
            self._decided(msg, ms)
            self._acks.hold(tpkey, msg.offset, event)  # acked with the buffered copy, once applied
            return False
        source = upstream_of(msg.headers) if msg.topic in self._repartitioned else None
        if self._arrivals is not None:
            self._catch_up_before(rt, partition, ms, t, source)
        if not rt.offer(ev, t, tpkey, msg.offset, event, source):
            # Already applied or buffered, so already forwarded: a re-read after a rebalance
            # or restart must not hand agents downstream a copy they may take for a late event.
            clock.observe(tp, msg.offset, t)
            # One applied before (by this worker before a restart, whose arrival clock starts
            # empty) is still an arrival at its place in the stream, as in the backtest: without
            # it a restarted worker's clock followed only the sources with new records, ran up
            # to 950 s ahead of the backtest's, and what the orders agent forwarded next
            # came late downstream (test_recovery, seen in CI). Folding one twice (a re-read
            # after a rebalance) moves no source: its progress has passed it already.
            self._decided(msg, ms, t if rt.ledger.applied(tpkey, msg.offset) else None)
            self._metrics.duplicates.labels(self.name).inc()
            await self._settle(rt, stream, tpkey, msg.offset, event)
            return False
        if self._forwarder is not None and msg.topic in self._forward_inputs:
            restamped = self._stamps.restamp_of(msg.topic, partition, msg.offset)
            stamp = msg.timestamp if restamped is None else restamped / 1000
            sends = await self._forwarder.forward(ev, msg.value, tp, msg.offset, stamp)
            if sends:
                self._batches[partition].forwards.extend(sends)
            if not self._owns(partition, rt):
                return False  # revoked while sending: the new owner reads it again (not acked)
        # After the forward: the progress the clock (and the watermarks) report covers only
        # events already handed to the producer.
        clock.observe(tp, msg.offset, t)
        self._decided(msg, ms, t)
        if t < rt.clock:
            # The clock promised nothing older would come: deadlines may have fired without it.
            self._metrics.late.labels(self.name, msg.topic).inc()
            log.warning(
                "%s: late event %s[%s]@%s, %.1f s behind the clock",
                self.name,
                msg.topic,
                partition,
                msg.offset,
                rt.clock - t,
            )
        self._acks.hold(tpkey, msg.offset, event)
        return True

    def _decided(self, msg: Any, ms: int, event_time: float | None = None) -> None:
        """Tell the arrival clock a contract record (counted at `ms`) was decided (with its event
        time: it entered the reorder buffer)."""
        if self._arrivals is not None and msg.topic in self._contract_topics:
            self._arrivals.done((msg.topic, msg.partition), msg.offset, ms, event_time)
        self._stamps.settled(msg.topic, msg.partition, msg.offset)

    def _catch_up_before(
        self, rt: PartitionRuntime[Any], partition: int, stamp_ms: int, t: float, source: tuple[str, int] | None
    ) -> None:
        """A record behind the clock it arrived at (the backtest's, as of just before its
        timestamp): first apply what that clock made due, as the backtest did before it came, so
        a deadline it would have missed fires before it (PAYMENT_WITHOUT_ORDER for an order the
        order service delivered late) and it is applied late, in its turn. `source`: its upstream
        (partition key, offset) when it was forwarded."""
        arrivals = self._arrivals
        if arrivals is None or t >= arrivals.low() - self._lateness:
            return  # not behind even the latest clock: it waits in the buffer for its time
        upstream = upstream_partition(source[0]) if source is not None else None
        before = self._clocks.now(self.name, partition, before_ms=stamp_ms, upstream=upstream)
        if t < before and rt.clock < before:
            self._batches[partition].early.append(rt.release(before))

    # -- flush and acks --------------------------------------------------------------------

    async def flush(self, rt: PartitionRuntime[Any], partition: int, stream: Any) -> None:
        if not self._owns(partition, rt):
            return  # revoked meanwhile: its new owner reads what was not acked
        batch = self._batches[partition]
        released = rt.release(self._clocks.now(self.name, partition, taken_ms=batch.taken_ms))
        if batch.early:
            released = _joined([*batch.early, released])
            batch.early = []
        forwards, batch.forwards = batch.forwards, []
        if released.emissions:
            # Before the state that says they happened.
            await self._publisher.publish(self.name, released.emissions, batch.arrival)
        for event, exc in released.failed:
            msg = event.message
            log.error("%s: the rules raised on %s[%s]@%s", self.name, msg.topic, partition, msg.offset)
            reason = InvalidEvent("processing_error", f"{type(exc).__name__} while the rules applied it")
            await self._dead_letters.send(msg, reason)
        # The forwards of the events applied here, before the ledger that says they were: a
        # re-read skips applied events, so a forward lost in a crash would never be sent again.
        for fut in forwards:
            await fut
        if not self._owns(partition, rt):
            return  # revoked while waiting for the broker: the table partition is not ours now
        table = self._table()
        tag = f"{partition}|".encode()
        for key, blob in rt.take_dirty():
            kb = str(key).encode()
            if blob is None:
                table.pop(kb, None)
            else:
                table[kb] = tag + blob
        if released.applied:
            table[f"{LEDGER_KEY}:{partition}".encode()] = rt.ledger.dumps()
        await self._acks.ack_below(rt.ledger.low, stream)

    async def _settle(self, rt: PartitionRuntime[Any], stream: Any, tpkey: str, offset: int, event: Any) -> None:
        """A message handled without entering the buffer (dead letter, control, re-delivery)."""
        rt.ledger.seen_base(tpkey, offset)
        rt.ledger.mark(tpkey, offset)
        self._acks.hold(tpkey, offset, event)
        await self._acks.ack_below(rt.ledger.low, stream)

    async def _resume(self, rt: PartitionRuntime[Any], tpkey: str, topic: str, partition: int, offset: int) -> None:
        """The first message of a partition since assignment. faust resumes fetching before it
        seeks to the committed offset, and what it delivered in between can be cleared from
        the agent's queue and then skipped as already read (faust-streaming issue #216; seen
        here as a restarted worker starting its order topics at offset 5 or 18 with nothing
        committed past 0). So the ledger starts at the committed offset (as faust knows it, else
        as the worker read it at start-up, when it pins a commit on every partition without
        one), never past it, and a gap is read again: nothing after it is acked until it is
        filled."""
        # Never awaits the broker: this runs inside the agent loop (see ConsumerPort.resume_offset).
        # Without it, a fresh group's ledger based itself at whatever faust delivered first:
        # seen, a first inventory message at offset 742 (0..741 fetched before the rewind's
        # seek and cleared from the queue), and the re-read of 0..741 dropped as applied.
        committed = self._port.resume_offset((topic, partition))
        start = offset if committed is None else min(committed, offset)
        rt.ledger.seen_base(tpkey, start)
        if start < offset:
            log.warning(
                "%s: %s[%s] delivered from offset %s but committed at %s: reading the gap again",
                self.name,
                topic,
                partition,
                offset,
                start,
            )
            # The clock must not count the partition as caught up before the gap is read.
            self._clock.hole((topic, partition), start, offset - 1)
            if self._arrivals is not None:
                self._arrivals.refresh()  # the partition lags again: `safe` must see it now
            await self._port.seek((topic, partition), start)
        else:
            log.info("%s: %s[%s] resumes at offset %s", self.name, topic, partition, offset)


def _joined(parts: list[Release[Any]]) -> Release[Any]:
    """Several releases of one partition as one, in the order they happened."""
    out: Release[Any] = Release()
    for part in parts:
        out.emissions += part.emissions
        out.applied += part.applied
        out.dropped += part.dropped
        out.failed += part.failed
    return out
