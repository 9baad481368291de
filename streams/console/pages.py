"""The console's pages under `/console` on the worker's web port: log in with a token, then the
queue, a case, an order, incidents and approvals, server-rendered (Jinja2, autoescaped) with a
little script of our own for refresh and local times. No asset from anywhere else.

Adding a page: write a handler `async def my_page(console, request, session, form) -> web.Response`
that renders a template extending `base.html`, and add a `Page` to `PAGES` (with `nav` set, it
shows in the navigation). `Guarded` handles the session, the role and the CSRF check. A page reads
what it needs from `console.deps` (`streams.console.deps.Deps`, shared with the ops API).
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from orderwatch.detectors.catalog import RULES
from orderwatch.errors import CaseNotFound, StoreUnavailable, TransitionError
from orderwatch.handlers.actions import candidate_actions
from orderwatch.handlers.cases import ALLOWED_FROM, STATUSES
from orderwatch.handlers.incidents import INCIDENT_STATUSES
from orderwatch.handlers.privacy import mask_evidence, mask_text
from orderwatch.review.analytics import Period
from orderwatch.review.report import build_report, render_body
from orderwatch.schemas.exception_event import SEVERITIES
from orderwatch.streams.console.access import PERMISSIONS, Session
from orderwatch.streams.console.deps import DEPS, Deps
from orderwatch.streams.console.ops import (
    CATEGORIES,
    MAX_BODY,
    MAX_OFFSET,
    CaseFilters,
    InputError,
    body_name,
    body_note,
    only,
    parse_filters,
    public_case,
    public_history,
    public_incident,
    public_pending,
    query_choice,
    query_int,
    read_body,
    rule_meaning,
    valid_id,
)

__all__ = ["NAV", "PAGES", "Console", "Guarded", "Page", "install_console"]

log = logging.getLogger("orderwatch.console")

HERE = Path(__file__).parent
SESSION_COOKIE = "ow_session"
LOGIN_COOKIE = "ow_login"
PAGE_SIZE = 50
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
DONE_MESSAGES = {
    "acknowledged": "Case acknowledged.",
    "resolved": "Case resolved.",
    "assigned": "Assignment saved.",
    "unchanged": "Nothing changed: that is already the owner and team.",
    "approved": "Action approved and its command sent.",
    "rejected": "Action rejected: it will not be sent.",
    "incident_acknowledged": "Incident acknowledged.",
    "incident_resolved": "Incident resolved.",
    "logged_out": "You are logged out.",
}
"""The only messages a redirect may show (`?done=<key>`): nothing from the URL is echoed."""

Handler = Callable[["Console", web.Request, Session, Mapping[str, str]], Awaitable[web.StreamResponse]]
"""(console, request, session, form): `form` is the POSTed form, CSRF-checked (empty for a GET)."""


@dataclass(frozen=True, slots=True)
class Page:
    """A console route: its path (under /console), the method, the handler, the permission it
    needs (read, work, approve) and, for a page in the navigation, its title."""

    path: str
    method: str
    handler: Handler
    permission: str = "read"
    nav: str | None = None


def _clock_class(delta: timedelta, status: str) -> tuple[str, str]:
    """(css class, text) of the time left before handle_by."""
    if status == "resolved":
        return "done", "resolved"
    seconds = delta.total_seconds()
    text = _span(abs(seconds))
    if seconds < 0:
        return "breached", f"breached {text} ago"
    if seconds <= 3600:
        return "soon", f"{text} left"
    if seconds <= 4 * 3600:
        return "today", f"{text} left"
    return "later", f"{text} left"


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def see_other(location: str) -> web.Response:
    """303 to a path of this console (after a POST, so that reload does not post again)."""
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location})


def _safe_next(raw: str | None) -> str:
    """A post-login destination inside the console only (no open redirect)."""
    if raw and raw.startswith("/console/") and not raw.startswith("//") and "\\" not in raw and len(raw) < 2000:
        return raw
    return "/console/queue"


class Console:
    """The console of one worker: its templates and the dependencies its pages read (`deps`)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M UTC") if d else ""
        self.env.filters["iso"] = lambda d: d.isoformat() if d else ""
        self.env.filters["pretty"] = _pretty
        self.env.filters["masked"] = mask_text

    # -- responses -------------------------------------------------------------------------------

    def render(
        self, request: web.Request, template: str, session: Session | None, code: int = 200, **context: Any
    ) -> web.Response:
        done = request.query.get("done")
        html = self.env.get_template(template).render(
            nav=NAV,
            path=request.path,
            session=session,
            user=session.principal if session else None,
            notice=DONE_MESSAGES.get(done or ""),
            clock=self.deps.ops.now(),
            **context,
        )
        return web.Response(text=html, content_type="text/html", status=code, headers=SECURITY_HEADERS)

    def error(self, request: web.Request, session: Session | None, status: int, message: str) -> web.Response:
        return self.render(request, "error.html", session, status, message=message, status=status)

    def secure(self, request: web.Request) -> bool:
        mode = self.deps.settings.cookie_secure
        if mode != "auto":
            return mode == "always"
        return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"

    # -- login and logout (outside the guard) ----------------------------------------------------

    async def login_form(self, request: web.Request, status: int = 200, message: str | None = None) -> web.Response:
        nonce = secrets.token_urlsafe(24)
        response = self.render(
            request,
            "login.html",
            None,
            status,
            nonce=nonce,
            next=_safe_next(request.query.get("next")),
            message=message,
        )
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            httponly=True,
            samesite="Strict",
            secure=self.secure(request),
            path="/console/login",
            max_age=3600,
        )
        return response

    async def login_get(self, request: web.Request) -> web.StreamResponse:
        return await self.login_form(request)

    async def login_post(self, request: web.Request) -> web.StreamResponse:
        try:
            form = await read_form(request)
        except InputError as exc:
            return await self.login_form(request, exc.status, exc.message)
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not hmac.compare_digest(form.get("csrf", "").encode(), cookie.encode()):
            return await self.login_form(request, 403, "The login form expired (no valid CSRF token). Try again.")
        client = str(request.remote or "unknown")
        try:
            wait = await self.deps.limiter.retry_after(client)
            if wait is not None:
                refused = await self.login_form(
                    request, 429, f"Too many failed logins from here. Try again in {wait} s."
                )
                refused.headers["Retry-After"] = str(wait)
                return refused
            principal = self.deps.tokens.lookup(form.get("token", "").strip())
            if principal is None:
                await self.deps.limiter.failed(client)
                log.info("console: a failed login")
                return await self.login_form(request, 401, "That token is not valid. Check it and try again.")
            sid, _ = await self.deps.sessions.create(principal)
        except StoreUnavailable:
            return await self.login_form(
                request, 503, "The session store (Redis) cannot be reached. Try again shortly."
            )
        log.info("console: %s logged in", principal.name)
        response = see_other(_safe_next(form.get("next")))
        response.set_cookie(
            SESSION_COOKIE,
            sid,
            httponly=True,
            samesite="Strict",
            secure=self.secure(request),
            path="/console",
            max_age=int(self.deps.settings.session_minutes * 60),
        )
        response.del_cookie(LOGIN_COOKIE, path="/console/login")
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        sid = request.cookies.get(SESSION_COOKIE)
        try:
            session = await self.deps.sessions.get(sid)
            form = await read_form(request)
            if session is not None and hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
                await self.deps.sessions.delete(sid)
            elif session is not None:
                return self.error(
                    request, session, 403, "This form has expired (no valid CSRF token). Reload the page and try again."
                )
        except (StoreUnavailable, InputError):
            return self.error(request, None, 503, "The session store (Redis) cannot be reached. Try again shortly.")
        response = see_other("/console/login?done=logged_out")
        response.del_cookie(SESSION_COOKIE, path="/console")
        return response

    async def root(self, request: web.Request) -> web.StreamResponse:
        return see_other("/console/queue")


