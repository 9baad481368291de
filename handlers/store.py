"""The case store in Redis: cases, their history, query indexes, the escalation schedule, the
outbox of `exception.escalated` events and the changes not yet handed to listeners.

Every write is one Lua script (atomic, one round trip), so a crash or an outage never leaves half a
move. Key layout (P = prefix): see `docs/handlers.md` and the `_Keys` class below.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from orderwatch.errors import CaseNotFound, StoreUnavailable
from orderwatch.handlers.cases import (
    ALLOWED_FROM,
    MAX_LEVEL,
    STATUSES,
    Case,
    HistoryEntry,
    change_id,
    escalation_times,
    transition_error,
)
from orderwatch.handlers.changes import CaseChange
from orderwatch.handlers.config import EscalationConfig, OwnersConfig
from orderwatch.schemas.exception_event import ExceptionEvent, Resolution

__all__ = ["CaseStore", "OutboxMessage", "case_key", "open_redis", "redis_call"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, TimeoutError, ConnectionError)


async def redis_call(store: str, doing: str, awaitable: Awaitable[T]) -> T:
    """Await one Redis call of `store`; a lost connection becomes StoreUnavailable. The message
    names the store and the operation, never the data."""
    try:
        return await awaitable
    except _UNAVAILABLE as exc:
        msg = f"{store} unavailable while {doing}: {type(exc).__name__}"
        raise StoreUnavailable(msg) from exc


def open_redis(url: str, *, timeout: float = 5.0, max_connections: int | None = None) -> aioredis.Redis:
    """A client for the handlers: bounded socket timeouts and one quick reconnect attempt, so an
    outage surfaces as StoreUnavailable within seconds and the service's own backoff takes over.

    With `max_connections`, a blocking pool of that size: a caller past it waits (up to `timeout`)
    for a free connection instead of failing at once (the default pool raises past its size)."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
    }
    if max_connections is None:
        return aioredis.Redis.from_url(url, **options)
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=timeout, **options)
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool


def case_key(prefix: str, exception_id: str) -> str:
    """The Redis hash of one case (incidents write the case's `incident_id` into it)."""
    return f"{prefix}case:{exception_id}"


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An `exception.escalated` CloudEvent waiting to be published on `order-exceptions`."""

    id: str
    """The CloudEvent id, `<exception_id>:escalated:<level>`."""
    key: bytes
    """The Kafka key: the exception id."""
    value: bytes
    """The CloudEvent JSON."""


# Shared by every write script. Keys are built from the prefix in ARGV[1]: this targets a single
# Redis (no cluster slot routing).
_PRELUDE = r"""
local P = ARGV[1]
local CHANGES = P .. 'changes'
local CHANGES_Q = P .. 'changes:queue'
local ESC = P .. 'escalations'
local function ckey(id) return P .. 'case:' .. id end

local function history(id, at, who, from, to, level, note)
  local e = {at = at, who = who, to_status = to, level = tonumber(level)}
  if from then e.from_status = from end
  if note and note ~= '' then e.note = note end
  redis.call('RPUSH', ckey(id) .. ':history', cjson.encode(e))
end

local function reindex(id, old, new)
  local score = redis.call('HGET', ckey(id), 'detected')
  if old then redis.call('ZREM', P .. 'cases:status:' .. old, id) end
  redis.call('ZADD', P .. 'cases:status:' .. new, score, id)
end

local function schedule(id, due)
  if due and due ~= '' then redis.call('ZADD', ESC, due, id) else redis.call('ZREM', ESC, id) end
end

-- A move is recorded as a pending change until the service has handed it to every listener.
local function change(id, kind, status, level, at, at_epoch, who, note)
  local cid = id .. ':' .. kind
  if kind == 'escalated' then cid = cid .. ':' .. level end
  local rec = {exception_id = id, kind = kind, status = status, level = tonumber(level), at = at, who = who}
  if note and note ~= '' then rec.note = note end
  local raw = cjson.encode(rec)
  redis.call('HSET', CHANGES, cid, raw)
  redis.call('ZADD', CHANGES_Q, at_epoch, cid)
  return {'change', raw, redis.call('HGETALL', ckey(id))}
end

-- The same move asked again while its change is still pending (a retry after a lost reply, or a
-- re-delivered event after a crash before the listeners ran) gets that change back, once more.
local function pending(id, cid)
  local raw = redis.call('HGET', CHANGES, cid)
  if raw then return {'change', raw, redis.call('HGETALL', ckey(id))} end
  return nil
