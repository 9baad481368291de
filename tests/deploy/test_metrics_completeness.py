"""The metrics the dashboards and alerts need besides the runtime's own: build and rule info,
zero-initialised dead-letter and rule series, last commit per partition (a faust sensor). The
live path of each is in test_prometheus_live (its panels return series only if they work)."""

from __future__ import annotations

import platform
import subprocess
from types import SimpleNamespace

import pytest
from faust.types import TP
from prometheus_client import generate_latest

from orderwatch import __version__
from orderwatch.detectors.catalog import RULES
from orderwatch.streams.commits import CommitSensor
from orderwatch.streams.metrics import INVALID_REASONS, Metrics
from tests.deploy.prometheus import require_binary


def _value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_build_info_and_rule_info() -> None:
    m = Metrics()
    assert _value(m, "orderwatch_build_info", version=__version__, python=platform.python_version()) == 1
    for code, meta in RULES.items():
        assert _value(m, "orderwatch_rule_info", rule=code, category=meta.category, severity=meta.severity) == 1
    assert len(RULES) >= 20


def test_initialise_creates_bounded_zero_series() -> None:
    m = Metrics()
    assert _value(m, "orderwatch_events_invalid_total", topic="p-orders", reason="not_json") is None
    m.initialise(["p-orders", "p-payments"])
    for topic in ("p-orders", "p-payments"):
        for reason in INVALID_REASONS:
            assert _value(m, "orderwatch_events_invalid_total", topic=topic, reason=reason) == 0
    for code, meta in RULES.items():
        assert _value(m, "orderwatch_exceptions_opened_total", rule=code, severity=meta.severity) == 0
        assert _value(m, "orderwatch_exceptions_resolved_total", rule=code, severity=meta.severity) == 0
    # twice is harmless, and an increment after it counts from zero
    m.initialise(["p-orders"])
    m.invalid.labels("p-orders", "not_json").inc()
    assert _value(m, "orderwatch_events_invalid_total", topic="p-orders", reason="not_json") == 1


def test_commit_sensor_stamps_only_partitions_whose_commit_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Metrics()
    sensor = CommitSensor(m, ["orders", "payments"])
    consumer = SimpleNamespace(_committed_offset={TP("orders", 0): 10, TP("orders", 1): 5, TP("ticks", 0): 3})
    monkeypatch.setattr("orderwatch.streams.commits.time.time", lambda: 1000.0)
    state = sensor.on_commit_initiated(consumer)
    consumer._committed_offset[TP("orders", 0)] = 20  # moved
    consumer._committed_offset[TP("ticks", 0)] = 9  # not an input of the sensor
    consumer._committed_offset[TP("payments", 2)] = None  # first commit (faust stores 0 as None)
    sensor.on_commit_completed(consumer, state)
    assert _value(m, "orderwatch_last_commit_timestamp_seconds", topic="orders", partition="0") == 1000.0
    assert _value(m, "orderwatch_last_commit_timestamp_seconds", topic="payments", partition="2") == 1000.0
    assert _value(m, "orderwatch_last_commit_timestamp_seconds", topic="orders", partition="1") is None
    assert _value(m, "orderwatch_last_commit_timestamp_seconds", topic="ticks", partition="0") is None
    # a commit that moved nothing leaves the stamps alone
    monkeypatch.setattr("orderwatch.streams.commits.time.time", lambda: 2000.0)
    sensor.on_commit_completed(consumer, sensor.on_commit_initiated(consumer))
    assert _value(m, "orderwatch_last_commit_timestamp_seconds", topic="orders", partition="0") == 1000.0


def test_commit_sensor_survives_a_consumer_without_offsets() -> None:
    m = Metrics()
    sensor = CommitSensor(m, ["orders"])
    sensor.on_commit_completed(object(), sensor.on_commit_initiated(object()))
    sensor.on_commit_completed(object(), None)  # a state of the wrong kind
    assert "orderwatch_last_commit_timestamp_seconds{" not in generate_latest(m.registry).decode()


def test_promtool_accepts_every_metric_family() -> None:
    """Every family with a sample (labels set once each), linted by promtool's exposition rules."""
    promtool = require_binary("promtool")
    m = Metrics()
    m.initialise(["orders"])
    m.events_in.labels("orders", "order.created").inc()
    m.duplicates.labels("orders").inc()
    m.open_exceptions.labels("orders").set(1)
    m.deadline_queue.labels("orders").set(1)
    m.late.labels("orders", "orders").inc()
    m.buffered.labels("orders").set(1)
    m.lag_seconds.labels("opened").observe(1.5)
    m.consumer_lag.labels("orders", "0").set(3)
    m.case_changes.labels("opened", "high").inc()
    m.escalations.labels("1", "high").inc()
    m.incidents_opened.labels("CARRIER_STALLED").inc()
    m.store_retries.labels("apply").inc()
    m.actions.labels("refund", "sent").inc()
    m.notifications.labels("ops", "sent").inc()
    m.handler_messages.labels("changed").inc()
    m.api_requests.labels("ready", "200").inc()
    m.breaker_state.labels("ops").set(0)
    m.last_commit.labels("orders", "0").set(1.0)
    m.event_clock.labels("orders").set(1.0)
    m.merge_forced.labels("orders", "idle").inc()
    out = subprocess.run(
        [promtool, "check", "metrics"], input=generate_latest(m.registry), capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()


def test_report_partitions_drops_the_series_of_partitions_no_longer_owned() -> None:
    m = Metrics()
    m.last_commit.labels("orders", "1").set(5.0)
    m.report_partitions([(("orders", 0), 7), (("orders", 1), 0)], stalled=[("orders", 0)])
    assert _value(m, "orderwatch_consumer_lag_messages", topic="orders", partition="0") == 7
    assert _value(m, "orderwatch_partition_stalled", topic="orders", partition="0") == 1
    assert _value(m, "orderwatch_partition_stalled", topic="orders", partition="1") == 0
    # a rebalance moved orders[1] away and orders[2] here; orders[0] is no longer stalled
    m.report_partitions([(("orders", 0), 3), (("orders", 2), 4)], stalled=[])
    assert _value(m, "orderwatch_partition_stalled", topic="orders", partition="0") == 0
    assert _value(m, "orderwatch_consumer_lag_messages", topic="orders", partition="2") == 4
    for name in ("orderwatch_consumer_lag_messages", "orderwatch_partition_stalled"):
        assert _value(m, name, topic="orders", partition="1") is None
    assert _value(m, "orderwatch_last_commit_timestamp_seconds", topic="orders", partition="1") is None
    m.report_partitions([], stalled=[])  # nothing owned: nothing reported
    assert "orderwatch_consumer_lag_messages{" not in generate_latest(m.registry).decode()


def test_initialise_agents_crash_counters() -> None:
    m = Metrics()
    m.initialise([], agents=["orders", "inventory"])
    assert _value(m, "orderwatch_agent_crashes_total", agent="orders") == 0
    assert _value(m, "orderwatch_agent_crashes_total", agent="inventory") == 0
