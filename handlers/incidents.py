"""Incidents: exceptions of one rule sharing a cause (carrier, payment provider, warehouse, SKU)
within a sliding window, grouped so that people get one page instead of a thousand.

Redis-backed like the case store: every write is one atomic Lua script, and adding the same
exception twice counts it once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis

from orderwatch.errors import CaseNotFound, TransitionError
from orderwatch.handlers._lua import page_query
from orderwatch.handlers.config import IncidentConfig
from orderwatch.handlers.store import case_key, redis_call
from orderwatch.schemas.exception_event import ExceptionData

__all__ = [
    "INCIDENT_STATUSES",
    "Incident",
    "IncidentNotFound",
    "IncidentStore",
    "Membership",
    "cause_of",
    "incident_id_for",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

IncidentStatus = Literal["forming", "open", "acknowledged", "resolved"]
INCIDENT_STATUSES: tuple[str, ...] = IncidentStatus.__args__  # type: ignore[attr-defined]
Role = Literal["forming", "paging", "suppressed"]

_INCIDENT_ALLOWED_FROM: dict[str, frozenset[str]] = {
    "acknowledged": frozenset({"forming", "open"}),
    "resolved": frozenset({"forming", "open", "acknowledged"}),
}


class IncidentNotFound(CaseNotFound):
    """No incident has this id (a CaseNotFound, so the ops API answers 404 alike)."""


def cause_of(data: ExceptionData, dimensions: Sequence[str] | None = None) -> tuple[str, str] | None:
    """(dimension, value) of the shared cause named in the evidence, first of `dimensions` that is
    present (carrier, provider, warehouse_id, sku by default), or None. PAYMENT_FAILURE_SPIKE's
    subject is its provider."""
    dims = ("carrier", "provider", "warehouse_id", "sku") if dimensions is None else tuple(dimensions)
    for dim in dims:
        value = data.evidence.get(dim)
        if value is None and dim == "provider" and data.rule == "PAYMENT_FAILURE_SPIKE":
            value = data.subject
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value) != "":
            return dim, str(value)
    return None


def incident_id_for(rule: str, dimension: str, value: str, first_member: str) -> str:
    """Deterministic, so rebuilding the store from the topic gives the same incident ids."""
    digest = hashlib.sha256(f"{rule}\x1f{dimension}\x1f{value}\x1f{first_member}".encode()).hexdigest()
    return f"inc-{digest[:20]}"


@dataclass(frozen=True, slots=True)
class Membership:
    """How one exception belongs to its incident."""

    incident_id: str
    role: Role
    """forming: joined before the threshold (notify it as usual); paging: its arrival opened the
    incident (page once, for the incident); suppressed: joined after (do not notify it alone)."""
    count_at_join: int
    count: int
    """Members now."""

    @property
    def suppressed(self) -> bool:
        return self.role == "suppressed"


@dataclass(frozen=True, slots=True)
class Incident:
    incident_id: str
    rule: str
    dimension: str
    value: str
    status: str
    count: int
    open_count: int
    """Members whose case is not resolved yet; the incident resolves itself when it reaches 0."""
    first_detected_at: datetime
    last_detected_at: datetime
    created_at: datetime
    updated_at: datetime
    opened_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    note: str | None = None

    @classmethod
    def from_fields(cls, f: dict[str, str]) -> Incident:
        def ts(name: str) -> datetime | None:
            return datetime.fromisoformat(f[name]) if f.get(name) else None

        def req(name: str) -> datetime:
            return datetime.fromisoformat(f[name])

        return cls(
            incident_id=f["incident_id"],
            rule=f["rule"],
            dimension=f["dimension"],
            value=f["value"],
            status=f["status"],
            count=int(f["count"]),
            open_count=int(f["open_count"]),
            first_detected_at=datetime.fromtimestamp(float(f["first"]), UTC),
            last_detected_at=datetime.fromtimestamp(float(f["last"]), UTC),
            created_at=req("created_at"),
            updated_at=req("updated_at"),
            opened_at=ts("opened_at"),
            acknowledged_at=ts("acknowledged_at"),
            acknowledged_by=f.get("acknowledged_by") or None,
            resolved_at=ts("resolved_at"),
            resolved_by=f.get("resolved_by") or None,
            note=f.get("note") or None,
        )

    def to_dict(self) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "incident_id": self.incident_id,
            "rule": self.rule,
            "dimension": self.dimension,
            "value": self.value,
            "status": self.status,
            "count": self.count,
            "open_count": self.open_count,
            "first_detected_at": iso(self.first_detected_at),
            "last_detected_at": iso(self.last_detected_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "opened_at": iso(self.opened_at),
            "acknowledged_at": iso(self.acknowledged_at),
            "acknowledged_by": self.acknowledged_by,
            "resolved_at": iso(self.resolved_at),
            "resolved_by": self.resolved_by,
            "note": self.note,
        }


_PRELUDE = r"""
local P = ARGV[1]
local function ikey(iid) return P .. 'incident:' .. iid end
local function set_status(iid, old, new, now)
  local score = redis.call('HGET', ikey(iid), 'first')
  redis.call('ZREM', P .. 'incidents:status:' .. old, iid)
  redis.call('ZADD', P .. 'incidents:status:' .. new, score, iid)
  redis.call('HSET', ikey(iid), 'status', new, 'updated_at', now)
  if new == 'resolved' then
    -- a resolved incident takes no new members
    redis.call('ZREM', redis.call('HGET', ikey(iid), 'cause_key'), iid)
  end
