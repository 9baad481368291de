"""Fixtures for the handler tests: a Redis client on the local stack with a per-test key prefix
(deleted afterwards), Kafka topics of their own, exception event factories, and a private
redis-server that a test may stop."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis.asyncio as aioredis

from orderwatch.detectors.catalog import HANDLING_SECONDS, RULES
from orderwatch.handlers.changes import CaseChange
from orderwatch.handlers.config import EscalationConfig, HandlersConfig, IncidentConfig
from orderwatch.handlers.incidents import IncidentStore
from orderwatch.handlers.service import HandlerService
from orderwatch.handlers.store import CaseStore
from orderwatch.schemas.exception_event import ExceptionData, ExceptionEvent, Resolution
from orderwatch.streams.metrics import Metrics
from orderwatch.streams.settings import Settings
from tests.kafka_topics import BOOTSTRAP, fresh_topics

REDIS_URL = os.environ.get("ORDERWATCH_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _redis_up() -> bool:
    url = urlparse(REDIS_URL)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def _require_redis() -> None:
    if not _redis_up():
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {REDIS_URL}: .ci/run starts it with `make stack-up`")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}; run `make stack-up` first")


@pytest.fixture
async def redis_client(_require_redis: None) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


async def delete_prefix(client: aioredis.Redis, prefix: str) -> int:
    keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i : i + 500])
    return len(keys)


@pytest.fixture
async def prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    """A key prefix no other test uses; every key under it is deleted after the test."""
    p = f"t{uuid.uuid4().hex}:"
    try:
        yield p
    finally:
        await delete_prefix(redis_client, p)


@pytest.fixture
def store(redis_client: aioredis.Redis, prefix: str) -> CaseStore:
    return CaseStore(redis_client, prefix, escalation=EscalationConfig())


@pytest.fixture
def incidents(redis_client: aioredis.Redis, prefix: str) -> IncidentStore:
    return IncidentStore(redis_client, prefix, IncidentConfig())


# -- events ----------------------------------------------------------------------------------------

_seq = iter(range(1, 10**9))


def exception_data(
    *,
    exception_id: str | None = None,
    rule: str = "TRACKING_STALLED",
    detected_at: datetime = T0,
    evidence: dict[str, Any] | None = None,
    order_id: str | None = "o-1",
    status: str = "open",
    resolution: Resolution | None = None,
    severity: str | None = None,
) -> ExceptionData:
    meta = RULES[rule]
    sev = severity or meta.severity
    return ExceptionData(
        exception_id=exception_id or f"x{next(_seq):06d}",
        rule=rule,
        category=meta.category,
        severity=sev,
        status=status,
        subject=order_id or "subject-1",
        order_id=order_id,
        detected_at=detected_at,
        event_time=detected_at,
        handle_by=detected_at + timedelta(seconds=HANDLING_SECONDS[sev]),
        summary=f"{rule} for {order_id}",
        evidence=evidence if evidence is not None else {"carrier": "dhl", "shipment_id": "s-1"},
        recommended_action=meta.action,
        resolution=resolution,
    )


def opened(data: ExceptionData, revision: int = 0) -> ExceptionEvent:
    suffix = f":{revision}" if revision else ""
    return ExceptionEvent(
        id=f"{data.exception_id}:opened{suffix}",
        type="exception.opened",
        time=data.detected_at,
        subject=data.subject,
        data=data,
    )


def resolved(data: ExceptionData, at: datetime | None = None, clearing: str = "evt-clear") -> ExceptionEvent:
    when = at or data.detected_at + timedelta(minutes=5)
    res = Resolution(kind="auto", event_id=clearing, event_time=when)
    return ExceptionEvent(
        id=f"{data.exception_id}:resolved",
        type="exception.resolved",
        time=when,
        subject=data.subject,
        data=data.model_copy(update={"status": "resolved", "resolution": res}),
    )


class Recorder:
    """A listener that records every change it is handed."""

    def __init__(self) -> None:
        self.changes: list[CaseChange] = []

    async def __call__(self, change: CaseChange) -> None:
        self.changes.append(change)

    def moves(self) -> list[tuple[str, str, int]]:
        return [(c.data.exception_id, c.kind, c.level) for c in self.changes]


# -- a private redis-server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own, on a free port, with an append-only file in a temp dir so
    that its data survives a stop and start."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def stop(self) -> None:
        """SHUTDOWN SAVE: everything acknowledged so far is on disk when it exits."""
        if self.proc is None:
            return
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"SHUTDOWN SAVE\r\n")
                s.settimeout(5)
                while s.recv(64):
                    pass
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if not os.path.exists(REDIS_SERVER):
        if os.environ.get("CI"):
            pytest.fail(f"{REDIS_SERVER} is missing: deploy/local/stack.sh installs it")
        pytest.skip(f"{REDIS_SERVER} is missing")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def service(store: CaseStore, incidents: IncidentStore, recorder: Recorder) -> HandlerService:
    from prometheus_client import CollectorRegistry

    return HandlerService(store, incidents, HandlersConfig(), Metrics(CollectorRegistry()), [recorder])


# -- actions and notifications: a prefix of their own, Kafka topics --------------------------------


@pytest.fixture
async def redis_prefix(prefix: str) -> str:
    """The same per-test prefix under the name the action and notification tests use."""
    return prefix


@pytest.fixture
async def kafka_topics() -> AsyncIterator[Settings]:
    """Settings with a fresh topic prefix under which `order-actions` and the compacted
    `blocklist` exist (one partition each); both are deleted at the end."""
    async with fresh_topics(["order-actions", "blocklist"], compacted=["blocklist"]) as topic_prefix:
        yield Settings(kafka_bootstrap=BOOTSTRAP, topic_prefix=topic_prefix, partitions=1)


@pytest.fixture
async def producer(kafka_topics: Settings) -> AsyncIterator[Any]:
    from aiokafka import AIOKafkaProducer

    prod = AIOKafkaProducer(bootstrap_servers=kafka_topics.kafka_bootstrap, acks="all", enable_idempotence=True)
    await prod.start()
    yield prod
    await prod.stop()
