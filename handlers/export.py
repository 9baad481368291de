"""The case store as JSON Lines, for review and analytics: every case with its history, the
actions it asked for and every incident, read page by page through the store's own indexes.

One record per line, `kind` first: `case` (the case as the ops API shows it, evidence and summary
masked, plus `history`), `action` (state and times of one action, never its command) and
`incident`. Nothing here writes to Redis.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime
from typing import IO, Any, TypeVar

import redis.asyncio as aioredis

from orderwatch.handlers.actions import candidate_actions
from orderwatch.handlers.cases import Case, HistoryEntry
from orderwatch.handlers.incidents import Incident
from orderwatch.handlers.privacy import mask_evidence, mask_summary
from orderwatch.handlers.store import case_key, redis_call
from orderwatch.schemas.action_command import idempotency_key

__all__ = ["EXPORT_KINDS", "export_case_store"]

EXPORT_KINDS = ("case", "action", "incident")
_ACTION_FIELDS = ("state", "attempts", "reason", "approved_by", "decided_by")
_ACTION_TIMES = ("requested_at", "sent_at", "decided_at")

T = TypeVar("T")


async def _call(doing: str, awaitable: Awaitable[T]) -> T:
    return await redis_call("case store", doing, awaitable)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms_iso(value: str | None) -> str | None:
    if not value:
        return None
    return datetime.fromtimestamp(int(value) / 1000, UTC).isoformat()


def _case_record(case: Case, history: Iterable[HistoryEntry]) -> dict[str, Any]:
    doc = case.to_dict()
    doc["evidence"] = mask_evidence(case.evidence)
    doc["summary"] = mask_summary(case.summary, case.evidence)
    return {"kind": "case", **doc, "history": [h.to_dict() for h in history]}


def _action_record(exception_id: str, action: str, fields: dict[str, str]) -> dict[str, Any]:
    rec: dict[str, Any] = {"kind": "action", "exception_id": exception_id, "action": action}
    for name in _ACTION_FIELDS:
        rec[name] = fields.get(name) or None
    rec["attempts"] = int(rec["attempts"] or 0)
    for name in _ACTION_TIMES:
        rec[name] = _ms_iso(fields.get(name))
    return rec


async def export_case_store(redis: aioredis.Redis, prefix: str, out: IO[str], *, page: int = 200) -> dict[str, int]:
    """Write every case, action and incident under `prefix` to `out`; returns counts per kind.

    Pages through `cases:all` and `incidents:all` oldest first, so a case created while the export
    runs is either in it or after its end, never read twice. Raises StoreUnavailable if Redis goes."""
    counts = dict.fromkeys(EXPORT_KINDS, 0)
    p = prefix
    start = 0
    while True:
        ids = [_s(i) for i in await _call("listing cases", redis.zrange(f"{p}cases:all", start, start + page - 1))]
        if not ids:
            break
        start += len(ids)
        pipe = redis.pipeline(transaction=False)
        for eid in ids:
            pipe.hgetall(case_key(p, eid))
            pipe.lrange(f"{case_key(p, eid)}:history", 0, -1)
        replies = await _call("reading cases", pipe.execute())
        cases: list[Case] = []
        for i in range(len(ids)):
            raw, hist = replies[2 * i], replies[2 * i + 1]
            if not raw:
                continue  # expired between the index read and now
            case = Case.from_fields({_s(k): _s(v) for k, v in raw.items()})
            cases.append(case)
            out.write(json.dumps(_case_record(case, (HistoryEntry.from_json(h) for h in hist))) + "\n")
            counts["case"] += 1
        pipe = redis.pipeline(transaction=False)
        wanted = [(c.exception_id, a) for c in cases for a in candidate_actions(c.to_data())]
        for eid, action in wanted:
            pipe.hgetall(f"{p}action:{idempotency_key(eid, action)}")
        for (eid, action), fields in zip(wanted, await _call("reading actions", pipe.execute()), strict=True):
            if fields:
                out.write(json.dumps(_action_record(eid, action, {_s(k): _s(v) for k, v in fields.items()})) + "\n")
                counts["action"] += 1
    start = 0
    while True:
        iids = [
            _s(i) for i in await _call("listing incidents", redis.zrange(f"{p}incidents:all", start, start + page - 1))
        ]
        if not iids:
            break
        start += len(iids)
        pipe = redis.pipeline(transaction=False)
        for iid in iids:
            pipe.hgetall(f"{p}incident:{iid}")
        for iid, raw in zip(iids, await _call("reading incidents", pipe.execute()), strict=True):
            if raw:
                fields = {_s(k): _s(v) for k, v in raw.items()}
                fields.setdefault("incident_id", iid)
                out.write(json.dumps({"kind": "incident", **Incident.from_fields(fields).to_dict()}) + "\n")
                counts["incident"] += 1
    return counts
