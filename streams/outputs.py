"""Where the agents' records go: `order-exceptions`, `orders-dlq` and the internal topics (forwards,
the inbox, watermarks, ticks). One port, two adapters: `KafkaOutputs` sends through the faust app's
producer; `MemoryOutputs` keeps them in lists (agent tests under faust's `test_context()`, which
has no broker; a real adapter, not a mock: it assigns offsets and resolves sends like a broker).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust

__all__ = ["KafkaOutputs", "MemoryOutputs", "Outputs", "Sent"]

Headers = list[tuple[str, bytes]] | None


class Outputs(Protocol):
    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        partition: int | None = None,
        headers: Headers = None,
        timestamp: float | None = None,
    ) -> Awaitable[Any]:
        """Hand one record to the producer now (not held back until the consumed offset commits);
        the awaitable resolves to the broker's metadata (`.offset`) once it has it."""
        ...


class KafkaOutputs:
    """Sends through the faust app's producer (`force=True`: published at once, not attached to
    the offset being processed, which would hold it back for a commit interval)."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._topics: dict[str, Any] = {}

    def _topic(self, name: str) -> Any:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = self._app.topic(name, key_type=bytes, value_type=bytes)
        return topic

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        partition: int | None = None,
        headers: Headers = None,
        timestamp: float | None = None,
    ) -> Awaitable[Any]:
        return await self._topic(topic).send(  # type: ignore[no-any-return]
            key=key, value=value, partition=partition, headers=headers, timestamp=timestamp, force=True
        )


@dataclass(frozen=True)
class Sent:
    topic: str
    partition: int | None
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp: float | None


@dataclass
class _Metadata:
    offset: int


@dataclass
class MemoryOutputs:
    """Every record sent, in order, with the offset a one-broker topic would have given it."""

    records: list[Sent] = field(default_factory=list)
    _next: dict[tuple[str, int | None], int] = field(default_factory=lambda: defaultdict(int))

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        partition: int | None = None,
        headers: Headers = None,
        timestamp: float | None = None,
    ) -> Awaitable[Any]:
        offset = self._next[(topic, partition)]
        self._next[(topic, partition)] = offset + 1
        self.records.append(Sent(topic, partition, offset, key, value, headers, timestamp))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(_Metadata(offset))
        return done

    def on(self, topic: str) -> list[Sent]:
        return [r for r in self.records if r.topic == topic]