end

local function create(id, a, status, level, at)
  redis.call('HSET', ckey(id),
    'data', a.data, 'status', status, 'level', level, 'subject', a.subject, 'severity', a.severity,
    'rule', a.rule, 'order_id', a.order_id, 'detected', a.detected, 'due1', a.due1, 'due2', a.due2,
    'rev', a.rev, 'resolution', a.resolution, 'incident_id', '', 'created_at', at, 'updated_at', at,
    'team', a.team, 'owner', '', 'merchant', a.merchant, 'handle', a.handle)
  local score = a.detected
  redis.call('ZADD', P .. 'cases:all', score, id)
  redis.call('ZADD', P .. 'cases:due', a.handle, id)
  redis.call('ZADD', P .. 'cases:status:' .. status, score, id)
  redis.call('ZADD', P .. 'cases:severity:' .. a.severity, score, id)
  redis.call('ZADD', P .. 'cases:rule:' .. a.rule, score, id)
  redis.call('ZADD', P .. 'cases:category:' .. a.category, score, id)
  if a.team ~= '' then redis.call('ZADD', P .. 'cases:team:' .. a.team, score, id) end
  if a.merchant ~= '' then redis.call('ZADD', P .. 'cases:merchant:' .. a.merchant, score, id) end
  if a.order_id ~= '' then redis.call('ZADD', P .. 'cases:order:' .. a.order_id, score, id) end
end

-- An entry that records a write without a status move (an assignment, an approval, ...).
local function audit(id, at, who, event, extra, note)
  local cur = redis.call('HMGET', ckey(id), 'status', 'level')
  local e = {at = at, who = who, from_status = cur[1], to_status = cur[1], level = tonumber(cur[2] or '0'),
             event = event}
  for k, v in pairs(extra) do e[k] = v end
  if note and note ~= '' then e.note = note end
  redis.call('RPUSH', ckey(id) .. ':history', cjson.encode(e))
end
"""

_INGEST = (
    _PRELUDE
    + r"""
local id, typ = ARGV[2], ARGV[3]
local a = {data = ARGV[4], subject = ARGV[5], severity = ARGV[6], rule = ARGV[7], order_id = ARGV[8],
           detected = ARGV[9], due1 = ARGV[10], due2 = ARGV[11], rev = ARGV[12], resolution = ARGV[13],
           team = ARGV[22], category = ARGV[23], merchant = ARGV[24], handle = ARGV[25]}
local level = tonumber(ARGV[14])
local now, now_epoch, note, max_level = ARGV[15], ARGV[16], ARGV[17], tonumber(ARGV[18])
local pos_partition, pos_offset, event_time = ARGV[19], tonumber(ARGV[20]), ARGV[21]
local key = ckey(id)
local exists = redis.call('EXISTS', key) == 1

-- where on the topic the latest resolution was read: an escalation read back from a later offset
-- means the topic's latest value for this key is no longer the resolution (see resolved_position)
local function remember_resolution()
  if pos_partition == '' then return end
  local cur = redis.call('HMGET', key, 'rpart', 'roff')
  if cur[1] ~= pos_partition or tonumber(cur[2] or '-1') < pos_offset then
    redis.call('HSET', key, 'rpart', pos_partition, 'roff', pos_offset, 'rtime', event_time)
  end
end

if typ == 'opened' then
  if exists then
    local p = pending(id, id .. ':opened')
    if p then return p end
    -- a later revision of an open exception (windowed rules add evidence): keep the newest data
    local cur = redis.call('HMGET', key, 'status', 'rev')
    if cur[1] ~= 'resolved' and tonumber(a.rev) > tonumber(cur[2] or '0') then
      redis.call('HSET', key, 'data', a.data, 'rev', a.rev)
    end
    return {'none'}
  end
  create(id, a, 'open', 0, now)
  schedule(id, a.due1)
  history(id, now, 'orderwatch', nil, 'open', 0, note)
  return change(id, 'opened', 'open', 0, now, now_epoch, 'orderwatch', note)
end

