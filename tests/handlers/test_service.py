"""The handler service over a whole backtest output: replayed twice and in a shuffled compacted
form, it gives the same cases and one change per real move. Also: changes recorded before a crash
are handed out again, and a failing listener does not block the others."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from orderwatch.errors import StoreUnavailable
from orderwatch.handlers.changes import CaseChange
from orderwatch.handlers.config import HandlersConfig
from orderwatch.handlers.incidents import IncidentStore
from orderwatch.handlers.service import HandlerService
from orderwatch.handlers.store import CaseStore
from orderwatch.schemas.exception_event import ExceptionEvent
from orderwatch.streams.metrics import Metrics
from tests.handlers.conftest import T0, Recorder, delete_prefix, exception_data, opened

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backtest_events(tmp_path_factory: pytest.TempPathFactory) -> list[ExceptionEvent]:
    """`orderwatch simulate --orders 300 --seed 3` backtested to JSONL, as ExceptionEvents."""
    from orderwatch.cli import main

    d: Path = tmp_path_factory.mktemp("backtest")
    src, out = d / "orders.jsonl", d / "exceptions.jsonl"
    assert main(["simulate", "--orders", "300", "--seed", "3", "--output", str(src)]) == 0
    assert main(["backtest", str(src), "--output", str(out)]) == 0
    return [ExceptionEvent.model_validate_json(line) for line in out.read_text().splitlines()]


async def _feed(service: HandlerService, events: list[ExceptionEvent]) -> None:
    for ev in events:
        await service.handle(ev, ev.time + timedelta(seconds=1))


async def _snapshot(store: CaseStore) -> dict[str, Any]:
    cases, total = await store.query(limit=100_000)
    assert total == len(cases)
    return {c.exception_id: (c.to_dict(), [h.to_dict() for h in await store.history(c.exception_id)]) for c in cases}


def _compacted(events: list[ExceptionEvent], seed: int) -> list[ExceptionEvent]:
    last: dict[str, ExceptionEvent] = {}
    for ev in events:
        last[ev.data.exception_id] = ev
    out = list(last.values())
    random.Random(seed).shuffle(out)
    return out


async def test_replay_and_compacted_replay_change_nothing(
    backtest_events: list[ExceptionEvent], service: HandlerService, recorder: Recorder, redis_client: aioredis.Redis
) -> None:
    events = backtest_events
    types = Counter(ev.type for ev in events)
    assert types["exception.opened"] > 0 and types["exception.resolved"] > 0
    # the input has evidence updates (a second opened event for one exception): not a move
    assert len({ev.data.exception_id for ev in events if ev.type == "exception.opened"}) < types["exception.opened"]
    real_moves = {(ev.data.exception_id, ev.type.removeprefix("exception."), 0) for ev in events}

    await _feed(service, events)
    moves = recorder.moves()
    assert Counter(moves) == Counter(real_moves)  # each real move exactly once
    first = await _snapshot(service.store)
    assert set(first) == {ev.data.exception_id for ev in events}
    for xid, (case, _) in first.items():
        last = [ev for ev in events if ev.data.exception_id == xid][-1]
        assert case["status"] == last.data.status
        assert case["evidence"] == last.data.evidence
    incidents, n_incidents = await service.incidents.query(limit=1000)
    counts = sorted((i.incident_id, i.count, i.open_count, i.status) for i in incidents)

    await _feed(service, events)  # the whole topic again
    await _feed(service, _compacted(events, seed=3))  # and compacted, shuffled
    assert recorder.moves() == moves
    assert await _snapshot(service.store) == first
    again, n_again = await service.incidents.query(limit=1000)
    assert (n_again, sorted((i.incident_id, i.count, i.open_count, i.status) for i in again)) == (n_incidents, counts)
    assert await service.store.pending_changes(T0 + timedelta(days=365)) == []

    # a fresh store fed only the compacted topic ends with the same cases, one move per case
    prefix = f"{service.store.prefix}fresh:"
    fresh_recorder = Recorder()
    fresh = HandlerService(
        CaseStore(redis_client, prefix), IncidentStore(redis_client, prefix), HandlersConfig(), None, [fresh_recorder]
    )
    try:
        compacted = _compacted(events, seed=11)
        await _feed(fresh, compacted)
        expected = {(ev.data.exception_id, ev.type.removeprefix("exception."), 0) for ev in compacted}
        assert Counter(fresh_recorder.moves()) == Counter(expected)
        rebuilt = await _snapshot(fresh.store)
        assert set(rebuilt) == set(first)
        for xid, (case, _) in rebuilt.items():
            keep = ("status", "level", "evidence", "summary", "resolution", "detected_at", "handle_by", "rule")
            assert {k: case[k] for k in keep} == {k: first[xid][0][k] for k in keep}, xid
        await _feed(fresh, events)  # the full topic after the compacted one: still nothing new
        assert Counter(fresh_recorder.moves()) == Counter(expected)
    finally:
        await delete_prefix(redis_client, prefix)


async def test_a_change_recorded_before_a_crash_is_handed_out(service: HandlerService, recorder: Recorder) -> None:
    # the process recorded the move, then died before the listeners ran
    crashed = exception_data()
    assert await service.store.ingest(opened(crashed), T0) is not None
    # the consumer did not commit: the event comes again after the restart
    change = await service.handle(opened(crashed), T0 + timedelta(minutes=1))
    assert change is not None and change.kind == "opened"
    assert await service.handle(opened(crashed), T0 + timedelta(minutes=2)) is None
    assert recorder.moves() == [(crashed.exception_id, "opened", 0)]

    # an escalation recorded by a timer that died: found by redeliver_pending, once
    esc = await service.store.escalate(crashed.exception_id, 1, T0 + timedelta(hours=4))
    assert esc is not None
    service.clock = lambda: T0 + timedelta(hours=4, minutes=1)
    assert await service.redeliver_pending(older_than=timedelta(minutes=5)) == 0  # too recent: may be in flight
    service.clock = lambda: T0 + timedelta(hours=5)
    assert await service.redeliver_pending(older_than=timedelta(minutes=5)) == 1
    assert await service.redeliver_pending(older_than=timedelta(minutes=5)) == 0
    assert recorder.moves() == [(crashed.exception_id, "opened", 0), (crashed.exception_id, "escalated", 1)]


async def test_a_failing_listener_does_not_block_the_others(store: CaseStore, incidents: IncidentStore) -> None:
    seen: list[str] = []
    flaky_calls: list[str] = []

    async def broken(change: CaseChange) -> None:
        raise RuntimeError("bug in a listener")

    async def flaky(change: CaseChange) -> None:
        # a listener that needs Redis too: its outage is waited out like the store's
        flaky_calls.append(change.kind)
        if len(flaky_calls) == 1:
            raise StoreUnavailable("rate limiter unavailable")

    async def good(change: CaseChange) -> None:
        seen.append(change.kind)

    metrics = Metrics(CollectorRegistry())
    service = HandlerService(store, incidents, None, metrics, [broken, flaky, good], backoff_initial=0.01)
    data = exception_data()
    assert await service.handle(opened(data), T0) is not None
    assert seen == ["opened"]
    assert flaky_calls == ["opened", "opened"]
    assert await store.pending_changes(T0 + timedelta(days=1)) == []
    sample = metrics.registry.get_sample_value
    assert sample("orderwatch_case_changes_total", {"kind": "opened", "severity": "medium"}) == 1
    assert sample("orderwatch_handler_store_retries_total", {"operation": "listener"}) == 1


async def test_manual_moves_reach_the_listeners(service: HandlerService, recorder: Recorder) -> None:
    data = exception_data()
    await service.handle(opened(data), T0)
    service.clock = lambda: T0 + timedelta(minutes=3)
    ack = await service.acknowledge(data.exception_id, "ana", "on it")
    done = await service.resolve(data.exception_id, "ana", "done")
    assert (ack.who, ack.note, done.kind) == ("ana", "on it", "resolved")
    assert recorder.moves() == [(data.exception_id, k, 0) for k in ("opened", "acknowledged", "resolved")]
    assert json.loads((await service.store.get(data.exception_id)).to_json())["resolution"]["kind"] == "manual"
