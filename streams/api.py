"""The ops API: JSON views on the worker's web port for the people who work the cases: cases,
incidents, actions waiting for approval, an order's timeline as the detector sees it, /ready.

Every endpoint but /ready (and /health, /metrics, served by the app) needs
`Authorization: Bearer <token>`; the token's roles decide what it may do (`streams.console.access`):
reads need any role, acknowledge/resolve/assign the operator role, approve/reject the approver
role. No token configured: every such endpoint answers 503. Failed tokens count against the
caller's address like failed console logins. Every response body passes through the privacy
masking; nothing a caller sends is logged.

Each view is a module-level `async def view(deps, request, caller) -> Reply` over the `Deps` of
the application (`streams.console.deps`); `ROUTES` lists them with the permission each needs, and
`Endpoint` runs one: authenticate, call, map errors to statuses, mask, count.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from orderwatch.detectors.catalog import RULES
from orderwatch.errors import CaseNotFound, ConfigError, StoreUnavailable, TransitionError
from orderwatch.handlers.incidents import INCIDENT_STATUSES
from orderwatch.handlers.privacy import mask_evidence
from orderwatch.schemas.action_command import idempotency_key
from orderwatch.streams.console.access import PERMISSIONS, Principal, bearer_token
from orderwatch.streams.console.deps import DEPS, Deps
from orderwatch.streams.console.ops import (
    FILTER_PARAMS,
    MAX_LIMIT,
    MAX_OFFSET,
    InputError,
    body_name,
    body_note,
    only,
    parse_body,
    parse_filters,
    public_case,
    public_incident,
    public_pending,
    query_choice,
    query_int,
    read_body,
    valid_id,
)

__all__ = ["MAX_LIMIT", "ROUTES", "Endpoint", "Reply", "Route", "authenticate", "install_api"]

log = logging.getLogger("orderwatch.api")


@dataclass(frozen=True, slots=True)
class Reply:
    """What a view answers: a JSON body (masked on the way out) and its status."""

    body: Mapping[str, Any]
    status: int = 200


View = Callable[[Deps, web.Request, Principal | None], Awaitable[Reply]]
"""(deps, request, caller): the caller is None only on an open route (/ready)."""


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def json_response(body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # The last line of defence: personal keys and phone- or email-shaped text are masked
    # in every response, whatever a view put in it.
    raw = json.dumps(mask_evidence(body), default=_default, separators=(",", ":"))
    return web.Response(body=raw.encode(), content_type="application/json", status=status, headers=headers)


def client_address(request: web.Request) -> str:
    """The peer address the limiter counts (a proxy in front shares one count: put the limit there too)."""
    return str(request.remote or "unknown")


async def authenticate(deps: Deps, request: web.Request, permission: str) -> Principal:
    """The caller of a bearer-token request, allowed `permission`; else InputError 401/403/429/503."""
    if not deps.tokens.configured:
        raise InputError(
            503,
            "no tokens configured: set ORDERWATCH_VIEWER_TOKEN / OPERATOR_TOKEN / APPROVER_TOKEN, "
            "ORDERWATCH_API_TOKEN or ORDERWATCH_TOKENS_FILE",
        )
    given = bearer_token(request.headers)
    if not given:
        raise InputError(401, "a valid bearer token is required (Authorization: Bearer <token>)")
    client = client_address(request)
    wait = await deps.limiter.retry_after(client)
    if wait is not None:
        raise InputError(
            429, f"too many failed tokens from this address; try again in {wait} s", {"Retry-After": str(wait)}
        )
    principal = deps.tokens.lookup(given)
    if principal is None:
        await deps.limiter.failed(client)
        raise InputError(401, "a valid bearer token is required (Authorization: Bearer <token>)")
    if not principal.can(permission):
        raise InputError(
            403, f"this needs the {PERMISSIONS[permission]} role; this token has {', '.join(sorted(principal.roles))}"
        )
    return principal


def _who(caller: Principal | None) -> str:
    if caller is None:  # a route table that forgot a permission: refuse rather than write as nobody
        raise InputError(401, "a valid bearer token is required (Authorization: Bearer <token>)")
    return caller.name


async def _body(request: web.Request, allowed: tuple[str, ...] = ("note",)) -> dict[str, Any]:
    return parse_body(await read_body(request), allowed)


# -- cases -----------------------------------------------------------------------------------------


async def list_cases(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    q = request.query
    only(q, (*FILTER_PARAMS, "sort", "limit", "offset"))
    filters = parse_filters(q, default_sort="new")
    limit = query_int(q, "limit", 50, 1, MAX_LIMIT)
    offset = query_int(q, "offset", 0, 0, MAX_OFFSET)
    cases, total = await deps.ops.cases(filters, limit, offset)
    counts = await deps.ops.store.counts()
    body = {"total": total, "limit": limit, "offset": offset, "counts": dict(counts)}
    return Reply({**body, "cases": [public_case(c) for c in cases]})


async def show_case(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    return Reply(await deps.ops.case_detail(valid_id(request.match_info["exception_id"], "case")))


async def _moved_case(deps: Deps, request: web.Request, caller: Principal | None, verb: str) -> Reply:
    who = _who(caller)
    exception_id = valid_id(request.match_info["exception_id"], "case")
    note = body_note(await _body(request))
    if verb == "acknowledge":
        change = await deps.ops.acknowledge(exception_id, who, note)
    else:
        change = await deps.ops.resolve(exception_id, who, note)
    log.info("api: %s %s case %s", who, change.kind, exception_id)
    detail = await deps.ops.case_detail(exception_id)
    detail["change"] = {"kind": change.kind, "status": change.status, "at": change.at, "who": change.who}
    return Reply(detail)


async def acknowledge_case(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    return await _moved_case(deps, request, caller, "acknowledge")


async def resolve_case(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    return await _moved_case(deps, request, caller, "resolve")


async def assign_case(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    who = _who(caller)
    exception_id = valid_id(request.match_info["exception_id"], "case")
    doc = await _body(request, ("owner", "team", "note"))
    owner, team = body_name(doc, "owner"), body_name(doc, "team")
    changed = await deps.ops.assign(exception_id, who, owner=owner, team=team, note=body_note(doc))
    log.info("api: %s assigned case %s (changed: %s)", who, exception_id, changed)
    return Reply({**await deps.ops.case_detail(exception_id), "changed": changed})


# -- incidents -------------------------------------------------------------------------------------


async def list_incidents(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    q = request.query
    only(q, ("status", "rule", "limit", "offset"))
    status = query_choice(q, "status", INCIDENT_STATUSES)
    rule = query_choice(q, "rule", list(RULES))
    limit = query_int(q, "limit", 50, 1, MAX_LIMIT)
    offset = query_int(q, "offset", 0, 0, MAX_OFFSET)
    found, total = await deps.ops.incidents.query(status=status, rule=rule, limit=limit, offset=offset)
    body = {"total": total, "limit": limit, "offset": offset}
    return Reply({**body, "incidents": [public_incident(i) for i in found]})


async def show_incident(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    incident_id = valid_id(request.match_info["incident_id"], "incident")
    inc = await deps.ops.incidents.get(incident_id)
    return Reply({"incident": public_incident(inc), "members": await deps.ops.incidents.members(incident_id)})


async def _decided_incident(deps: Deps, request: web.Request, caller: Principal | None, verb: str) -> Reply:
    who = _who(caller)
    incident_id = valid_id(request.match_info["incident_id"], "incident")
    note = body_note(await _body(request))
    inc = await deps.ops.decide_incident(incident_id, verb, who, note)
    log.info("api: %s %sd incident %s", who, verb, incident_id)
    return Reply({"incident": public_incident(inc), "members": await deps.ops.incidents.members(incident_id)})


async def acknowledge_incident(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    return await _decided_incident(deps, request, caller, "acknowledge")


async def resolve_incident(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    return await _decided_incident(deps, request, caller, "resolve")


# -- actions ---------------------------------------------------------------------------------------


async def pending_actions(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    q = request.query
    only(q, ("limit",))
    limit = query_int(q, "limit", 50, 1, MAX_LIMIT)
    pending = await deps.ops.dispatcher.pending(limit)
    return Reply({"actions": [public_pending(p) for p in pending]})


def _action_of(request: web.Request) -> tuple[str, str]:
    return valid_id(request.match_info["exception_id"], "case"), valid_id(request.match_info["action"], "action")


async def approve_action(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    who = _who(caller)
    exception_id, action = _action_of(request)
    body_note(await _body(request))  # checked like any write's body; an approval keeps no note
    command = await deps.ops.approve(exception_id, action, who)
    log.info("api: %s approved %s", who, idempotency_key(exception_id, action))
    return Reply({"status": "approved", "command": command.model_dump(mode="json")})


async def reject_action(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    who = _who(caller)
    exception_id, action = _action_of(request)
    note = body_note(await _body(request))
    await deps.ops.reject(exception_id, action, who, note)
    log.info("api: %s rejected %s", who, idempotency_key(exception_id, action))
    return Reply({"status": "rejected", "idempotency_key": idempotency_key(exception_id, action)})


# -- an order as the detector sees it ----------------------------------------------------------------


async def order_timeline(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    """421 (misdirected) when another worker holds the order's detector state: the body says
    which, and carries the cases this worker's store has."""
    place = deps.worker.locate(valid_id(request.match_info["order_id"], "order"))
    return Reply(await deps.ops.order_timeline(place), 200 if place.owned else 421)