if typ == 'resolved' then
  if exists then
    local p = pending(id, id .. ':resolved')
    if p then remember_resolution() return p end
    local cur = redis.call('HMGET', key, 'status', 'level')
    if cur[1] == 'resolved' then
      -- a replay, or a person resolved it first: nothing moves, but this resolution is on the topic
      remember_resolution()
      return {'none'}
    end
    remember_resolution()
    redis.call('HSET', key, 'data', a.data, 'status', 'resolved', 'resolution', a.resolution, 'updated_at', now)
    reindex(id, cur[1], 'resolved')
    schedule(id, nil)
    history(id, now, 'orderwatch', cur[1], 'resolved', cur[2], note)
    return change(id, 'resolved', 'resolved', cur[2], now, now_epoch, 'orderwatch', note)
  end
  -- compacted topic: the opened event is gone, only its resolution is left
  create(id, a, 'resolved', 0, now)
  remember_resolution()
  history(id, now, 'orderwatch', 'open', 'resolved', 0, note)
  return change(id, 'resolved', 'resolved', 0, now, now_epoch, 'orderwatch', note)
end

-- exception.escalated: the handlers' own output read back from the topic
local function next_due(l) if l < max_level then return a.due2 end return nil end
if exists then
  local p = pending(id, id .. ':escalated:' .. level)
  if p then return p end
  local cur = redis.call('HMGET', key, 'status', 'level')
  if (cur[1] ~= 'open' and cur[1] ~= 'escalated') or tonumber(cur[2]) >= level then return {'none'} end
  -- this store lost a move it had made (restored from an older copy): catch up, publish nothing
  redis.call('HSET', key, 'status', 'escalated', 'level', level, 'updated_at', now)
  reindex(id, cur[1], 'escalated')
  schedule(id, next_due(level))
  history(id, now, 'orderwatch', cur[1], 'escalated', level, note)
  return change(id, 'escalated', 'escalated', level, now, now_epoch, 'orderwatch', note)
end
create(id, a, 'escalated', level, now)
schedule(id, next_due(level))
history(id, now, 'orderwatch', 'open', 'escalated', level, note)
return change(id, 'escalated', 'escalated', level, now, now_epoch, 'orderwatch', note)
"""
)

# acknowledge / resolve by a person
_MOVE = (
    _PRELUDE
    + r"""
local id, to, allowed, who, note, now, now_epoch, resolution =
  ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local key = ckey(id)
if redis.call('EXISTS', key) == 0 then return {'notfound'} end
local p = pending(id, id .. ':' .. to)
if p then return p end
local cur = redis.call('HMGET', key, 'status', 'level')
local ok = false
for s in string.gmatch(allowed, '[^,]+') do if s == cur[1] then ok = true end end
if not ok then return {'transition', cur[1]} end
redis.call('HSET', key, 'status', to, 'updated_at', now)
if to == 'resolved' then redis.call('HSET', key, 'resolution', resolution) end
reindex(id, cur[1], to)
schedule(id, nil)
history(id, now, who, cur[1], to, cur[2], note)
return change(id, to, to, cur[2], now, now_epoch, who, note)
"""
)

_ESCALATE = (
    _PRELUDE
    + r"""
local id, level, now, now_epoch = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local max_level, note = tonumber(ARGV[6]), ARGV[7]
local key = ckey(id)
if redis.call('EXISTS', key) == 0 then return {'notfound'} end
local p = pending(id, id .. ':escalated:' .. level)
if p then return p end
local cur = redis.call('HMGET', key, 'status', 'level', 'due2', 'subject', 'data')
if (cur[1] ~= 'open' and cur[1] ~= 'escalated') or tonumber(cur[2]) >= level then return {'none'} end
redis.call('HSET', key, 'status', 'escalated', 'level', level, 'updated_at', now)
reindex(id, cur[1], 'escalated')
if level < max_level then schedule(id, cur[3]) else schedule(id, nil) end
history(id, now, 'orderwatch', cur[1], 'escalated', level, note)
-- The stored data is the exception's JSON object without status and resolution (see Case.data_json).
local eid = id .. ':escalated:' .. level
local event = '{"specversion":"1.0","id":' .. cjson.encode(eid) ..
  ',"source":"/orderwatch","type":"exception.escalated","time":' .. cjson.encode(now) ..
  ',"subject":' .. cjson.encode(cur[4]) .. ',"datacontenttype":"application/json"' ..
  ',"data":{"status":"escalated",' .. string.sub(cur[5], 2) .. '}'
