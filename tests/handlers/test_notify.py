"""Webhook notifications: config, routing and bodies (pure), then delivery against a real local
HTTP server and the real Redis: retries, dead letters, circuit breaker, rate limits, dedupe,
privacy."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from orderwatch.errors import ConfigError, StoreUnavailable
from orderwatch.handlers.changes import CaseChange
from orderwatch.handlers.notify import Channel, CircuitBreaker, Notifier, load_channels, parse_channels, route
from orderwatch.schemas.exception_event import ExceptionData
from orderwatch.streams.metrics import Metrics
from tests.factories import ADDRESS
from tests.handlers import samples
from tests.handlers.samples import change

PERSONAL = (
    samples.PHONE_IN_EVIDENCE,
    samples.STREET_IN_EVIDENCE,
    ADDRESS["recipient"],
    ADDRESS["postal_code"],
    "ada@example.org",
)


def _channel(name: str = "ops", url: str = "http://127.0.0.1:9/hook", **kw: Any) -> Channel:
    fast = {"backoff_ms": 5, "backoff_max_ms": 20, "breaker_cooldown_ms": 300, "timeout_seconds": 2.0}
    return Channel(name=name, url=url, **(fast | kw))


_BASE: dict[str, ExceptionData] = {}


def _exception(rule: str = "DELIVERY_FAILED", **update: Any) -> ExceptionData:
    """A real exception of `rule` under a fresh id (the engine runs once per rule)."""
    if rule not in _BASE:
        _BASE[rule] = samples.SCENARIOS[rule]()
    return _BASE[rule].model_copy(update={"exception_id": f"x{uuid.uuid4().hex[:12]}", **update})


# -- config ------------------------------------------------------------------------------------


def test_channels_parse_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "handlers.toml"
    path.write_text(
        """
[[webhooks]]
name = "ops-slack"
url = "https://hooks.example.org/T000/B000"
format = "slack"
severities = ["critical", "high"]
kinds = ["opened", "incident"]
rate_limit_per_minute = 20
backoff_ms = 250
headers = { Authorization = "Bearer s3cret" }

