"""The handlers live, on the real Kafka and Redis: a `--clock event` worker replaying a simulated
stream turns every exception into exactly one case with the right status, sends each automatic
command once, escalates in event time exactly what was overdue, keeps the compacted topic's latest
value per exception right; restarted under a new consumer group (so it replays the whole
`order-exceptions` topic), it creates no case, sends no command and no notification twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from orderwatch.handlers.actions import plan
from orderwatch.handlers.changes import CaseChange
from orderwatch.handlers.policy import ActionPolicy
from orderwatch.schemas.exception_event import ExceptionData
from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import ensure_topics
from tests.handlers.conftest import _require_redis, delete_prefix, redis_client
from tests.integration.kafka import publish_simulation, read_json
from tests.support.worker import free_port, spawn_worker, stop_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

__fixtures__ = (_require_redis, redis_client)


class Hook:
    """A webhook endpoint on localhost that records what it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.json_response({"ok": True})

    def keys(self) -> list[tuple[Any, ...]]:
        return [(b["kind"], b.get("exception_id"), b.get("level"), b.get("incident_id")) for b in self.bodies]


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()
    app = web.Application()
    app.router.add_post("/hook", h.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    h.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield h
    finally:
        await runner.cleanup()


async def _metric(session: aiohttp.ClientSession, port: int, name: str) -> float:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


async def _cases(redis: aioredis.Redis, prefix: str) -> dict[str, tuple[str, int]]:
    ids = [i.decode() for i in await redis.zrange(f"{prefix}cases:all", 0, -1)]
    out = {}
    for xid in ids:
        status, level = await redis.hmget(f"{prefix}case:{xid}", ["status", "level"])
        out[xid] = (status.decode(), int(level))
    return out


def _expected_escalations(events: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """What was overdue in event time, from the detector's own events on the topic: level 1 at
    handle_by, level 2 at detected_at + 2 x handling time, unless resolved before."""
    first: dict[str, ExceptionData] = {}
    resolved_at: dict[str, datetime] = {}
    for e in events:
        if e["type"] == "exception.escalated":
            continue
        data = ExceptionData.model_validate(e["data"])
        first.setdefault(data.exception_id, data)
        if e["type"] == "exception.resolved":
            resolved_at.setdefault(data.exception_id, datetime.fromisoformat(e["time"]))
    out = set()
    for xid, d in first.items():
        r = resolved_at.get(xid)
        due = (d.handle_by, d.detected_at + 2 * (d.handle_by - d.detected_at))
        out |= {(xid, n + 1) for n in range(2) if r is None or due[n] <= r}
    return out


def _expected_commands(events: list[dict[str, Any]]) -> set[str]:
    """`<exception_id>:<action>` of every action the default policy runs automatically."""
    out = set()
    seen = set()
    for e in events:
        if e["type"] != "exception.opened" or e["data"]["exception_id"] in seen:
            continue
        data = ExceptionData.model_validate(e["data"])
        seen.add(data.exception_id)
        change = CaseChange(kind="opened", data=data, status="open", at=data.detected_at)
        out |= {p.command.id for p in plan(change, ActionPolicy.default()) if p.decision == "auto"}
    return out


def _latest_resolved(events: list[dict[str, Any]]) -> set[str]:
    """Exception ids whose latest value on the topic (what compaction keeps) is a resolution."""
    latest = {e["data"]["exception_id"]: e["type"] for e in events}
    return {x for x, t in latest.items() if t == "exception.resolved"}


async def test_replay_then_a_new_consumer_group_doubles_nothing(
    tmp_path: Path, kafka_settings: Settings, redis_client: aioredis.Redis, hook: Hook
) -> None:
    _path, res = await publish_simulation(tmp_path, kafka_settings, orders=300, seed=3)
    final: dict[str, str] = {}
    for em in res.emissions:
        final[em.record.exception_id] = (
            "resolved" if em.kind == "resolved" else final.get(em.record.exception_id, "open")
        )
    assert len(final) > 20

    config = tmp_path / "handlers.toml"
    config.write_text(f'[[webhooks]]\nname = "test"\nurl = "{hook.url}"\nrate_limit_per_minute = 10000\n')
    redis_prefix = f"t{uuid.uuid4().hex}:"
    settings = kafka_settings.model_copy(
        update={"web_port": free_port(), "redis_prefix": redis_prefix, "handlers_config": str(config)}
    )
    topic, actions_topic = settings.topic("order-exceptions"), settings.topic("order-actions")

    session = aiohttp.ClientSession()
    try:
        # -- the first run: everything once ------------------------------------------------------
        log_path = tmp_path / "worker-1.log"
        with log_path.open("wb") as log:
            proc = spawn_worker(settings, "event", log, handlers=True)
            try:
                deadline = time.monotonic() + 150
                done = False
                while time.monotonic() < deadline and not done:
                    await asyncio.sleep(2)
                    assert proc.poll() is None, log_path.read_text()[-3000:]
                    events = await read_json(settings, topic)
                    cases = await _cases(redis_client, redis_prefix)
                    escalated = {
                        (e["data"]["exception_id"], int(e["id"].rsplit(":", 1)[1]))
                        for e in events
                        if e["type"] == "exception.escalated"
                    }
                    try:
                        handled = await _metric(session, settings.web_port, "orderwatch_handler_messages_total")
                    except aiohttp.ClientError:
                        continue  # not listening yet: a loaded machine takes seconds to start a worker
                    done = (
                        set(cases) >= set(final)
                        and escalated >= _expected_escalations(events)
                        and handled >= len(events)
                    )
                await asyncio.sleep(3)  # anything extra would show up now
                events = await read_json(settings, topic)
                assert await _metric(session, settings.web_port, "orderwatch_handler_messages_total") == len(events)
            finally:
                stop_worker(proc)
        cases = await _cases(redis_client, redis_prefix)
        commands = await read_json(settings, actions_topic)
        notified = hook.keys()
        escalations = [e for e in events if e["type"] == "exception.escalated"]
        escalated = {(e["data"]["exception_id"], int(e["id"].rsplit(":", 1)[1])) for e in escalations}

        # every exception of the backtest is exactly one case, with its status
        assert set(cases) == set(final)
        for xid, status in final.items():
            if status == "resolved":
                assert cases[xid][0] == "resolved", xid
            else:  # open at the end of the stream: long overdue by then
                assert cases[xid] == ("escalated", 2), xid
        # escalations: exactly what was overdue in event time, each level published once
        expected = _expected_escalations(events)
        assert escalated == expected
        assert len(expected) >= 10
        assert sorted(Counter(e["id"] for e in escalations).values()) == [1] * len(escalations)
        for xid, level in expected:
            assert cases[xid][1] >= level
        # the compacted topic's latest value per exception is its resolution once resolved, even
        # when the escalation was published after it
        resolved_cases = {x for x, c in cases.items() if c[0] == "resolved"}
        assert _latest_resolved(events) == resolved_cases
        raced = set()
        for i, e in enumerate(events):  # one key is one partition: list order is offset order for it
            rid = f"{e['data']['exception_id']}:resolved"
            if e["type"] == "exception.escalated" and any(r["id"] == rid for r in events[:i]):
                raced.add(e["data"]["exception_id"])
        assert raced, "no escalation landed after its resolution: the compaction rule was not exercised"
        # automatic commands, once per (exception, action)
        ids = Counter(c["id"] for c in commands)
        assert set(ids) == _expected_commands(events)
        assert set(ids.values()) == {1}
        assert {c["data"]["mode"] for c in commands} == {"auto"}
        # notifications: one per (kind, exception, level) or incident
        assert notified and len(set(notified)) == len(notified)
        assert {k[0] for k in notified} >= {"opened", "escalated"}

        # -- a new consumer group: the whole topic again -----------------------------------------
        again = settings.model_copy(update={"app_id": settings.app_id + "-again", "web_port": free_port()})
        await ensure_topics(again)
        detector_ids = {e["id"] for e in events if e["type"] != "exception.escalated"}
        log_path = tmp_path / "worker-2.log"
        with log_path.open("wb") as log:
            proc = spawn_worker(again, "event", log, handlers=True)
            try:
                deadline = time.monotonic() + 150
                while time.monotonic() < deadline:
                    await asyncio.sleep(2)
                    assert proc.poll() is None, log_path.read_text()[-3000:]
                    now = await read_json(settings, topic)
                    twice = Counter(e["id"] for e in now if e["id"] in detector_ids)
                    try:
                        handled = await _metric(session, again.web_port, "orderwatch_handler_messages_total")
                    except aiohttp.ClientError:
                        continue  # not listening yet
                    # the new group's detector emitted everything again and the handlers read it all
                    if set(twice) == detector_ids and min(twice.values()) >= 2 and handled >= len(now):
                        break
                await asyncio.sleep(4)  # anything extra would show up now
                rerun = await read_json(settings, topic)
                assert await _metric(session, again.web_port, "orderwatch_handler_messages_total") == len(rerun)
            finally:
                stop_worker(proc)
        assert await _cases(redis_client, redis_prefix) == cases
        assert Counter(c["id"] for c in await read_json(settings, actions_topic)) == ids
        assert hook.keys() == notified
        # (the reader returns partitions in no fixed order: compare by event id)
        assert sorted((e["id"], e["time"]) for e in rerun if e["type"] == "exception.escalated") == sorted(
            (e["id"], e["time"]) for e in escalations
        )
        assert _latest_resolved(rerun) == resolved_cases
    finally:
        await session.close()
        await delete_prefix(redis_client, redis_prefix)
