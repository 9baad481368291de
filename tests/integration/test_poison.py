"""Poison messages on the live topics (issue 9): each kind sits ahead of a clean stream on an
input topic; each is dead-lettered with its reason, the clean stream's exceptions all arrive, and
every partition commits past its poison."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from orderwatch.schemas.control import CONTROL_HEADER
from orderwatch.streams.app import DLQ_MAX_BYTES
from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import ensure_topics
from orderwatch.streams.worker import committed_offsets
from tests.integration.kafka import publish_simulation, wait_for_outcome
from tests.support.worker import free_port, spawn_worker, stop_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]  # above wait_for_outcome's cap

WHEN = "2026-03-02T07:00:00+00:00"


def _event(type_: str, subject: str, data: dict[str, Any], *, when: str = WHEN, id_: str) -> bytes:
    doc = {"specversion": "1.0", "id": id_, "source": "/poison", "type": type_, "time": when, "subject": subject}
    return json.dumps({**doc, "data": data}, ensure_ascii=False).encode()


def _poison() -> list[tuple[str, bytes, bytes, str]]:
    """(topic, key, value, the reason its dead letter must give): every kind on every input topic."""
    level = {"sku": "sku-p", "warehouse_id": "w-1", "on_hand": 3, "reserved": 0}
    pay = {"order_id": "o-p1", "payment_id": "pay-p", "amount": "5.00", "currency": "EUR", "provider": "psp"}
    cancel = {"order_id": "o-p1", "reason": "x"}
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    # A valid event of each topic, and one of another topic for the wrong-topic case.
    own = {
        "orders": ("order.cancelled", "o-p1", cancel),
        "payments": ("payment.succeeded", "o-p1", {**pay, "method": "card"}),
        "inventory": ("inventory.level_reported", "sku-p", level),
        "logistics": ("shipment.delivered", "o-p1", {"order_id": "o-p1", "shipment_id": "s-p"}),
    }
    other = {"orders": "inventory", "payments": "orders", "inventory": "payments", "logistics": "orders"}
    # A bounded field of each (an unknown extra field is kept, not judged: Kafka bounds its size).
    bounded = {"orders": "reason", "payments": "method", "inventory": "warehouse_id", "logistics": "shipment_id"}
    out = []
    for n, topic in enumerate(own):
        type_, key, data = own[topic]
        wrong_type, wrong_key, wrong_data = own[other[topic]]
        huge = {**data, bounded[topic]: "é" * 450_000}
        out += [
            (topic, wrong_key.encode(), _event(wrong_type, wrong_key, wrong_data, id_=f"p{n}-1"), "wrong_topic"),
            (topic, b"someone-else", _event(type_, key, data, id_=f"p{n}-2"), "key_mismatch"),
            (topic, key.encode(), _event(type_, key, data, when=future, id_=f"p{n}-3"), "from_future"),
            # 900 kB of UTF-8 (2.7 MB once escaped as ASCII JSON), and 900 kB of bytes that are not text
            (topic, key.encode(), _event(type_, key, huge, id_=f"p{n}-4"), "invalid_data"),
            (topic, key.encode(), bytes([0xFF, n]) * 450_000, "not_json"),
        ]
    return out


_BAD_WATERMARK = b'{"source_topic":"orders","source_partition":"one","caught_up":true}'


def _bad_adoption() -> bytes:
    """A legacy (version 1, no header) order-inbox adoption naming no order: it fails validation
    at the edge (invalid_control), as any input does, before the rules could see it."""
    doc = {"id": "adopt:bad", "t": 1772434800.0, "data": {"order_id": None}}
    return json.dumps(doc, separators=(",", ":")).encode()


async def test_poison_is_dead_lettered_and_the_clean_stream_goes_on(tmp_path: Path, kafka_settings: Settings) -> None:
    poison = _poison()
    await ensure_topics(kafka_settings)  # the inbox too: a send would auto-create it with 1 partition
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap, max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        poisoned = {}  # (topic, partition) -> the offset the partition must commit past
        for topic, key, value, _ in poison:  # ahead of the clean stream: the partitions must move past them
            meta = await producer.send_and_wait(kafka_settings.topic(topic), value, key=key)
            tp = (meta.topic, meta.partition)
            poisoned[tp] = max(poisoned.get(tp, 0), meta.offset + 1)
        inbox = f"{kafka_settings.app_id}-order-inbox"
        meta = await producer.send_and_wait(inbox, _bad_adoption(), key=b"o-p1")
        poisoned[(meta.topic, meta.partition)] = meta.offset + 1
        # A typed control message (header) that does not validate, on a repartition topic.
        by_customer = f"{kafka_settings.app_id}-by-customer"
        meta = await producer.send_and_wait(
            by_customer, _BAD_WATERMARK, partition=1, headers=[(CONTROL_HEADER, b"watermark/1")]
        )
        poisoned[(meta.topic, meta.partition)] = meta.offset + 1
    finally:
        await producer.stop()
    _path, res = await publish_simulation(tmp_path, kafka_settings, orders=200, seed=5)
    expected = {(em.record.exception_id, "resolved" if em.kind == "resolved" else "opened") for em in res.emissions}
    assert len(expected) > 20

    log_path = tmp_path / "worker.log"
    log = log_path.open("wb")
    port = free_port()
    proc = spawn_worker(kafka_settings.model_copy(update={"web_port": port}), "event", log)
    try:
        got, dlq = await wait_for_outcome(
            kafka_settings, proc, log_path, expected, dead_letters=len(poison) + 2, port=port
        )
        deadline = time.monotonic() + 120  # everything is read by now: only the commits are waited for
        # Commits past each poison message (the event clock still holds the stream's last
        # minute of event time in the reorder buffer, so "to the end" is not what to wait for).
        committed: dict[Any, int] = {}
        while time.monotonic() < deadline:
            committed = await committed_offsets(kafka_settings)
            if all(committed.get(tp, -1) >= end for tp, end in poisoned.items()):
                break
            await asyncio.sleep(2)
    finally:
        stop_worker(proc)
        log.close()
    assert got == expected
    assert all(committed.get(tp, -1) >= end for tp, end in poisoned.items()), (committed, poisoned)
    # The simulated stream has malformed lines of its own: pick ours by their hash.
    ours = {hashlib.sha256(v).hexdigest(): (kafka_settings.topic(t), v, r) for t, _, v, r in poison}
    ours[hashlib.sha256(_bad_adoption()).hexdigest()] = (inbox, _bad_adoption(), "invalid_control")
    ours[hashlib.sha256(_BAD_WATERMARK).hexdigest()] = (by_customer, _BAD_WATERMARK, "invalid_control")
    mine = [d for d in dlq if d["original_sha256"] in ours]
    assert sorted((d["topic"], d["reason"]) for d in mine) == sorted((t, r) for t, _, r in ours.values())
    for d in mine:
        _topic, value, _reason = ours[d["original_sha256"]]
        assert d["original_length"] == len(value)
        assert len(json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode()) <= DLQ_MAX_BYTES
        assert d["truncated"] is (len(value) > DLQ_MAX_BYTES // 2)
        assert d["error"]
