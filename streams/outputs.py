"""Where the agents' records go: `order-exceptions`, `orders-dlq` and the internal topics (forwards,
the inbox, watermarks, ticks). One port, two adapters: `KafkaOutputs` sends through the faust app's
producer; `MemoryOutputs` keeps them in lists (agent tests under faust's `test_context()`, which
has no broker; a real adapter, not a mock: it assigns offsets and resolves sends like a broker).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust

from orderwatch.streams.kafka_client import retry_later

__all__ = ["KafkaOutputs", "MemoryOutputs", "Outputs", "Sent"]

log = logging.getLogger(__name__)

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


RETRY_SECONDS = 1.0
"""How long a record the broker could not take waits before it goes to the producer again."""
WARN_EVERY = 30.0
"""Seconds between two warnings about records held for the broker (an outage has thousands)."""


@dataclass(frozen=True, slots=True)
class _Record:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    headers: Headers
    timestamp: float | None


class KafkaOutputs:
    """Sends through the faust app's producer (`force=True`: published at once, not attached to
    the offset being processed, which would hold it back for a commit interval).

    A record the broker cannot take (kafka_client.retry_later: it is gone or restarting, for
    longer than the producer's request timeout) is handed to the producer again until the broker
    acknowledges it; once the worker stops, it is left unanswered (the stop cancels its sender).
    The agents await what they send before they write their state and ack their input, so they
    hold their work through an outage and go on when the broker is back; without this, the
    failed send crashed the agent (faust restarts it on the messages fetched after the ones it
    held) once aiokafka gave up on the record. A record sent again may reach the broker twice
    (its first batch may have been written and its answer lost): at least once, as after a
    crash, with the same key and event id."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._topics: dict[str, Any] = {}
        self._resends: set[asyncio.Task[None]] = set()
        self._warned = float("-inf")

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
        delivered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._hand_over(_Record(topic, key, value, partition, headers, timestamp), delivered)
        return delivered

    async def _hand_over(self, record: _Record, delivered: asyncio.Future[Any]) -> None:
        """Give `record` to the producer, waiting while the broker cannot take it; `delivered`
        gets the broker's answer."""
        while True:
            try:
                sent = await self._topic(record.topic).send(
                    key=record.key,
                    value=record.value,
                    partition=record.partition,
                    headers=record.headers,
                    timestamp=record.timestamp,
                    force=True,
                )
            except Exception as exc:
                if not self._hold(record, exc):
                    raise
                await self._wait_to_send_again()
                if delivered.done():  # its sender was cancelled
                    return
                continue
            sent.add_done_callback(functools.partial(self._answered, record, delivered))
            return

    def _answered(self, record: _Record, delivered: asyncio.Future[Any], sent: asyncio.Future[Any]) -> None:
        if delivered.done():
            return
        if sent.cancelled():
            delivered.cancel()
            return
        exc = sent.exception()
        if exc is None:
            delivered.set_result(sent.result())
        elif not self._hold(record, exc):
            delivered.set_exception(exc)
        elif not self._app.should_stop:  # stopping: left unanswered (see _wait_to_send_again)
            task = asyncio.ensure_future(self._send_again(record, delivered))
            self._resends.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._resends.discard)

    async def _send_again(self, record: _Record, delivered: asyncio.Future[Any]) -> None:
        await self._wait_to_send_again()
        if delivered.done():
            return
        try:
            await self._hand_over(record, delivered)
        except Exception as exc:
            if not delivered.done():
                delivered.set_exception(exc)

    async def _wait_to_send_again(self) -> None:
        await asyncio.sleep(RETRY_SECONDS)
        while self._app.should_stop:
            # The stop cancels whoever awaits the record. Sent again, it would keep the
            # producer's flush waiting; failed, it would crash its sender in the middle of the
            # stop (an agent that faust's supervisor then restarted, and the stop never ended;
            # a timer, and the app crashed, exit 1).
            await asyncio.sleep(RETRY_SECONDS)

    def _hold(self, record: _Record, exc: BaseException) -> bool:
        """Whether `record`, refused with `exc`, is to be sent again (and say so, now and then)."""
        if not retry_later(exc):
            return False
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning(
                "outputs: the broker did not take a record for %s (%r): holding it and the agent"
                " that sent it, trying again every %.0f s",
                record.topic,
                exc,
                RETRY_SECONDS,
            )
        return True


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
