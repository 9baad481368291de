"""Every Prometheus metric of orderwatch, in one place, built against a registry passed in
(tests use a fresh `CollectorRegistry`). Labels are bounded sets: topic, type, reason, rule,
severity, category, agent, partition number, kind, level, operation, action code, webhook channel
name, outcome, API view name and status code, version. Never an id.

`Metrics` is also the handlers' `HandlerMetrics` (orderwatch.handlers.metrics): the handlers call
its few methods and never import this module.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Collection, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from orderwatch import __version__
from orderwatch.detectors.catalog import RULES

__all__ = ["INVALID_REASONS", "Metrics"]

# Every reason a message is dead-lettered for: `schemas.events.parse_event`'s, and the runtime's
# own checks in streams.app (wrong topic, key, a time from the future, rules that raised).
INVALID_REASONS = (
    "not_json",
    "not_cloudevent",
    "unknown_type",
    "invalid_data",
    "key_mismatch",
    "wrong_topic",
    "from_future",
    "processing_error",
    "invalid_control",
)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._reported: set[tuple[str, int]] = set()  # partitions report_partitions last set
        r = self.registry
        # Process CPU, memory, open files and start time: the worker-health panels and the
        # restart detection of the alerts read them (Linux only; elsewhere it exports nothing).
        ProcessCollector(registry=r)
        self.build_info = Gauge(
            "orderwatch_build_info",
            "Always 1: the orderwatch version and Python version this worker runs",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.rule_info = Gauge(
            "orderwatch_rule_info",
            "Always 1, one series per rule of the catalog: its category and default severity, to join "
            "with the per-rule counters (`* on(rule) group_left(category)`)",
            ["rule", "category", "severity"],
            registry=r,
        )
        for code, meta in RULES.items():
            self.rule_info.labels(code, meta.category, meta.severity).set(1)
        self.last_commit = Gauge(
            "orderwatch_last_commit_timestamp_seconds",
            "Unix time of the last offset commit that moved this input topic partition forward (this worker)",
            ["topic", "partition"],
            registry=r,
        )
        self.event_clock = Gauge(
            "orderwatch_event_clock_seconds",
            "Each agent's clock as a Unix time: the slowest of its actively owned partitions (deadlines fire "
            "against it); wall clock in live mode, the watermark in replays",
            ["agent"],
            registry=r,
        )
        self.events_in = Counter(
            "orderwatch_events_in_total",
            "Valid events consumed, by topic and event type",
            ["topic", "type"],
            registry=r,
        )
        self.invalid = Counter(
            "orderwatch_events_invalid_total",
            "Messages sent to the dead-letter topic, by source topic and reason",
            ["topic", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "orderwatch_events_duplicate_total", "Re-delivered events dropped, by agent", ["agent"], registry=r
        )
        self.opened = Counter(
            "orderwatch_exceptions_opened_total",
            "Exceptions opened, by rule and severity",
            ["rule", "severity"],
            registry=r,
        )
        self.resolved = Counter(
            "orderwatch_exceptions_resolved_total",
            "Exceptions resolved, by rule and severity",
            ["rule", "severity"],
            registry=r,
        )
        self.open_exceptions = Gauge(
            "orderwatch_exceptions_open", "Exceptions open in this worker's state, by agent", ["agent"], registry=r
        )
        self.deadline_queue = Gauge(
            "orderwatch_deadline_queue_size",
            "Timer heap entries (stale ones included) of actively owned partitions, by agent",
            ["agent"],
            registry=r,
        )
        self.late = Counter(
            "orderwatch_events_late_total",
            "Events that reached an agent after its clock had passed their event time (applied anyway; "
            "a deadline may have fired without them), by agent and topic",
            ["agent", "topic"],
            registry=r,
        )
        self.buffered = Gauge(
            "orderwatch_reorder_buffer_events", "Events waiting for the clock, by agent", ["agent"], registry=r
        )
        self.lag_seconds = Histogram(
            "orderwatch_detection_lag_seconds",
            "End-to-end lag: detection time minus the event time of the fact that made the rule fire",
            ["kind"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, float("inf")),
        )
        self.consumer_lag = Gauge(
            "orderwatch_consumer_lag_messages",
            "Highwater minus next offset, per input topic partition",
            ["topic", "partition"],
            registry=r,
        )
        # Hostile input and faults (issue 9): stalled partitions, crashing agents.
        self.partition_stalled = Gauge(
            "orderwatch_partition_stalled",
            "1 while an input partition's committed offset has not moved although messages wait past it "
            "and none of them is in the reorder buffer; 0 otherwise",
            ["topic", "partition"],
            registry=r,
        )
        self.agent_crashes = Counter(
            "orderwatch_agent_crashes_total",
            "Agent loops that raised and were restarted by faust's supervisor, by agent",
            ["agent"],
            registry=r,
        )
        self.merge_forced = Counter(
            "orderwatch_merge_forced_total",
            "Records the record-timestamp merge released before it could tell they were next, by agent and "
            "why (idle: an input with lag had nothing fetched within the idle wait; overflow: too many held)",
            ["agent", "reason"],
            registry=r,
        )
        self.restamped = Counter(
            "orderwatch_records_restamped_total",
            "Input records stamped more than an hour ahead of the wall clock (an upstream producer's clock is "
            "off), counted at their partition's time instead of their own (streams.stamps), by topic",
            ["topic"],
            registry=r,
        )
        # Handlers: cases, escalation, incidents (handlers.service).
        self.case_changes = Counter(
            "orderwatch_case_changes_total",
            "Case lifecycle moves handed to listeners, by kind (opened, acknowledged, escalated, resolved), severity",
            ["kind", "severity"],
            registry=r,
        )
        self.escalations = Counter(
            "orderwatch_case_escalations_total",
            "Cases escalated (not acknowledged in time), by level and severity",
            ["level", "severity"],
            registry=r,
        )
        self.incidents_opened = Counter(
            "orderwatch_incidents_opened_total",
            "Incidents that reached their threshold and paged, by rule",
            ["rule"],
            registry=r,
        )
        self.store_retries = Counter(
            "orderwatch_handler_store_retries_total",
            "Handler operations retried because Redis could not be reached, by operation",
            ["operation"],
            registry=r,
        )
        self.store_outage_seconds = Counter(
            "orderwatch_handler_store_outage_seconds_total",
            "Seconds the handlers spent waiting for Redis to come back",
            registry=r,
        )
        self.actions = Counter(
            "orderwatch_actions_total",
            "Action commands by action code and outcome: sent, pending_approval, skipped (policy off), "
            "capped (out of attempts), dry_run, failed (one send that failed), rejected, withdrawn",
            ["action", "outcome"],
            registry=r,
        )
        self.notifications = Counter(
            "orderwatch_notifications_total",
            "Webhook notifications by channel and outcome: sent, failed (one request that failed), "
            "dead_lettered, rate_limited, breaker_open, suppressed (covered by an incident page), dry_run",
            ["channel", "outcome"],
            registry=r,
        )
        # Handlers running live (streams.handling) and the ops API (streams.api).
        self.handler_messages = Counter(
            "orderwatch_handler_messages_total",
            "order-exceptions messages read by the handler agent, by outcome: changed (a case moved), "
            "unchanged (a replay or an evidence update), invalid (not an exception event: skipped), tombstone",
            ["outcome"],
            registry=r,
        )
        self.resolutions_republished = Counter(
            "orderwatch_handler_resolutions_republished_total",
            "Resolutions published again because an escalation landed after them on the compacted topic",
            registry=r,
        )
        self.handler_clock = Gauge(
            "orderwatch_handler_clock_seconds",
            "The handlers' clock (escalation time base) as a Unix time: wall clock, or event time in replays",
            registry=r,
        )
        self.api_requests = Counter(
            "orderwatch_api_requests_total",
            "Ops API requests by view (route name) and HTTP status code",
            ["view", "code"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "orderwatch_notify_breaker_state",
            "Circuit breaker of each webhook channel on this worker: 0 closed, 1 half-open, 2 open",
            ["channel"],
            registry=r,
        )

    # -- the handlers' interface (orderwatch.handlers.metrics.HandlerMetrics) ------------------------

    def store_retried(self, operation: str) -> None:
        self.store_retries.labels(operation=operation).inc()

    def store_outage(self, seconds: float) -> None:
        self.store_outage_seconds.inc(seconds)

    def escalated(self, level: int, severity: str) -> None:
        self.escalations.labels(level=str(level), severity=severity).inc()

    def case_changed(self, kind: str, severity: str) -> None:
        self.case_changes.labels(kind=kind, severity=severity).inc()

    def incident_opened(self, rule: str) -> None:
        self.incidents_opened.labels(rule=rule).inc()

    def action_outcome(self, action: str, outcome: str) -> None:
        self.actions.labels(action=action, outcome=outcome).inc()

    def breaker_changed(self, channel: str, level: int) -> None:
        self.breaker_state.labels(channel=channel).set(level)

    def notified(self, channel: str, outcome: str, n: int) -> None:
        self.notifications.labels(channel=channel, outcome=outcome).inc(n)

    def initialise(
        self, topics: Iterable[str], rules: Iterable[str] = tuple(RULES), agents: Iterable[str] = ()
    ) -> None:
        """Create the series a burst would start, at zero: `rate()` sees a counter's first
        increase only from a sample before it, so a series born at 500 dead letters would hide
        the burst that made it. Bounded sets only: input topics x reasons, rules x severity,
        agents (crashes)."""
        for topic in topics:
            for reason in INVALID_REASONS:
                self.invalid.labels(topic, reason)
            self.restamped.labels(topic)
        for code in rules:
            meta = RULES.get(code)
            if meta is not None:
                self.opened.labels(code, meta.severity)
                self.resolved.labels(code, meta.severity)
        for agent in agents:
            self.agent_crashes.labels(agent)

    def count_restamp(self, topic: str) -> None:
        """An input record counted at its partition's time, its own being in the future (streams.stamps)."""
        self.restamped.labels(topic).inc()

    def report_partitions(
        self, lags: Iterable[tuple[tuple[str, int], int]], stalled: Collection[tuple[str, int]]
    ) -> None:
        """The per-partition gauges of the input partitions this worker owns now: lag, stalled
        (0 or 1). The series of a partition it no longer owns are dropped, its last commit time
        too: after a rebalance another worker reports them, and a stale copy here would be
        summed with theirs (or keep a stall alert firing)."""
        owned: set[tuple[str, int]] = set()
        for (topic, partition), lag in lags:
            owned.add((topic, partition))
            self.consumer_lag.labels(topic, str(partition)).set(lag)
            self.partition_stalled.labels(topic, str(partition)).set(1 if (topic, partition) in stalled else 0)
        for topic, partition in self._reported - owned:
            for gauge in (self.consumer_lag, self.partition_stalled, self.last_commit):
                with contextlib.suppress(KeyError):  # never set for that partition
                    gauge.remove(topic, str(partition))
        self._reported = owned
