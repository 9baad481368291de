"""The dashboards and alerts against a real Prometheus scraping a real worker.

A `--clock event` worker with the handlers replays a simulated stream on the local Kafka and
Redis (one webhook channel answers, one is down); Debian's prometheus scrapes it every second and
evaluates deploy/prometheus/rules.yml (same expressions, test timing: 1 s evaluation, `for: 0s`).
Then: every panel query of both dashboards parses and returns series; every rule expression
parses, and in its `bool` form returns series (its metrics exist and its label matching joins);
a burst of malformed messages makes OrderwatchDeadLetters fire; no metric label has an
unbounded set of values (nor an id of the stream as a value); `promtool check metrics` accepts
/metrics. The table of every query and the value it returned goes to
`<tmp>/evaluated.md` (and to $ORDERWATCH_EVALUATED_OUT when set, see `make deploy-evaluated`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiokafka import AIOKafkaProducer

from orderwatch.streams.settings import Settings
from tests.deploy.prometheus import PrometheusServer, require_binary
from tests.deploy.queries import panel_queries, rules, signal, test_rules_copy, variable_queries
from tests.handlers.conftest import _require_redis, delete_prefix, exception_data, opened, redis_client
from tests.integration.conftest import _require_stack, kafka_settings
from tests.integration.kafka import publish_simulation
from tests.support.worker import free_port, spawn_worker, stop_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.deploy, pytest.mark.timeout(600)]

__fixtures__ = (_require_redis, redis_client, _require_stack, kafka_settings)

BURST = 400  # malformed messages: 400 in a 5 minute rate window is 1.3/s, the alert's line is 0.1/s
# Labels every metric may carry, and the most distinct values one metric may show per label in
# this run (partitions 4, agents 5, rules 24, actions and outcomes ~20; ids would be hundreds).
ALLOWED_LABELS = {
    "topic", "type", "reason", "agent", "rule", "severity", "category", "kind", "level", "operation",
    "action", "outcome", "channel", "view", "code", "partition", "le", "version", "python",
}  # fmt: skip
MAX_VALUES = 40


class Hook:
    """A webhook endpoint on localhost that answers 200."""

    def __init__(self) -> None:
        self.received = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.received += 1
        return web.json_response({"ok": True})


def _summary(result: list[dict[str, Any]], limit: int = 3) -> str:
    """`n series: {labels} value, ...` with the labels that tell series apart."""
    if not result:
        return "no series"
    varying = sorted(
        {k for r in result for k in r["metric"] if len({s["metric"].get(k) for s in result}) > 1} - {"__name__"}
    )
    parts = []
    for r in result[:limit]:
        labels = ",".join(f"{k}={r['metric'].get(k, '')}" for k in varying)
        value = float(r["value"][1])
        shown = f"{value:.4g}"
        parts.append(f"{{{labels}}} {shown}" if labels else shown)
    more = f", +{len(result) - limit} more" if len(result) > limit else ""
    return f"{len(result)} series: " + "; ".join(parts) + more


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


async def _wait_for(predicate: Any, timeout: float, what: str, proc: Any, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        if await predicate():
            return
        await asyncio.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_dashboards_and_alerts_against_a_real_prometheus(
    tmp_path: Path, kafka_settings: Settings, redis_client: aioredis.Redis
) -> None:
    promtool = require_binary("promtool")
    path, _res = await publish_simulation(tmp_path, kafka_settings, orders=300, seed=3)
    stream_ids = _ids_in(path)

    hook = Hook()
    hook_app = web.Application()
    hook_app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(hook_app)
    await runner.setup()
    hook_port, dead_port = free_port(), free_port()  # nobody listens on dead_port
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    config = tmp_path / "handlers.toml"
    config.write_text(
        "[incidents]\nthreshold = 2\n\n"
        f'[[webhooks]]\nname = "ops"\nurl = "http://127.0.0.1:{hook_port}/hook"\nrate_limit_per_minute = 10000\n\n'
        f'[[webhooks]]\nname = "down"\nurl = "http://127.0.0.1:{dead_port}/hook"\nrate_limit_per_minute = 10000\n'
        "max_attempts = 1\nbackoff_ms = 0\ntimeout_seconds = 1\nbreaker_failures = 2\nbreaker_cooldown_ms = 600000\n"
    )
    redis_prefix = f"t{uuid.uuid4().hex}:"
    settings = kafka_settings.model_copy(
        update={"web_port": free_port(), "redis_prefix": redis_prefix, "handlers_config": str(config)}
    )
    worker_url = f"http://127.0.0.1:{settings.web_port}"
    prom = PrometheusServer(tmp_path, [f"127.0.0.1:{settings.web_port}"], test_rules_copy(tmp_path / "rules.yml"))
    log_path = tmp_path / "worker.log"
    log = log_path.open("wb")
    proc = spawn_worker(settings, "event", log, handlers=True)
    prom.start()
    session = aiohttp.ClientSession()
    try:
        await prom.wait_ready(session)

        async def scraped() -> bool:
            up = await prom.query(session, 'up{job="orderwatch"} == 1')
            invalid = await prom.query(session, "orderwatch_events_invalid_total")
            return bool(up) and bool(invalid)

        # The dead-letter series exist at 0 from the start: Prometheus must have a sample before
        # the burst, or rate() would not see it.
        await _wait_for(scraped, 120, "a first scrape of the worker", proc, log_path)
        await _publish_burst(settings)
        await _publish_incident(settings)
        for _ in range(3):  # the ops API's request counter gets its series (/ready is open)
            async with session.get(f"{worker_url}/ready") as resp:
                await resp.read()

        created = _count_type(path, "order.created")
        read_created = f'sum(orderwatch_events_in_total{{type="order.created", topic="{settings.topic("orders")}"}})'

        async def replayed() -> bool:
            lag = await prom.query(session, "sum(orderwatch_consumer_lag_messages)")
            read = await prom.query(session, read_created)
            return bool(lag and read) and float(lag[0]["value"][1]) == 0 and float(read[0]["value"][1]) >= created

        await _wait_for(replayed, 240, "the replay to be consumed", proc, log_path)
        # Once the clocks are past it: the stream's first event again (a re-delivery, dropped as
        # a duplicate) and under a new id (a late event, applied and counted).
        await _publish_again(settings, path)

        queries = panel_queries()
        pending: dict[str, str] = {}

        async def every_panel_has_series() -> bool:
            pending.clear()
            for q in queries:
                if not await prom.query(session, q.evaluated):
                    pending[f"{q.dashboard} / {q.panel} {q.ref}"] = q.evaluated
            return not pending

        try:
            await _wait_for(every_panel_has_series, 240, "series for every panel query", proc, log_path)
        except AssertionError:
            raise AssertionError(f"panel queries without series: {json.dumps(pending, indent=1)}") from None

        async def dead_letters_firing() -> bool:
            alerts = (await prom.api(session, "alerts"))["alerts"]
            return any(
                a["labels"]["alertname"] == "OrderwatchDeadLetters"
                and a["state"] == "firing"
                and a["labels"]["topic"] == settings.topic("orders")
                and a["labels"]["reason"] == "not_json"
                for a in alerts
            )

        await _wait_for(dead_letters_firing, 60, "OrderwatchDeadLetters to fire", proc, log_path)

        # -- every panel query, every variable query, every rule --------------------------------
        rows: list[str] = []
        for q in queries:
            result = await prom.query(session, q.evaluated)
            assert result, f"{q.dashboard} / {q.panel}: no series for {q.evaluated}"
            rows.append(
                f"| {_cell(q.dashboard)} | {_cell(q.panel)} ({q.ref}) | `{_cell(q.evaluated)}` "
                f"| {_cell(_summary(result))} |"
            )
        variables: list[str] = []
        for dash, name, query in variable_queries():
            m = re.fullmatch(r"label_values\((\w+), (\w+)\)", query)
            assert m, query
            values = await prom.api(session, f"label/{m.group(2)}/values", **{"match[]": m.group(1)})
            assert values, f"{dash}: variable {name} has no values ({query})"
            variables.append(f"| {_cell(dash)} | `${name}` | `{query}` | {', '.join(values[:6])} |")

        alerts = (await prom.api(session, "alerts"))["alerts"]
        firing: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for a in alerts:
            if a["state"] == "firing":
                firing[a["labels"]["alertname"]].append(a)
        rule_rows: list[str] = []
        for rule in rules():
            result = await prom.query(session, rule.expr)  # parses, evaluates
            signalled = await prom.query(session, signal(rule.expr))
            assert signalled, f"{rule.name}: no series even in bool form: {signal(rule.expr)}"
            if rule.alert:
                assert rule.labels.get("severity") in {"page", "ticket"}, rule.name
                assert rule.annotations.get("summary") and rule.annotations.get("runbook_url"), rule.name
                state = f"firing ({len(firing[rule.name])})" if firing[rule.name] else "inactive"
            else:
                state = "recorded"
            rule_rows.append(
                f"| {rule.name} | {state} | `{_cell(' '.join(rule.expr.split()))}` | {_cell(_summary(result))} "
                f"| {_cell(_summary(signalled))} |"
            )
        assert firing["OrderwatchDeadLetters"]

        # -- labels: bounded sets, never an id of the stream -------------------------------------
        series = await prom.api(session, "series", **{"match[]": '{__name__=~"orderwatch_.+"}'})
        values: dict[tuple[str, str], set[str]] = defaultdict(set)
        for s in series:
            for label, value in s.items():
                if label in {"__name__", "job", "instance"}:
                    continue
                assert label in ALLOWED_LABELS, (s["__name__"], label)
                values[(s["__name__"], label)].add(value)
        assert len(series) > 50
        for (metric, label), seen in values.items():
            assert len(seen) <= MAX_VALUES, (metric, label, len(seen))
            assert not seen & stream_ids, (metric, label, sorted(seen & stream_ids)[:3])
        label_rows = [f"| {metric} | {label} | {len(seen)} |" for (metric, label), seen in sorted(values.items())]

        # -- promtool check metrics on the worker's own text --------------------------------------
        async with session.get(f"{worker_url}/metrics") as resp:
            exposition = await resp.read()
        check = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60)
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    finally:
        await session.close()
        prom.stop()
        stop_worker(proc)
        log.close()
        await runner.cleanup()
        await delete_prefix(redis_client, redis_prefix)

    report = "\n".join(
        [
            "# Dashboards and alerts evaluated against a real Prometheus",
            "",
            f"Written by tests/deploy/test_prometheus_live.py on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
            f"a `--clock event` worker with the handlers replaying 300 simulated orders (seed 3) plus {BURST} "
            "malformed messages on `orders`, scraped every second by Debian's prometheus "
            f"({_prometheus_version(prom.binary)}) evaluating deploy/prometheus/rules.yml with `for: 0s`. "
            "Template variables as Grafana's All fills them: `$instance` and `$rule` = `.*`, "
            "`$__rate_interval` = `1m`. Topic names carry the test's prefix.",
            "",
            f"## Panel queries ({len(rows)})",
            "",
            "| dashboard | panel | query evaluated | value returned |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
            f"## Template variables ({len(variables)})",
            "",
            "| dashboard | variable | query | values |",
            "| --- | --- | --- | --- |",
            *variables,
            "",
            f"## Rules ({len(rule_rows)})",
            "",
            "State at the end of the run. `value` is the expression as written (an alert's firing "
            "series); `bool form` is the same expression with every comparison given `bool`, which "
            "returns every series it compares (0 or 1); for `absent(X)`, X.",
            "",
            "| rule | state | expression | value | bool form |",
            "| --- | --- | --- | --- | --- |",
            *rule_rows,
            "",
            f"## Label cardinality ({len(series)} orderwatch series)",
            "",
            f"Distinct values per metric and label in this run (limit {MAX_VALUES}; none is an id from the stream).",
            "",
            "| metric | label | values |",
            "| --- | --- | --- |",
            *label_rows,
            "",
            "`promtool check metrics` on /metrics: exit 0.",
            "",
        ]
    )
    (tmp_path / "evaluated.md").write_text(report)
    out = os.environ.get("ORDERWATCH_EVALUATED_OUT")
    if out:
        Path(out).write_text(report)
    print(report)


async def _publish_burst(settings: Settings) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for n in range(BURST):
            await producer.send(settings.topic("orders"), b"{not json %d" % n, key=f"k-{n}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _publish_incident(settings: Settings) -> None:
    """Three open TRACKING_STALLED exceptions of one carrier on the handlers' input topic: the
    simulated stream's exceptions rarely share a cause while open, and the incident panel and
    counter need one incident (threshold 2 in this test's handlers config)."""
    tag = uuid.uuid4().hex[:8]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for n in range(3):
            data = exception_data(
                exception_id=f"x-{tag}-{n}",
                order_id=f"o-{tag}-{n}",
                evidence={"carrier": "dhl", "shipment_id": f"s-{n}"},
            )
            await producer.send_and_wait(
                settings.topic("order-exceptions"),
                opened(data).model_dump_json().encode(),
                key=data.exception_id.encode(),
            )
    finally:
        await producer.stop()


async def _publish_again(settings: Settings, path: Path) -> None:
    with path.open() as f:
        first = next(json.loads(line) for line in f if '"order.created"' in line)
    late = {**first, "id": f"{first['id']}-again"}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for doc in (first, late):
            await producer.send_and_wait(
                settings.topic("orders"), json.dumps(doc).encode(), key=str(doc["subject"]).encode()
            )
    finally:
        await producer.stop()


def _count_type(path: Path, type_: str) -> int:
    n = 0
    with path.open() as f:
        for line in f:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            n += isinstance(doc, dict) and doc.get("type") == type_
    return n


def _ids_in(path: Path) -> set[str]:
    """Every id the stream carries (event, order, customer, payment, sku, ...): none may be a label value."""
    ids: set[str] = set()
    with path.open() as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # the simulator writes some malformed lines on purpose
            if not isinstance(ev, dict) or not isinstance(ev.get("data"), dict):
                continue
            ids.add(str(ev.get("id")))
            if ev.get("subject"):
                ids.add(ev["subject"])
            for key, value in ev.get("data", {}).items():
                if key.endswith("_id") and isinstance(value, str):
                    ids.add(value)
    return ids


def _prometheus_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].replace("prometheus, ", "") if first else "unknown version"
