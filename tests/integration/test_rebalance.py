"""Two workers in one group on the real broker: the partitions split between them, and a second
worker joining in the middle of a replay, with deadlines pending on the first, loses no
exception and opens none twice: the outcome is backtest's, id for id."""

from __future__ import annotations

import asyncio
import itertools
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from orderwatch.backtest import open_lines, run_backtest
from orderwatch.detectors.records import to_cloudevent
from orderwatch.simulate import simulate
from orderwatch.streams.publish import RecordClock, publish_lines
from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import ensure_topics
from tests.integration.kafka import read_json
from tests.support.worker import free_port, spawn_worker, stop_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

READY = re.compile(rb"(\w+): partition (\d+) ready")


def _owned(log: Path) -> set[tuple[str, int]]:
    return {(m.group(1).decode(), int(m.group(2))) for m in READY.finditer(log.read_bytes())}


async def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and b"Worker ready" not in log.read_bytes():
        assert proc.poll() is None, log.read_text()[-3000:]
        await asyncio.sleep(0.1)


async def _outcome(
    settings: Settings, procs: list[subprocess.Popen[bytes]], logs: list[Path], expected_ids: set[str], seconds: float
) -> list[dict]:  # type: ignore[type-arg]
    """The exception events once every expected one is there (or `seconds` passed), and 4 s more:
    anything extra would show up by then. Every worker must stay up."""
    topic = settings.topic("order-exceptions")
    deadline = time.monotonic() + seconds
    got: set[str] = set()
    while time.monotonic() < deadline and not got >= expected_ids:
        await asyncio.sleep(2)
        for proc, log in zip(procs, logs, strict=True):
            assert proc.poll() is None, log.read_text()[-3000:]
        got = {e["id"] for e in await read_json(settings, topic)}
    await asyncio.sleep(4)
    return await read_json(settings, topic)


def _assert_backtests_outcome(events: list[dict], expected_ids: set[str]) -> None:  # type: ignore[type-arg]
    ids = Counter(e["id"] for e in events)
    assert set(ids) - expected_ids == set(), f"opened or resolved by mistake: {sorted(set(ids) - expected_ids)[:10]}"
    assert expected_ids - set(ids) == set(), f"lost: {sorted(expected_ids - set(ids))[:10]}"


async def test_a_second_worker_joining_mid_replay_splits_the_partitions_and_changes_no_outcome(
    tmp_path: Path, kafka_settings: Settings
) -> None:
    # Half the stream first: worker A replays 600 orders in seconds, faster than a second worker
    # joins the group, so the rest is published only once B is in (A may have drained the first
    # half by then; its partitions still hold buffered events and pending deadlines).
    path = tmp_path / "sim.jsonl"
    simulate(orders=600, seed=8, output=path, labels=tmp_path / "l", blocklist=tmp_path / "b")
    res = run_backtest(open_lines(path), keep=True)
    half = sum(1 for _ in open_lines(path)) // 2
    await ensure_topics(kafka_settings)
    stamps = RecordClock()
    await publish_lines(itertools.islice(open_lines(path), half), kafka_settings, clock=stamps)
    expected_ids = {to_cloudevent(em)["id"] for em in res.emissions}
    deadline_rules = {"PAYMENT_TIMEOUT", "PAYMENT_NOT_CONFIRMED", "STOCK_NOT_RESERVED", "SHIPMENT_NOT_CREATED"}
    assert {em.record.rule for em in res.emissions} & deadline_rules, "the stream must have pending deadlines"
    topic = kafka_settings.topic("order-exceptions")

    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    files = [p.open("wb") for p in logs]
    procs = [spawn_worker(kafka_settings.model_copy(update={"web_port": free_port()}), "event", files[0])]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not await read_json(kafka_settings, topic):
            await asyncio.sleep(0.2)
        # Worker A has started judging; its partitions hold buffered events and pending deadlines.
        procs.append(spawn_worker(kafka_settings.model_copy(update={"web_port": free_port()}), "event", files[1]))
        await _wait_ready(procs[1], logs[1])
        await publish_lines(itertools.islice(open_lines(path), half, None), kafka_settings, clock=stamps)
        events = await _outcome(kafka_settings, procs, logs, expected_ids, 240)
    finally:
        for proc in procs:
            stop_worker(proc)
        for f in files:
            f.close()
    _assert_backtests_outcome(events, expected_ids)
    # The group split the work: the joining worker took over some order partitions.
    a, b = _owned(logs[0]), _owned(logs[1])
    assert {p for agent, p in b if agent == "orders"}, logs[1].read_text()[-3000:]
    assert a and b


async def test_two_workers_starting_together_on_a_published_stream_give_backtests_outcome(
    tmp_path: Path, kafka_settings: Settings
) -> None:
    # bench_scaleout's pair, smaller: the whole stream is in Kafka, worker A starts, B joins as
    # soon as A is up, and each worker's address, customer and provider agents take forwards
    # from both. Their clocks used to run past forwards still to come (A's own ones still in its
    # producer behind B's later ones; records delivered late behind B's watermark), the
    # forwards came late and customer windows judged orders in another order: DUPLICATE_ORDER
    # exceptions lost or opened on the other order of the pair.
    path = tmp_path / "sim.jsonl"
    simulate(orders=1500, seed=11, output=path, labels=tmp_path / "l", blocklist=tmp_path / "b")
    res = run_backtest(open_lines(path), keep=True)
    await ensure_topics(kafka_settings)
    await publish_lines(open_lines(path), kafka_settings, clock=RecordClock())
    expected_ids = {to_cloudevent(em)["id"] for em in res.emissions}
    assert {em.record.rule for em in res.emissions} >= {"DUPLICATE_ORDER", "ADDRESS_CLUSTER"}

    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    files = [p.open("wb") for p in logs]
    procs = [spawn_worker(kafka_settings.model_copy(update={"web_port": free_port()}), "event", files[0])]
    try:
        await _wait_ready(procs[0], logs[0])
        procs.append(spawn_worker(kafka_settings.model_copy(update={"web_port": free_port()}), "event", files[1]))
        events = await _outcome(kafka_settings, procs, logs, expected_ids, 300)
    finally:
        for proc in procs:
            stop_worker(proc)
        for f in files:
            f.close()
    _assert_backtests_outcome(events, expected_ids)
    assert {p for agent, p in _owned(logs[1]) if agent == "customer"}, logs[1].read_text()[-3000:]
