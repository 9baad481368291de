"""The ops API of a running worker (detection and handlers, `--clock event`, real Kafka and Redis):
every read and write needs a token and the right role, 404, 422 for a bad transition or a bad query
parameter, 4xx (never 500) for hostile input, acknowledge, resolve and assign with their history
under the token's name, default teams from the handlers config, approvals, an order's timeline,
/ready; no raw phone number or address line of the simulated orders in any response body, and
nothing a caller sent in the worker's log. Also: without a configured token every endpoint but
/ready is refused (503), served in-process."""

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

from orderwatch.backtest import open_lines, run_backtest
from orderwatch.detectors.catalog import HANDLING_SECONDS, RULES
from orderwatch.handlers.config import HandlersConfig
from orderwatch.handlers.policy import BLOCKLIST_ACTIONS
from orderwatch.schemas.exception_event import ExceptionData, ExceptionEvent
from orderwatch.simulate import simulate
from orderwatch.streams.app import create_app
from orderwatch.streams.metrics import Metrics
from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import ensure_topics
from tests.handlers.conftest import _require_redis, delete_prefix, redis_client
from tests.integration.kafka import publish_simulation, read_json
from tests.support.progress import CasesLook, wait_for_worker
from tests.support.worker import free_port, spawn_worker, stop_worker

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

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None = None) -> None:
        self.session = session
        self.base = base
        self.token = token
        """Used when a call names no token (the viewer's, for reads)."""
        self.bodies: list[str] = []

    async def __call__(
        self, method: str, path: str, *, token: str | None = "", body: Any = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, Any]]:
        """`token=""`: the default token; None: no Authorization header. `raw`: a body sent as is."""
        token = self.token if token == "" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if raw is not None:
            headers["Content-Type"] = "application/json"
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as resp:
            text = await resp.text()
        self.bodies.append(text)
        return resp.status, json.loads(text)


class Tokens:
    """One token per role, named as the audit trail shows them, in a tokens file."""

    def __init__(self, path: Path) -> None:
        self.viewer, self.operator, self.approver = (f"{n}-{uuid.uuid4().hex}" for n in ("vic", "ana", "lee"))
        path.write_text(
            f'[[tokens]]\nname = "vic"\nroles = ["viewer"]\ntoken = "{self.viewer}"\n'
            f'[[tokens]]\nname = "ana"\nroles = ["operator"]\ntoken = "{self.operator}"\n'
            f'[[tokens]]\nname = "lee"\nroles = ["approver"]\ntoken = "{self.approver}"\n'
        )
        self.path = path


OWNERS_CONFIG = """
[owners]
default_team = "ops"
[owners.by_category]
payment = "payments"
[owners.by_rule]
TRACKING_STALLED = "logistics-desk"
"""
MARKER = "Zq7LeakMarker"
"""Sent by the caller in paths, queries and bodies: it must never reach the worker's log."""


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s:
        yield s