end
"""

_JOIN = (
    _PRELUDE
    + r"""
local eid, rule, dim, value = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local d, window, threshold = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local new_iid, now, casekey, member_open = ARGV[9], ARGV[10], ARGV[11], ARGV[12] == '1'
local BY_MEMBER = P .. 'incidents:by_member'

local iid = redis.call('HGET', BY_MEMBER, eid)
if iid then
  return {iid, redis.call('HGET', ikey(iid) .. ':members', eid), redis.call('HGET', ikey(iid), 'count')}
end

local cause = P .. 'incidents:cause:' .. rule .. '|' .. dim .. '|' .. value
-- sliding window: an incident whose latest member is at most `window` before this one, and whose
-- first member is at most `window` after it (members may arrive out of order)
local cands = redis.call('ZREVRANGEBYSCORE', cause, '+inf', d - window)
for _, c in ipairs(cands) do
  local cur = redis.call('HMGET', ikey(c), 'status', 'first')
  if cur[1] and cur[1] ~= 'resolved' and tonumber(cur[2]) - window <= d then iid = c break end
end
if not iid then
  iid = new_iid
  redis.call('HSET', ikey(iid), 'incident_id', iid, 'rule', rule, 'dimension', dim, 'value', value,
    'status', 'forming', 'count', 0, 'open_count', 0, 'first', ARGV[6], 'last', ARGV[6],
    'cause_key', cause, 'created_at', now, 'updated_at', now)
  redis.call('ZADD', P .. 'incidents:all', ARGV[6], iid)
  redis.call('ZADD', P .. 'incidents:status:forming', ARGV[6], iid)
  redis.call('ZADD', P .. 'incidents:rule:' .. rule, ARGV[6], iid)
end
local key = ikey(iid)
local count = redis.call('HINCRBY', key, 'count', 1)
if member_open then
  redis.call('SADD', key .. ':open', eid)
  redis.call('HINCRBY', key, 'open_count', 1)
end
local first, last = tonumber(redis.call('HGET', key, 'first')), tonumber(redis.call('HGET', key, 'last'))
if d < first then redis.call('HSET', key, 'first', ARGV[6]) end
if d > last then redis.call('HSET', key, 'last', ARGV[6]) last = d end
redis.call('ZADD', cause, last, iid)
redis.call('HSET', key, 'updated_at', now)

