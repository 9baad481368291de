"""Kafka helpers of the integration tests: publish a simulated stream with its backtest (the
outcome a live worker must reproduce), and read topics back from the beginning up to the end
offsets as of the call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from orderwatch.backtest import BacktestResult, open_lines, run_backtest
from orderwatch.simulate import simulate
from streams.publish import publish_lines
from streams.settings import Settings
from streams.worker import ensure_topics

__all__ = ["publish_simulation", "read_json", "read_records"]


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
