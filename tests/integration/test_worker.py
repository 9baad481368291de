"""The live runtime on the real broker: a `--clock event` worker replaying a published stream
emits exactly the exceptions `backtest` finds in the same file (same ids), and every malformed
message on every input topic lands in `orders-dlq` with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from orderwatch.streams.app import AGENTS
from orderwatch.streams.runtime import LEDGER_KEY
from orderwatch.streams.settings import Settings
from tests.integration.kafka import publish_simulation, read_records, wait_for_outcome
from tests.support.worker import free_port, spawn_worker, stop_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]  # above wait_for_outcome's cap

MALFORMED = {
    "not_json": b"{this is not json",
    "not_cloudevent": b'{"hello": "world"}',
    "unknown_type": json.dumps(
        {
            "specversion": "1.0",
            "id": "bad-1",
            "source": "/x",
            "type": "order.teleported",
            "time": "2026-03-02T09:00:00+00:00",
            "subject": "o-x",
            "data": {},
        }
    ).encode(),
    "invalid_data": json.dumps(
        {
            "specversion": "1.0",
            "id": "bad-2",
            "source": "/x",
            "type": "payment.succeeded",
            "time": "2026-03-02T09:00:00+00:00",
            "subject": "o-x",
            "data": {"order_id": "o-x"},
        }
    ).encode(),
}


async def test_event_clock_worker_matches_backtest_and_dead_letters_bad_input(
    tmp_path: Path, kafka_settings: Settings
) -> None:
    _path, res = await publish_simulation(tmp_path, kafka_settings, orders=300, seed=3)
    expected = {(em.record.exception_id, "resolved" if em.kind == "resolved" else "opened") for em in res.emissions}
    assert len(expected) > 30

    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap)
    await producer.start()
    try:
        for topic in ("orders", "payments", "inventory", "logistics"):
            for raw in MALFORMED.values():
                await producer.send_and_wait(kafka_settings.topic(topic), raw, key=b"k-1")
    finally:
        await producer.stop()

    log_path = tmp_path / "worker.log"
    log = log_path.open("wb")
    port = free_port()
    proc = spawn_worker(kafka_settings.model_copy(update={"web_port": port}), "event", log)
    try:
        got, dlq = await wait_for_outcome(kafka_settings, proc, log_path, expected, dead_letters=16, port=port)
    finally:
        stop_worker(proc)
        log.close()
    assert got == expected
    # Every state write sits in its own partition's changelog (a batched flush of another
    # partition's keys would have put them wherever the message being processed came from).
    changelogs = [f"{kafka_settings.app_id}-{agent}-state-changelog" for agent in AGENTS]
    writes = await read_records(kafka_settings, changelogs)
    assert writes
    for rec in writes:
        if rec.key and rec.key.startswith(LEDGER_KEY.encode()):
            assert rec.key.endswith(f":{rec.partition}".encode()), (rec.topic, rec.partition, rec.key)
        elif rec.value:
            assert rec.value.startswith(f"{rec.partition}|".encode()), (rec.topic, rec.partition, rec.key)
    by_topic_reason = {(d["topic"], d["reason"]) for d in dlq}
    assert by_topic_reason == {
        (kafka_settings.topic(t), r) for t in ("orders", "payments", "inventory", "logistics") for r in MALFORMED
    }
    for d in dlq:
        assert d["original"].encode() in MALFORMED.values()
        assert isinstance(d["offset"], int) and isinstance(d["partition"], int)
        assert d["error"]