class Guarded:
    """The aiohttp handler of one page behind the login: the session, the page's role and, for
    a POST, the CSRF token are checked before the page runs; its refusals become error pages."""

    def __init__(self, console: Console, page: Page) -> None:
        self.console = console
        self.page = page

    async def handle(self, request: web.Request) -> web.StreamResponse:
        console, page = self.console, self.page
        try:
            session = await console.deps.sessions.get(request.cookies.get(SESSION_COOKIE))
        except StoreUnavailable:
            return console.error(request, None, 503, "The session store (Redis) cannot be reached. Try again shortly.")
        if session is None:
            if page.method == "POST":
                return console.error(
                    request, None, 401, "Your session has ended. Log in again, then repeat the change."
                )
            return see_other("/console/login?" + urlencode({"next": request.path_qs}))
        if not session.principal.can(page.permission):
            need = PERMISSIONS[page.permission]
            return console.error(request, session, 403, f"This needs the {need} role. Ask for a token with it.")
        form: dict[str, str] = {}
        if page.method == "POST":
            try:
                form = await read_form(request)
            except InputError as exc:
                return console.error(request, session, exc.status, exc.message)
            if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
                return console.error(
                    request,
                    session,
                    403,
                    "This form has expired (no valid CSRF token). Reload the page and try again.",
                )
        try:
            return await page.handler(console, request, session, form)
        except InputError as exc:
            return console.error(request, session, exc.status, exc.message)
        except CaseNotFound as exc:
            return console.error(request, session, 404, f"{exc}. It may have been removed; go back to the queue.")
        except TransitionError as exc:
            return console.error(
                request, session, 409, f"{exc}. Someone may have changed it meanwhile; reload the page."
            )
        except StoreUnavailable:
            return console.error(
                request, session, 503, "The case store (Redis) cannot be reached right now. Try again shortly."
            )


