"""`orderwatch publish` against the real broker: every event lands on its type's topic, keyed by
subject, in file order per key."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import pytest

from orderwatch.backtest import open_lines
from orderwatch.schemas.events import TOPIC_OF_TYPE
from orderwatch.simulate import simulate
from orderwatch.streams.publish import KEY_MISMATCH, RecordClock, publish_lines, route
from orderwatch.streams.settings import Settings
from tests.integration.kafka import read_records

pytestmark = pytest.mark.integration


async def test_publish_routes_each_event_to_its_topic_keyed_by_subject(
    tmp_path: Path, kafka_settings: Settings
) -> None:
    path = tmp_path / "sim.jsonl"
    simulate(orders=150, seed=4, output=path, labels=tmp_path / "l", blocklist=tmp_path / "b")
    lines = [raw for raw in open_lines(path) if raw.strip()]
    res = await publish_lines(lines, kafka_settings)

    expected: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)
    unroutable = 0
    for raw in lines:
        try:
            doc = json.loads(raw)
            topic = TOPIC_OF_TYPE[doc["type"]]
        except (ValueError, KeyError):
            unroutable += 1
            continue
        expected[kafka_settings.topic(topic)].append((doc["subject"].encode(), raw.rstrip(b"\n")))
    assert res.unroutable == unroutable
    assert dict(res.sent) == {t: len(v) for t, v in expected.items()}

    got = [(r.topic, r.partition, r.key, r.value) for r in await read_records(kafka_settings, list(expected))]
    by_topic: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
    partition_of_key: dict[tuple[str, bytes | None], set[int]] = defaultdict(set)
    for topic, partition, key, value in got:
        by_topic[topic].append((key, value))
        partition_of_key[(topic, key)].add(partition)
    for topic, msgs in expected.items():
        assert sorted(by_topic[topic]) == sorted(msgs)
        # Kafka keeps per-key order only within a partition: one key, one partition, file order.
        for key in {k for k, _ in msgs}:
            assert len(partition_of_key[(topic, key)]) == 1
            assert [v for k, v in by_topic[topic] if k == key] == [v for k, v in msgs if k == key]
    # Co-partitioning: an order id lands on the same partition number in every order-keyed topic.
    order_topics = [kafka_settings.topic(t) for t in ("orders", "payments", "logistics")]
    for key in {k for (t, k) in partition_of_key if t in order_topics}:
        parts = set().union(*(partition_of_key.get((t, key), set()) for t in order_topics))
        assert len(parts) == 1


async def test_record_timestamps_keep_the_file_order_across_topics(tmp_path: Path, kafka_settings: Settings) -> None:
    """Read back from Kafka: ordering every record of every input topic by its timestamp gives the
    file's order, whatever the events' own times say, and every stamp is the wall clock of the
    publishing run (a historical file's records are not older than the broker's retention)."""
    path = tmp_path / "sim.jsonl"
    simulate(orders=120, seed=9, output=path, labels=tmp_path / "l", blocklist=tmp_path / "b")
    lines = [raw.rstrip(b"\n") for raw in open_lines(path) if raw.strip()]
    # Skew the file: a late order.created (its time 30 minutes before the lines around it), a line
    # with no time at all, and one from the far future.
    late = json.loads(lines[40])
    late["time"] = "2026-03-02T07:00:00Z"
    lines[40] = json.dumps(late).encode()
    untimed = json.loads(lines[41])
    del untimed["time"]
    lines[41] = json.dumps(untimed).encode()
    future = json.loads(lines[42])
    future["time"] = "2099-01-01T00:00:00Z"
    lines[42] = json.dumps(future).encode()
    started = int(time.time() * 1000)
    res = await publish_lines(lines, kafka_settings)
    ended = int(time.time() * 1000)
    sent = [raw for raw in lines if route(raw) not in (None, KEY_MISMATCH)]
    assert sum(res.sent.values()) == len(sent)

    topics = [kafka_settings.topic(t) for t in ("orders", "payments", "inventory", "logistics")]
    records = await read_records(kafka_settings, topics)
    stamps = [r.timestamp for r in records]
    assert len(set(stamps)) == len(stamps)  # strictly increasing: no two alike
    assert [r.value for r in sorted(records, key=lambda r: r.timestamp)] == sent
    # At the wall clock of publishing: at most a millisecond a record ahead of it.
    assert started <= min(stamps) and max(stamps) <= ended + len(sent)
    by_value = {r.value: r.timestamp for r in records}
    assert by_value[lines[43]] - by_value[lines[40]] < 60_000  # neither behind nor far ahead


async def test_a_fast_publish_waits_at_its_lead_bound(tmp_path: Path, kafka_settings: Settings) -> None:
    """300 records with a 50 ms bound: stamps keep the file's order and none is more than 50 ms
    ahead of the wall clock at the end of the run (the publisher waited for it)."""
    path = tmp_path / "sim.jsonl"
    simulate(orders=30, seed=2, output=path, labels=tmp_path / "l", blocklist=tmp_path / "b")
    lines = [raw.rstrip(b"\n") for raw in open_lines(path) if raw.strip()][:300]
    clock = RecordClock(max_lead_ms=50)
    started = int(time.time() * 1000)
    await publish_lines(lines[:150], kafka_settings, clock=clock)
    await publish_lines(lines[150:], kafka_settings, clock=clock)  # one clock: the stamps continue
    ended = int(time.time() * 1000)
    sent = [raw for raw in lines if route(raw) not in (None, KEY_MISMATCH)]
    assert len(sent) > 250
    topics = [kafka_settings.topic(t) for t in ("orders", "payments", "inventory", "logistics")]
    records = await read_records(kafka_settings, topics)
    assert [r.value for r in sorted(records, key=lambda r: r.timestamp)] == sent
    assert started <= min(r.timestamp for r in records)
    assert max(r.timestamp for r in records) <= ended + 50
