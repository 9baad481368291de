"""`orderwatch publish` against the real broker: every event lands on its type's topic, keyed by
subject, in file order per key."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from orderwatch.backtest import open_lines
from orderwatch.schemas.events import TOPIC_OF_TYPE
from orderwatch.simulate import simulate
from orderwatch.streams.publish import KEY_MISMATCH, event_time_ms, publish_lines, route
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
    file's order, and no record is stamped before its event's own time."""
    path = tmp_path / "sim.jsonl"
    simulate(orders=120, seed=9, output=path, labels=tmp_path / "l", blocklist=tmp_path / "b")
    lines = [raw.rstrip(b"\n") for raw in open_lines(path) if raw.strip()]
    # Skew the file: a late order.created (its time 30 minutes before the lines around it), a line
    # with no time at all, and two lines with the same time.
    late = json.loads(lines[40])
    late["time"] = "2026-03-02T07:00:00Z"
    lines[40] = json.dumps(late).encode()
    untimed = json.loads(lines[41])
    del untimed["time"]
    lines[41] = json.dumps(untimed).encode()
    res = await publish_lines(lines, kafka_settings)
    sent = [raw for raw in lines if route(raw) not in (None, KEY_MISMATCH)]
    assert sum(res.sent.values()) == len(sent)

    topics = [kafka_settings.topic(t) for t in ("orders", "payments", "inventory", "logistics")]
    records = await read_records(kafka_settings, topics)
    stamps = [r.timestamp for r in records]
    assert len(set(stamps)) == len(stamps)  # strictly increasing: no two alike
    assert [r.value for r in sorted(records, key=lambda r: r.timestamp)] == sent
    for r in records:
        t = event_time_ms(json.loads(r.value))
        if t is not None:
            assert r.timestamp >= t
    by_value = {r.value: r.timestamp for r in records}
    i = sent.index(lines[40])
    assert by_value[lines[40]] == by_value[sent[i - 1]] + 1  # behind its neighbours: next in line
    assert by_value[lines[41]] == by_value[lines[40]] + 1  # no time: next in line
