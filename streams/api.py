"""The ops API: faust web views on the worker's web port (JSON) for the people who work the cases:
cases, incidents, actions waiting for approval, an order's timeline as the detector sees it, /ready.

Reads need no token; every POST needs `Authorization: Bearer <ORDERWATCH_API_TOKEN>` and is refused
(503) while no token is configured. Every response body passes through the privacy masking.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, cast

from aiokafka.partitioner import murmur2
from faust.web import View

from detectors.catalog import RULES
from detectors.orders import OrderDetector
from handlers.actions import candidate_actions
from handlers.cases import STATUSES, Case, HistoryEntry
from handlers.incidents import INCIDENT_STATUSES, Incident
from handlers.privacy import mask_evidence, mask_summary, mask_text
from orderwatch.errors import CaseNotFound, DeliveryError, StoreUnavailable, TransitionError
from schemas.action_command import idempotency_key
from schemas.exception_event import SEVERITIES

if TYPE_CHECKING:
    from streams.app import Orderwatch
    from streams.handling import HandlerRuntime

__all__ = ["MAX_LIMIT", "install_api", "order_partition"]

log = logging.getLogger("orderwatch.api")

MAX_LIMIT = 500
MAX_NOTE = 2000
MAX_WHO = 100


class ApiError(Exception):
    """A request the API refuses: the status and a message for the caller."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


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


def _public_case(case: Case) -> dict[str, Any]:
    doc = case.to_dict()
    doc["evidence"] = mask_evidence(case.evidence)
    doc["summary"] = mask_summary(case.summary, case.evidence)
    return doc


def _public_history(entries: list[HistoryEntry]) -> list[dict[str, Any]]:
    return [{**h.to_dict(), "note": mask_text(h.note) if h.note else None} for h in entries]


def _query_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(422, f"query parameter {name}: expected an integer from {low} to {high}, got {raw!r}")
    return int(raw)


def _query_choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...] | list[str]) -> str | None:
    raw = query.get(name)
    if raw is None:
        return None
    if raw not in allowed:
        raise ApiError(422, f"query parameter {name}: expected one of {', '.join(allowed)}, got {raw!r}")
    return raw


