"""What the ops API and the console do, once: the reads they show (masked) and the writes they
make (each audited in the case history under the authenticated name), over one `Ops` object that
holds the handlers' stores. Also the strict parsing of what callers send (query parameters,
bodies), shared by both, so that no input can reach a store unchecked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orderwatch.detectors.catalog import RULES
from orderwatch.errors import DeliveryError, OrderwatchError
from orderwatch.handlers.actions import candidate_actions
from orderwatch.handlers.cases import STATUSES, Case, HistoryEntry
from orderwatch.handlers.incidents import Incident
from orderwatch.handlers.privacy import mask_evidence, mask_summary, mask_text
from orderwatch.schemas.action_command import ActionCommand
from orderwatch.schemas.exception_event import SEVERITIES

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from orderwatch.handlers.actions import ActionDispatcher, PendingAction
    from orderwatch.handlers.incidents import IncidentStore
    from orderwatch.handlers.service import HandlerService
    from orderwatch.handlers.store import CaseStore

__all__ = [
    "CATEGORIES",
    "MAX_BODY",
    "MAX_DEPTH",
    "MAX_LIMIT",
    "MAX_NOTE",
    "MAX_OFFSET",
    "CaseFilters",
    "InputError",
    "Ops",
    "OrderPlace",
    "json_depth",
    "parse_body",
    "parse_filters",
    "query_choice",
    "query_int",
    "query_name",
    "read_body",
]

MAX_LIMIT = 500
MAX_OFFSET = 1_000_000
MAX_NOTE = 2000
MAX_BODY = 16 * 1024
"""Bytes of a write's body: a note of MAX_NOTE characters fits many times over."""
MAX_DEPTH = 4
"""Nesting of a write's JSON body: an object of strings is depth 1."""
MAX_MEMBERS_AUDITED = 500
"""Member cases of an incident that get an audit entry when a person decides the incident."""

CATEGORIES: tuple[str, ...] = tuple(sorted({r.category for r in RULES.values()}))
_DIGITS = re.compile(r"[0-9]{1,10}")
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,200}")
_TEXT = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")


class InputError(OrderwatchError):
    """What a caller sent is refused: the HTTP status and a message saying what is expected."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def query_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter: ASCII digits only (no `²`, no sign, no 5,000-digit number), within bounds."""
    raw = query.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        shown = raw if len(raw) <= 20 else raw[:20] + "..."
        raise InputError(422, f"query parameter {name}: expected an integer from {low} to {high}, got {shown!r}")
    return int(raw)


def query_choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...] | list[str]) -> str | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in allowed:
        raise InputError(422, f"query parameter {name}: expected one of {', '.join(allowed)}")
    return raw


def query_name(query: Mapping[str, str], name: str, pattern: re.Pattern[str] = _NAME) -> str | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not pattern.fullmatch(raw):
        raise InputError(422, f"query parameter {name}: expected 1 to 64 of letters, digits, _ . : @ -")
    return raw