@pytest.mark.slow
@pytest.mark.timeout(1500)  # a safety net: the wait for the cases goes on while the worker moves
async def test_the_ops_api_of_a_running_worker(
    tmp_path: Path,
    kafka_settings: Settings,
    redis_client: aioredis.Redis,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, res = await publish_simulation(tmp_path, kafka_settings, orders=300, seed=3)
    expected = {em.record.exception_id for em in res.emissions}
    personal, order = _personal(path)
    assert len(personal) > 300 and order
    leaky = _with_personal_evidence(order)

    tokens = Tokens(tmp_path / "tokens.toml")
    # spawn_worker passes the parent's environment on: the worker reads its tokens file from there
    monkeypatch.setenv("ORDERWATCH_TOKENS_FILE", str(tokens.path))
    monkeypatch.setenv("ORDERWATCH_LOGIN_ATTEMPTS", "40")  # this test sends a few wrong tokens on purpose
    handlers_config = tmp_path / "handlers.toml"
    handlers_config.write_text(OWNERS_CONFIG)
    redis_prefix = f"t{uuid.uuid4().hex}:"
    settings = kafka_settings.model_copy(
        update={"web_port": free_port(), "redis_prefix": redis_prefix, "handlers_config": str(handlers_config)}
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic("order-exceptions"), leaky.model_dump_json().encode(), key=leaky.data.exception_id.encode()
        )
    finally:
        await producer.stop()

    api = Client(session, f"http://127.0.0.1:{settings.web_port}", tokens.viewer)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = spawn_worker(settings, "event", log, handlers=True)
        try:
            look = CasesLook(session, api.base, tokens.viewer, settings, len(expected) + 1)
            await wait_for_worker(look, proc, log_path, what=f"{len(expected) + 1} cases, none open", every=3)
            await _exercise(api, tokens, settings, leaky)
            await _hostile(api, tokens, leaky)
        finally:
            stop_worker(proc)
            await delete_prefix(redis_client, redis_prefix)

    leaked = [p for p in personal if any(p in _plain(b) for b in api.bodies)]
    assert leaked == [], f"{len(leaked)} phone numbers or address lines in API responses"
    assert len(api.bodies) > 30
    text = log_path.read_text()
    assert MARKER not in text, "a caller-supplied string reached the worker's log"
    assert tokens.viewer not in text and tokens.operator not in text and tokens.approver not in text
    assert "ana acknowledged case" in text  # the log names who, from the token


def _plain(body: str) -> str:
    """The body as text with JSON escapes undone (a \\u-escaped street name is still a street name)."""
    try:
        return json.dumps(json.loads(body), ensure_ascii=False)
    except ValueError:
        return body


async def _exercise(api: Client, tokens: Tokens, settings: Settings, leaky: ExceptionEvent) -> None:
    status, ready = await api("GET", "/ready", token=None)
    assert (status, ready["status"]) == (200, "ready")  # open, like /health and /metrics

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

    # -- every read needs a token, every write its role --------------------------------------------
    xid = target["exception_id"]
    order_of = target["order_id"] or other["order_id"]
    reads = ["/cases", f"/cases/{xid}", "/incidents", "/incidents/inc-x", "/actions/pending"]
    reads.append(f"/orders/{order_of}/timeline")
    for path in reads:
        for bad in (None, "wrong-token"):
            status, err = await api("GET", path, token=bad)
            assert status == 401, (path, bad)
            assert err["error"].startswith("a valid bearer token is required")
    writes = {
        f"/cases/{xid}/acknowledge": "work",
        f"/cases/{xid}/resolve": "work",
        f"/cases/{xid}/assign": "work",
        "/incidents/inc-x/acknowledge": "work",
        "/incidents/inc-x/resolve": "work",
        f"/cases/{xid}/actions/retry_refund/approve": "approve",
        f"/cases/{xid}/actions/retry_refund/reject": "approve",
    }
    for path, needs in writes.items():
        status, _ = await api("POST", path, token=None, body={"note": "x"})
        assert status == 401, path
        refused = [tokens.viewer, tokens.approver] if needs == "work" else [tokens.viewer, tokens.operator]
        for token in refused:
            status, err = await api("POST", path, token=token, body={"owner": "x"} if "assign" in path else {})
            assert status == 403, (path, token[:3])
            assert "role" in err["error"]
    status, detail = await api("GET", f"/cases/{xid}")
    assert detail["case"]["status"] == "escalated"  # nothing moved
    assert [h["who"] for h in detail["history"]] == ["orderwatch"] * len(detail["history"])
    token = tokens.operator
    status, err = await api("POST", "/cases/no-such-case/acknowledge", token=token)
    assert status == 404
    status, err = await api("POST", f"/cases/{xid}/acknowledge", token=token, body=["not", "an", "object"])
    assert status == 422 and err["error"].startswith("body")
    status, err = await api("POST", f"/cases/{xid}/acknowledge", token=token, body={"who": "mallory"})
    assert status == 422 and err["error"].startswith("body who: not accepted")

    # -- acknowledge, resolve, then a move the lifecycle refuses -----------------------------------
    status, acked = await api(
        "POST", f"/cases/{xid}/acknowledge", token=token, body={"note": "on it, will call +49 151 23456789"}
    )
    assert status == 200, acked
    assert acked["case"]["status"] == "acknowledged"
    last = acked["history"][-1]
    assert (last["who"], last["from_status"], last["to_status"]) == ("ana", "escalated", "acknowledged")
    assert last["note"] == "on it, will call ***"
    status, done = await api("POST", f"/cases/{xid}/resolve", token=token, body={"note": "refund sent"})
    assert status == 200, done
    assert (done["case"]["status"], done["case"]["resolution"]["kind"]) == ("resolved", "manual")
    assert [(h["to_status"], h["who"]) for h in done["history"][-2:]] == [("acknowledged", "ana"), ("resolved", "ana")]
    status, err = await api("POST", f"/cases/{xid}/acknowledge", token=token)
    assert status == 422 and "cannot move from resolved to acknowledged" in err["error"]

    # -- owners and teams: the default from [owners], changed by hand, in the history --------------
    status, listed = await api("GET", "/cases?limit=500")
    for c in listed["cases"]:
        if c["rule"] == "TRACKING_STALLED":
            assert c["team"] == "logistics-desk", c["exception_id"]
        elif c["category"] == "payment":
            assert c["team"] == "payments", c["exception_id"]
        else:
            assert c["team"] == "ops", c["exception_id"]
    oid = other["exception_id"]
    status, assigned = await api(
        "POST", f"/cases/{oid}/assign", token=token, body={"owner": "ana", "team": "night-shift", "note": "mine"}
    )
    assert status == 200 and assigned["changed"] is True, assigned
    assert (assigned["case"]["owner"], assigned["case"]["team"]) == ("ana", "night-shift")
    last = assigned["history"][-1]
    assert (last["event"], last["who"], last["owner"], last["team"], last["note"]) == (
        "assigned",
        "ana",
        "ana",
        "night-shift",
        "mine",
    )
    assert last["from_status"] == last["to_status"] == other["status"]
    status, again = await api("POST", f"/cases/{oid}/assign", token=token, body={"owner": "ana"})
    assert (status, again["changed"], len(again["history"])) == (200, False, len(assigned["history"]))
    status, mine = await api("GET", "/cases?owner=ana&team=night-shift")
    assert [c["exception_id"] for c in mine["cases"]] == [oid]
    status, cleared = await api("POST", f"/cases/{oid}/assign", token=token, body={"owner": None})
    assert (cleared["case"]["owner"], cleared["case"]["team"]) == (None, "night-shift")
    status, mine = await api("GET", "/cases?owner=ana")
    assert mine["total"] == 0
    status, err = await api("POST", f"/cases/{oid}/assign", token=token, body={"team": "no spaces please"})
    assert status == 422 and err["error"].startswith("body team")
    status, err = await api("POST", f"/cases/{oid}/assign", token=token, body={"note": "no owner, no team"})
    assert status == 422 and "owner" in err["error"]

    # -- the queue's filters and its deadline order ----------------------------------------------
    status, due = await api("GET", "/cases?sort=due&limit=500")
    times = [datetime.fromisoformat(c["handle_by"]) for c in due["cases"]]
    assert times == sorted(times) and len(times) == due["total"]
    status, open_ones = await api("GET", "/cases?status=unresolved&limit=500")
    assert open_ones["total"] == sum(n for s, n in open_ones["counts"].items() if s != "resolved") > 0
    assert "resolved" not in {c["status"] for c in open_ones["cases"]}
    status, payments = await api("GET", "/cases?category=payment&limit=500")
    assert payments["total"] == sum(1 for c in listed["cases"] if c["category"] == "payment") > 0
    sample = next(c for c in listed["cases"] if c["order_id"])
    text = sample["order_id"][-4:]
    status, found = await api("GET", f"/cases?q={text.upper()}&limit=500")
    assert sample["exception_id"] in {c["exception_id"] for c in found["cases"]}
    assert all(text in c["order_id"] for c in found["cases"])

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
    status, pending = await api("GET", "/actions/pending?limit=500")
    # A blocklist action's approval goes to `blocklist`, not `order-actions`: take the oldest of
    # the others, whatever order the stream's actions were requested in.
    commands_for_orders = [a for a in pending["actions"] if a["action"] not in BLOCKLIST_ACTIONS.values()]
    assert status == 200 and commands_for_orders, "the default policy leaves some order actions for approval"
    first = commands_for_orders[0]
    base = f"/cases/{first['exception_id']}/actions/{first['action']}"
    status, err = await api("POST", f"{base}/approve", token=None)
    assert status == 401
    approver = tokens.approver
    status, approved = await api("POST", f"{base}/approve", token=approver)
    assert status == 200, approved
    assert (approved["command"]["data"]["mode"], approved["command"]["data"]["approved_by"]) == ("approved", "lee")
    status, again = await api("POST", f"{base}/approve", token=approver)
    assert (status, again["command"]["id"]) == (200, approved["command"]["id"])  # nothing sent again
    commands = await read_json(settings, settings.topic("order-actions"))
    assert [c["id"] for c in commands].count(first["idempotency_key"]) == 1
    status, detail = await api("GET", f"/cases/{first['exception_id']}")
    audits = [h for h in detail["history"] if h["event"] == "action_approved"]
    assert [(h["who"], h["action"]) for h in audits][:1] == [("lee", first["action"])]
    status, err = await api("POST", f"{base}/reject", token=approver)
    assert status == 422 and "only a pending action" in err["error"]
    status, err = await api("POST", "/cases/nope/actions/retry_refund/approve", token=approver)
    assert status == 404


async def _hostile(api: Client, tokens: Tokens, leaky: ExceptionEvent) -> None:
    """Input that used to answer 500 (issue 9 item 8), and more of its kind: always a 4xx with a
    short message, and nothing the caller sent in the worker's log (MARKER is checked there)."""
    xid = leaky.data.exception_id
    status, before = await api("GET", f"/cases/{xid}")
    assert status == 200
    for query in (
        "limit=%C2%B2",  # '²': str.isdigit() says yes, int() says no
        "limit=%D9%A3",  # an Arabic-Indic three
        "offset=" + "9" * 5000,
        "offset=1e3",
        "limit=+5",
        "limit=%205",
        f"order_id={MARKER}%00",
        f"team={MARKER}%20x",
        f"{MARKER}=1",
        "q=" + "x" * 100,
    ):
        status, err = await api("GET", f"/cases?{query}")
        assert status == 422, query[:40]
        assert err["error"].startswith("query parameter"), err
        assert len(err["error"]) < 300
    status, err = await api("GET", "/incidents?offset=" + "1" * 5000)
    assert status == 422
    status, err = await api("GET", "/actions/pending?limit=%C2%B2")
    assert status == 422
    operator = tokens.operator
    path = f"/cases/{xid}/acknowledge"
    for raw, expected in (
        (b"[" * 100_000 + b"]" * 100_000, 413),  # past the size bound before any parsing
        (b"[" * 8_000 + b"]" * 8_000, 422),  # within the size bound, refused by depth
        (b'{"note": ' + b"[" * 5000 + b"]" * 5000 + b"}", 422),
        (b'{"note": "\xff\xfe' + MARKER.encode() + b'"', 422),  # not even JSON
        (b"\xff\xfe\x00", 422),  # not UTF-8
        (b'{"note": "' + b"n" * 20_000 + b'"}', 413),
        (b'{"note": 12}', 422),
        (json.dumps({MARKER: 1}).encode(), 422),
        (json.dumps({"note": "x" * 2001}).encode(), 422),
    ):
        status, err = await api("POST", path, token=operator, raw=raw)
        assert status == expected, (raw[:30], status, err)
        assert err["error"].startswith("body"), err
        assert len(err["error"]) < 300
    for path in (f"/cases/{MARKER}%0Aforged", "/cases/" + "x" * 3000, f"/orders/{MARKER}%20x/timeline"):
        status, err = await api("GET", path)
        assert status == 404, path[:40]
    status, err = await api("POST", f"/cases/{MARKER}/acknowledge", token=operator, body={"note": MARKER})
    assert status == 404
    status, err = await api("GET", "/cases", token=MARKER + "x" * 600)  # longer than any token
    assert status == 401
    status, detail = await api("GET", f"/cases/{xid}")
    assert detail["history"] == before["history"]  # nothing hostile moved it
    # guessing tokens: after ORDERWATCH_LOGIN_ATTEMPTS failures from one address, even a valid
    # token is refused from there until the window passes (last: it locks this client out)
    for attempt in range(60):
        status, err = await api("GET", "/cases", token=f"guess-{attempt}")
        if status == 429:
            break
        assert status == 401
    assert status == 429 and "try again in" in err["error"], attempt
    assert 30 <= attempt <= 40
    status, err = await api("GET", "/cases")
    assert status == 429


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
        update={"web_port": free_port(), "redis_prefix": redis_prefix, "api_token": "t" * 24, "dry_run": True}
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

    api = Client(session, f"http://127.0.0.1:{settings.web_port}", "t" * 24)
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


async def test_everything_is_refused_without_a_configured_token(redis_client: aioredis.Redis) -> None:
    """Never open by default: no token configured, no read and no write (503, and no 401 hinting
    that some token would do); /ready stays open."""
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
                    assert (await resp.json())["error"].startswith("no tokens configured")
            for path in ("/cases", "/cases/x1", "/incidents", "/actions/pending", "/orders/o1/timeline"):
                async with s.get(server.make_url(path), headers={"Authorization": "Bearer anything"}) as resp:
                    assert resp.status == 503, path
            async with s.get(server.make_url("/ready")) as resp:
                assert resp.status == 503  # open, and not ready (nothing started)
                assert "reasons" in await resp.json()
    finally:
        await server.close()
        await rt.close()
        await delete_prefix(redis_client, prefix)
