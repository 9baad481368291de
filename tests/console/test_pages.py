"""The console in-process against the local stack's Redis: login with a token (wrong token
refused, failed logins limited across workers), session cookie flags, CSRF on every form, the
viewer's read-only pages, an operator's acknowledge / resolve / assign audited under their name,
approvals, rotation of a token ending its sessions, Redis gone answering 503 pages, and no phone
or address line on any page."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orderwatch.detectors.catalog import RULES
from orderwatch.handlers.config import HandlersConfig
from orderwatch.streams.handling import HandlerRuntime
from orderwatch.streams.settings import Settings
from tests.console.conftest import Browser, People, console_server
from tests.handlers.conftest import _require_redis, exception_data, free_port, opened, prefix, redis_client

__fixtures__ = (_require_redis, redis_client, prefix)

PHONE = "+49 151 98765432"
LINE1 = "Kastanienallee 77"
ACTION = RULES["TRACKING_STALLED"].action


def _settings(prefix: str, people: People, **extra: Any) -> Settings:
    return Settings(
        redis_prefix=prefix,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}-",
        tokens_file=str(people.path),
        dry_run=True,
        **extra,
    )


CONFIG = HandlersConfig.from_toml(
    {
        "owners": {"default_team": "ops", "by_category": {"payment": "payments"}},
        "actions": {ACTION: {"mode": "approval"}},
    }
)


async def _seed(rt: HandlerRuntime) -> list[str]:
    """Three cases through the handler service (so the action policy runs): one breached, one due
    within the hour, one later; one of them carries a phone and an address in its evidence."""
    now = datetime.now(UTC)
    ids = []
    for i, (rule, age) in enumerate(
        (
            ("TRACKING_STALLED", timedelta(days=3)),
            ("PAYMENT_TIMEOUT", timedelta(minutes=1)),
            ("REFUND_OVERDUE", timedelta(0)),
        )
    ):
        evidence: dict[str, Any] = {"carrier": "dhl", "shipment_id": f"s-{i}"}
        if i == 0:
            evidence |= {"contact_phone": PHONE, "shipping_address": {"line1": LINE1, "city": "Berlin"}}
        data = exception_data(rule=rule, detected_at=now - age, order_id=f"o-7{i:04d}", evidence=evidence)
        if i == 0:  # as a future rule's might: the evidence names what the summary shows
            data = data.model_copy(update={"summary": f"{rule}: call {PHONE} at {LINE1}"})
        await rt.service.handle(opened(data), now)
        ids.append(data.exception_id)
    return ids


def _clean(pages: list[str]) -> None:
    for html in pages:
        assert PHONE not in html and LINE1 not in html
        assert "98765432" not in html


async def test_login_session_and_csrf(tmp_path: Path, prefix: str) -> None:
    people = People(tmp_path / "tokens.toml")
    async with console_server(_settings(prefix, people), CONFIG) as (server, rt):
        ids = await _seed(rt)
        b = Browser(server)
        try:
            status, _, resp = await b.get("/console/queue?status=open")
            assert (
                status == 303 and resp.headers["Location"] == "/console/login?next=%2Fconsole%2Fqueue%3Fstatus%3Dopen"
            )
            status, html, _ = await b.post("/console/cases/x/acknowledge", {"note": "x"})
            assert status == 401 and "Log in again" in html

            resp = await b.login("wrong-token-" + "0" * 20)
            assert resp.status == 401
            assert "That token is not valid" in b.pages[-1]
            assert "ow_session" not in {c.key for c in b.session.cookie_jar}

            # the login form itself needs its CSRF nonce (login CSRF)
            status, html, _ = await b.post("/console/login", {"token": people.operator}, csrf=False)
            assert status == 403 and "expired" in html

            resp = await b.login(people.operator)
            assert resp.status == 303 and resp.headers["Location"] == "/console/queue"
            cookie = resp.headers.getall("Set-Cookie")[0]
            assert "ow_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert "Path=/console" in cookie and "Secure" not in cookie  # plain http here

            status, html, resp = await b.get("/console/queue")
            assert status == 200 and "ana" in html
            assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert all(x in html for x in ids)

            # a form posted without its CSRF token, or with another session's, is refused
            xid = ids[1]
            status, html, _ = await b.post(f"/console/cases/{xid}/acknowledge", {"note": "x"}, csrf=False)
            assert status == 403 and "CSRF" in html
            status, html, _ = await b.post(
                f"/console/cases/{xid}/acknowledge", {"note": "x", "csrf": "forged"}, csrf=False
            )
            assert status == 403
            case = await rt.store.get(xid)
            assert case.status == "open"  # nothing moved

            status, html, _ = await b.get(f"/console/cases/{xid}")
            assert status == 200
            status, _, resp = await b.post(f"/console/cases/{xid}/acknowledge", {"note": f"calling {PHONE}"})
            assert status == 303 and resp.headers["Location"] == f"/console/cases/{xid}?done=acknowledged"
            history = await rt.store.history(xid)
            assert (history[-1].who, history[-1].to_status) == ("ana", "acknowledged")
            status, html, _ = await b.get(f"/console/cases/{xid}?done=acknowledged")
            assert "Case acknowledged." in html and "calling ***" in html

            status, _, _ = await b.post(f"/console/cases/{xid}/assign", {"owner": "ana", "team": "night", "note": ""})
            assert status == 303
            case = await rt.store.get(xid)
            assert (case.owner, case.team) == ("ana", "night")
            status, html, _ = await b.get("/console/queue?team=night")
            assert xid in html and ids[0] not in html
            status, html, _ = await b.get("/console/queue?owner=nobody")
            assert "No case matches these filters" in html

            status, _, _ = await b.post(f"/console/cases/{xid}/resolve", {"note": "paid"})
            assert status == 303
            assert (await rt.store.get(xid)).status == "resolved"
            status, html, _ = await b.get("/console/queue")
            assert xid not in html and ids[0] in html  # the default queue: what is left to do
            status, html, _ = await b.get("/console/queue?status=all")
            assert xid in html
            status, html, _ = await b.post(f"/console/cases/{xid}/resolve", {"note": "again"})
            assert status == 409 and "cannot move from resolved" in html

            # an operator cannot approve (no button, and the POST is refused)
            status, html, _ = await b.get(f"/console/cases/{ids[0]}")
            assert f"Approve {ACTION}" not in html and "waiting for an approver" in html
            status, html, _ = await b.post(f"/console/cases/{ids[0]}/actions/{ACTION}/approve", {})
            assert status == 403 and "approver role" in html

            status, _, resp = await b.post("/console/logout", {})
            assert status == 303
            status, _, resp = await b.get("/console/queue")
            assert status == 303  # the session is gone
            _clean(b.pages)
        finally:
            await b.close()


async def test_a_viewer_reads_and_cannot_write(tmp_path: Path, prefix: str) -> None:
    people = People(tmp_path / "tokens.toml")
    async with console_server(_settings(prefix, people), CONFIG) as (server, rt):
        ids = await _seed(rt)
        b = Browser(server)
        try:
            assert (await b.login(people.viewer)).status == 303
            pages = ["/console/queue", "/console/approvals", "/console/incidents", "/console/orders/o-70000"]
            for xid in ids:
                pages.append(f"/console/cases/{xid}")
            for path in pages:
                status, html, _ = await b.get(path)
                assert status == 200, path
                assert '<form method="post" class="card"' not in html
                assert "Acknowledge</button>" not in html and "Assign</button>" not in html
                assert "Approve" not in html.replace("Approvals", "")
            for path, data in (
                (f"/console/cases/{ids[1]}/acknowledge", {"note": "x"}),
                (f"/console/cases/{ids[1]}/assign", {"owner": "vic"}),
                (f"/console/cases/{ids[0]}/actions/{ACTION}/approve", {}),
            ):
                status, html, _ = await b.post(path, data)
                assert status == 403, path
                assert "role" in html
            case = await rt.store.get(ids[1])
            assert (case.status, case.owner) == ("open", None)
            waiting = {(p.exception_id, p.action) for p in await rt.dispatcher.pending(10)}
            assert (ids[0], ACTION) in waiting  # still waiting
            _clean(b.pages)
        finally:
            await b.close()


async def test_approvals_in_place_and_the_queue(tmp_path: Path, prefix: str) -> None:
    people = People(tmp_path / "tokens.toml")
    async with console_server(_settings(prefix, people), CONFIG) as (server, rt):
        ids = await _seed(rt)
        b = Browser(server)
        try:
            assert (await b.login(people.approver)).status == 303
            status, html, _ = await b.get("/console/queue")
            # default teams from [owners], deadline order, the clock colours
            # TRACKING_STALLED (medium, 4 h) 3 days old, REFUND_OVERDUE (high, 1 h) new, PAYMENT_TIMEOUT (low, 24 h)
            assert html.index(ids[0]) < html.index(ids[2]) < html.index(ids[1])
            assert re.search(r'class="clock breached">breached', html)
            assert re.search(r'class="clock soon">\d+ min left', html)
            assert ">payments<" in html.replace("<td>payments</td>", ">payments<") and "<td>ops</td>" in html
            status, html, _ = await b.get("/console/queue?category=payment")
            assert ids[1] in html and ids[0] not in html
            status, html, _ = await b.get("/console/queue?q=O-70002")
            assert ids[2] in html and ids[1] not in html
            status, html, _ = await b.get("/console/queue?limit=%C2%B2&offset=" + "9" * 5000)
            assert status == 422 and "query parameter offset" in html
            status, html, _ = await b.get("/console/approvals")
            assert f"/console/cases/{ids[0]}/actions/{ACTION}/approve" in html
            status, _, resp = await b.post(f"/console/cases/{ids[0]}/actions/{ACTION}/approve", {"back": "approvals"})
            assert status == 303 and resp.headers["Location"] == "/console/approvals?done=approved"
            status, html, _ = await b.get("/console/approvals?done=approved")
            assert "Action approved" in html
            assert f"/console/cases/{ids[0]}/actions/{ACTION}/approve" not in html
            history = await rt.store.history(ids[0])
            assert (history[-1].event, history[-1].who, history[-1].action) == ("action_approved", "lee", ACTION)
            # the other waiting action, rejected with a note from its case page
            other = next(p for p in await rt.dispatcher.pending(10))
            await b.get(f"/console/cases/{other.exception_id}")
            status, _, resp = await b.post(
                f"/console/cases/{other.exception_id}/actions/{other.action}/reject", {"note": "customer paid by phone"}
            )
            assert status == 303 and resp.headers["Location"].endswith("?done=rejected")
            last = (await rt.store.history(other.exception_id))[-1]
            assert (last.event, last.who, last.action, last.note) == (
                "action_rejected",
                "lee",
                other.action,
                "customer paid by phone",
            )
            assert await rt.dispatcher.pending(10) == []
            status, html, _ = await b.get(f"/console/cases/{ids[0]}")
            assert "action approved" in html and "dry run" in html
            # an approver does not work cases
            status, html, _ = await b.post(f"/console/cases/{ids[1]}/acknowledge", {})
            assert status == 403
            status, html, _ = await b.get("/console/cases/no-such-case")
            assert status == 404 and "go back to the queue" in html
            status, html, _ = await b.get("/console/cases/bad%0Aid")
            assert status == 404
            _clean(b.pages)
        finally:
            await b.close()


async def test_failed_logins_are_limited_across_workers(tmp_path: Path, prefix: str) -> None:
    people = People(tmp_path / "tokens.toml")
    settings = _settings(prefix, people, login_attempts=3, login_window_seconds=60)
    async with console_server(settings, CONFIG) as (one, _), console_server(settings, CONFIG) as (two, _):
        a, b = Browser(one), Browser(two)
        try:
            for _ in range(2):
                assert (await a.login("guess-" + uuid.uuid4().hex)).status == 401
            assert (await b.login("guess-" + uuid.uuid4().hex)).status == 401  # the third, on the other worker
            resp = await a.login(people.operator)  # even the right token, from this address, for now
            assert resp.status == 429 and "Too many failed logins" in a.pages[-1]
            assert 1 <= int(resp.headers["Retry-After"]) <= 60
            async with b.session.get(
                two.make_url("/cases"), headers={"Authorization": f"Bearer {people.operator}"}
            ) as r:
                assert r.status == 429  # the API shares the count
                assert 1 <= int(r.headers["Retry-After"]) <= 60
        finally:
            await a.close()
            await b.close()


async def test_rotating_a_token_ends_its_sessions(tmp_path: Path, prefix: str) -> None:
    people = People(tmp_path / "tokens.toml")
    async with console_server(_settings(prefix, people), CONFIG) as (server, _):
        b = Browser(server)
        try:
            assert (await b.login(people.operator)).status == 303
            assert (await b.get("/console/queue"))[0] == 200
            people.write(without="ana")
            status, _, resp = await b.get("/console/queue")
            assert status == 303 and resp.headers["Location"].startswith("/console/login")
            assert (await b.login(people.operator)).status == 401
        finally:
            await b.close()


async def test_secure_cookie_behind_tls(tmp_path: Path, prefix: str) -> None:
    people = People(tmp_path / "tokens.toml")
    async with console_server(_settings(prefix, people), CONFIG) as (server, _):
        b = Browser(server, headers={"X-Forwarded-Proto": "https"})
        try:
            _, _, resp = await b.get("/console/login")
            login_cookie = resp.headers.getall("Set-Cookie")[0]
            assert login_cookie.startswith("ow_login=") and "Secure" in login_cookie
            nonce = login_cookie.split(";")[0].split("=", 1)[1]
            # a client keeps Secure cookies off plain http: send it as a browser behind TLS would
            async with b.session.post(
                server.make_url("/console/login"),
                data={"token": people.viewer, "csrf": nonce},
                headers={"Cookie": f"ow_login={nonce}"},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 303
                session_cookie = resp.headers.getall("Set-Cookie")[0]
            assert session_cookie.startswith("ow_session=")
            assert all(flag in session_cookie for flag in ("Secure", "HttpOnly", "SameSite=Strict"))
        finally:
            await b.close()


async def test_redis_gone_answers_503_pages(tmp_path: Path, prefix: str) -> None:
    people = People(tmp_path / "tokens.toml")
    settings = _settings(prefix, people, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with console_server(settings, CONFIG) as (server, _):
        b = Browser(server)
        try:
            resp = await b.login(people.operator)
            assert resp.status == 503 and "cannot be reached" in b.pages[-1]
            b.session.cookie_jar.update_cookies({"ow_session": "s" * 43})  # a session Redis would know
            status, html, _ = await b.get("/console/queue")
            assert status == 503 and "cannot be reached" in html
            async with b.session.get(
                server.make_url("/cases"), headers={"Authorization": f"Bearer {people.viewer}"}
            ) as r:
                assert r.status == 503
                assert "unavailable" in (await r.json())["error"]
        finally:
            await b.close()


async def test_oversized_and_garbled_forms(tmp_path: Path, prefix: str) -> None:
    people = People(tmp_path / "tokens.toml")
    async with console_server(_settings(prefix, people), CONFIG) as (server, rt):
        ids = await _seed(rt)
        b = Browser(server)
        try:
            assert (await b.login(people.operator)).status == 303
            await b.get(f"/console/cases/{ids[1]}")
            status, html, _ = await b.post(f"/console/cases/{ids[1]}/acknowledge", {"note": "n" * 40_000})
            assert status == 413
            status, html, _ = await b.post(f"/console/cases/{ids[1]}/acknowledge", {"note": "n" * 2500})
            assert status == 422 and "note" in html
            status, html, _ = await b.post(f"/console/cases/{ids[1]}/assign", {"owner": "<script>x</script>"})
            assert status == 422 and "<script>x" not in html
            async with b.session.post(
                server.make_url(f"/console/cases/{ids[1]}/acknowledge"),
                data=b"csrf=" + b.csrf.encode() + b"&note=\xff\xfe",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 400
            assert (await rt.store.get(ids[1])).status == "open"
        finally:
            await b.close()


async def test_incidents_in_the_console(tmp_path: Path, prefix: str) -> None:
    """Three stalled parcels of one carrier open an incident: listed, shown with its members,
    acknowledged and resolved by an operator, each member case's history recording it."""
    people = People(tmp_path / "tokens.toml")
    async with console_server(_settings(prefix, people), CONFIG) as (server, rt):
        now = datetime.now(UTC)
        members = []
        for i in range(3):
            data = exception_data(
                rule="TRACKING_STALLED",
                detected_at=now - timedelta(minutes=10 - i),
                order_id=f"o-8{i:04d}",
                evidence={"carrier": "slowpost", "shipment_id": f"s-8{i}"},
            )
            await rt.service.handle(opened(data), now)
            members.append(data.exception_id)
        found, total = await rt.incidents.query(limit=10)
        assert total == 1
        incident_id = found[0].incident_id
        b = Browser(server)
        try:
            assert (await b.login(people.operator)).status == 303
            status, html, _ = await b.get("/console/incidents")
            assert status == 200 and incident_id in html and "carrier = slowpost" in html
            status, html, _ = await b.get("/console/incidents?status=resolved")
            assert incident_id not in html and "No incidents with status resolved" in html
            status, html, _ = await b.get(f"/console/incidents/{incident_id}")
            assert status == 200 and all(m in html for m in members)
            status, html, _ = await b.get(f"/console/queue?incident={incident_id}")
            assert all(m in html for m in members) and "3 cases match" in html
            await b.get(f"/console/incidents/{incident_id}")
            status, _, resp = await b.post(f"/console/incidents/{incident_id}/acknowledge", {"note": "carrier called"})
            assert status == 303 and resp.headers["Location"].endswith("?done=incident_acknowledged")
            status, _, _ = await b.post(f"/console/incidents/{incident_id}/resolve", {"note": "backlog cleared"})
            assert status == 303
            inc = await rt.incidents.get(incident_id)
            assert (inc.status, inc.acknowledged_by, inc.resolved_by) == ("resolved", "ana", "ana")
            for m in members:
                events = [(h.event, h.who) for h in await rt.store.history(m)]
                assert ("incident_acknowledged", "ana") in events and ("incident_resolved", "ana") in events
            status, html, _ = await b.post(f"/console/incidents/{incident_id}/acknowledge", {})
            assert status == 409
            status, html, _ = await b.get("/console/incidents/no-such-incident")
            assert status == 404
        finally:
            await b.close()
