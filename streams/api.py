"""The ops API: JSON views on the worker's web port for the people who work the cases: cases,
incidents, actions waiting for approval, an order's timeline as the detector sees it, /ready.

Every endpoint but /ready (and /health, /metrics, served by the app) needs
`Authorization: Bearer <token>`; the token's roles decide what it may do (`streams.console.access`):
reads need any role, acknowledge/resolve/assign the operator role, approve/reject the approver
role. No token configured: every such endpoint answers 503. Failed tokens count against the
caller's address like failed console logins. Every response body passes through the privacy
masking; nothing a caller sends is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, cast

from aiokafka.partitioner import murmur2
from faust.web import View

from orderwatch.detectors.catalog import RULES
from orderwatch.detectors.orders import OrderDetector
from orderwatch.errors import CaseNotFound, ConfigError, StoreUnavailable, TransitionError
from orderwatch.handlers.incidents import INCIDENT_STATUSES
from orderwatch.handlers.privacy import mask_evidence, mask_text
from orderwatch.review.service import AnalyticsService, StoreLoader
from orderwatch.schemas.action_command import idempotency_key
from orderwatch.streams.console.access import (
    PERMISSIONS,
    LoginLimiter,
    Principal,
    SessionStore,
    TokenRegistry,
    bearer_token,
    roles_of,
)
from orderwatch.streams.console.ops import (
    FILTER_PARAMS,
    MAX_LIMIT,
    MAX_OFFSET,
    InputError,
    Ops,
    body_name,
    body_note,
    only,
    parse_body,
    parse_filters,
    public_case,
    public_history,
    public_incident,
    public_pending,
    query_choice,
    query_int,
    read_body,
    valid_id,
)

if TYPE_CHECKING:
    from orderwatch.streams.app import Orderwatch
    from orderwatch.streams.handling import HandlerRuntime

__all__ = ["MAX_LIMIT", "install_api", "order_partition", "readiness"]

log = logging.getLogger("orderwatch.api")


def order_partition(order_id: str, partitions: int) -> int:
    """The partition of an order id on the order-keyed topics (Kafka's default murmur2, as every
    client uses; the same as the runtime's `send_forward`)."""
    return int((murmur2(order_id.encode()) & 0x7FFFFFFF) % partitions)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def client_address(request: Any) -> str:
    """The peer address the limiter counts (a proxy in front shares one count: put the limit there too)."""
    return str(getattr(request, "remote", None) or "unknown")


async def authenticate(ops: Ops, request: Any, permission: str) -> Principal:
    """The caller of a bearer-token request, allowed `permission`; else InputError 401/403/429/503."""
    if not ops.tokens.configured:
        raise InputError(
            503,
            "no tokens configured: set ORDERWATCH_VIEWER_TOKEN / OPERATOR_TOKEN / APPROVER_TOKEN, "
            "ORDERWATCH_API_TOKEN or ORDERWATCH_TOKENS_FILE",
        )
    given = bearer_token(request.headers)
    if not given:
        raise InputError(401, "a valid bearer token is required (Authorization: Bearer <token>)")
    client = client_address(request)
    wait = await ops.limiter.retry_after(client)
    if wait is not None:
        raise InputError(
            429, f"too many failed tokens from this address; try again in {wait} s", {"Retry-After": str(wait)}
        )
    principal = ops.tokens.lookup(given)
    if principal is None:
        await ops.limiter.failed(client)
        raise InputError(401, "a valid bearer token is required (Authorization: Bearer <token>)")
    if not principal.can(permission):
        raise InputError(
            403, f"this needs the {PERMISSIONS[permission]} role; this token has {', '.join(sorted(principal.roles))}"
        )
    return principal


class OpsView(View):
    """A view of the ops API. Each app gets its own subclass with `ops` (and `ow`, `rt`) set."""

    label: ClassVar[str] = "?"
    ops: ClassVar[Ops]
    ow: ClassVar[Orderwatch]
    rt: ClassVar[HandlerRuntime]

    async def dispatch(self, request: Any) -> Any:
        try:
            response = await super().dispatch(request)
        except InputError as exc:
            headers = {"WWW-Authenticate": "Bearer", **exc.headers} if exc.status == 401 else exc.headers
            response = self.reply({"error": exc.message}, exc.status, headers or None)
        except CaseNotFound as exc:
            response = self.reply({"error": str(exc)}, 404)
        except TransitionError as exc:
            response = self.reply({"error": str(exc)}, 422)
        except StoreUnavailable as exc:
            response = self.reply({"error": f"the case store cannot be reached right now ({exc})"}, 503)
        self.ow.metrics.api_requests.labels(self.label, str(getattr(response, "status", 0))).inc()
        return response

    def reply(self, body: Mapping[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Any:
        # The last line of defence: personal keys and phone- or email-shaped text are masked
        # in every response, whatever a view put in it.
        raw = json.dumps(mask_evidence(body), default=_default, separators=(",", ":"))
        return self.bytes(raw.encode(), content_type="application/json", status=status, headers=headers)

    async def auth(self, request: Any, permission: str) -> Principal:
        return await authenticate(self.ops, request, permission)

    async def body(self, request: Any, allowed: tuple[str, ...] = ("note",)) -> dict[str, Any]:
        return parse_body(await read_body(request), allowed)


# -- cases -----------------------------------------------------------------------------------------


class CasesView(OpsView):
    async def get(self, request: Any) -> Any:
        await self.auth(request, "read")
        q = request.query
        only(q, (*FILTER_PARAMS, "sort", "limit", "offset"))
        filters = parse_filters(q, default_sort="new")
        limit = query_int(q, "limit", 50, 1, MAX_LIMIT)
        offset = query_int(q, "offset", 0, 0, MAX_OFFSET)
        cases, total = await self.ops.cases(filters, limit, offset)
        counts = await self.ops.store.counts()
        body = {"total": total, "limit": limit, "offset": offset, "counts": dict(counts)}
        return self.reply({**body, "cases": [public_case(c) for c in cases]})


class CaseView(OpsView):
    async def get(self, request: Any, exception_id: str) -> Any:
        await self.auth(request, "read")
        return self.reply(await self.ops.case_detail(valid_id(exception_id, "case")))


class CaseMoveView(OpsView):
    verb: ClassVar[str] = "?"

    async def post(self, request: Any, exception_id: str) -> Any:
        who = (await self.auth(request, "work")).name
        valid_id(exception_id, "case")
        if self.verb == "assign":
            doc = await self.body(request, ("owner", "team", "note"))
            owner, team = body_name(doc, "owner"), body_name(doc, "team")
            changed = await self.ops.assign(exception_id, who, owner=owner, team=team, note=body_note(doc))
            log.info("api: %s assigned case %s (changed: %s)", who, exception_id, changed)
            return self.reply({**await self.ops.case_detail(exception_id), "changed": changed})
        note = body_note(await self.body(request))
        if self.verb == "acknowledge":
            change = await self.ops.acknowledge(exception_id, who, note)
        else:
            change = await self.ops.resolve(exception_id, who, note)
        log.info("api: %s %s case %s", who, change.kind, exception_id)
        detail = await self.ops.case_detail(exception_id)
        detail["change"] = {"kind": change.kind, "status": change.status, "at": change.at, "who": change.who}
        return self.reply(detail)


# -- incidents -------------------------------------------------------------------------------------


class IncidentsView(OpsView):
    async def get(self, request: Any) -> Any:
        await self.auth(request, "read")
        q = request.query
        only(q, ("status", "rule", "limit", "offset"))
        status = query_choice(q, "status", INCIDENT_STATUSES)
        rule = query_choice(q, "rule", list(RULES))
        limit = query_int(q, "limit", 50, 1, MAX_LIMIT)
        offset = query_int(q, "offset", 0, 0, MAX_OFFSET)
        found, total = await self.ops.incidents.query(status=status, rule=rule, limit=limit, offset=offset)
        body = {"total": total, "limit": limit, "offset": offset}
        return self.reply({**body, "incidents": [public_incident(i) for i in found]})


class IncidentView(OpsView):
    async def get(self, request: Any, incident_id: str) -> Any:
        await self.auth(request, "read")
        inc = await self.ops.incidents.get(valid_id(incident_id, "incident"))
        return self.reply({"incident": public_incident(inc), "members": await self.ops.incidents.members(incident_id)})


class IncidentMoveView(OpsView):
    verb: ClassVar[str] = "?"

    async def post(self, request: Any, incident_id: str) -> Any:
        who = (await self.auth(request, "work")).name
        valid_id(incident_id, "incident")
        note = body_note(await self.body(request))
        inc = await self.ops.decide_incident(incident_id, self.verb, who, note)
        log.info("api: %s %sd incident %s", who, self.verb, incident_id)
        return self.reply({"incident": public_incident(inc), "members": await self.ops.incidents.members(incident_id)})


# -- actions ---------------------------------------------------------------------------------------


class PendingActionsView(OpsView):
    async def get(self, request: Any) -> Any:
        await self.auth(request, "read")
        q = request.query
        only(q, ("limit",))
        limit = query_int(q, "limit", 50, 1, MAX_LIMIT)
        pending = await self.ops.dispatcher.pending(limit)
        return self.reply({"actions": [public_pending(p) for p in pending]})


class ActionDecisionView(OpsView):
    verb: ClassVar[str] = "?"

    async def post(self, request: Any, exception_id: str, action: str) -> Any:
        who = (await self.auth(request, "approve")).name
        valid_id(exception_id, "case")
        valid_id(action, "action")
        note = body_note(await self.body(request))
        if self.verb == "approve":
            command = await self.ops.approve(exception_id, action, who)
            log.info("api: %s approved %s", who, idempotency_key(exception_id, action))
            return self.reply({"status": "approved", "command": command.model_dump(mode="json")})
        await self.ops.reject(exception_id, action, who, note)
        log.info("api: %s rejected %s", who, idempotency_key(exception_id, action))
        return self.reply({"status": "rejected", "idempotency_key": idempotency_key(exception_id, action)})


# -- an order as the detector sees it ----------------------------------------------------------------


async def order_timeline(ow: Orderwatch, rt: HandlerRuntime, order_id: str) -> tuple[dict[str, Any], bool]:
    """(the order's timeline, whether this worker owns its detector state)."""
    app, settings, store = ow.app, ow.settings, rt.store
    orders_topic = settings.topic("orders")
    partition = order_partition(order_id, settings.partitions)
    try:
        actives = {(tp.topic, tp.partition) for tp in app.assignor.assigned_actives()}
    except Exception:  # before the first assignment
        actives = set()
    owned = rt.detection and (orders_topic, partition) in actives
    detector = None
    if owned:
        runtime = ow.agents["orders"].runtimes.get(partition)
        if runtime is not None:
            detector = cast(OrderDetector, runtime.detector).describe(order_id)
    cases, _ = await store.query(order_id=order_id, limit=MAX_LIMIT)
    entries: list[dict[str, Any]] = []
    public = []
    for case in sorted(cases, key=lambda c: c.detected_at):
        history = await store.history(case.exception_id)
        public.append({"case": public_case(case), "history": public_history(history)})
        for h in history:
            what = f"case {h.from_status or 'new'} -> {h.to_status}" if h.event == "status" else h.event
            entries.append(
                {
                    "at": h.at.isoformat(),
                    "source": "case",
                    "what": what,
                    "exception_id": case.exception_id,
                    "rule": case.rule,
                    "level": h.level,
                    "who": h.who,
                    "note": mask_text(h.note) if h.note else None,
                }
            )
    if detector is not None:
        if detector["last_event_time"]:
            entries.append({"at": detector["last_event_time"], "source": "detector", "what": "last event"})
        for ex in detector["open_exceptions"]:
            entries.append(
                {
                    "at": ex["detected_at"],
                    "source": "detector",
                    "what": "exception open",
                    "exception_id": ex["exception_id"],
                    "rule": ex["rule"],
                }
            )
        for d in detector["deadlines"]:
            entries.append({"at": d["due"], "source": "detector", "what": "deadline due", "rule": d["rule"]})
    entries.sort(key=lambda e: datetime.fromisoformat(e["at"]))
    body: dict[str, Any] = {
        "order_id": order_id,
        "partition": partition,
        "owned": owned,
        "detector": detector,
        "cases": public,
        "timeline": entries,
    }
    if not owned:
        why = (
            "this worker runs no detector (--handlers-only)"
            if not rt.detection
            else f"partition {partition} of {orders_topic} is owned by another worker"
        )
        body["error"] = f"order {order_id}: {why}; its detector state is there, the cases are here"
        body["owner"] = _owner_url(ow, order_id)
    return body, owned


def _owner_url(ow: Orderwatch, order_id: str) -> str | None:
    try:
        topic = ow.app.topic(ow.settings.topic("orders"))
        url = ow.app.router.external_topic_key_store(topic, order_id.encode())
    except Exception:  # no assignment yet, or a worker that did not advertise its web address
        return None
    return str(url)


class TimelineView(OpsView):
    async def get(self, request: Any, order_id: str) -> Any:
        await self.auth(request, "read")
        body, owned = await order_timeline(self.ow, self.rt, valid_id(order_id, "order"))
        return self.reply(body, 200 if owned else 421)


# -- readiness (open) -------------------------------------------------------------------------------


async def readiness(ow: Orderwatch, rt: HandlerRuntime) -> tuple[list[str], int]:
    """(why this worker is not ready, partitions assigned): every readiness check in one place,
    so a new signal is one more `reasons.append`."""
    reasons = []
    try:
        await rt.redis.ping()
    except Exception as exc:  # whatever the client raises, the answer is "not ready"
        reasons.append(f"redis: no answer to PING ({type(exc).__name__})")
    detector_reasons, assigned = ow.readiness(detection=rt.detection)
    reasons += detector_reasons
    if not rt.started.is_set():
        reasons.append("handlers: not started yet")
    return reasons, assigned


class ReadyView(OpsView):
    async def get(self, request: Any) -> Any:
        reasons, assigned = await readiness(self.ow, self.rt)
        if reasons:
            return self.reply({"status": "not ready", "reasons": reasons}, 503)
        return self.reply({"status": "ready", "partitions": assigned})


# -- analytics ----------------------------------------------------------------------------------


class EpochClock:
    """The handlers' clock (event time in replays) as epoch seconds, for the analytics' default end."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now().timestamp()


class AnalyticsView(OpsView):
    """`GET /analytics/<kind>?period=&end=&by=&bucket=&top=`: one analytic of docs/review.md over
    the case store, reloaded at most once a minute. Any role may read it."""

    analytics: ClassVar[AnalyticsService]

    async def get(self, request: Any, kind: str) -> Any:
        await self.auth(request, "read")
        query = request.query
        repeated = sorted({k for k in query if len(query.getall(k)) > 1})
        if repeated:
            raise InputError(422, f"query parameter {repeated[0][:40]!r}: give it once")
        try:
            return self.reply(await self.analytics.answer(kind[:64], {k: query[k] for k in query}))
        except ConfigError as exc:
            raise InputError(422, str(exc)) from exc


ROUTES: tuple[tuple[str, str, type[OpsView], dict[str, Any]], ...] = (
    ("/cases", "cases", CasesView, {}),
    ("/cases/{exception_id}", "case", CaseView, {}),
    ("/cases/{exception_id}/acknowledge", "case-acknowledge", CaseMoveView, {"verb": "acknowledge"}),
    ("/cases/{exception_id}/resolve", "case-resolve", CaseMoveView, {"verb": "resolve"}),
    ("/cases/{exception_id}/assign", "case-assign", CaseMoveView, {"verb": "assign"}),
    ("/incidents", "incidents", IncidentsView, {}),
    ("/incidents/{incident_id}", "incident", IncidentView, {}),
    ("/incidents/{incident_id}/acknowledge", "incident-acknowledge", IncidentMoveView, {"verb": "acknowledge"}),
    ("/incidents/{incident_id}/resolve", "incident-resolve", IncidentMoveView, {"verb": "resolve"}),
    ("/actions/pending", "actions-pending", PendingActionsView, {}),
    ("/cases/{exception_id}/actions/{action}/approve", "action-approve", ActionDecisionView, {"verb": "approve"}),
    ("/cases/{exception_id}/actions/{action}/reject", "action-reject", ActionDecisionView, {"verb": "reject"}),
    ("/orders/{order_id}/timeline", "order-timeline", TimelineView, {}),
    ("/ready", "ready", ReadyView, {}),
    ("/analytics/{kind}", "analytics", AnalyticsView, {}),
)
"""Path, metric label, view and its settings: the whole API surface."""


def build_ops(ow: Orderwatch, rt: HandlerRuntime) -> Ops:
    settings = ow.settings
    tokens = TokenRegistry(settings)
    log.info("ops API tokens per role: %s", roles_of(tokens.principals()))
    return Ops(
        redis=rt.redis,
        store=rt.store,
        incidents=rt.incidents,
        service=rt.service,
        dispatcher=rt.dispatcher,
        now=rt.now,
        tokens=tokens,
        sessions=SessionStore(rt.redis, settings.redis_prefix, tokens, settings.session_minutes),
        limiter=LoginLimiter(rt.redis, settings.redis_prefix, settings.login_attempts, settings.login_window_seconds),
    )


def install_api(ow: Orderwatch, rt: HandlerRuntime) -> Ops:
    """Register the ops API views and the console on the app's web server; the `Ops` they share."""
    from orderwatch.streams.console.pages import install_console

    ops = build_ops(ow, rt)
    analytics = AnalyticsService(StoreLoader(rt.redis, ow.settings.redis_prefix), clock=EpochClock(rt.now))
    for path, label, view, extra in ROUTES:
        shared = {"label": label, "ops": ops, "ow": ow, "rt": rt, "analytics": analytics}
        bound = type(view.__name__, (view,), {**shared, **extra})
        ow.app.page(path, name=f"orderwatch-{label}")(bound)
    install_console(ow, rt, ops, analytics)
    return ops
