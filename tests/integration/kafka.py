"""Kafka helpers of the integration tests: publish a simulated stream with its backtest (the
outcome a live worker must reproduce), and read topics back from the beginning up to the end
offsets as of the call."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from orderwatch.backtest import BacktestResult, open_lines, run_backtest
from orderwatch.simulate import simulate
from orderwatch.streams.publish import publish_lines
from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import ensure_topics
from tests.support.progress import Look, events_read, wait_for_worker, worker_progress

__all__ = ["exception_keys", "publish_simulation", "read_json", "read_records", "wait_for_outcome"]


async def publish_simulation(
    tmp_path: Path, settings: Settings, *, orders: int, seed: int
) -> tuple[Path, BacktestResult]:
    """Simulate `orders` orders into `tmp_path/sim.jsonl`, backtest them (emissions kept), create
    the topics of `settings` and publish the stream to them. Returns the file and the backtest."""
    path = tmp_path / "sim.jsonl"
    simulate(orders=orders, seed=seed, output=path, labels=tmp_path / "l", blocklist=tmp_path / "b")
    res = run_backtest(open_lines(path), keep=True)
    await ensure_topics(settings)
    await publish_lines(open_lines(path), settings)
    return path, res


async def read_records(settings: Settings, topics: list[str]) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topics` (full names) present now, per partition in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += records
        return out
    finally:
        await consumer.stop()


async def read_json(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """The values of one topic (full name), decoded as JSON."""
    return [json.loads(r.value) for r in await read_records(settings, [topic]) if r.value is not None]


def exception_keys(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(exception id, opened | resolved) of each exception event: what a backtest also gives."""
    return {(e["data"]["exception_id"], e["type"].split(".")[1]) for e in events}


class OutcomeLook:
    """One look at a replaying worker for `wait_for_worker`: the exception events on
    `order-exceptions`, the dead letters on `orders-dlq`, and its progress (`worker_progress`,
    `events_read` when its web port is known).
    Done when every expected event and enough dead letters are there; wrong when an event the
    backtest does not have was emitted (a replay that went another way: it cannot be taken
    back)."""

    def __init__(self, settings: Settings, expected: set[tuple[str, str]], dead_letters: int, port: int | None) -> None:
        self.settings = settings
        self.port = port
        self.expected = expected
        self.dead_letters = dead_letters
        self.got: set[tuple[str, str]] = set()
        self.dlq: list[dict[str, Any]] = []

    async def __call__(self) -> Look:
        self.got = exception_keys(await read_json(self.settings, self.settings.topic("order-exceptions")))
        self.dlq = await read_json(self.settings, self.settings.topic("orders-dlq"))
        committed, written = await worker_progress(self.settings)
        read = await events_read(self.port)
        extra, missing = self.got - self.expected, self.expected - self.got
        seen = (
            f"{len(self.got & self.expected)} of {len(self.expected)} exception events, {len(extra)} not in the "
            f"backtest {sorted(extra)[:3]}, dead letters {len(self.dlq)} of {self.dead_letters}, "
            f"committed {committed}, written {written}, read {read}"
        )
        if missing:
            seen += f"; missing e.g. {sorted(missing)[:3]}"
        wrong = f"{len(extra)} exception events the backtest does not have" if extra else None
        done = not missing and len(self.dlq) >= self.dead_letters
        return Look(done, (len(self.got), len(self.dlq), committed, written, read), seen, wrong)


async def wait_for_outcome(
    settings: Settings,
    proc: subprocess.Popen[bytes],
    log: Path,
    expected: set[tuple[str, str]],
    *,
    dead_letters: int = 0,
    port: int | None = None,
    quiet: float = 180.0,
    cap: float = 900.0,
    settle: float = 3.0,
) -> tuple[set[tuple[str, str]], list[dict[str, Any]]]:
    """Poll `order-exceptions` and `orders-dlq` until every `expected` exception event and at
    least `dead_letters` dead letters are there, then read the exceptions once more `settle`
    seconds later (anything extra would show by then). The wait goes on while the worker moves
    (events, dead letters, committed offsets, what it wrote, and what it read when `port`, its
    web port, is given) and fails, saying what it saw and what the worker
    logged, after `quiet` seconds with nothing moving, after `cap` seconds in all, at once when
    the worker died or emitted an event the backtest does not have. Returns what was read last:
    the exception keys and the dead letters."""
    look = OutcomeLook(settings, expected, dead_letters, port)
    what = f"{len(expected)} exception events and {dead_letters} dead letters"
    await wait_for_worker(look, proc, log, what=what, quiet=quiet, cap=cap, every=3)
    await asyncio.sleep(settle)
    got = exception_keys(await read_json(settings, settings.topic("order-exceptions")))
    return got, look.dlq