async def read_form(request: web.Request) -> dict[str, str]:
    """A urlencoded form, bounded in size and fields; the last value of a repeated field."""
    raw = await read_body(request, f"The form is too large (at most {MAX_BODY} bytes).")
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(400, "The form could not be read. Reload the page and try again.") from exc


# -- pages ---------------------------------------------------------------------------------------


def _queue_row(case: Any, now: datetime) -> dict[str, Any]:
    doc = public_case(case)
    css, left = _clock_class(case.handle_by - now, case.status)
    return {**doc, "clock_class": css, "time_left": left, "handle_by_at": case.handle_by}


async def queue(
    console: Console, request: web.Request, session: Session, form: Mapping[str, str]
) -> web.StreamResponse:
    q = request.query
    filters = parse_filters(q, default_sort="due", default_status="unresolved")
    offset = query_int(q, "offset", 0, 0, MAX_OFFSET)
    cases, total = await console.deps.ops.cases(filters, PAGE_SIZE, offset)
    counts = await console.deps.ops.store.counts()
    now = console.deps.ops.now()
    base = filters.as_query()
    return console.render(
        request,
        "queue.html",
        session,
        filters=filters,
        rows=[_queue_row(c, now) for c in cases],
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        counts=counts,
        statuses=STATUSES,
        severities=SEVERITIES,
        categories=CATEGORIES,
        rules=sorted(RULES),
        prev_url=("?" + urlencode({**base, "offset": max(0, offset - PAGE_SIZE)})) if offset else None,
        next_url=("?" + urlencode({**base, "offset": offset + PAGE_SIZE})) if offset + PAGE_SIZE < total else None,
        status_url=lambda s: "?" + urlencode({**{k: v for k, v in base.items() if k != "status"}, "status": s}),
        active=base != {"status": "unresolved"},
    )


async def case_page(
    console: Console, request: web.Request, session: Session, form: Mapping[str, str]
) -> web.StreamResponse:
    exception_id = valid_id(request.match_info["exception_id"], "case")
    ops = console.deps.ops
    case = await ops.store.get(exception_id)
    history = await ops.store.history(exception_id)
    now = ops.now()
    css, left = _clock_class(case.handle_by - now, case.status)
    actions = []
    for code in candidate_actions(case.to_data()):
        state = await ops.redis.hget(ops.dispatcher.action_key(exception_id, code), "state")
        actions.append({"code": code, "state": state.decode() if isinstance(state, bytes) else state})
    doc = public_case(case)
    return console.render(
        request,
        "case.html",
        session,
        case=doc,
        evidence=mask_evidence(case.evidence),
        history=public_history(history),
        rule=rule_meaning(case.rule),
        actions=actions,
        clock_class=css,
        time_left=left,
        handle_by=case.handle_by,
        detected_at=case.detected_at,
        can_acknowledge=case.status in ALLOWED_FROM["acknowledged"],
        can_resolve=case.status in ALLOWED_FROM["resolved"],
    )