# -- readiness (open) -------------------------------------------------------------------------------


async def ready(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    reasons, assigned = await deps.worker.readiness()
    if reasons:
        return Reply({"status": "not ready", "reasons": reasons}, 503)
    return Reply({"status": "ready", "partitions": assigned})


# -- analytics ----------------------------------------------------------------------------------


async def analytics(deps: Deps, request: web.Request, caller: Principal | None) -> Reply:
    """`GET /analytics/<kind>?period=&end=&by=&bucket=&top=`: one analytic of docs/review.md over
    the case store, reloaded at most once a minute. Any role may read it."""
    query = request.query
    repeated = sorted({k for k in query if len(query.getall(k)) > 1})
    if repeated:
        raise InputError(422, f"query parameter {repeated[0][:40]!r}: give it once")
    if deps.analytics is None:
        raise InputError(503, "analytics are not enabled on this worker")
    try:
        return Reply(await deps.analytics.answer(request.match_info["kind"][:64], {k: query[k] for k in query}))
    except ConfigError as exc:
        raise InputError(422, str(exc)) from exc


# -- the surface ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: path, method, the metric label (`orderwatch_api_requests_total{view}`), the
    view, and the permission it needs (None: open)."""

    path: str
    method: str
    label: str
    view: View = field(repr=False)
    permission: str | None = "read"


ROUTES: tuple[Route, ...] = (
    Route("/cases", "GET", "cases", list_cases),
    Route("/cases/{exception_id}", "GET", "case", show_case),
    Route("/cases/{exception_id}/acknowledge", "POST", "case-acknowledge", acknowledge_case, "work"),
    Route("/cases/{exception_id}/resolve", "POST", "case-resolve", resolve_case, "work"),
    Route("/cases/{exception_id}/assign", "POST", "case-assign", assign_case, "work"),
    Route("/incidents", "GET", "incidents", list_incidents),
    Route("/incidents/{incident_id}", "GET", "incident", show_incident),
    Route("/incidents/{incident_id}/acknowledge", "POST", "incident-acknowledge", acknowledge_incident, "work"),
    Route("/incidents/{incident_id}/resolve", "POST", "incident-resolve", resolve_incident, "work"),
    Route("/actions/pending", "GET", "actions-pending", pending_actions),
    Route("/cases/{exception_id}/actions/{action}/approve", "POST", "action-approve", approve_action, "approve"),
    Route("/cases/{exception_id}/actions/{action}/reject", "POST", "action-reject", reject_action, "approve"),
    Route("/orders/{order_id}/timeline", "GET", "order-timeline", order_timeline),
    Route("/ready", "GET", "ready", ready, None),
    Route("/analytics/{kind}", "GET", "analytics", analytics),
)
"""The whole API surface."""


class Endpoint:
    """The aiohttp handler of one route: authenticate (unless open), run the view with the
    application's `Deps`, turn refusals into their status, mask the body, count the request."""

    def __init__(self, route: Route) -> None:
        self.route = route

    async def handle(self, request: web.Request) -> web.Response:
        deps = request.app[DEPS]
        route = self.route
        try:
            caller = None if route.permission is None else await authenticate(deps, request, route.permission)
            reply = await route.view(deps, request, caller)
            response = json_response(reply.body, reply.status)
        except InputError as exc:
            headers = {"WWW-Authenticate": "Bearer", **exc.headers} if exc.status == 401 else exc.headers
            response = json_response({"error": exc.message}, exc.status, headers or None)
        except CaseNotFound as exc:
            response = json_response({"error": str(exc)}, 404)
        except TransitionError as exc:
            response = json_response({"error": str(exc)}, 422)
        except StoreUnavailable as exc:
            response = json_response({"error": f"the case store cannot be reached right now ({exc})"}, 503)
        deps.metrics.api_requests.labels(route.label, str(response.status)).inc()
        return response


def install_api(web_app: web.Application, deps: Deps) -> None:
    """Register the ops API on an aiohttp application and attach `deps` to it (once)."""
    if DEPS not in web_app:
        web_app[DEPS] = deps
    for route in ROUTES:
        if route.method == "GET":
            web_app.router.add_get(route.path, Endpoint(route).handle)
        else:
            web_app.router.add_route(route.method, route.path, Endpoint(route).handle)
