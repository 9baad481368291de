"""Writes orderwatch's Grafana dashboards (SRE and business) as JSON from the panel lists below,
and copies them and deploy/prometheus/rules.yml into the Helm chart (which can only read its own
files).

    python deploy/grafana/generate.py           rewrite the JSON files and the chart's copies
    python deploy/grafana/generate.py --check   exit 1 when a committed file differs

Plain dictionaries in Grafana's dashboard JSON model (schemaVersion 39): the datasource is the
`datasource` template variable (no uid is written anywhere), and every query filters on the
`instance` (and, on the business board, `rule`) variables. tests/deploy reads every panel query
from the JSON and evaluates it against a real Prometheus.
"""

# ruff: noqa: E501  -- a PromQL query and its description read best unbroken, one panel per entry

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHART_FILES = HERE.parent / "helm" / "orderwatch" / "files" / "dashboards"
RULES = HERE.parent / "prometheus" / "rules.yml"
CHART_RULES = HERE.parent / "helm" / "orderwatch" / "files" / "rules.yml"
DS = {"type": "prometheus", "uid": "${datasource}"}
I = 'instance=~"$instance"'  # noqa: E741 - the filter every query carries
R = 'rule=~"$rule"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat
    width: int = 12
    stack: bool = False


@dataclass(frozen=True)
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


def _templating(rule_variable: bool) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },
        _query_variable("instance", "Worker", "label_values(orderwatch_build_info, instance)"),
    ]
    if rule_variable:
        variables.append(_query_variable("rule", "Rule", "label_values(orderwatch_rule_info, rule)"))
    return {"list": variables}


def _query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,  # on time range change: new workers show up
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
    }


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    height = 4 if p.kind == "stat" else 8
    custom: dict[str, Any] = {"lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    if p.stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DS,
        "gridPos": {"h": height, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit, **({"custom": custom} if p.kind == "timeseries" else {})}},
        "options": (
            {"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "colorMode": "value"}
            if p.kind == "stat"
            else {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}}
        ),
        "targets": [
            {"refId": chr(ord("A") + n), "datasource": DS, "expr": expr, "legendFormat": legend}
            for n, (expr, legend) in enumerate(p.targets)
        ],
    }


def dashboard(uid: str, title: str, description: str, rows: list[Row], *, rule_variable: bool) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid = 1
    y = 0
    for row in rows:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid += 1
        y += 1
        x = 0
        row_height = 0
        for p in row.panels:
            if x + p.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel(p, pid, x, y))
            pid += 1
            x += p.width
            row_height = max(row_height, 4 if p.kind == "stat" else 8)
        y += row_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["orderwatch"],
        "timezone": "",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "templating": _templating(rule_variable),
        "annotations": {"list": []},
        "links": [{"title": "orderwatch dashboards", "type": "dashboards", "tags": ["orderwatch"], "asDropdown": True}],
        "panels": panels,
    }