def _case_url(exception_id: str, done: str) -> str:
    return f"/console/cases/{exception_id}?done={done}"


async def case_write(
    console: Console, request: web.Request, session: Session, form: Mapping[str, str]
) -> web.StreamResponse:
    exception_id = valid_id(request.match_info["exception_id"], "case")
    verb = request.match_info["verb"]
    who = session.principal.name
    note = body_note({"note": form.get("note", "")})
    if verb == "acknowledge":
        await console.deps.ops.acknowledge(exception_id, who, note)
        done = "acknowledged"
    elif verb == "resolve":
        await console.deps.ops.resolve(exception_id, who, note)
        done = "resolved"
    elif verb == "assign":
        owner = body_name({"owner": form.get("owner", "").strip()}, "owner")
        team = body_name({"team": form.get("team", "").strip()}, "team")
        changed = await console.deps.ops.assign(exception_id, who, owner=owner, team=team, note=note)
        done = "assigned" if changed else "unchanged"
    else:
        raise InputError(404, "No such change.")
    log.info("console: %s %s case %s", who, verb, exception_id)
    return see_other(_case_url(exception_id, done))


async def action_write(
    console: Console, request: web.Request, session: Session, form: Mapping[str, str]
) -> web.StreamResponse:
    exception_id = valid_id(request.match_info["exception_id"], "case")
    action = valid_id(request.match_info["action"], "action")
    verb = request.match_info["verb"]
    who = session.principal.name
    if verb == "approve":
        await console.deps.ops.approve(exception_id, action, who)
        done = "approved"
    elif verb == "reject":
        await console.deps.ops.reject(exception_id, action, who, body_note({"note": form.get("note", "")}))
        done = "rejected"
    else:
        raise InputError(404, "No such decision.")
    log.info("console: %s %sd action %s of %s", who, verb, action, exception_id)
    if form.get("back") == "approvals":
        return see_other(f"/console/approvals?done={done}")
    return see_other(_case_url(exception_id, done))


async def order_page(
    console: Console, request: web.Request, session: Session, form: Mapping[str, str]
) -> web.StreamResponse:
    deps = console.deps
    place = deps.worker.locate(valid_id(request.match_info["order_id"], "order"))
    body = await deps.ops.order_timeline(place)
    for entry in body["timeline"]:
        entry["at_time"] = datetime.fromisoformat(entry["at"])
    return console.render(request, "order.html", session, order=body, owned=place.owned)


async def incidents_page(
    console: Console, request: web.Request, session: Session, form: Mapping[str, str]
) -> web.StreamResponse:
    q = request.query
    status = query_choice(q, "status", INCIDENT_STATUSES)
    offset = query_int(q, "offset", 0, 0, MAX_OFFSET)
    found, total = await console.deps.ops.incidents.query(status=status, limit=PAGE_SIZE, offset=offset)
    return console.render(
        request,
        "incidents.html",
        session,
        incidents=[public_incident(i) for i in found],
        total=total,
        status=status,
        statuses=INCIDENT_STATUSES,
        offset=offset,
        page_size=PAGE_SIZE,
    )


async def incident_page(
    console: Console, request: web.Request, session: Session, form: Mapping[str, str]
) -> web.StreamResponse:
    incident_id = valid_id(request.match_info["incident_id"], "incident")
    inc = await console.deps.ops.incidents.get(incident_id)
    members = await console.deps.ops.incidents.members(incident_id)
    cases, _ = await console.deps.ops.cases(CaseFilters(incident=incident_id, sort="due"), 200, 0)
    now = console.deps.ops.now()
    return console.render(
        request,
        "incident.html",
        session,
        incident=public_incident(inc),
        members=members,
        rows=[_queue_row(c, now) for c in cases],
    )


