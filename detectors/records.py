"""What the rules emit: exception records and their wire form (a CloudEvent dict).

Records are plain slotted dataclasses; `to_cloudevent` is the one place that turns them into the
`order-exceptions` contract (see `schemas.exception_event`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from orderwatch.detectors.catalog import HANDLING_SECONDS, RULES

__all__ = ["Emission", "ExceptionRecord", "iso", "milli", "money", "to_cloudevent"]

EmissionKind = Literal["opened", "updated", "resolved"]


@dataclass(slots=True)
class ExceptionRecord:
    exception_id: str
    rule: str
    subject: str
    order_id: str | None
    severity: str
    detected_at: float
    event_time: float
    summary: str
    evidence: dict[str, Any]
    status: str = "open"
    resolution_kind: str | None = None
    resolution_event_id: str | None = None
    resolution_event_time: float | None = None
    resolved_at: float | None = None
    revision: int = 0
    # Internal figure a rule needs to decide resolution (e.g. the duplicate's amount); not on the wire.
    amount: int = field(default=0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ExceptionRecord:
        return cls(**doc)

    def pack(self) -> bytes:
        """The record as compact JSON, its fields in order without their names: how a detector
        holds a record it may resolve days later (a quarter of the memory of the object, its
        strings and its evidence dict). Lossless for what rules put in a record (JSON values;
        floats read back exactly)."""
        return json.dumps([getattr(self, name) for name in _FIELD_NAMES], separators=(",", ":")).encode()

    @classmethod
    def unpack(cls, blob: bytes) -> ExceptionRecord:
        return cls(*json.loads(blob))

    def resolve(self, event_id: str | None, event_time: float | None, now: float) -> None:
        self.status = "resolved"
        self.resolution_kind = "auto"
        self.resolution_event_id = event_id
        self.resolution_event_time = event_time
        self.resolved_at = now


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(ExceptionRecord))


@dataclass(frozen=True, slots=True)
class Emission:
    """One change of one exception: a snapshot, so later changes do not rewrite history."""

    kind: EmissionKind
    record: ExceptionRecord

    @staticmethod
    def of(kind: EmissionKind, record: ExceptionRecord) -> Emission:
        return Emission(kind, dataclasses.replace(record, evidence=dict(record.evidence)))


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def milli(amount: Decimal) -> int:
    """Money in thousandths of the unit: exact for every ISO 4217 currency, cheap to store."""
    return int((amount * 1000).to_integral_value())


def money(value: int) -> str:
    q = Decimal(value).scaleb(-3)
    return str(q.quantize(Decimal("0.01"))) if value % 10 == 0 else str(q)


def to_cloudevent(emission: Emission) -> dict[str, Any]:
    """The `order-exceptions` CloudEvent for one emission (JSON-ready dict)."""
    rec = emission.record
    meta = RULES[rec.rule]
    if emission.kind == "resolved":
        ce_type, ce_id = "exception.resolved", f"{rec.exception_id}:resolved"
        when = rec.resolved_at if rec.resolved_at is not None else rec.detected_at
    else:
        ce_type, when = "exception.opened", rec.detected_at
        ce_id = f"{rec.exception_id}:opened" + (f":{rec.revision}" if rec.revision else "")
    data: dict[str, Any] = {
        "exception_id": rec.exception_id,
        "rule": rec.rule,
        "category": meta.category,
        "severity": rec.severity,
        "status": rec.status,
        "subject": rec.subject,
        "order_id": rec.order_id,
        "detected_at": iso(rec.detected_at),
        "event_time": iso(rec.event_time),
        "handle_by": iso(rec.detected_at + HANDLING_SECONDS[rec.severity]),
        "summary": rec.summary,
        "evidence": rec.evidence,
        "recommended_action": meta.action,
        "resolution": None,
    }
    if emission.kind == "resolved":
        data["resolution"] = {
            "kind": rec.resolution_kind or "auto",
            "event_id": rec.resolution_event_id,
            "event_time": iso(rec.resolution_event_time) if rec.resolution_event_time else None,
            "note": None,
        }
    return {
        "specversion": "1.0",
        "id": ce_id,
        "source": "/orderwatch",
        "type": ce_type,
        "time": iso(when),
        "subject": rec.subject,
        "datacontenttype": "application/json",
        "data": data,
    }
