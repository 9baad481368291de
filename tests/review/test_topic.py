"""`orderwatch report --exceptions-topic`: the exception events read from the real Kafka topic,
from its start to its end, as the report's input; and a clear error when Kafka or the topic is
not there."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from orderwatch.backtest import run_backtest
from orderwatch.cli import main
from orderwatch.detectors.records import to_cloudevent
from orderwatch.errors import InputError
from orderwatch.review import Analytics, read_case_set
from orderwatch.review.topic import read_topic
from orderwatch.streams.settings import load_settings
from tests.factories import T0, at, created, paid
from tests.kafka_topics import BOOTSTRAP, fresh_topics


def _exception_events() -> list[bytes]:
    # Three orders: two paid too late (PAYMENT_TIMEOUT opens, then resolves), one never paid.
    events = [created("o-1", T0), paid("o-1", at(45)), created("o-2", at(1)), paid("o-2", at(50))]
    events += [created("o-3", at(2))]
    lines = (ev.model_dump_json(by_alias=True).encode() for ev in sorted(events, key=lambda e: e.time))
    res = run_backtest(lines, keep=True, until=at(hours=2).timestamp(), max_future=None)
    return [json.dumps(to_cloudevent(em)).encode() for em in res.emissions if em.record.rule == "PAYMENT_TIMEOUT"]


@pytest.mark.integration
async def test_report_reads_the_exceptions_topic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiokafka import AIOKafkaProducer

    values = _exception_events()
    assert len(values) == 5  # 3 opened, 2 resolved
    async with fresh_topics(["order-exceptions"], partitions=3) as prefix:
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
        await producer.start()
        try:
            for v in values:
                await producer.send_and_wait(
                    prefix + "order-exceptions", v, key=json.loads(v)["data"]["exception_id"].encode()
                )
        finally:
            await producer.stop()
        settings = load_settings(kafka_bootstrap=BOOTSTRAP, topic_prefix=prefix)
        got = await read_topic(settings, timeout=60)
        assert sorted(got) == sorted(values)
        (row,) = Analytics(read_case_set(got)).handling(Analytics(read_case_set(got)).default_period(86400.0), by=None)
        assert (row["cases"], row["resolved"]) == (3, 2)
        monkeypatch.setenv("ORDERWATCH_KAFKA_BOOTSTRAP", BOOTSTRAP)
        monkeypatch.setenv("ORDERWATCH_TOPIC_PREFIX", prefix)
        md = tmp_path / "r.md"
        assert (
            await asyncio.to_thread(main, ["report", "--exceptions-topic", "--period", "1d", "--markdown", str(md)])
            == 0
        )
        assert "| Exceptions | 3 | 0 | +3 |" in md.read_text()


@pytest.mark.integration
async def test_a_missing_topic_or_kafka_is_an_input_error() -> None:
    async with fresh_topics(["other"]) as prefix:
        with pytest.raises(InputError, match="does not exist"):
            await read_topic(load_settings(kafka_bootstrap=BOOTSTRAP, topic_prefix=prefix), timeout=30)
    with pytest.raises(InputError, match="cannot read topic"):
        await read_topic(load_settings(kafka_bootstrap="127.0.0.1:1"), timeout=5)
