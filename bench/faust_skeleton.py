"""A faust app of orderwatch's shape with no rules: the fair ceiling of issue 10.

The same agents reading the same topics as a worker with the same ORDERWATCH_* settings
(`streams.app.agent_specs`: contract inputs, repartition inputs, tick topic, one table each), the
same forwards (the routing table's `forwards(type)`, keyed as the routes key them, with the
upstream header and timestamp), the same flush policy (streams.driver's FLUSH_SECONDS and
FLUSH_EVERY per agent partition, the tail of a burst flushed by a tick sent by a timer) writing
each key touched since the last flush once plus a ledger key, forwards awaited before the table
writes, and acks by hand in offset order once flushed. What it does not do is orderwatch's own
work: no pydantic parsing (json.loads only), no reorder buffer, no clock, no merge, no rules, no
emissions, no metrics.

    ORDERWATCH_* SKEL_TOTAL=n [SKEL_WRITES=json] python bench/faust_skeleton.py worker -l warn

SKEL_WRITES: table writes per event read, by agent, as a worker made them in the same run (it
writes only changed keys, and its reorder buffer applies a span of event time per flush): the
skeleton then writes that many (the ledger first, then keys touched since the last flush), spread
evenly over its flushes. Without it, every key touched since the last flush plus the ledger.

Once it has flushed SKEL_TOTAL input events and every forward it sent, it commits, logs
`faust skeleton: {json}` (events, forwards, table writes, seconds since process start, process
CPU seconds) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STARTED = time.time()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import faust  # noqa: E402

from orderwatch.backtest import tune_collector  # noqa: E402
from orderwatch.detectors.blocklist import Blocklist  # noqa: E402
from orderwatch.detectors.config import RulesConfig  # noqa: E402
from orderwatch.detectors.ids import address_fingerprint  # noqa: E402
from orderwatch.detectors.topology import forwards  # noqa: E402
from orderwatch.schemas.control import Tick, encode  # noqa: E402
from orderwatch.streams import driver  # noqa: E402
from orderwatch.streams.app import agent_specs  # noqa: E402
from orderwatch.streams.forwarding import SOURCE_HEADER, partition_of  # noqa: E402
from orderwatch.streams.settings import Settings  # noqa: E402

tune_collector()  # the worker's collector setting: the same runtime tuning on both sides

log = logging.getLogger("bench.faust_skeleton")

settings = Settings()
TOTAL = int(os.environ.get("SKEL_TOTAL", "1"))
WRITES: dict[str, float] | None = json.loads(os.environ["SKEL_WRITES"]) if os.environ.get("SKEL_WRITES") else None
PREFIX = f"{settings.app_id}-"

app = faust.App(
    settings.app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    topic_partitions=settings.partitions,
    key_serializer="raw",
    value_serializer="raw",
    web_enabled=False,
    producer_acks=-1,
    consumer_auto_offset_reset="earliest",
    stream_wait_empty=False,
    table_standby_replicas=1,
)

# The forward keys, by repartition topic, from the decoded JSON (the routes key decoded models).
KEYS: dict[str, Callable[[dict[str, Any]], str]] = {
    "order-inbox": lambda d: str(d["order_id"]),
    "by-address": lambda d: address_fingerprint(
        d["shipping_address"]["line1"], d["shipping_address"]["postal_code"], d["shipping_address"]["country"]
    ),
    "by-customer": lambda d: str(d["customer_id"]),
    "by-provider": lambda d: str(d["provider"]),
}


class Counts:
    inputs = 0
    forwards_sent = 0
    forwards_applied = 0
    table_writes = 0
    ticks = 0
    done = False


class Batch:
    __slots__ = ("flushed_at", "forwards", "held", "keys")

    def __init__(self) -> None:
        self.held: list[Any] = []
        self.keys: set[str] = set()
        self.forwards: list[Any] = []
        self.flushed_at = 0.0


class SkeletonAgent:
    """One agent of the shape: decode, forward, batch, flush (table writes), ordered acks."""

    def __init__(self, name: str, inputs: list[str], ticks: str, repartitioned: list[str]) -> None:
        self.name = name
        self.inputs = inputs
        self.ticks = ticks
        self.repartitioned = frozenset(repartitioned)
        self.batches: dict[int, Batch] = {}
        self.table: Any = None
        self.topics: dict[str, Any] = {}
        self.rate = WRITES.get(name, 0.0) if WRITES is not None else None
        self.credit = 0.0

    def _topic(self, name: str) -> Any:
        t = self.topics.get(name)
        if t is None:
            t = self.topics[name] = app.topic(name, key_type=bytes, value_type=bytes)
        return t

    async def process(self, stream: Any) -> None:
        manual = stream.noack()
        loop_time = asyncio.get_running_loop().time
        async for event in manual.events():
            msg = event.message
            batch = self.batches.get(msg.partition)
            if batch is None:
                batch = self.batches[msg.partition] = Batch()
            if msg.topic == self.ticks:
                Counts.ticks += 1
                await self.flush(batch, msg.partition, manual)
                await manual.ack(event)
                batch.flushed_at = loop_time()
                continue
            try:
                ev = json.loads(msg.value)
                data = ev["data"]
            except (ValueError, KeyError, TypeError):
                data = None  # the simulated stream has a few bad lines on purpose
            # The state key: the topic's key (the entity, or the route key of a forward).
            key = bytes(msg.key or b"").decode("utf-8", "replace")
            if data is not None and msg.topic not in self.repartitioned:
                for route in forwards(ev.get("type", "")):
                    fwd = str(route.forward)
                    with contextlib.suppress(KeyError, TypeError):
                        fkey = KEYS[fwd](data).encode()
                        header = f"{msg.topic}:{msg.partition}:{msg.offset}".encode()
                        fut = await self._topic(PREFIX + fwd).send(
                            key=fkey,
                            value=msg.value,
                            partition=partition_of(fkey, settings.partitions),
                            headers=[(SOURCE_HEADER, header)],
                            timestamp=msg.timestamp,
                            force=True,
                        )
                        batch.forwards.append(fut)
                        Counts.forwards_sent += 1
            batch.keys.add(key)
            batch.held.append(event)
            if len(batch.held) >= driver.FLUSH_EVERY or loop_time() - batch.flushed_at >= driver.FLUSH_SECONDS:
                await self.flush(batch, msg.partition, manual)
                batch.flushed_at = loop_time()

    async def flush(self, batch: Batch, partition: int, stream: Any) -> None:
        if not batch.held:
            return
        for fut in batch.forwards:
            await fut
        batch.forwards = []
        tag = f"{partition}|".encode()
        keys = [f"__ledger__:{partition}", *batch.keys]
        if self.rate is not None:
            self.credit += self.rate * len(batch.held)
            n = int(self.credit)
            self.credit -= n
            keys = [keys[i % len(keys)] + ("" if i < len(keys) else f"#{i}") for i in range(n)]
        for key in keys:
            self.table[key.encode()] = tag + b"x" * 120  # about a compact order state
        Counts.table_writes += len(keys)
        batch.keys.clear()
        held, batch.held = batch.held, []
        held.sort(key=lambda e: (e.message.topic, e.message.offset))
        for event in held:
            await stream.ack(event)
            if event.message.topic in self.repartitioned:
                Counts.forwards_applied += 1
            else:
                Counts.inputs += 1
        if not Counts.done and Counts.inputs >= TOTAL and Counts.forwards_applied >= Counts.forwards_sent:
            Counts.done = True
            app.add_future(finish())


async def finish() -> None:
    await app.consumer.commit()
    figures = {
        "events": Counts.inputs,
        "forwards": Counts.forwards_sent,
        "table_writes": Counts.table_writes,
        "ticks": Counts.ticks,
        "seconds_from_start": time.time() - STARTED,
        "cpu_seconds": time.process_time(),
    }
    log.warning("faust skeleton: %s", json.dumps(figures))
    logging.shutdown()
    os._exit(0)  # the figures are out; nothing else to shut down cleanly


SPECS = agent_specs(settings, RulesConfig(), Blocklist())
AGENTS: dict[str, SkeletonAgent] = {}
for _name, _spec in SPECS.items():
    _agent = AGENTS[_name] = SkeletonAgent(_name, _spec.inputs, _spec.ticks, _spec.repartitioned)
    _agent.table = app.Table(f"{_name}-state", key_type=bytes, value_type=bytes, partitions=settings.partitions)
    app.agent(app.topic(*_spec.inputs, _spec.ticks, key_type=bytes, value_type=bytes), name=f"skeleton.{_name}")(
        _agent.process
    )

TICK_HEADERS, TICK_VALUE = encode(Tick())


@app.timer(interval=0.1)
async def tick() -> None:
    """The tail of a burst is flushed by a tick to its own partition, as streams.ticks does."""
    for agent in AGENTS.values():
        for partition, batch in list(agent.batches.items()):
            if batch.held:
                await agent._topic(agent.ticks).send(
                    key=None, value=TICK_VALUE, partition=partition, headers=TICK_HEADERS, force=True
                )


if __name__ == "__main__":
    app.main()