[[webhooks]]
name = "audit"
url = "http://audit.internal:8080/orderwatch"
"""
    )
    slack, audit = load_channels(path)
    assert (slack.name, slack.format, slack.severities, slack.kinds) == (
        "ops-slack",
        "slack",
        ("critical", "high"),
        ("opened", "incident"),
    )
    assert (slack.rate_limit_per_minute, slack.backoff_ms, slack.headers) == (
        20,
        250,
        {"Authorization": "Bearer s3cret"},
    )
    assert (audit.format, audit.kinds, audit.max_attempts, audit.breaker_failures) == (
        "json",
        ("opened", "escalated", "incident"),
        4,
        5,
    )
    assert set(audit.severities) == {"critical", "high", "medium", "low"}
    assert load_channels(None) == []


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"name": "a", "url": "ftp://x"}, "handlers config [[webhooks]] 'a' url: expected an http:// or https:// URL"),
        ({"name": "a", "url": "http://x", "format": "xml"}, "[[webhooks]] 'a' format: expected one of json, slack"),
        ({"name": "a", "url": "http://x", "severities": ["urgent"]}, "[[webhooks]] 'a' severities: expected a list of"),
        ({"name": "a", "url": "http://x", "kinds": ["acknowledged"]}, "[[webhooks]] 'a' kinds: expected a list of"),
        ({"name": "a", "url": "http://x", "categories": "fraud"}, "[[webhooks]] 'a' categories: expected a list of"),
        (
            {"name": "a", "url": "http://x", "max_attempts": 0},
            "[[webhooks]] 'a' max_attempts: expected an integer from",
        ),
        (
            {"name": "a", "url": "http://x", "timeout_seconds": "5"},
            "[[webhooks]] 'a' timeout_seconds: expected a number",
        ),
        (
            {"name": "a", "url": "http://x", "rate_limit_per_minute": 0},
            "'a' rate_limit_per_minute: expected an integer",
        ),
        ({"name": "a", "url": "http://x", "breaker_cooldown_ms": -1}, "'a' breaker_cooldown_ms: expected an integer"),
        ({"name": "a", "url": "http://x", "retries": 3}, "[[webhooks]] 'a' retries: unknown key; expected one of name"),
        ({"name": "a b", "url": "http://x"}, "handlers config [[webhooks]] 'a b' name: expected a unique name"),
        ({"url": "http://x"}, "handlers config [[webhooks]] #1 name: missing"),
        (
            {"name": "a", "url": "http://x", "backoff_ms": 500, "backoff_max_ms": 100},
            "[[webhooks]] 'a' backoff_max_ms: expected a number >= backoff_ms (500), got 100",
        ),
    ],
)
def test_each_bad_channel_key_is_a_config_error_naming_it(tables: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_channels({"webhooks": [tables]})
    assert message in str(err.value)
    assert str(err.value).startswith("handlers config [[webhooks]]")


def test_channel_names_are_unique_and_webhooks_must_be_tables() -> None:
    with pytest.raises(ConfigError, match="'a' name: expected a unique name, got 'a' twice"):
        parse_channels({"webhooks": [{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]})
    with pytest.raises(ConfigError, match=r"handlers config webhooks: expected \[\[webhooks\]\] tables"):
        parse_channels({"webhooks": {"name": "a"}})


# -- routing and bodies (pure) ----------------------------------------------------------------


def test_routing_by_severity_category_and_kind() -> None:
    pager = _channel("pager", severities=("critical",), kinds=("opened", "escalated"))
    fraud = _channel("fraud", categories=("fraud",), kinds=("opened", "resolved"))
    everything = _channel("all", kinds=("opened", "escalated", "resolved", "incident"))
    channels = [pager, fraud, everything]

    def names(ch: CaseChange) -> list[str]:
        return [m.channel.name for m in route(ch, channels)[0]]

    critical = _exception("DUPLICATE_PAYMENT")
    burst = _exception("NEW_ACCOUNT_BURST")
    assert names(change(critical)) == ["pager", "all"]
    assert names(change(burst)) == ["fraud", "all"]
    assert names(change(burst, "escalated", level=1)) == ["all"]
    assert names(change(burst, "resolved")) == ["fraud", "all"]
    assert names(change(critical, "acknowledged")) == []


def test_each_escalation_level_is_its_own_message() -> None:
    data = _exception()
    ch = [_channel()]
    first = route(change(data, "escalated", level=1), ch)[0][0]
    second = route(change(data, "escalated", level=2), ch)[0][0]
    assert (first.dedupe, second.dedupe) == (f"{data.exception_id}:escalated:1", f"{data.exception_id}:escalated:2")
    assert (first.body["level"], second.body["level"]) == (1, 2)


def test_a_suppressed_case_is_not_sent_its_incident_is() -> None:
    paging = _channel("paging")
    quiet = _channel("quiet", kinds=("opened",))
    data = _exception("DELIVERY_FAILED", evidence={"shipment_id": "s-1", "carrier": "dhl"})
    normal = change(data, incident_id="inc-1", incident_count=2)
    assert [(m.channel.name, m.kind) for m in route(normal, [paging, quiet])[0]] == [
        ("paging", "opened"),
        ("quiet", "opened"),
    ]
    paged = change(data, incident_id="inc-1", incident_count=3, suppressed=True)
    messages, suppressed = route(paged, [paging, quiet])
    assert [(m.channel.name, m.kind, m.dedupe) for m in messages] == [("paging", "incident", "incident:inc-1")]
    assert [c.name for c in suppressed] == ["paging", "quiet"]
    body = messages[0].body
    assert (body["kind"], body["incident_id"], body["count"], body["cause"]) == (
        "incident",
        "inc-1",
        3,
        {"carrier": "dhl"},
    )
    assert body["summary"] == "3 DELIVERY_FAILED exceptions share carrier dhl."


def test_the_paging_change_pages_instead_of_its_case() -> None:
    paging = _channel("paging")
    quiet = _channel("quiet", kinds=("opened",))
    data = _exception("DELIVERY_FAILED", evidence={"shipment_id": "s-1", "carrier": "dhl"})

    def sent(ch: CaseChange) -> list[tuple[str, str]]:
        return [(m.channel.name, m.kind) for m in route(ch, [paging, quiet])[0]]

    # forming (below the threshold): each case as usual
    assert sent(change(data, incident_id="inc-1", incident_count=2)) == [("paging", "opened"), ("quiet", "opened")]
    # the member that reaches it (the service marks it paging): the page where incidents are
    # wanted, the case elsewhere
    reached = change(data, incident_id="inc-1", incident_count=3, paging=True)
    assert sent(reached) == [("paging", "incident"), ("quiet", "opened")]
    # the count alone decides nothing (the threshold is the service's business)
    assert sent(change(data, incident_id="inc-1", incident_count=3)) == [("paging", "opened"), ("quiet", "opened")]
    # its later escalation is a case move, not a second page
    assert sent(change(data, "escalated", level=1, incident_id="inc-1", incident_count=9)) == [("paging", "escalated")]
    # members that join later are covered by the page
    assert sent(change(data, incident_id="inc-1", incident_count=4, suppressed=True)) == [("paging", "incident")]
    # without an incident, paging means nothing
    assert sent(change(data, incident_count=7, paging=True)) == [("paging", "opened"), ("quiet", "opened")]


def test_json_body_has_the_case_facts() -> None:
    data = _exception("DUPLICATE_PAYMENT")
    [m] = route(change(data), [_channel()])[0]
    b = m.body
    assert (b["kind"], b["level"], b["exception_id"], b["rule"], b["severity"]) == (
        "opened",
        0,
        data.exception_id,
        "DUPLICATE_PAYMENT",
        "critical",
    )
    assert (b["summary"], b["handle_by"]) == (data.summary, data.handle_by.isoformat())
    assert b["evidence"]["payment_id"] == data.evidence["payment_id"]


def test_slack_body_shape() -> None:
    slack = _channel("slack", format="slack")
    data = _exception("DUPLICATE_PAYMENT", summary="Order <o-1> & co was paid twice.")
    [m] = route(change(data, "escalated", level=2), [slack])[0]
    body = m.body
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("[CRITICAL] DUPLICATE_PAYMENT escalated (level 2): Order &lt;o-1&gt; &amp; co")
    types = [b["type"] for b in body["blocks"]]
    assert types == ["header", "section", "section", "section", "context"]
    header = body["blocks"][0]["text"]
    assert header == {"type": "plain_text", "text": "DUPLICATE_PAYMENT escalated (level 2)"}
    fields = body["blocks"][2]["fields"]
    assert all(f["type"] == "mrkdwn" for f in fields) and len(fields) <= 10
    assert any(data.exception_id in f["text"] for f in fields)
    assert body["blocks"][3]["text"]["text"].startswith("```")
    incident = route(change(data, incident_id="inc-9", incident_count=7, suppressed=True), [slack])[0][0]
    assert incident.body["blocks"][0]["text"]["text"] == "Incident: 7 x DUPLICATE_PAYMENT"


def test_no_body_carries_a_phone_number_or_an_address() -> None:
    channels = [_channel("j"), _channel("s", format="slack")]
    for rule in samples.SCENARIOS:
        data = samples.with_personal_data(_exception(rule))
        for ch in (
            change(data),
            change(data, "escalated", level=1),
            change(data, incident_id="i", incident_count=5, suppressed=True),
        ):
            for m in route(ch, channels)[0]:
                text = json.dumps(m.body)
                assert not [p for p in PERSONAL if p in text], (rule, m.channel.name, m.kind)
    [m] = route(change(samples.with_personal_data(_exception())), [_channel()])[0]
    assert m.body["evidence"]["contact_phone"] == "***"
    assert m.body["evidence"]["shipping_address"] == "***"
    assert m.body["evidence"]["customer"] == {"email": "***", "phone": "***", "id": "c-1"}
    assert m.body["evidence"]["note"] == "call ***"


def test_breaker_closed_open_half_open_one_probe() -> None:
    now = [0.0]
    seen: list[str] = []
    b = CircuitBreaker(failures=2, cooldown=10, clock=lambda: now[0], on_change=seen.append)
    assert b.allow()
    b.failure()
    assert (b.state, b.allow()) == ("closed", True)
    b.failure()
    assert (b.state, b.allow()) == ("open", False)
    now[0] = 9.9
    assert not b.allow()
    now[0] = 10.0
    assert (b.allow(), b.state, b.allow()) == (True, "half_open", False)  # one probe only
    b.failure()  # the probe failed: open again, for a full cool-down
    assert (b.state, b.allow()) == ("open", False)
    now[0] = 20.0
    assert b.allow()
    b.success()
    assert (b.state, b.allow(), b.allow()) == ("closed", True, True)
    assert seen == ["open", "half_open", "open", "half_open", "closed"]


# -- delivery against a real HTTP server and Redis --------------------------------------------


@dataclass
class Hook:
    """A webhook endpoint on 127.0.0.1 that answers the scripted statuses, then `then`."""

    statuses: list[int] = field(default_factory=list)
    then: int = 200
    delays: list[float] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)
    url: str = ""

    def bodies(self) -> list[Any]:
        return [json.loads(r) for r in self.requests]


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()

    async def handle(request: web.Request) -> web.Response:
        h.requests.append(await request.read())
        if h.delays:
            await asyncio.sleep(h.delays.pop(0))
        return web.Response(status=h.statuses.pop(0) if h.statuses else h.then, text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    h.url = str(server.make_url("/hook"))
    yield h
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


MakeNotifier = Callable[..., Notifier]


@pytest.fixture
def make_notifier(
    redis_client: Redis, redis_prefix: str, session: aiohttp.ClientSession, metrics: Metrics, hook: Hook
) -> MakeNotifier:
    def make(*channels: Channel, dry_run: bool = False, **kw: Any) -> Notifier:
        chans = list(channels) or [_channel(url=hook.url, **kw)]
        return Notifier(redis_client, redis_prefix, chans, session, metrics, dry_run=dry_run)

    return make


def _count(metrics: Metrics, channel: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "orderwatch_notifications_total", {"channel": channel, "outcome": outcome}
    )
    return value or 0.0


def _breaker(metrics: Metrics, channel: str = "ops") -> float | None:
    return metrics.registry.get_sample_value("orderwatch_notify_breaker_state", {"channel": channel})


@pytest.mark.integration
async def test_fails_twice_then_succeeds_delivered_once_three_requests(
    make_notifier: MakeNotifier, hook: Hook, metrics: Metrics
) -> None:
    hook.statuses = [500, 500]
    notifier = make_notifier(max_attempts=4)
    data = _exception()
    await notifier(change(data))
    await notifier(change(data))  # re-delivered after a crash: no second notification
    assert len(hook.requests) == 3
    assert len(set(hook.requests)) == 1  # the same body each time
    assert hook.bodies()[0]["exception_id"] == data.exception_id
    assert (_count(metrics, "ops", "sent"), _count(metrics, "ops", "failed")) == (1, 2)
    assert await notifier.dead_letters() == []


@pytest.mark.integration
async def test_a_timeout_is_retried(make_notifier: MakeNotifier, hook: Hook, metrics: Metrics) -> None:
    hook.delays = [1.0]
    notifier = make_notifier(timeout_seconds=0.2, max_attempts=2)
    await notifier(change(_exception()))
    assert len(hook.requests) == 2
    assert _count(metrics, "ops", "sent") == 1
    assert _count(metrics, "ops", "failed") == 1


@pytest.mark.integration
async def test_a_client_error_is_not_retried_and_is_dead_lettered(make_notifier: MakeNotifier, hook: Hook) -> None:
    hook.then = 400
    notifier = make_notifier(max_attempts=4)
    data = _exception()
    await notifier(change(data))
    assert len(hook.requests) == 1
    [entry] = await notifier.dead_letters()
    assert (entry["channel"], entry["reason"], entry["attempts"], entry["exception_id"]) == (
        "ops",
        "http_400",
        1,
        data.exception_id,
    )


@pytest.mark.integration
async def test_always_failing_dead_letters_opens_the_breaker_then_one_probe_after_cool_down(
    make_notifier: MakeNotifier, hook: Hook, metrics: Metrics
) -> None:
    hook.then = 500
    notifier = make_notifier(max_attempts=3, breaker_failures=5, breaker_cooldown_ms=300)
    a, b, c, d, e = (_exception() for _ in range(5))

    await notifier(change(a))  # 3 failed requests: dead-lettered, breaker still closed (3 < 5)
    assert (len(hook.requests), _breaker(metrics)) == (3, 0)
    await notifier(change(b))  # 2 more fail: the breaker opens and refuses the third try
    assert (len(hook.requests), _breaker(metrics)) == (5, 2)
    await notifier(change(c))  # refused without a request
    assert len(hook.requests) == 5

    await asyncio.sleep(0.35)
    await notifier(change(d))  # half-open: one probe, it fails, open again
    assert (len(hook.requests), _breaker(metrics)) == (6, 2)

    await asyncio.sleep(0.35)
    hook.then = 200
    await notifier(change(e))  # the probe succeeds: closed
    assert (len(hook.requests), _breaker(metrics)) == (7, 0)

    letters = await notifier.dead_letters()
    assert [(x["exception_id"], x["reason"], x["attempts"]) for x in letters] == [
        (a.exception_id, "http_500", 3),
        (b.exception_id, "breaker_open", 2),
        (c.exception_id, "breaker_open", 0),
        (d.exception_id, "breaker_open", 1),
    ]
    assert all(x["body"]["exception_id"] == x["exception_id"] for x in letters)
    assert _count(metrics, "ops", "dead_lettered") == 4
    assert _count(metrics, "ops", "failed") == 6

    for data in (a, b, c, d, e):  # a replay neither notifies nor dead-letters again
        await notifier(change(data))
    assert len(hook.requests) == 7
    assert len(await notifier.dead_letters()) == 4


@pytest.mark.integration
async def test_half_open_lets_exactly_one_probe_through(
    make_notifier: MakeNotifier, hook: Hook, metrics: Metrics
) -> None:
    hook.then = 500
    notifier = make_notifier(max_attempts=1, breaker_failures=1, breaker_cooldown_ms=200)
    await notifier(change(_exception()))
    assert _breaker(metrics) == 2
    await asyncio.sleep(0.25)
    hook.then, hook.delays = 200, [0.2]  # a slow probe: the others arrive while it is in flight
    await asyncio.gather(*(notifier(change(_exception())) for _ in range(3)))
    assert len(hook.requests) == 2  # the first failure and the one probe
    assert _count(metrics, "ops", "sent") == 1
    assert [x["reason"] for x in await notifier.dead_letters()] == ["http_500", "breaker_open", "breaker_open"]
    assert _breaker(metrics) == 0


@pytest.mark.integration
async def test_rate_limit_shared_by_workers_dead_letters_the_next_one(
    make_notifier: MakeNotifier, hook: Hook, metrics: Metrics
) -> None:
    worker_1 = make_notifier(rate_limit_per_minute=3)
    worker_2 = make_notifier(rate_limit_per_minute=3)  # another worker, same Redis
    sent = [_exception() for _ in range(3)]
    for data in sent[:2]:
        await worker_1(change(data))
    await worker_2(change(sent[2]))
    late_1, late_2 = _exception(), _exception()
    await worker_1(change(late_1))
    await worker_2(change(late_2))
    assert [b["exception_id"] for b in hook.bodies()] == [d.exception_id for d in sent]
    assert _count(metrics, "ops", "rate_limited") == 2
    letters = await worker_1.dead_letters()
    assert [(x["exception_id"], x["reason"], x["attempts"]) for x in letters] == [
        (late_1.exception_id, "rate_limited", 0),
        (late_2.exception_id, "rate_limited", 0),
    ]
    assert letters[0]["body"]["exception_id"] == late_1.exception_id  # kept for a requeue


@pytest.mark.integration
async def test_requeue_delivers_dead_letters_once_the_endpoint_is_back(
    make_notifier: MakeNotifier, hook: Hook, metrics: Metrics
) -> None:
    hook.then = 503
    notifier = make_notifier(max_attempts=2, breaker_failures=100)
    a, b = _exception(), _exception("DUPLICATE_PAYMENT")
    await notifier(change(a))
    await notifier(change(b))
    assert len(await notifier.dead_letters()) == 2 and len(hook.requests) == 4
    hook.then = 200
    assert await notifier.requeue_dead_letters() == {"sent": 2}
    assert await notifier.dead_letters() == []
    assert [x["exception_id"] for x in hook.bodies()[4:]] == [a.exception_id, b.exception_id]
    assert await notifier.requeue_dead_letters() == {}
    await notifier(change(a))  # and a replay after the requeue sends nothing more
    assert len(hook.requests) == 6
    assert _count(metrics, "ops", "sent") == 2


@pytest.mark.integration
async def test_incident_pages_once_and_its_members_are_suppressed(
    make_notifier: MakeNotifier, hook: Hook, metrics: Metrics
) -> None:
    notifier = make_notifier()
    members = [_exception(evidence={"shipment_id": f"s-{n}", "carrier": "dhl"}) for n in range(5)]
    for n, data in enumerate(members, 1):
        await notifier(change(data, incident_id="inc-7", incident_count=n, suppressed=n >= 3))
    kinds = [(b["kind"], b.get("incident_id"), b.get("count")) for b in hook.bodies()]
    assert kinds == [("opened", "inc-7", None), ("opened", "inc-7", None), ("incident", "inc-7", 3)]
    assert _count(metrics, "ops", "suppressed") == 3


@pytest.mark.integration
async def test_the_member_reaching_the_threshold_pages_once(
    redis_client: Redis, redis_prefix: str, session: aiohttp.ClientSession, hook: Hook, metrics: Metrics
) -> None:
    # What the case store hands over: forming members, the paging one, then suppressed ones.
    notifier = Notifier(redis_client, redis_prefix, [_channel(url=hook.url)], session, metrics)
    members = [_exception(evidence={"shipment_id": f"s-{n}", "carrier": "ups"}) for n in range(5)]
    for n, data in enumerate(members, 1):
        await notifier(change(data, incident_id="inc-8", incident_count=n, suppressed=n > 3, paging=n == 3))
    await notifier(change(members[2], incident_id="inc-8", incident_count=3, paging=True))  # re-delivered
    got = [(b["kind"], b["exception_id"], b.get("count")) for b in hook.bodies()]
    assert got == [
        ("opened", members[0].exception_id, None),
        ("opened", members[1].exception_id, None),
        ("incident", members[2].exception_id, 3),
    ]
    assert hook.bodies()[2]["summary"] == "3 DELIVERY_FAILED exceptions share carrier ups."


@pytest.mark.integration
async def test_nothing_personal_reaches_the_endpoint_or_the_dead_letters(
    make_notifier: MakeNotifier, hook: Hook
) -> None:
    notifier = make_notifier(
        _channel("json", url=hook.url, rate_limit_per_minute=3),
        _channel("slack", url=hook.url, format="slack"),
    )
    for rule in ("INVALID_SHIPPING_INFO", "ADDRESS_CLUSTER", "DELIVERY_FAILED", "NEW_ACCOUNT_BURST"):
        data = samples.with_personal_data(_exception(rule))
        await notifier(change(data))
        await notifier(change(data, "escalated", level=1, incident_id="inc-p", incident_count=4, suppressed=True))
    # slack: 4 cases and the incident page; json: a case, the page, a case, then its rate limit
    # dead-letters the last two
    assert len(hook.requests) == 8
    letters = await notifier.dead_letters()
    assert [(x["channel"], x["kind"]) for x in letters] == [("json", "opened"), ("json", "opened")]
    raw = b"".join(hook.requests).decode() + json.dumps(letters)
    assert [p for p in PERSONAL if p in raw] == []
    assert raw.count('"contact_phone": "***"') == 4  # the evidence went out masked: 2 json bodies, 2 letters


@pytest.mark.integration
async def test_dry_run_sends_nothing_and_logs_nothing_personal(
    make_notifier: MakeNotifier, hook: Hook, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="orderwatch.handlers.notify")
    notifier = make_notifier(dry_run=True)
    data = samples.with_personal_data(_exception())
    await notifier(change(data))
    await notifier(change(data))
    assert hook.requests == []
    assert caplog.text.count(f"dry run: would notify ops of opened ({data.exception_id}") == 1
    assert [p for p in PERSONAL if p in caplog.text] == []
    assert _count(metrics, "ops", "dry_run") == 1
    live = make_notifier()  # what a dry run only logged, a live notifier sends, once
    await live(change(data))
    await live(change(data))
    assert [b["exception_id"] for b in hook.bodies()] == [data.exception_id]


async def test_redis_down_is_store_unavailable(session: aiohttp.ClientSession) -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        notifier = Notifier(dead, "t:", [_channel()], session)
        with pytest.raises(StoreUnavailable):
            await notifier(change(_exception()))
        with pytest.raises(StoreUnavailable):
            await notifier.requeue_dead_letters()
    finally:
        await dead.aclose()