def _only(query: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    for name in query:
        if name not in allowed:
            raise ApiError(422, f"query parameter {name}: unknown, expected one of {', '.join(allowed)}")


def install_api(ow: Orderwatch, rt: HandlerRuntime) -> None:
    """Register the ops API views on the app's web server."""
    app, settings, metrics = ow.app, ow.settings, ow.metrics
    store, incidents, service = rt.store, rt.incidents, rt.service

    class _View(View):
        label: ClassVar[str] = "?"

        async def dispatch(self, request: Any) -> Any:
            try:
                response = await super().dispatch(request)
            except ApiError as exc:
                response = self.reply({"error": exc.message, **exc.extra}, exc.status)
            except CaseNotFound as exc:
                response = self.reply({"error": str(exc)}, 404)
            except TransitionError as exc:
                response = self.reply({"error": str(exc)}, 422)
            except StoreUnavailable as exc:
                response = self.reply({"error": f"the case store cannot be reached right now ({exc})"}, 503)
            metrics.api_requests.labels(self.label, str(getattr(response, "status", 0))).inc()
            return response

        def reply(self, body: Mapping[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Any:
            # The last line of defence: personal keys and phone- or email-shaped text are masked
            # in every response, whatever a view put in it.
            raw = json.dumps(mask_evidence(body), default=_default, separators=(",", ":"))
            return self.bytes(raw.encode(), content_type="application/json", status=status, headers=headers)

        def authorize(self, request: Any) -> None:
            token = settings.api_token
            if token is None or not token.get_secret_value():
                raise ApiError(503, "api_token not configured: set ORDERWATCH_API_TOKEN to enable write endpoints")
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            expected = token.get_secret_value().encode()
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
                raise ApiError(401, "a valid bearer token is required (Authorization: Bearer <token>)")

        async def body(self, request: Any) -> tuple[str | None, str]:
            """(note, who) of a POST body `{"note": ..., "who": ...}` (both optional)."""
            raw = await request.read()
            doc: Any = {}
            if raw.strip():
                try:
                    doc = json.loads(raw)
                except ValueError as exc:
                    raise ApiError(422, 'body: expected a JSON object like {"note": "...", "who": "..."}') from exc
            if not isinstance(doc, dict):
                raise ApiError(422, 'body: expected a JSON object like {"note": "...", "who": "..."}')
            note, who = doc.get("note"), doc.get("who", "api")
            if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
                raise ApiError(422, f"body note: expected a string of at most {MAX_NOTE} characters")
            if not isinstance(who, str) or not 1 <= len(who.strip()) <= MAX_WHO:
                raise ApiError(422, f"body who: expected a non-empty string of at most {MAX_WHO} characters")
            return note, who.strip()

    def page(path: str, label: str) -> Any:
        def register(cls: type[_View]) -> type[_View]:
            cls.label = label
            app.page(path, name=f"orderwatch-{label}")(cls)
            return cls

        return register

    async def case_detail(exception_id: str) -> dict[str, Any]:
        case = await store.get(exception_id)
        history = await store.history(exception_id)
        actions = {}
        for code in candidate_actions(case.to_data()):
            state = await rt.redis.hget(rt.dispatcher.action_key(exception_id, code), "state")
            actions[code] = state.decode() if isinstance(state, bytes) else state
        return {"case": _public_case(case), "history": _public_history(history), "actions": actions}

    # -- cases ---------------------------------------------------------------------------------

    @page("/cases", "cases")
    class Cases(_View):
        async def get(self, request: Any) -> Any:
            q = request.query
            _only(q, ("status", "severity", "rule", "order_id", "limit", "offset"))
            status = _query_choice(q, "status", STATUSES)
            severity = _query_choice(q, "severity", SEVERITIES)
            rule = _query_choice(q, "rule", list(RULES))
            order_id = q.get("order_id")
            if order_id is not None and not order_id:
                raise ApiError(422, "query parameter order_id: expected an order id, got ''")
            limit = _query_int(q, "limit", 50, 1, MAX_LIMIT)
            offset = _query_int(q, "offset", 0, 0, 10**9)
            cases, total = await store.query(
                status=status, severity=severity, rule=rule, order_id=order_id, limit=limit, offset=offset
            )
            counts = await store.counts()
            return self.reply(
                {
                    "total": total,
                    "limit": limit,
                    "offset": offset,
                    "counts": dict(counts),
                    "cases": [_public_case(c) for c in cases],
                }
            )

    @page("/cases/{exception_id}", "case")
    class CaseView(_View):
        async def get(self, request: Any, exception_id: str) -> Any:
            return self.reply(await case_detail(exception_id))

    def case_move(verb: str) -> type[_View]:
        class Move(_View):
            async def post(self, request: Any, exception_id: str) -> Any:
                self.authorize(request)
                note, who = await self.body(request)
                if verb == "acknowledge":
                    change = await service.acknowledge(exception_id, who, note)
                else:
                    change = await service.resolve(exception_id, who, note)
                log.info("api: %s %s case %s", who, change.kind, exception_id)
                detail = await case_detail(exception_id)
                detail["change"] = {"kind": change.kind, "status": change.status, "at": change.at, "who": change.who}
                return self.reply(detail)

        Move.__name__ = Move.__qualname__ = f"Case{verb.title()}"
        return Move

    page("/cases/{exception_id}/acknowledge", "case-acknowledge")(case_move("acknowledge"))
    page("/cases/{exception_id}/resolve", "case-resolve")(case_move("resolve"))

    # -- incidents -----------------------------------------------------------------------------

    def public_incident(inc: Incident) -> dict[str, Any]:
        doc = inc.to_dict()
        doc["note"] = mask_text(inc.note) if inc.note else None
        return doc

    @page("/incidents", "incidents")
    class Incidents(_View):
        async def get(self, request: Any) -> Any:
            q = request.query
            _only(q, ("status", "rule", "limit", "offset"))
            status = _query_choice(q, "status", INCIDENT_STATUSES)
            rule = _query_choice(q, "rule", list(RULES))
            limit = _query_int(q, "limit", 50, 1, MAX_LIMIT)
            offset = _query_int(q, "offset", 0, 0, 10**9)
            found, total = await incidents.query(status=status, rule=rule, limit=limit, offset=offset)
            return self.reply(
                {"total": total, "limit": limit, "offset": offset, "incidents": [public_incident(i) for i in found]}
            )

    @page("/incidents/{incident_id}", "incident")
    class IncidentView(_View):
        async def get(self, request: Any, incident_id: str) -> Any:
            inc = await incidents.get(incident_id)
            return self.reply({"incident": public_incident(inc), "members": await incidents.members(incident_id)})

    def incident_move(verb: str) -> type[_View]:
        class Move(_View):
            async def post(self, request: Any, incident_id: str) -> Any:
                self.authorize(request)
                note, who = await self.body(request)
                now = rt.now()
                if verb == "acknowledge":
                    inc = await incidents.acknowledge(incident_id, who, note, now)
                else:
                    inc = await incidents.resolve(incident_id, who, note, now)
                log.info("api: %s %sd incident %s", who, verb, incident_id)
                return self.reply({"incident": public_incident(inc), "members": await incidents.members(incident_id)})

        Move.__name__ = Move.__qualname__ = f"Incident{verb.title()}"
        return Move

    page("/incidents/{incident_id}/acknowledge", "incident-acknowledge")(incident_move("acknowledge"))
    page("/incidents/{incident_id}/resolve", "incident-resolve")(incident_move("resolve"))

    # -- actions -------------------------------------------------------------------------------

    @page("/actions/pending", "actions-pending")
    class PendingActions(_View):
        async def get(self, request: Any) -> Any:
            q = request.query
            _only(q, ("limit",))
            limit = _query_int(q, "limit", 50, 1, MAX_LIMIT)
            pending = await rt.dispatcher.pending(limit)
            return self.reply(
                {
                    "actions": [
                        {
                            "idempotency_key": p.idempotency_key,
                            "exception_id": p.exception_id,
                            "action": p.action,
                            "rule": p.rule,
                            "order_id": p.order_id,
                            "reason": p.reason,
                            "requested_at": p.requested_at,
                            "amount": p.amount,
                            "params": p.command.data.params.model_dump(mode="json", exclude_none=True),
                        }
                        for p in pending
                    ]
                }
            )

    def action_decision(verb: str) -> type[_View]:
        class Decide(_View):
            async def post(self, request: Any, exception_id: str, action: str) -> Any:
                self.authorize(request)
                note, who = await self.body(request)
                if verb == "approve":
                    try:
                        command = await rt.dispatcher.approve(exception_id, action, who)
                    except DeliveryError as exc:
                        raise ApiError(502, f"{exc}; approve again to retry") from exc
                    log.info("api: %s approved %s", who, idempotency_key(exception_id, action))
                    return self.reply({"status": "approved", "command": command.model_dump(mode="json")})
                await rt.dispatcher.reject(exception_id, action, who, note)
                log.info("api: %s rejected %s", who, idempotency_key(exception_id, action))
                return self.reply({"status": "rejected", "idempotency_key": idempotency_key(exception_id, action)})

        Decide.__name__ = Decide.__qualname__ = f"Action{verb.title()}"
        return Decide

    page("/cases/{exception_id}/actions/{action}/approve", "action-approve")(action_decision("approve"))
    page("/cases/{exception_id}/actions/{action}/reject", "action-reject")(action_decision("reject"))

    # -- an order as the detector sees it --------------------------------------------------------

    orders_topic = settings.topic("orders")

    def owner_url(order_id: str) -> str | None:
        try:
            url = app.router.external_topic_key_store(app.topic(orders_topic), order_id.encode())
        except Exception:  # no assignment yet, or a worker that did not advertise its web address
            return None
        return str(url)

    @page("/orders/{order_id}/timeline", "order-timeline")
    class Timeline(_View):
        async def get(self, request: Any, order_id: str) -> Any:
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
                public.append({"case": _public_case(case), "history": _public_history(history)})
                for h in history:
                    entries.append(
                        {
                            "at": h.at.isoformat(),
                            "source": "case",
                            "what": f"case {h.from_status or 'new'} -> {h.to_status}",
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
            if owned:
                return self.reply(body)
            owner = owner_url(order_id)
            why = (
                "this worker runs no detector (--handlers-only)"
                if not rt.detection
                else f"partition {partition} of {orders_topic} is owned by another worker"
            )
            body["error"] = f"order {order_id}: {why}; its detector state is there, the cases are here"
            body["owner"] = owner
            return self.reply(body, 421)

    # -- readiness -----------------------------------------------------------------------------

    @page("/ready", "ready")
    class Ready(_View):
        async def get(self, request: Any) -> Any:
            reasons = []
            try:
                await rt.redis.ping()
            except Exception as exc:  # whatever the client raises, the answer is "not ready"
                reasons.append(f"redis: no answer to PING ({type(exc).__name__})")
            if rt.detection:
                loaded = ow.agents["orders"].ready
                if loaded is not None and not loaded.is_set():
                    reasons.append("blocklist: not loaded yet")
            try:
                assigned = len(app.assignor.assigned_actives())
            except Exception:  # before the first assignment
                assigned = 0
            if not assigned:
                reasons.append("partitions: none assigned yet")
            if not rt.started.is_set():
                reasons.append("handlers: not started yet")
            if reasons:
                return self.reply({"status": "not ready", "reasons": reasons}, 503)
            return self.reply({"status": "ready", "partitions": assigned})
