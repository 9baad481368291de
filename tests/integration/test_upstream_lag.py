"""Faithful replay when one upstream lags (issue 13): the order service delivered some
order.created 30 minutes late, their payments on time. `backtest` on the arrival-ordered file
raises PAYMENT_WITHOUT_ORDER for those orders and resolves it when the order arrives; a worker
replaying the published stream with `--clock event` must emit the same exceptions, id for id,
because it takes the contract records in record-timestamp order across its partitions
(streams.merge, streams.arrivals) and its clock is the backtest's clock over them. So must a
worker stopped partway and restarted later (catch-up)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from orderwatch.backtest import BacktestResult, open_lines, run_backtest
from orderwatch.simulate import simulate
from orderwatch.streams.publish import publish_lines
from orderwatch.streams.settings import Settings
from orderwatch.streams.worker import committed_offsets, ensure_topics
from tests.integration.kafka import exception_keys, read_json, wait_for_outcome
from tests.integration.upstream_lag import SkewedProducerClock, delay_created, publish_stamped
from tests.support.worker import free_port, metric_total, spawn_worker, stop_worker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(1500),  # above wait_for_outcome's cap
]

DELAY = 30 * 60.0


def _lagging_stream(tmp_path: Path, orders: int, seed: int) -> tuple[list[bytes], list[str], BacktestResult]:
    path = tmp_path / "sim.jsonl"
    simulate(orders=orders, seed=seed, output=path, labels=tmp_path / "l", blocklist=tmp_path / "b")
    lines, delayed = delay_created([line.rstrip(b"\n") for line in open_lines(path)], every=15, delay=DELAY)
    res = run_backtest(iter(lines), keep=True)
    return lines, delayed, res


def _keys(res: BacktestResult) -> set[tuple[str, str]]:
    return {(em.record.exception_id, "resolved" if em.kind == "resolved" else "opened") for em in res.emissions}


def _assert_same(got: set[tuple[str, str]], expected: set[tuple[str, str]]) -> None:
    assert got - expected == set(), "exceptions backtest does not raise"
    assert expected - got == set(), "exceptions backtest raises that the worker did not"


def _check_the_stream_has_what_the_test_is_about(res: BacktestResult, delayed: list[str]) -> None:
    raised = {em.record.order_id for em in res.emissions if em.record.rule == "PAYMENT_WITHOUT_ORDER"}
    resolved = {
        em.record.order_id
        for em in res.emissions
        if em.record.rule == "PAYMENT_WITHOUT_ORDER" and em.kind == "resolved"
    }
    late_and_paid = raised & set(delayed)
    assert len(late_and_paid) >= 5, (len(raised), len(delayed))
    assert late_and_paid <= resolved  # raised, then resolved when the order arrived


async def test_a_replay_with_a_lagging_upstream_equals_backtest(tmp_path: Path, kafka_settings: Settings) -> None:
    lines, delayed, res = _lagging_stream(tmp_path, orders=300, seed=11)
    _check_the_stream_has_what_the_test_is_about(res, delayed)
    expected = _keys(res)
    await ensure_topics(kafka_settings)
    await publish_stamped(lines, kafka_settings)

    log_path = tmp_path / "worker.log"
    settings = kafka_settings.model_copy(update={"web_port": free_port()})
    with log_path.open("wb") as log:
        proc = spawn_worker(settings, "event", log)
        try:
            got, _dlq = await wait_for_outcome(kafka_settings, proc, log_path, expected, port=settings.web_port)
        finally:
            stop_worker(proc)
    _assert_same(got, expected)


async def test_records_a_producer_stamped_days_ahead_do_not_break_the_replay(
    tmp_path: Path, kafka_settings: Settings
) -> None:
    # A few records of the lagging stream come from a producer whose clock is two days fast. A
    # record cannot have arrived after it was read: each counts at its partition's time
    # (streams.stamps). Taken at face value, each would set its partition's time two days
    # ahead: that partition's later records would stop holding the others back, and the
    # arrival clock would file its steps after them.
    lines, delayed, res = _lagging_stream(tmp_path, orders=300, seed=13)
    _check_the_stream_has_what_the_test_is_about(res, delayed)
    expected = _keys(res)
    await ensure_topics(kafka_settings)
    skewed = set(range(400, len(lines), 1000))
    sent = await publish_lines(lines, kafka_settings, clock=SkewedProducerClock(skewed, ahead_ms=2 * 86_400_000))
    assert max(skewed) < sum(sent.sent.values())  # every skewed stamp was given to a record sent

    log_path = tmp_path / "worker.log"
    settings = kafka_settings.model_copy(update={"web_port": free_port()})
    with log_path.open("wb") as log:
        proc = spawn_worker(settings, "event", log)
        try:
            got, _dlq = await wait_for_outcome(kafka_settings, proc, log_path, expected, port=settings.web_port)
            restamped = await metric_total(settings.web_port, "orderwatch_records_restamped_total")
        finally:
            stop_worker(proc)
    _assert_same(got, expected)
    assert restamped >= len(skewed)  # more only if a record was read again (after a rebalance)


async def test_a_worker_stopped_partway_and_restarted_later_catches_up_to_backtest(
    tmp_path: Path, kafka_settings: Settings
) -> None:
    lines, delayed, res = _lagging_stream(tmp_path, orders=300, seed=12)
    _check_the_stream_has_what_the_test_is_about(res, delayed)
    expected = _keys(res)
    await ensure_topics(kafka_settings)
    half = len(lines) // 2
    await publish_stamped(lines[:half], kafka_settings)

    log_path = tmp_path / "worker.log"
    settings = kafka_settings.model_copy(update={"web_port": free_port()})
    with log_path.open("wb") as log:
        proc = spawn_worker(settings, "event", log)
        try:
            # Until it has committed something on every order topic: stopped partway, not before.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                await asyncio.sleep(2)
                assert proc.poll() is None, log_path.read_text()[-3000:]
                committed = await committed_offsets(kafka_settings)
                topics = {t for (t, _), off in committed.items() if off > 0}
                if {kafka_settings.topic(t) for t in ("orders", "payments")} <= topics:
                    break
        finally:
            stop_worker(proc)
        first = exception_keys(await read_json(kafka_settings, kafka_settings.topic("order-exceptions")))
        assert first, "the first run emitted nothing: the test would not show a restart"
        # The rest of the stream arrives while the worker is down; it catches up on restart.
        await publish_stamped_tail(lines, half, kafka_settings)
        proc = spawn_worker(settings, "event", log)
        try:
            got, _dlq = await wait_for_outcome(kafka_settings, proc, log_path, expected, port=settings.web_port)
        finally:
            stop_worker(proc)
    _assert_same(got, expected)


async def publish_stamped_tail(lines: list[bytes], start: int, settings: Settings) -> None:
    """Lines from `start` on, stamped as they would have been in one run (the stamps continue)."""
    await publish_stamped(lines, settings, start=start)
