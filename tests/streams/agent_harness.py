"""Runs one detector agent of a real `create_app` in-process under faust's `test_context()` (no
broker): messages in on any of its topics (record timestamp, headers, offsets as a broker would
give them), exceptions out through `MemoryOutputs`, time from a driven wall clock.

What runs is the production path: the faust agent, the AgentDriver (merge, decode, ordered acks,
flush), the PartitionRuntime and the detector, the faust Table the state is written to (memory
store). What does not: a consumer (no fetch, commit or rebalance: offsets, highwaters and
committed offsets are this harness's), and a producer (MemoryOutputs stands in, the real
in-memory adapter of the Outputs port)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from faust.assignor.client_assignment import ClientAssignment
from faust.types import Message
from prometheus_client import CollectorRegistry

from orderwatch.schemas.control import Tick, encode
from orderwatch.streams.app import Orderwatch, create_app
from orderwatch.streams.metrics import Metrics
from orderwatch.streams.outputs import MemoryOutputs
from orderwatch.streams.settings import Settings

__all__ = ["AgentHarness"]


class AgentHarness:
    def __init__(self, agent: str, start: float, **settings: Any) -> None:
        self.settings = Settings(
            kafka_bootstrap="127.0.0.1:1",  # never reached
            app_id="agent-test",
            web_port=1,
            **{"partitions": 1, "clock": "wall", **settings},
        )
        self.wall = start
        self.outputs = MemoryOutputs()
        self.agent_name = agent
        self.ow: Orderwatch = create_app(
            self.settings, metrics=Metrics(CollectorRegistry()), outputs=self.outputs, wall=lambda: self.wall
        )
        # A broker's view of each partition: what was put is what there is (caught up once consumed).
        self.highwaters: dict[tuple[str, int], int] = {}
        self.ow.clock.highwater = lambda tp: self.highwaters.get(tp, 0)
        # This worker owns every partition (`partitions`, 1 unless given) of the agent's topics
        # and its upstreams', as faust's assignor would record it; not the other agents' (they
        # do not run here, so what is forwarded to them would stay in flight and hold the clocks
        # bounded by theirs).
        self.driver = self.ow.agents[agent]
        spec = self.driver.spec
        topics = {*spec.inputs, *spec.upstream, spec.ticks}
        owned = list(range(self.settings.partitions))
        self.ow.app.assignor._assignment = ClientAssignment(actives={t: owned for t in topics}, standbys={})
        if self.driver.ready is not None:
            self.driver.ready.set()  # no blocklist topic here: an empty blocklist, loaded
        self._wrapper: Any = None

    def topic(self, name: str) -> str:
        """The full name of a contract topic or an internal one (`inbox`, `by-customer`, ...)."""
        internal = {"inbox": "order-inbox", "ticks": f"ticks-{self.agent_name}"}
        if name in internal or name.startswith("by-"):
            return f"{self.settings.app_id}-{internal.get(name, name)}"
        return self.settings.topic(name)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[AgentHarness]:
        agent = self.ow.app.agents[f"orderwatch.{self.agent_name}"]
        async with agent.test_context() as wrapper:
            self._wrapper = wrapper
            yield self
        self._wrapper = None

    async def put(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp: float | None = None,
        offset: int | None = None,
        partition: int = 0,
    ) -> None:
        """One record on `topic` (short name) partition `partition`, processed by the agent
        before this returns. At the partition's next offset, or at `offset` (a re-delivery, or
        one after a gap)."""
        name = self.topic(topic)
        tp = (name, partition)
        if offset is None:
            offset = self.highwaters.get(tp, 0)
        self.highwaters[tp] = max(self.highwaters.get(tp, 0), offset + 1)
        message = Message(
            topic=name,
            partition=partition,
            offset=offset,
            timestamp=timestamp if timestamp is not None else self.wall,
            timestamp_type=0,
            headers=headers or [],
            key=key,
            value=value,
            checksum=b"",
            serialized_key_size=len(key or b""),
            serialized_value_size=len(value),
            # The current generation: a stream drops messages of an earlier one (a rebalance ago).
            generation_id=self.ow.app.consumer_generation_id,
        )
        wrapper = self._wrapper
        channel = wrapper.stream().channel
        await channel.put(await channel.decode(message))
        async with wrapper.new_value_processed:
            await asyncio.wait_for(wrapper.new_value_processed.wait(), 10)
        if wrapper._crash_reason:
            raise wrapper._crash_reason

    async def event(
        self, topic: str, ev: Any, *, arrived: float | None = None, offset: int | None = None, partition: int = 0
    ) -> None:
        """A validated event as its producer would send it (its key, its JSON)."""
        from orderwatch.schemas.events import entity_of

        raw = ev.model_dump_json(by_alias=True).encode()
        key = entity_of(ev).encode()
        stamp = arrived if arrived is not None else ev.time.timestamp()
        await self.put(topic, raw, key=key, timestamp=stamp, offset=offset, partition=partition)

    async def tick(self, wall: float | None = None) -> None:
        """Move the driven wall clock (if given) and wake the agent, as the Ticker does."""
        if wall is not None:
            self.wall = wall
        headers, value = encode(Tick())
        await self.put("ticks", value, headers=headers)

    def exceptions(self) -> list[tuple[str, str]]:
        """(rule, opened | resolved) of each exception event published, in order."""
        out = []
        for rec in self.outputs.on(self.settings.topic("order-exceptions")):
            doc = json.loads(rec.value)
            out.append((doc["data"]["rule"], doc["type"].split(".")[1]))
        return out

    def dead_letters(self) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in self.outputs.on(self.settings.topic("orders-dlq"))]
