"""The ops API of a running worker (detection and handlers, `--clock event`, real Kafka and Redis):
tokens, 404, 422 for a bad transition or a bad query parameter, acknowledge and resolve with their
history, approvals, an order's timeline, /ready; and no raw phone number or address line of the
simulated orders in any response body, even with evidence that carries them. Also: without a
configured token every write is refused (503), served in-process."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from detectors.catalog import HANDLING_SECONDS, RULES
from handlers.config import HandlersConfig
from orderwatch.backtest import open_lines, run_backtest
from orderwatch.simulate import simulate
from schemas.exception_event import ExceptionData, ExceptionEvent
from streams.app import create_app
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker import ensure_topics, free_port, spawn_worker, stop_worker
from tests.handlers.conftest import _require_redis, delete_prefix, redis_client
from tests.integration.kafka import publish_simulation, read_json

pytestmark = [pytest.mark.integration]

__fixtures__ = (_require_redis, redis_client)


def _personal(path: Path) -> tuple[set[str], dict[str, Any]]:
    """Every contact phone and address line of the stream's orders, and one order.created."""
    found: set[str] = set()
    first: dict[str, Any] = {}
    for raw in open_lines(str(path)):
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(doc, dict) or doc.get("type") not in ("order.created", "order.address_updated"):
            continue
        data = doc.get("data") or {}
        # A value of a few characters (one order's invalid phone is "12") would be found in any
        # timestamp: it identifies nobody, and a substring scan for it proves nothing.
        address = data.get("shipping_address") or {}
        values = [data.get("contact_phone"), address.get("line1"), address.get("line2")]
        found |= {v for v in values if v and len(v) >= 5}
        if doc["type"] == "order.created" and not first and data.get("contact_phone"):
            first = doc
    return found, first


def _with_personal_evidence(order: dict[str, Any]) -> ExceptionEvent:
    """An exception whose evidence carries the order's phone and address, as a future rule's might."""
    data = order["data"]
    at = datetime.fromisoformat(order["time"])
    phone, address = data["contact_phone"], data["shipping_address"]
    return ExceptionEvent(
        id=f"xpersonal{uuid.uuid4().hex[:8]}:opened",
        type="exception.opened",
        time=at,
        subject=data["order_id"],
        data=ExceptionData(
            exception_id=f"xpersonal{uuid.uuid4().hex[:8]}",
            rule="INVALID_SHIPPING_INFO",
            category=RULES["INVALID_SHIPPING_INFO"].category,
            severity="low",
            status="open",
            subject=data["order_id"],
            order_id=data["order_id"],
            detected_at=at,
            event_time=at,
            handle_by=at + timedelta(seconds=HANDLING_SECONDS["low"]),
            summary=f"Order {data['order_id']}: the carrier cannot reach {phone} at {address['line1']}.",
            evidence={
                "problems": ["phone_invalid"],
                "contact_phone": phone,
                "shipping_address": address,
                "remark": f"customer asked to call {phone}",
            },
            recommended_action="confirm_address_with_customer",
        ),
    )