def only(query: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    for name in query:
        if name not in allowed:
            shown = name if _TEXT.fullmatch(name) else "(not shown)"
            raise InputError(422, f"query parameter {shown}: unknown, expected one of {', '.join(allowed)}")


def valid_id(value: str, what: str) -> str:
    """A path id (exception, incident, order, action): bounded and printable, else 404 (no such thing)."""
    if not _ID.fullmatch(value):
        raise InputError(404, f"no {what} with that id")
    return value


@dataclass(frozen=True, slots=True)
class CaseFilters:
    """The queue's filters, parsed (None: not filtered)."""

    status: str | None = None
    severity: str | None = None
    category: str | None = None
    rule: str | None = None
    merchant: str | None = None
    team: str | None = None
    owner: str | None = None
    incident: str | None = None
    order_id: str | None = None
    q: str | None = None
    sort: str = "due"

    def as_query(self) -> dict[str, str]:
        """The filters as query parameters (what the console's links and forms carry)."""
        out = {"status": self.status or "all"}
        for name in self.__slots__:
            value = getattr(self, name)
            if name != "status" and value is not None and not (name == "sort" and value == "due"):
                out[name] = value
        return out


FILTER_PARAMS = ("status", "severity", "category", "rule", "merchant", "team", "owner", "incident", "order_id", "q")


STATUS_CHOICES = (*STATUSES, "unresolved", "all")
"""`unresolved`: open, acknowledged or escalated (the console's default); `all`: no filter."""


def parse_filters(query: Mapping[str, str], *, default_sort: str, default_status: str = "all") -> CaseFilters:
    status = query_choice(query, "status", STATUS_CHOICES) or default_status
    return CaseFilters(
        status=None if status == "all" else status,
        severity=query_choice(query, "severity", SEVERITIES),
        category=query_choice(query, "category", CATEGORIES),
        rule=query_choice(query, "rule", list(RULES)),
        merchant=query_name(query, "merchant"),
        team=query_name(query, "team"),
        owner=query_name(query, "owner"),
        incident=query_name(query, "incident", _ID),
        order_id=query_name(query, "order_id", _ID),
        q=query_name(query, "q", _TEXT),
        sort=query_choice(query, "sort", ("due", "new")) or default_sort,
    )


async def read_body(request: Any, message: str = f"body: at most {MAX_BODY} bytes") -> bytes:
    """A request's body (aiohttp), refused (413) past MAX_BODY bytes without reading the rest."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise InputError(413, message)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(4096)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY:
            raise InputError(413, message)
        chunks.append(chunk)


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text, without parsing it (so that a
    body nested 100,000 deep is refused before the parser recurses)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def parse_body(raw: bytes, allowed: tuple[str, ...]) -> dict[str, Any]:
    """A write's JSON body: an object (empty allowed) with only `allowed` keys."""
    example = "{" + ", ".join(f'"{k}": "..."' for k in allowed) + "}"
    if len(raw) > MAX_BODY:
        raise InputError(413, f"body: at most {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    if json_depth(raw) > MAX_DEPTH:
        raise InputError(422, f"body: nested more than {MAX_DEPTH} deep; expected a JSON object like {example}")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InputError(422, f"body: not JSON; expected a JSON object like {example}") from exc
    if not isinstance(doc, dict):
        raise InputError(422, f"body: expected a JSON object like {example}")
    for key in doc:
        if key == "who":
            raise InputError(422, "body who: not accepted; the history records the name of the token used")
        if key not in allowed:
            shown = key if _TEXT.fullmatch(key) else "(not shown)"
            raise InputError(422, f"body {shown}: unknown key, expected {', '.join(allowed)}")
    return doc


def body_note(doc: Mapping[str, Any]) -> str | None:
    note = doc.get("note")
    if note is None:
        return None
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise InputError(422, f"body note: expected a string of at most {MAX_NOTE} characters")
    return note.strip() or None


def body_name(doc: Mapping[str, Any], key: str) -> tuple[bool, str | None]:
    """(given, value) of an owner/team field: absent (unchanged), null or "" (cleared), or a name."""
    if key not in doc:
        return False, None
    value = doc[key]
    if value is None or value == "":
        return True, None
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InputError(422, f"body {key}: expected null or 1 to 64 of letters, digits, _ . @ -")
    return True, value


# -- what is shown -------------------------------------------------------------------------------


def public_case(case: Case) -> dict[str, Any]:
    doc = case.to_dict()
    doc["evidence"] = mask_evidence(case.evidence)
    doc["summary"] = mask_summary(case.summary, case.evidence)
    doc["merchant"] = case.merchant
    return doc


def public_history(entries: list[HistoryEntry]) -> list[dict[str, Any]]:
    return [{**h.to_dict(), "note": mask_text(h.note) if h.note else None} for h in entries]


def public_incident(inc: Incident) -> dict[str, Any]:
    doc = inc.to_dict()
    doc["note"] = mask_text(inc.note) if inc.note else None
    return doc


def public_pending(p: PendingAction) -> dict[str, Any]:
    return {
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


def rule_meaning(code: str) -> dict[str, str] | None:
    rule = RULES.get(code)
    if rule is None:
        return None
    return {"fires_when": rule.fires_when, "resolves_when": rule.resolves_when, "action": rule.action}


@dataclass(frozen=True, slots=True)
class OrderPlace:
    """Where an order's detector state lives, as this worker sees it (`streams.probe`)."""

    order_id: str
    topic: str
    """The orders topic its detector reads."""
    partition: int
    owned: bool
    """This worker runs that partition's detector now."""
    detector: dict[str, Any] | None
    """What the detector holds for the order (`OrderDetector.describe`); None when not owned or nothing."""
    why_not: str | None = None
    """Why this worker does not own it (None when it does)."""
    owner: str | None = None
    """The web address of the worker that owns it, when known."""


class Ops:
    """What the ops API and the console do with the handlers' stores: the reads they show and the
    writes they make, at the handlers' clock (`now`)."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        store: CaseStore,
        incidents: IncidentStore,
        service: HandlerService,
        dispatcher: ActionDispatcher,
        now: Callable[[], datetime],
    ) -> None:
        self.redis, self.store, self.incidents = redis, store, incidents
        self.service, self.dispatcher, self.now = service, dispatcher, now

    # -- reads -----------------------------------------------------------------------------------

    async def case_detail(self, exception_id: str) -> dict[str, Any]:
        case = await self.store.get(exception_id)
        history = await self.store.history(exception_id)
        actions: dict[str, str | None] = {}
        for code in candidate_actions(case.to_data()):
            state = await self.redis.hget(self.dispatcher.action_key(exception_id, code), "state")
            actions[code] = state.decode() if isinstance(state, bytes) else state
        return {"case": public_case(case), "history": public_history(history), "actions": actions}

    async def cases(self, f: CaseFilters, limit: int, offset: int) -> tuple[list[Case], int]:
        return await self.store.query(
            status=f.status,
            severity=f.severity,
            category=f.category,
            rule=f.rule,
            merchant=f.merchant,
            team=f.team,
            owner=f.owner,
            incident_id=f.incident,
            order_id=f.order_id,
            order_text=f.q,
            order=f.sort,
            limit=limit,
            offset=offset,
        )

    async def order_timeline(self, place: OrderPlace) -> dict[str, Any]:
        """An order's timeline: its cases and their histories from the store, merged by time
        with what its detector holds (when this worker owns it)."""
        order_id, detector = place.order_id, place.detector
        cases, _ = await self.store.query(order_id=order_id, limit=MAX_LIMIT)
        entries: list[dict[str, Any]] = []
        public = []
        for case in sorted(cases, key=lambda c: c.detected_at):
            history = await self.store.history(case.exception_id)
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
            "partition": place.partition,
            "owned": place.owned,
            "detector": detector,
            "cases": public,
            "timeline": entries,
        }
        if not place.owned:
            body["error"] = f"order {order_id}: {place.why_not}; its detector state is there, the cases are here"
            body["owner"] = place.owner
        return body

    # -- writes (who: the authenticated name) ----------------------------------------------------

    async def acknowledge(self, exception_id: str, who: str, note: str | None) -> Any:
        return await self.service.acknowledge(exception_id, who, note)

    async def resolve(self, exception_id: str, who: str, note: str | None) -> Any:
        return await self.service.resolve(exception_id, who, note)

    async def assign(
        self,
        exception_id: str,
        who: str,
        *,
        owner: tuple[bool, str | None],
        team: tuple[bool, str | None],
        note: str | None,
    ) -> bool:
        if not owner[0] and not team[0]:
            raise InputError(422, "assign: give an owner, a team or both (null clears one)")
        return await self.store.assign(
            exception_id,
            who,
            self.now(),
            owner=owner[1],
            team=team[1],
            set_owner=owner[0],
            set_team=team[0],
            note=note,
        )

    async def approve(self, exception_id: str, action: str, who: str) -> ActionCommand:
        try:
            command = await self.dispatcher.approve(exception_id, action, who)
        except DeliveryError as exc:
            raise InputError(502, f"{exc}; approve again to retry") from exc
        await self.store.audit(exception_id, who, "action_approved", self.now(), action=action)
        return command

    async def reject(self, exception_id: str, action: str, who: str, note: str | None) -> None:
        await self.dispatcher.reject(exception_id, action, who, note)
        await self.store.audit(exception_id, who, "action_rejected", self.now(), action=action, note=note)

    async def decide_incident(self, incident_id: str, verb: str, who: str, note: str | None) -> Incident:
        now = self.now()
        if verb == "acknowledge":
            inc = await self.incidents.acknowledge(incident_id, who, note, now)
        else:
            inc = await self.incidents.resolve(incident_id, who, note, now)
        event = "incident_acknowledged" if verb == "acknowledge" else "incident_resolved"
        for member in (await self.incidents.members(incident_id))[:MAX_MEMBERS_AUDITED]:
            await self.store.audit(member, who, event, now, note=note)
        return inc


def format_when(at: datetime) -> str:
    """UTC text of a time (the console's script shows it in the reader's time zone)."""
    return at.strftime("%Y-%m-%d %H:%M UTC")