redis.call('HSET', P .. 'outbox', eid, event)
redis.call('ZADD', P .. 'outbox:queue', now_epoch, eid)
return change(id, 'escalated', 'escalated', level, now, now_epoch, 'orderwatch', note)
"""
)

_DUE = r"""
local P = ARGV[1]
local ESC = P .. 'escalations'
local out = {}
local ids = redis.call('ZRANGEBYSCORE', ESC, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local cur = redis.call('HMGET', P .. 'case:' .. id, 'status', 'level')
  if cur[1] == 'open' or cur[1] == 'escalated' then
    out[#out + 1] = id
    out[#out + 1] = tonumber(cur[2]) + 1
  else
    redis.call('ZREM', ESC, id)
  end
end
return out
"""

# One page of cases. ARGV: prefix, offset, limit, order (`new`: newest detection first, `due`:
# earliest handle_by first), n, n index keys to intersect, then (field, mode, value) triples
# checked on each case's hash: mode `eq` (equal), `ne` (not equal) or `has` (contains, plain text). Returns
# {total, hash, hash, ...}.
_QUERY = r"""
local P, offset, limit, order, nk = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local keys, filters = {}, {}
for i = 1, nk do keys[#keys + 1] = ARGV[5 + i] end
local i = 6 + nk
while i + 2 <= #ARGV do
  filters[#filters + 1] = {ARGV[i], ARGV[i + 1], ARGV[i + 2]}
  i = i + 3
end
local base = P .. 'cases:all'
if order == 'due' then base = P .. 'cases:due' end
local out = {0}
if #keys == 0 and #filters == 0 then
  out[1] = redis.call('ZCARD', base)
  if limit <= 0 then return out end
  local ids
  if order == 'due' then
    ids = redis.call('ZRANGE', base, offset, offset + limit - 1)
  else
    ids = redis.call('ZREVRANGE', base, offset, offset + limit - 1)
  end
  for _, id in ipairs(ids) do out[#out + 1] = redis.call('HGETALL', P .. 'case:' .. id) end
  return out
end
-- the base index carries the order; the filter indexes only narrow it (weight 0)
local args = {'ZINTER', 1 + #keys, base}
for _, k in ipairs(keys) do args[#args + 1] = k end
args[#args + 1] = 'WEIGHTS'
args[#args + 1] = 1
for _ = 1, #keys do args[#args + 1] = 0 end
local all = redis.call(unpack(args))
local first, last, step = 1, #all, 1
if order ~= 'due' then first, last, step = #all, 1, -1 end
local total = 0
for j = first, last, step do
  local id = all[j]
  local ok = true
  for _, f in ipairs(filters) do
    local v = redis.call('HGET', P .. 'case:' .. id, f[1]) or ''
    if f[2] == 'eq' then
      ok = v == f[3]
    elseif f[2] == 'ne' then
      ok = v ~= f[3]
    else
      ok = string.find(string.lower(v), string.lower(f[3]), 1, true) ~= nil
    end
    if not ok then break end
  end
  if ok then
    total = total + 1
    if total > offset and #out <= limit then out[#out + 1] = redis.call('HGETALL', P .. 'case:' .. id) end
  end
end
out[1] = total
return out
"""

# ARGV: prefix, id, owner, team, set owner (1/0), set team (1/0), who, note, now
_ASSIGN = (
    _PRELUDE
    + r"""
local id, owner, team, so, st, who, note, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local key = ckey(id)
if redis.call('EXISTS', key) == 0 then return {'notfound'} end
local cur = redis.call('HMGET', key, 'owner', 'team', 'detected')
local old_owner, old_team = cur[1] or '', cur[2] or ''
if so ~= '1' then owner = old_owner end
if st ~= '1' then team = old_team end
if owner == old_owner and team == old_team then return {'same'} end
redis.call('HSET', key, 'owner', owner, 'team', team, 'updated_at', now)
for _, pair in ipairs({{'owner', old_owner, owner}, {'team', old_team, team}}) do
  if pair[2] ~= pair[3] then
    if pair[2] ~= '' then redis.call('ZREM', P .. 'cases:' .. pair[1] .. ':' .. pair[2], id) end
    if pair[3] ~= '' then redis.call('ZADD', P .. 'cases:' .. pair[1] .. ':' .. pair[3], cur[3], id) end
  end
end
audit(id, now, who, 'assigned', {owner = owner, team = team}, note)
return {'assigned'}
"""
)

# ARGV: prefix, id, who, event, action ('' none), note, now
_AUDIT = (
    _PRELUDE
    + r"""
local id = ARGV[2]
if redis.call('EXISTS', ckey(id)) == 0 then return 0 end
local extra = {}
if ARGV[5] ~= '' then extra.action = ARGV[5] end
audit(id, ARGV[7], ARGV[3], ARGV[4], extra, ARGV[6])
return 1
"""
)

AUDIT_EVENTS = ("action_approved", "action_rejected", "incident_acknowledged", "incident_resolved")
INDEX_VERSION = "2"
"""Cases written before owners and teams lack their `handle`, team, category and merchant
indexes; `CaseStore` adds them once (`ensure_indexes`) and records this version."""

_PENDING = r"""
local P = ARGV[1]
local out = {}
local ids = redis.call('ZRANGEBYSCORE', P .. 'changes:queue', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, cid in ipairs(ids) do
  local raw = redis.call('HGET', P .. 'changes', cid)
  if raw then
    local rec = cjson.decode(raw)
    out[#out + 1] = {raw, redis.call('HGETALL', P .. 'case:' .. rec.exception_id)}
  else
    redis.call('ZREM', P .. 'changes:queue', cid)
  end
end
return out
"""

# Remove ids from a hash and its ordering zset: outbox entries published, changes delivered.
_DONE = r"""
local n = 0
for i = 1, #ARGV do
  n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
end
return n
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(flat: Sequence[Any]) -> dict[str, str]:
    return {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}


def _epoch(dt: datetime) -> str:
    return repr(dt.timestamp())


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        msg = "a handlers timestamp must be timezone-aware"
        raise ValueError(msg)
    return dt.astimezone(UTC)


def _suffix_int(event_id: str, marker: str, default: int) -> int:
    """The number after `marker` in an event id (`<id>:opened:2` -> 2), or `default`."""
    _, sep, tail = event_id.rpartition(marker)
    if not sep:
        return default
    try:
        return int(tail)
    except ValueError:
        return default


def _merchant(evidence: Mapping[str, Any]) -> str | None:
    value = evidence.get("merchant_id")
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


class CaseStore:
    """Cases in Redis under `prefix`. Methods raise StoreUnavailable when Redis cannot be reached
    (nothing was written then, or the whole move was: scripts are atomic)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        *,
        escalation: EscalationConfig | None = None,
        owners: OwnersConfig | None = None,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.escalation = escalation or EscalationConfig()
        self.owners = owners or OwnersConfig()
        self._indexed = False
        self._assign = redis.register_script(_ASSIGN)
        self._audit = redis.register_script(_AUDIT)
        self._ingest = redis.register_script(_INGEST)
        self._move = redis.register_script(_MOVE)
        self._escalate = redis.register_script(_ESCALATE)
        self._due = redis.register_script(_DUE)
        self._query = redis.register_script(_QUERY)
        self._pending = redis.register_script(_PENDING)
        self._done = redis.register_script(_DONE)

    async def _call(self, doing: str, awaitable: Awaitable[T]) -> T:
        return await redis_call("case store", doing, awaitable)

    def _change(self, reply: Sequence[Any]) -> CaseChange:
        rec = json.loads(_s(reply[1]))
        case = Case.from_fields(_fields(reply[2]))
        return CaseChange(
            kind=rec["kind"],
            data=case.to_data(),
            status=rec["status"],
            at=datetime.fromisoformat(rec["at"]),
            level=int(rec.get("level", 0)),
            who=rec.get("who", "orderwatch"),
            note=rec.get("note"),
            incident_id=case.incident_id,
        )

    def _result(self, exception_id: str, to_status: str, reply: Sequence[Any]) -> CaseChange | None:
        tag = _s(reply[0])
        if tag == "change":
            return self._change(reply)
        if tag == "notfound":
            msg = f"no case with exception id {exception_id}"
            raise CaseNotFound(msg)
        if tag == "transition":
            raise transition_error(exception_id, _s(reply[1]), to_status)
        return None

    # -- writes --------------------------------------------------------------------------------

    async def ingest(
        self, event: ExceptionEvent, now: datetime, *, position: tuple[int, int] | None = None
    ) -> CaseChange | None:
        """Apply one `order-exceptions` event; the change it made, or None when it changed nothing
        (a replay, an evidence update, an escalation already recorded). `position`: the event's
        (partition, offset) on the topic, remembered for a resolution."""
        now = _utc(now)
        data = event.data
        kind = event.type.removeprefix("exception.")
        due1 = due2 = ""
        if self.escalation.enabled:
            t1, t2 = escalation_times(data.detected_at, data.handle_by, self.escalation.level_2_factor)
            due1, due2 = _epoch(t1), _epoch(t2)
        resolution = ""
        note = ""
        level = 0
        if kind == "resolved":
            res = data.resolution or Resolution(kind="auto", event_id=None, event_time=None)
            resolution = res.model_dump_json()
            note = f"{res.kind}: cleared by event {res.event_id}" if res.event_id else f"{res.kind}: resolved"
        elif kind == "escalated":
            level = min(max(_suffix_int(event.id, ":escalated:", 1), 1), MAX_LEVEL)
            note = f"restored from {event.id}"
        args: list[str | int | float] = [
            self.prefix,
            data.exception_id,
            kind,
            Case.data_json(data),
            data.subject,
            data.severity,
            data.rule,
            data.order_id or "",
            _epoch(data.detected_at),
            due1,
            due2,
            _suffix_int(event.id, ":opened:", 0) if kind == "opened" else 0,
            resolution,
            level,
            now.isoformat(),
            _epoch(now),
            note,
            MAX_LEVEL,
            "" if position is None else str(position[0]),
            -1 if position is None else position[1],
            event.time.isoformat(),
            self.owners.team_for(data.rule, data.category, _merchant(data.evidence)) or "",
            data.category,
            _merchant(data.evidence) or "",
            _epoch(data.handle_by),
        ]
        reply = await self._call(f"ingesting {event.type}", self._ingest(keys=[], args=args))
        return self._result(data.exception_id, "resolved", reply)

    async def acknowledge(self, exception_id: str, who: str, note: str | None, now: datetime) -> CaseChange:
        """open|escalated -> acknowledged (stops escalation)."""
        return await self._manual(exception_id, "acknowledged", who, note, now, "")

    async def resolve(self, exception_id: str, who: str, note: str | None, now: datetime) -> CaseChange:
        """open|acknowledged|escalated -> resolved, manual resolution with `note`."""
        res = Resolution(kind="manual", event_id=None, event_time=None, note=note)
        return await self._manual(exception_id, "resolved", who, note, now, res.model_dump_json())

    async def _manual(
        self, exception_id: str, to: str, who: str, note: str | None, now: datetime, resolution: str
    ) -> CaseChange:
        now = _utc(now)
        allowed = ",".join(sorted(ALLOWED_FROM[to]))
        args = [self.prefix, exception_id, to, allowed, who, note or "", now.isoformat(), _epoch(now), resolution]
        verb = "acknowledging" if to == "acknowledged" else "resolving"
        reply = await self._call(f"{verb} a case", self._move(keys=[], args=args))
        change = self._result(exception_id, to, reply)
        if change is None:  # pragma: no cover - the script answers change, notfound or transition
            raise transition_error(exception_id, "?", to)
        return change

    async def escalate(self, exception_id: str, level: int, now: datetime) -> CaseChange | None:
        """open|escalated -> escalated at `level` (> the current level) and the `exception.escalated`
        event into the outbox, atomically; None when the case is not escalatable to that level."""
        if not 1 <= level <= MAX_LEVEL:
            msg = f"escalation level: expected 1..{MAX_LEVEL}, got {level}"
            raise ValueError(msg)
        now = _utc(now)
        note = "not acknowledged by handle_by" if level == 1 else f"still not acknowledged (level {level})"
        args: list[str | int | float] = [
            self.prefix,
            exception_id,
            level,
            now.isoformat(),
            _epoch(now),
            MAX_LEVEL,
            note,
        ]
        reply = await self._call("escalating a case", self._escalate(keys=[], args=args))
        return self._result(exception_id, "escalated", reply)

    async def outbox_done(self, ids: Iterable[str]) -> int:
        """Forget published outbox entries; how many were still there."""
        ids = list(ids)
        if not ids:
            return 0
        keys = [f"{self.prefix}outbox", f"{self.prefix}outbox:queue"]
        return int(await self._call("clearing the outbox", self._done(keys=keys, args=ids)))

    async def change_done(self, change: CaseChange) -> None:
        """The change reached every listener: it is no longer handed out again."""
        cid = change_id(change.data.exception_id, change.kind, change.level)
        keys = [f"{self.prefix}changes", f"{self.prefix}changes:queue"]
        await self._call("recording a delivered change", self._done(keys=keys, args=[cid]))

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, exception_id: str) -> Case:
        raw = await self._call("reading a case", self.redis.hgetall(case_key(self.prefix, exception_id)))
        if not raw:
            msg = f"no case with exception id {exception_id}"
            raise CaseNotFound(msg)
        return Case.from_fields({_s(k): _s(v) for k, v in raw.items()})

    async def history(self, exception_id: str) -> list[HistoryEntry]:
        """Every move of the case, oldest first."""
        key = case_key(self.prefix, exception_id)
        raw = await self._call("reading a case history", self.redis.lrange(f"{key}:history", 0, -1))
        if not raw:
            await self.get(exception_id)  # CaseNotFound when there is no case at all
        return [HistoryEntry.from_json(r) for r in raw]

    async def query(
        self,
        *,
        status: str | None = None,
        severity: str | None = None,
        rule: str | None = None,
        order_id: str | None = None,
        category: str | None = None,
        team: str | None = None,
        owner: str | None = None,
        merchant: str | None = None,
        incident_id: str | None = None,
        order_text: str | None = None,
        order: str = "new",
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Case], int]:
        """Cases matching every given filter and how many match in all: newest detection first
        (`order="new"`) or earliest handle_by first (`order="due"`). `status="unresolved"`: open,
        acknowledged or escalated. `order_text`: part of the order id, any case."""
        if status is not None and status not in (*STATUSES, "unresolved"):
            msg = f"status: expected one of {', '.join(STATUSES)} or unresolved, got {status!r}"
            raise ValueError(msg)
        if limit < 0 or offset < 0:
            msg = f"limit and offset: expected integers >= 0, got {limit} and {offset}"
            raise ValueError(msg)
        unresolved = status == "unresolved"
        if unresolved:
            status = None
        if order not in ("new", "due"):
            msg = f"order: expected new or due, got {order!r}"
            raise ValueError(msg)
        await self.ensure_indexes()
        p = self.prefix
        indexed = (
            ("status", status),
            ("severity", severity),
            ("rule", rule),
            ("order", order_id),
            ("category", category),
            ("team", team),
            ("owner", owner),
            ("merchant", merchant),
        )
        keys = [f"{p}cases:{name}:{value}" for name, value in indexed if value is not None]
        filters: list[str] = []
        if unresolved:
            filters += ["status", "ne", "resolved"]
        if incident_id is not None:
            filters += ["incident_id", "eq", incident_id]
        if order_text:
            filters += ["order_id", "has", order_text]
        args: list[str | int] = [p, offset, limit, order, len(keys), *keys, *filters]
        reply = await self._call("querying cases", self._query(keys=[], args=args))
        total = int(reply[0])
        return [Case.from_fields(_fields(flat)) for flat in reply[1:]], total

    async def ensure_indexes(self) -> None:
        """Give cases written before owners and teams (no `handle` field) their deadline, category,
        merchant and default-team indexes, once per store (a version key records it)."""
        if self._indexed:
            return
        p = self.prefix
        version = await self._call("reading the index version", self.redis.get(f"{p}indexes:version"))
        if version is not None and _s(version) == INDEX_VERSION:
            self._indexed = True
            return
        start = 0
        while True:
            ids = [
                _s(i)
                for i in await self._call("indexing cases", self.redis.zrange(f"{p}cases:all", start, start + 499))
            ]
            if not ids:
                break
            start += len(ids)
            async with self.redis.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.hmget(case_key(p, i), ["data", "handle", "detected", "team"])
                rows = await self._call("indexing cases", pipe.execute())
            async with self.redis.pipeline(transaction=False) as pipe:
                for i, (raw, handle, detected, team) in zip(ids, rows, strict=True):
                    if raw is None or handle is not None:
                        continue
                    doc = json.loads(_s(raw))
                    merchant = _merchant(doc.get("evidence") or {})
                    due = _epoch(datetime.fromisoformat(doc["handle_by"]))
                    team_now = _s(team) if team else self.owners.team_for(doc["rule"], doc["category"], merchant) or ""
                    pipe.hset(case_key(p, i), mapping={"handle": due, "team": team_now, "merchant": merchant or ""})
                    pipe.zadd(f"{p}cases:due", {i: float(due)})
                    pipe.zadd(f"{p}cases:category:{doc['category']}", {i: float(_s(detected))})
                    if team_now:
                        pipe.zadd(f"{p}cases:team:{team_now}", {i: float(_s(detected))})
                    if merchant:
                        pipe.zadd(f"{p}cases:merchant:{merchant}", {i: float(_s(detected))})
                await self._call("indexing cases", pipe.execute())
        await self._call("recording the index version", self.redis.set(f"{p}indexes:version", INDEX_VERSION))
        self._indexed = True

    async def assign(
        self,
        exception_id: str,
        who: str,
        now: datetime,
        *,
        owner: str | None = None,
        team: str | None = None,
        note: str | None = None,
        set_owner: bool = False,
        set_team: bool = False,
    ) -> bool:
        """Set the case's owner and/or team (`""` clears one), recorded in the history as an
        `assigned` entry by `who`; False when nothing changed. CaseNotFound without a case."""
        args = [
            self.prefix,
            exception_id,
            owner or "",
            team or "",
            "1" if set_owner else "0",
            "1" if set_team else "0",
            who,
            note or "",
            _utc(now).isoformat(),
        ]
        await self.ensure_indexes()  # an old case gets its default team before a person changes it
        reply = await self._call("assigning a case", self._assign(keys=[], args=args))
        tag = _s(reply[0])
        if tag == "notfound":
            msg = f"no case with exception id {exception_id}"
            raise CaseNotFound(msg)
        return tag == "assigned"

    async def audit(
        self,
        exception_id: str,
        who: str,
        event: str,
        now: datetime,
        *,
        action: str | None = None,
        note: str | None = None,
    ) -> bool:
        """Record a write that moves no status (an approval, an incident decision) in the case's
        history; False when there is no such case."""
        if event not in AUDIT_EVENTS:
            msg = f"audit event: expected one of {', '.join(AUDIT_EVENTS)}, got {event!r}"
            raise ValueError(msg)
        args = [self.prefix, exception_id, who, event, action or "", note or "", _utc(now).isoformat()]
        return bool(await self._call("auditing a case", self._audit(keys=[], args=args)))

    async def due_escalations(self, now: datetime, limit: int = 100) -> list[tuple[str, int]]:
        """(exception_id, next level) of cases whose next escalation is due at `now`, earliest first."""
        reply = await self._call(
            "reading the escalation schedule", self._due(keys=[], args=[self.prefix, _epoch(_utc(now)), limit])
        )
        return [(_s(reply[i]), int(reply[i + 1])) for i in range(0, len(reply), 2)]

    async def resolved_position(self, exception_id: str) -> tuple[int, int, datetime] | None:
        """(partition, offset, event time) on `order-exceptions` of the latest resolution of this
        case that `ingest` read, or None (none read with a position)."""
        part, off, at = await self._call(
            "reading a case", self.redis.hmget(case_key(self.prefix, exception_id), ["rpart", "roff", "rtime"])
        )
        if part is None or off is None or at is None:
            return None
        return int(_s(part)), int(_s(off)), datetime.fromisoformat(_s(at))

    async def next_escalation_at(self, exception_id: str) -> datetime | None:
        """When the case is next due for escalation, per the schedule (None: nothing scheduled)."""
        score = await self._call(
            "reading the escalation schedule", self.redis.zscore(f"{self.prefix}escalations", exception_id)
        )
        return None if score is None else datetime.fromtimestamp(float(score), UTC)

    async def outbox_pending(self, limit: int = 100) -> list[OutboxMessage]:
        """Escalated events not yet published, oldest first."""
        p = self.prefix

        async def read() -> list[OutboxMessage]:
            ids = [_s(i) for i in await self.redis.zrange(f"{p}outbox:queue", 0, limit - 1)]
            if not ids:
                return []
            values = await self.redis.hmget(f"{p}outbox", ids)
            return [
                OutboxMessage(
                    id=i, key=i.rsplit(":escalated:", 1)[0].encode(), value=v if isinstance(v, bytes) else v.encode()
                )
                for i, v in zip(ids, values, strict=True)
                if v is not None
            ]

        return await self._call("reading the outbox", read())

    async def pending_changes(self, older_than: datetime, limit: int = 100) -> list[CaseChange]:
        """Changes recorded at or before `older_than` that never reached all listeners (the process
        stopped in between), oldest first."""
        reply = await self._call(
            "reading pending changes", self._pending(keys=[], args=[self.prefix, _epoch(_utc(older_than)), limit])
        )
        return [self._change(["change", raw, flat]) for raw, flat in reply if flat]

    async def counts(self) -> Mapping[str, int]:
        """Cases per status (the ops API's summary)."""
        p = self.prefix

        async def read() -> dict[str, int]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for s in STATUSES:
                    pipe.zcard(f"{p}cases:status:{s}")
                return {s: int(n) for s, n in zip(STATUSES, await pipe.execute(), strict=True)}

        return await self._call("counting cases", read())