SRE_ROWS = [
    Row(
        "Worker health",
        [
            Panel(
                "Workers up",
                "Scrape targets of the orderwatch jobs that answer (1) or not (0).",
                [(f'up{{job=~".*orderwatch.*", {I}}}', "{{instance}}")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Versions running",
                "Workers per orderwatch version: two during a rolling upgrade, one otherwise.",
                [(f"count by (version) (orderwatch_build_info{{{I}}})", "{{version}}")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Restarts (1h)",
                "Process restarts per worker in the last hour (start time changes).",
                [(f"changes(process_start_time_seconds{{{I}}}[1h])", "{{instance}}")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Ops API answers",
                "Ops API requests per second by status code (5xx: the handlers' store or a bug).",
                [(f"sum by (code) (rate(orderwatch_api_requests_total{{{I}}}[{RATE}]))", "{{code}}")],
                unit="reqps",
                width=6,
                kind="stat",
            ),
            Panel(
                "Stalled partitions",
                "Input partitions whose commits stopped while messages wait (the runtime's stall check; /health answers 503 meanwhile).",
                [(f"sum(orderwatch_partition_stalled{{{I}}})", "stalled")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Agent crashes (1h)",
                "Agent loops that raised and were restarted in the last hour, by agent.",
                [(f"sum by (agent) (increase(orderwatch_agent_crashes_total{{{I}}}[1h]))", "{{agent}}")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Merge forced releases (1h)",
                "Records the orders agent's record-timestamp merge let go before it could tell they were next, "
                "by agent and reason (idle: an input with lag fetched nothing within ORDERWATCH_MERGE_IDLE_SECONDS; "
                "overflow: ORDERWATCH_MERGE_MAX_HELD records held). Above zero, events of the order topics may have "
                "been applied out of arrival order: see docs/operations.md.",
                [
                    (
                        f"sum by (agent, reason) (increase(orderwatch_merge_forced_total{{{I}}}[1h]))",
                        "{{agent}} {{reason}}",
                    )
                ],
                kind="stat",
                width=6,
            ),
            Panel(
                "Resident memory",
                "RSS of each worker: state held in memory tables grows with open orders.",
                [(f"process_resident_memory_bytes{{{I}}}", "{{instance}}")],
                unit="bytes",
            ),
            Panel(
                "CPU",
                "CPU seconds per second of each worker (1 = one core busy).",
                [(f"rate(process_cpu_seconds_total{{{I}}}[{RATE}])", "{{instance}}")],
                unit="percentunit",
            ),
        ],
    ),
    Row(
        "Input",
        [
            Panel(
                "Throughput per topic",
                "Valid events consumed per second, by input topic.",
                [(f"sum by (topic) (rate(orderwatch_events_in_total{{{I}}}[{RATE}]))", "{{topic}}")],
                unit="ops",
                stack=True,
            ),
            Panel(
                "Consumer lag per topic",
                "Messages behind the end of each input topic (sum of the owned partitions).",
                [(f"sum by (topic) (orderwatch_consumer_lag_messages{{{I}}})", "{{topic}}")],
            ),
            Panel(
                "Dead letters by reason",
                "Messages sent to orders-dlq per second, by source topic and reason.",
                [
                    (
                        f"sum by (topic, reason) (rate(orderwatch_events_invalid_total{{{I}}}[{RATE}]))",
                        "{{topic}} {{reason}}",
                    )
                ],
                unit="ops",
                stack=True,
            ),
            Panel(
                "Time since last commit",
                "Seconds since each input partition's committed offset last moved (high with lag > 0: stuck).",
                [
                    (
                        f"time() - max by (topic, partition) (orderwatch_last_commit_timestamp_seconds{{{I}}})",
                        "{{topic}}[{{partition}}]",
                    )
                ],
                unit="s",
            ),
        ],
    ),
    Row(
        "Detection",
        [
            Panel(
                "Detection lag",
                "Detection time minus the event time of the fact that made a rule fire (opened exceptions).",
                [
                    (
                        f'histogram_quantile(0.5, sum by (le) (rate(orderwatch_detection_lag_seconds_bucket{{kind="opened", {I}}}[{RATE}])))',
                        "p50",
                    ),
                    (
                        f'histogram_quantile(0.99, sum by (le) (rate(orderwatch_detection_lag_seconds_bucket{{kind="opened", {I}}}[{RATE}])))',
                        "p99",
                    ),
                ],
                unit="s",
            ),
            Panel(
                "Event clock behind wall clock",
                "How far each agent's clock (its slowest owned partition) is behind now: deadlines fire against it.",
                [(f"time() - min by (agent) (orderwatch_event_clock_seconds{{{I}}})", "{{agent}}")],
                unit="s",
            ),
            Panel(
                "Deadline queue",
                "Timers scheduled per agent (stale entries included): grows with open orders, must not grow forever.",
                [(f"sum by (agent) (orderwatch_deadline_queue_size{{{I}}})", "{{agent}}")],
            ),
            Panel(
                "Reorder buffer",
                "Events per agent waiting for the clock (out-of-order arrival within the allowed lateness).",
                [(f"sum by (agent) (orderwatch_reorder_buffer_events{{{I}}})", "{{agent}}")],
            ),
            Panel(
                "Late events",
                "Events per second that arrived after the agent's clock had passed them.",
                [(f"sum by (agent, topic) (rate(orderwatch_events_late_total{{{I}}}[{RATE}]))", "{{agent}} {{topic}}")],
                unit="ops",
            ),
            Panel(
                "Duplicates dropped",
                "Re-delivered events per second each agent recognised and skipped (after a restart or rebalance).",
                [(f"sum by (agent) (rate(orderwatch_events_duplicate_total{{{I}}}[{RATE}]))", "{{agent}}")],
                unit="ops",
            ),
            Panel(
                "Handlers: store outage",
                "Share of time the handlers waited for Redis (0 when healthy).",
                [
                    (
                        f"sum by (instance) (rate(orderwatch_handler_store_outage_seconds_total{{{I}}}[{RATE}]))",
                        "{{instance}}",
                    )
                ],
                unit="percentunit",
            ),
        ],
    ),
]

BUSINESS_ROWS = [
    Row(
        "Exceptions",
        [
            Panel(
                "Open exceptions",
                "Exceptions open in the detectors' state now.",
                [(f"sum(orderwatch_exceptions_open{{{I}}})", "open")],
                kind="stat",
                width=8,
            ),
            Panel(
                "Opened (1h)",
                "Exceptions opened in the last hour, selected rules.",
                [(f"sum(increase(orderwatch_exceptions_opened_total{{{I}, {R}}}[1h]))", "opened")],
                kind="stat",
                width=8,
            ),
            Panel(
                "Resolved (1h)",
                "Exceptions resolved in the last hour, selected rules.",
                [(f"sum(increase(orderwatch_exceptions_resolved_total{{{I}, {R}}}[1h]))", "resolved")],
                kind="stat",
                width=8,
            ),
            Panel(
                "Opened per minute by rule",
                "Exceptions opened per minute, by rule.",
                [(f"sum by (rule) (rate(orderwatch_exceptions_opened_total{{{I}, {R}}}[{RATE}])) * 60", "{{rule}}")],
                stack=True,
            ),
            Panel(
                "Resolved per minute by rule",
                "Exceptions resolved per minute, by rule.",
                [(f"sum by (rule) (rate(orderwatch_exceptions_resolved_total{{{I}, {R}}}[{RATE}])) * 60", "{{rule}}")],
                stack=True,
            ),
            Panel(
                "Opened per minute by category",
                "Exceptions opened per minute, by the rules' category (payment, logistics, ...).",
                [
                    (
                        f"sum by (category) (rate(orderwatch_exceptions_opened_total{{{I}, {R}}}[{RATE}]) * on (rule) group_left (category) max by (rule, category) (orderwatch_rule_info))",
                        "{{category}}",
                    )
                ],
                stack=True,
            ),
            Panel(
                "Opened per minute by severity",
                "Exceptions opened per minute, by severity.",
                [
                    (
                        f"sum by (severity) (rate(orderwatch_exceptions_opened_total{{{I}, {R}}}[{RATE}])) * 60",
                        "{{severity}}",
                    )
                ],
                stack=True,
            ),
        ],
    ),
    Row(
        "Cases",
        [
            Panel(
                "Case moves",
                "Case lifecycle moves per minute: opened, acknowledged, escalated, resolved.",
                [(f"sum by (kind) (rate(orderwatch_case_changes_total{{{I}}}[{RATE}])) * 60", "{{kind}}")],
            ),
            Panel(
                "Escalations",
                "Cases escalated per minute (not acknowledged in time), by level and severity.",
                [
                    (
                        f"sum by (level, severity) (rate(orderwatch_case_escalations_total{{{I}}}[{RATE}])) * 60",
                        "level {{level}} {{severity}}",
                    )
                ],
                stack=True,
            ),
            Panel(
                "Incidents opened (1h)",
                "Incidents (many exceptions, one cause) that paged in the last hour, by rule.",
                [(f"sum by (rule) (increase(orderwatch_incidents_opened_total{{{I}, {R}}}[1h]))", "{{rule}}")],
            ),
            Panel(
                "Handled messages",
                "order-exceptions messages the handlers read per minute, by outcome.",
                [(f"sum by (outcome) (rate(orderwatch_handler_messages_total{{{I}}}[{RATE}])) * 60", "{{outcome}}")],
            ),
        ],
    ),
    Row(
        "Actions and notifications",
        [
            Panel(
                "Actions by action and outcome",
                "Action commands per minute: sent (auto), pending_approval, skipped (off), dry_run, capped, failed, ...",
                [
                    (
                        f"sum by (action, outcome) (rate(orderwatch_actions_total{{{I}}}[{RATE}])) * 60",
                        "{{action}} {{outcome}}",
                    )
                ],
                stack=True,
            ),
            Panel(
                "Notifications by channel and outcome",
                "Webhook notifications per minute by channel and outcome.",
                [
                    (
                        f"sum by (channel, outcome) (rate(orderwatch_notifications_total{{{I}}}[{RATE}])) * 60",
                        "{{channel}} {{outcome}}",
                    )
                ],
                stack=True,
            ),
            Panel(
                "Circuit breakers",
                "Webhook channels' breaker: 0 closed, 1 half-open, 2 open (worst worker).",
                [(f"max by (channel) (orderwatch_notify_breaker_state{{{I}}})", "{{channel}}")],
                kind="stat",
                width=12,
            ),
        ],
    ),
]


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON."""
    return {
        "orderwatch-sre.json": dashboard(
            "orderwatch-sre",
            "orderwatch / SRE",
            "Is orderwatch keeping up: throughput, lag, dead letters, detection lag, clocks, timers, worker health.",
            SRE_ROWS,
            rule_variable=False,
        ),
        "orderwatch-business.json": dashboard(
            "orderwatch-business",
            "orderwatch / exceptions",
            "What orderwatch finds and does: exceptions by rule, category and severity, cases, escalations, incidents, actions.",
            BUSINESS_ROWS,
            rule_variable=True,
        ),
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    wanted = {CHART_RULES: RULES.read_text()}
    for name, doc in dashboards().items():
        wanted[HERE / name] = wanted[CHART_FILES / name] = render(doc)
    for path, text in wanted.items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run python deploy/grafana/generate.py):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
