"""The handlers' metrics interface: without metrics the handlers run and count nothing (the
no-op default); with `streams.metrics.Metrics` every call lands in its Prometheus series."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import CollectorRegistry

from orderwatch.handlers.config import HandlersConfig
from orderwatch.handlers.incidents import IncidentStore
from orderwatch.handlers.metrics import NO_METRICS, HandlerMetrics, NoMetrics
from orderwatch.handlers.service import HandlerService
from orderwatch.handlers.store import CaseStore
from orderwatch.streams.metrics import Metrics
from tests.handlers.conftest import T0, exception_data, opened


async def test_the_service_runs_without_metrics(store: CaseStore, incidents: IncidentStore) -> None:
    service = HandlerService(store, incidents, HandlersConfig())
    assert service.metrics is NO_METRICS
    data = exception_data()
    change = await service.handle(opened(data), T0)
    assert change is not None and change.kind == "opened"
    escalated = await service.escalate_due(T0 + timedelta(days=3))
    assert [c.level for c in escalated] == [1, 2]


def test_metrics_implements_the_interface_series_by_series() -> None:
    registry = CollectorRegistry()
    metrics: HandlerMetrics = Metrics(registry)
    metrics.store_retried("escalate")
    metrics.store_outage(2.5)
    metrics.escalated(2, "critical")
    metrics.case_changed("opened", "high")
    metrics.incident_opened("TRACKING_STALLED")
    metrics.action_outcome("intercept_shipment", "sent")
    metrics.breaker_changed("ops-slack", 2)
    metrics.notified("ops-slack", "failed", 3)
    value = registry.get_sample_value
    assert value("orderwatch_handler_store_retries_total", {"operation": "escalate"}) == 1
    assert value("orderwatch_handler_store_outage_seconds_total") == 2.5
    assert value("orderwatch_case_escalations_total", {"level": "2", "severity": "critical"}) == 1
    assert value("orderwatch_case_changes_total", {"kind": "opened", "severity": "high"}) == 1
    assert value("orderwatch_incidents_opened_total", {"rule": "TRACKING_STALLED"}) == 1
    assert value("orderwatch_actions_total", {"action": "intercept_shipment", "outcome": "sent"}) == 1
    assert value("orderwatch_notify_breaker_state", {"channel": "ops-slack"}) == 2
    assert value("orderwatch_notifications_total", {"channel": "ops-slack", "outcome": "failed"}) == 3


def test_no_metrics_answers_every_call_of_the_interface() -> None:
    names = [n for n in vars(HandlerMetrics) if not n.startswith("_")]
    assert names and all(callable(getattr(NoMetrics, n)) for n in names)