local status = redis.call('HGET', key, 'status')
local role = 'suppressed'
if status == 'forming' then
  if count >= threshold then
    set_status(iid, 'forming', 'open', now)
    redis.call('HSET', key, 'opened_at', now)
    role = 'paging'
  else
    role = 'forming'
  end
end
local member = role .. ':' .. count
redis.call('HSET', key .. ':members', eid, member)
redis.call('HSET', BY_MEMBER, eid, iid)
if redis.call('EXISTS', casekey) == 1 then redis.call('HSET', casekey, 'incident_id', iid) end
-- a member whose case already resolved (grouped late, after a crash) may leave nothing open
local after = redis.call('HGET', key, 'status')
if not member_open and after ~= 'resolved' and tonumber(redis.call('HGET', key, 'open_count')) <= 0 then
  set_status(iid, after, 'resolved', now)
  redis.call('HSET', key, 'resolved_at', now, 'resolved_by', 'orderwatch', 'note', 'all member cases resolved')
end
return {iid, member, count}
"""
)

_MEMBER_RESOLVED = (
    _PRELUDE
    + r"""
local iid, eid, now = ARGV[2], ARGV[3], ARGV[4]
local key = ikey(iid)
if redis.call('SREM', key .. ':open', eid) == 0 then return 0 end
local left = redis.call('HINCRBY', key, 'open_count', -1)
local status = redis.call('HGET', key, 'status')
if left <= 0 and status ~= 'resolved' then
  set_status(iid, status, 'resolved', now)
  redis.call('HSET', key, 'resolved_at', now, 'resolved_by', 'orderwatch', 'note', 'all member cases resolved')
  return 2
end
return 1
"""
)

_MOVE = (
    _PRELUDE
    + r"""
local iid, to, allowed, who, note, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local key = ikey(iid)
if redis.call('EXISTS', key) == 0 then return {'notfound'} end
local status = redis.call('HGET', key, 'status')
local ok = false
for s in string.gmatch(allowed, '[^,]+') do if s == status then ok = true end end
if not ok then return {'transition', status} end
set_status(iid, status, to, now)
if to == 'acknowledged' then
  redis.call('HSET', key, 'acknowledged_at', now, 'acknowledged_by', who)
else
  redis.call('HSET', key, 'resolved_at', now, 'resolved_by', who)