class Client:
    """Calls the API and keeps every response body for the privacy scan."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.bodies: list[str] = []

    async def __call__(
        self, method: str, path: str, *, token: str | None = None, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.base + path, json=body, headers=headers) as resp:
            text = await resp.text()
        self.bodies.append(text)
        return resp.status, json.loads(text)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s:
        yield s


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_the_ops_api_of_a_running_worker(
    tmp_path: Path, kafka_settings: Settings, redis_client: aioredis.Redis, session: aiohttp.ClientSession
) -> None:
    path, res = await publish_simulation(tmp_path, kafka_settings, orders=300, seed=3)
    expected = {em.record.exception_id for em in res.emissions}
    personal, order = _personal(path)
    assert len(personal) > 300 and order
    leaky = _with_personal_evidence(order)

    token = f"tok-{uuid.uuid4().hex}"
    redis_prefix = f"t{uuid.uuid4().hex}:"
    settings = kafka_settings.model_copy(
        update={"web_port": free_port(), "redis_prefix": redis_prefix, "api_token": token}
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic("order-exceptions"), leaky.model_dump_json().encode(), key=leaky.data.exception_id.encode()
        )
    finally:
        await producer.stop()

    api = Client(session, f"http://127.0.0.1:{settings.web_port}")
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = spawn_worker(settings, "event", log, handlers=True)
        try:
            deadline = time.monotonic() + 120
            total = -1
            while time.monotonic() < deadline:
                await asyncio.sleep(2)
                assert proc.poll() is None, log_path.read_text()[-3000:]
                try:
                    status, _ = await api("GET", "/ready")
                    _, listed = await api("GET", "/cases?limit=1")
                except aiohttp.ClientError:
                    continue  # not listening yet
                if status == 200 and listed["total"] == len(expected) + 1 and listed["counts"]["open"] == 0:
                    total = listed["total"]
                    break
            assert total == len(expected) + 1, log_path.read_text()[-3000:]
            await _exercise(api, token, settings, leaky)
        finally:
            stop_worker(proc)
            await delete_prefix(redis_client, redis_prefix)

    leaked = [p for p in personal if any(p in _plain(b) for b in api.bodies)]
    assert leaked == [], f"{len(leaked)} phone numbers or address lines in API responses"
    assert len(api.bodies) > 30


def _plain(body: str) -> str:
    """The body as text with JSON escapes undone (a \\u-escaped street name is still a street name)."""
    try:
        return json.dumps(json.loads(body), ensure_ascii=False)
    except ValueError:
        return body


async def _exercise(api: Client, token: str, settings: Settings, leaky: ExceptionEvent) -> None:
    status, ready = await api("GET", "/ready")
    assert (status, ready["status"]) == (200, "ready")

    # -- reads and their validation ---------------------------------------------------------------
    status, escalated = await api("GET", "/cases?status=escalated&limit=100")
    assert status == 200 and escalated["total"] >= 2
    assert {c["status"] for c in escalated["cases"]} == {"escalated"}
    target, other = escalated["cases"][0], escalated["cases"][1]
    for query, name in (
        ("status=bogus", "status"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("offset=-1", "offset"),
        ("rule=NOT_A_RULE", "rule"),
        ("severity=urgent", "severity"),
        ("colour=red", "colour"),
    ):
        status, err = await api("GET", f"/cases?{query}")
        assert status == 422, query
        assert err["error"].startswith(f"query parameter {name}:"), err
    status, err = await api("GET", "/incidents?status=bogus")
    assert status == 422 and "status" in err["error"]
    status, err = await api("GET", "/cases/no-such-case")
    assert status == 404 and "no-such-case" in err["error"]

    # -- writes need the token ------------------------------------------------------------------
    xid = target["exception_id"]
    for bad in (None, "wrong-token"):
        status, err = await api("POST", f"/cases/{xid}/acknowledge", token=bad, body={"note": "x"})
        assert status == 401, bad
    status, detail = await api("GET", f"/cases/{xid}")
    assert detail["case"]["status"] == "escalated"  # nothing moved
    status, err = await api("POST", "/cases/no-such-case/acknowledge", token=token)
    assert status == 404
    status, err = await api("POST", f"/cases/{xid}/acknowledge", token=token, body=["not", "an", "object"])
    assert status == 422 and err["error"].startswith("body")

    # -- acknowledge, resolve, then a move the lifecycle refuses -----------------------------------
    status, acked = await api(
        "POST",
        f"/cases/{xid}/acknowledge",
        token=token,
        body={"note": "on it, will call +49 151 23456789", "who": "ana"},
    )
    assert status == 200, acked
    assert acked["case"]["status"] == "acknowledged"
    last = acked["history"][-1]
    assert (last["who"], last["from_status"], last["to_status"]) == ("ana", "escalated", "acknowledged")
    assert last["note"] == "on it, will call ***"
    status, done = await api("POST", f"/cases/{xid}/resolve", token=token, body={"note": "refund sent"})
    assert status == 200, done
    assert (done["case"]["status"], done["case"]["resolution"]["kind"]) == ("resolved", "manual")
    assert [(h["to_status"], h["who"]) for h in done["history"][-2:]] == [("acknowledged", "ana"), ("resolved", "api")]
    status, err = await api("POST", f"/cases/{xid}/acknowledge", token=token)
    assert status == 422 and "cannot move from resolved to acknowledged" in err["error"]
    status, err = await api("POST", f"/cases/{other['exception_id']}/resolve", token=token, body={"who": ""})
    assert status == 422 and err["error"].startswith("body who")

    # -- evidence with personal data goes out masked ---------------------------------------------
    status, detail = await api("GET", f"/cases/{leaky.data.exception_id}")
    assert status == 200
    evidence = detail["case"]["evidence"]
    assert (evidence["contact_phone"], evidence["shipping_address"], evidence["problems"]) == (
        "***",
        "***",
        ["phone_invalid"],
    )
    assert evidence["remark"] == "customer asked to call ***"

    # -- the order as the detector sees it ---------------------------------------------------------
    order_id = target["order_id"] or other["order_id"]
    assert order_id
    status, timeline = await api("GET", f"/orders/{order_id}/timeline")
    assert status == 200, timeline
    assert timeline["owned"] is True
    assert timeline["detector"]["order_id"] == order_id
    assert timeline["detector"]["last_event_time"]
    assert any(c["case"]["order_id"] == order_id for c in timeline["cases"])
    times = [datetime.fromisoformat(e["at"]) for e in timeline["timeline"]]
    assert times == sorted(times) and len(times) >= 3
    assert {e["source"] for e in timeline["timeline"]} == {"case", "detector"}
    status, nothing = await api("GET", "/orders/o-never-seen/timeline")
    assert status == 200 and (nothing["detector"], nothing["cases"]) == (None, [])
    status, _ = await api("GET", f"/orders/{leaky.data.order_id}/timeline")
    assert status == 200

    # -- incidents and approvals -----------------------------------------------------------------
    status, listed = await api("GET", "/incidents")
    assert status == 200 and "incidents" in listed
    status, err = await api("POST", "/incidents/inc-none/acknowledge", token=token)
    assert status == 404
    status, pending = await api("GET", "/actions/pending")
    assert status == 200 and pending["actions"], "the default policy leaves some actions for approval"
    first = pending["actions"][0]
    base = f"/cases/{first['exception_id']}/actions/{first['action']}"
    status, err = await api("POST", f"{base}/approve")
    assert status == 401
    status, approved = await api("POST", f"{base}/approve", token=token, body={"who": "lee"})
    assert status == 200, approved
    assert (approved["command"]["data"]["mode"], approved["command"]["data"]["approved_by"]) == ("approved", "lee")
    status, again = await api("POST", f"{base}/approve", token=token, body={"who": "lee"})
    assert (status, again["command"]["id"]) == (200, approved["command"]["id"])  # nothing sent again
    commands = await read_json(settings, settings.topic("order-actions"))
    assert [c["id"] for c in commands].count(first["idempotency_key"]) == 1
    status, err = await api("POST", f"{base}/reject", token=token)
    assert status == 422 and "only a pending action" in err["error"]
    status, err = await api("POST", "/cases/nope/actions/retry_refund/approve", token=token)
    assert status == 404


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_handlers_only_worker(
    tmp_path: Path, kafka_settings: Settings, redis_client: aioredis.Redis, session: aiohttp.ClientSession
) -> None:
    """`--handlers-only --dry-run` on the wall clock, fed the backtest's exception events: cases,
    escalations of what is long overdue, no command sent, and 421 for a timeline (no detector here)."""
    path, out = tmp_path / "sim.jsonl", tmp_path / "exceptions.jsonl"
    simulate(orders=120, seed=5, output=path, labels=tmp_path / "l", blocklist=tmp_path / "b")
    with out.open("w") as fh:
        run_backtest(open_lines(path), output=fh)
    events = [ExceptionEvent.model_validate_json(line) for line in out.read_text().splitlines()]
    final = {e.data.exception_id: e.data for e in events}
    assert len(final) >= 5
    redis_prefix = f"t{uuid.uuid4().hex}:"
    settings = kafka_settings.model_copy(
        update={"web_port": free_port(), "redis_prefix": redis_prefix, "api_token": "t", "dry_run": True}
    )
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for e in events:
            await producer.send(
                settings.topic("order-exceptions"), e.model_dump_json().encode(), key=e.data.exception_id.encode()
            )
        await producer.flush()
    finally:
        await producer.stop()

    api = Client(session, f"http://127.0.0.1:{settings.web_port}")
    unresolved = {x for x, d in final.items() if d.status != "resolved"}
    assert unresolved
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = spawn_worker(settings, "wall", log, handlers=True, args=["--handlers-only"])
        try:
            deadline = time.monotonic() + 90
            listed: dict[str, Any] = {}
            while time.monotonic() < deadline:
                await asyncio.sleep(1)
                assert proc.poll() is None, log_path.read_text()[-3000:]
                try:
                    status, listed = await api("GET", "/cases?limit=500")
                except aiohttp.ClientError:
                    continue
                if listed["total"] == len(final) and listed["counts"]["escalated"] == len(unresolved):
                    break
            by_id = {c["exception_id"]: c for c in listed["cases"]}
            assert set(by_id) == set(final), log_path.read_text()[-3000:]
            # on the wall clock, months after the stream, whatever is unresolved is long overdue
            assert {x for x, c in by_id.items() if c["status"] == "escalated"} == unresolved
            assert {c["level"] for x, c in by_id.items() if x in unresolved} <= {2}
            status, ready = await api("GET", "/ready")
            assert (status, ready["status"]) == (200, "ready")
            order_id = next(d.order_id for d in final.values() if d.order_id)
            status, timeline = await api("GET", f"/orders/{order_id}/timeline")
            assert status == 421
            assert "--handlers-only" in timeline["error"] and timeline["detector"] is None
            assert [c["case"]["order_id"] for c in timeline["cases"]] and all(
                c["case"]["order_id"] == order_id for c in timeline["cases"]
            )
        finally:
            stop_worker(proc)
            await delete_prefix(redis_client, redis_prefix)
    assert await read_json(settings, settings.topic("order-actions")) == []  # dry run
    text = log_path.read_text()
    assert "dry run: would send" in text
    assert "orders_agent" not in text  # no detector agent in this worker


async def test_writes_are_refused_without_a_configured_token(redis_client: aioredis.Redis) -> None:
    """Never open by default: no ORDERWATCH_API_TOKEN, no write (and no 401 hinting at one)."""
    prefix = f"t{uuid.uuid4().hex}:"
    settings = Settings(redis_prefix=prefix, topic_prefix=f"t{uuid.uuid4().hex[:8]}-", api_token=None)
    ow = create_app(settings, metrics=Metrics(CollectorRegistry()), detection=False, handlers=HandlersConfig())
    rt = ow.handlers
    server = TestServer(ow.app.web.web_app)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            for path in (
                "/cases/x1/acknowledge",
                "/cases/x1/resolve",
                "/incidents/i/resolve",
                "/cases/x/actions/a/approve",
            ):
                async with s.post(server.make_url(path), headers={"Authorization": "Bearer anything"}) as resp:
                    assert resp.status == 503, path
                    assert (await resp.json())["error"].startswith("api_token not configured")
            async with s.get(server.make_url("/cases")) as resp:
                assert resp.status == 200  # reads need no token
                assert (await resp.json())["total"] == 0
    finally:
        await server.close()
        await rt.close()
        await delete_prefix(redis_client, prefix)