async def incident_write(
    console: Console, request: web.Request, session: Session, form: Mapping[str, str]
) -> web.StreamResponse:
    incident_id = valid_id(request.match_info["incident_id"], "incident")
    verb = request.match_info["verb"]
    if verb not in ("acknowledge", "resolve"):
        raise InputError(404, "No such change.")
    who = session.principal.name
    await console.deps.ops.decide_incident(incident_id, verb, who, body_note({"note": form.get("note", "")}))
    log.info("console: %s %sd incident %s", who, verb, incident_id)
    done = "incident_acknowledged" if verb == "acknowledge" else "incident_resolved"
    return see_other(f"/console/incidents/{incident_id}?done={done}")


ANALYTICS_PERIODS = {"1d": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}


async def analytics_page(
    console: Console, request: web.Request, session: Session, form: Mapping[str, str]
) -> web.StreamResponse:
    """The review of a period against the previous one (docs/review.md), with its charts: the
    same figures as `orderwatch report` and `/analytics/...`, over the live case store."""
    analytics = console.deps.analytics
    if analytics is None:
        return console.error(request, session, 503, "Analytics are not enabled on this worker.")
    only(request.query, ("period",))
    period_name = query_choice(request.query, "period", list(ANALYTICS_PERIODS)) or "7d"
    an, loaded_at = await analytics.analytics()
    end = console.deps.ops.now().timestamp()
    report = build_report(an, Period(end - ANALYTICS_PERIODS[period_name], end), title="Analytics")
    return console.render(
        request,
        "analytics.html",
        session,
        periods=list(ANALYTICS_PERIODS),
        period=period_name,
        loaded_at=datetime.fromtimestamp(loaded_at, UTC),
        # Built by orderwatch.review.report, which escapes every value it writes.
        body=Markup(render_body(report)),
    )


async def approvals_page(
    console: Console, request: web.Request, session: Session, form: Mapping[str, str]
) -> web.StreamResponse:
    pending = await console.deps.ops.dispatcher.pending(200)
    return console.render(request, "approvals.html", session, pending=[public_pending(p) for p in pending])


PAGES: list[Page] = [
    Page("/console/queue", "GET", queue, nav="Queue"),
    Page("/console/approvals", "GET", approvals_page, nav="Approvals"),
    Page("/console/incidents", "GET", incidents_page, nav="Incidents"),
    Page("/console/analytics", "GET", analytics_page, nav="Analytics"),
    Page("/console/cases/{exception_id}", "GET", case_page),
    Page("/console/cases/{exception_id}/{verb:acknowledge|resolve|assign}", "POST", case_write, "work"),
    Page("/console/cases/{exception_id}/actions/{action}/{verb:approve|reject}", "POST", action_write, "approve"),
    Page("/console/orders/{order_id}", "GET", order_page),
    Page("/console/incidents/{incident_id}", "GET", incident_page),
    Page("/console/incidents/{incident_id}/{verb:acknowledge|resolve}", "POST", incident_write, "work"),
]
"""Every console page behind the login. A page with `nav` shows in the navigation, in this order."""

NAV: list[Page] = PAGES
"""What the base template walks for its navigation (the pages with a `nav` title)."""


def install_console(web_app: web.Application, deps: Deps) -> Console:
    """Register the console's routes and its static files on an aiohttp application, with `deps`
    attached to it (once)."""
    if DEPS not in web_app:
        web_app[DEPS] = deps
    console = Console(deps)
    router = web_app.router
    router.add_get("/console", console.root)
    router.add_get("/console/", console.root)
    router.add_get("/console/login", console.login_get)
    router.add_post("/console/login", console.login_post)
    router.add_post("/console/logout", console.logout)
    for page in PAGES:
        router.add_route(page.method, page.path, Guarded(console, page).handle)
    router.add_static("/console/static", HERE / "static")
    return console