end
if note ~= '' then redis.call('HSET', key, 'note', note) end
return {'ok', redis.call('HGETALL', key)}
"""
)

_QUERY = page_query("incidents:all", "incident:")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(flat: Sequence[Any]) -> dict[str, str]:
    return {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}


def _membership(iid: Any, member: Any, count: Any) -> Membership:
    role, _, at_join = _s(member).partition(":")
    return Membership(incident_id=_s(iid), role=role, count_at_join=int(at_join), count=int(count))  # type: ignore[arg-type]


class IncidentStore:
    """Incidents in Redis under `prefix` (the same prefix as the case store: joining writes the
    incident id into the case)."""

    def __init__(self, redis: aioredis.Redis, prefix: str, config: IncidentConfig | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.config = config or IncidentConfig()
        self._join = redis.register_script(_JOIN)
        self._member_resolved = redis.register_script(_MEMBER_RESOLVED)
        self._move = redis.register_script(_MOVE)
        self._query = redis.register_script(_QUERY)

    async def _call(self, doing: str, awaitable: Awaitable[T]) -> T:
        return await redis_call("incident store", doing, awaitable)

    def cause(self, data: ExceptionData) -> tuple[str, str] | None:
        return cause_of(data, self.config.dimensions)

    async def join(self, data: ExceptionData, now: datetime, *, member_open: bool = True) -> Membership | None:
        """Add the exception to the incident of its cause (a new forming one if none is within the
        window); None when it names no cause. Joining again returns the first answer."""
        cause = self.cause(data)
        if cause is None:
            return None
        dim, value = cause
        detected = data.detected_at.timestamp()
        args: list[str | int | float] = [
            self.prefix,
            data.exception_id,
            data.rule,
            dim,
            value,
            repr(detected),
            repr(self.config.window_minutes * 60.0),
            self.config.threshold,
            incident_id_for(data.rule, dim, value, data.exception_id),
            now.astimezone(UTC).isoformat(),
            case_key(self.prefix, data.exception_id),
            "1" if member_open else "0",
        ]
        iid, member, count = await self._call("grouping an exception", self._join(keys=[], args=args))
        return _membership(iid, member, count)

    async def member(self, incident_id: str, exception_id: str) -> Membership | None:
        key = f"{self.prefix}incident:{incident_id}"

        async def read() -> tuple[Any, Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hget(f"{key}:members", exception_id)
                pipe.hget(key, "count")
                member, count = await pipe.execute()
                return member, count

        member, count = await self._call("reading an incident member", read())
        return None if member is None or count is None else _membership(incident_id, member, count)

    async def member_resolved(self, incident_id: str, exception_id: str, now: datetime) -> bool:
        """Record that a member's case resolved; True when that resolved the whole incident."""
        args = [self.prefix, incident_id, exception_id, now.astimezone(UTC).isoformat()]
        res = await self._call("resolving an incident member", self._member_resolved(keys=[], args=args))
        return int(res) == 2

    async def _manual(self, incident_id: str, to: str, who: str, note: str | None, now: datetime) -> Incident:
        allowed = ",".join(sorted(_INCIDENT_ALLOWED_FROM[to]))
        args = [self.prefix, incident_id, to, allowed, who, note or "", now.astimezone(UTC).isoformat()]
        reply = await self._call("moving an incident", self._move(keys=[], args=args))
        tag = _s(reply[0])
        if tag == "notfound":
            msg = f"no incident with id {incident_id}"
            raise IncidentNotFound(msg)
        if tag == "transition":
            msg = f"incident {incident_id}: cannot move from {_s(reply[1])} to {to}"
            raise TransitionError(msg)
        return Incident.from_fields(_fields(reply[1]))

    async def acknowledge(self, incident_id: str, who: str, note: str | None, now: datetime) -> Incident:
        """forming|open -> acknowledged."""
        return await self._manual(incident_id, "acknowledged", who, note, now)

    async def resolve(self, incident_id: str, who: str, note: str | None, now: datetime) -> Incident:
        """forming|open|acknowledged -> resolved (it takes no new members after that)."""
        return await self._manual(incident_id, "resolved", who, note, now)

    async def get(self, incident_id: str) -> Incident:
        raw = await self._call("reading an incident", self.redis.hgetall(f"{self.prefix}incident:{incident_id}"))
        if not raw:
            msg = f"no incident with id {incident_id}"
            raise IncidentNotFound(msg)
        return Incident.from_fields({_s(k): _s(v) for k, v in raw.items()})

    async def members(self, incident_id: str) -> list[str]:
        """Exception ids of the incident's members (sorted)."""
        raw = await self._call(
            "reading incident members", self.redis.hkeys(f"{self.prefix}incident:{incident_id}:members")
        )
        return sorted(_s(m) for m in raw)

    async def query(
        self, *, status: str | None = None, rule: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[Incident], int]:
        """Incidents matching the filters, newest first detection first, and how many in all."""
        if status is not None and status not in INCIDENT_STATUSES:
            msg = f"status: expected one of {', '.join(INCIDENT_STATUSES)}, got {status!r}"
            raise ValueError(msg)
        p = self.prefix
        keys = [f"{p}incidents:{n}:{v}" for n, v in (("status", status), ("rule", rule)) if v is not None]
        reply = await self._call("querying incidents", self._query(keys=[], args=[p, offset, limit, *keys]))
        return [Incident.from_fields(_fields(flat)) for flat in reply[1:]], int(reply[0])
