"""Cases: the handlers' record of one exception, its allowed lifecycle moves and its escalation schedule.

Pure (no I/O): the Redis store (`handlers.store`) keeps cases in this shape and asks this module
which moves are allowed and when a case is due for escalation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from orderwatch.errors import ConfigError, TransitionError
from orderwatch.schemas.exception_event import ExceptionData, Resolution

__all__ = [
    "ALLOWED_FROM",
    "MAX_LEVEL",
    "STATUSES",
    "Case",
    "CaseStatus",
    "HistoryEntry",
    "change_id",
    "check_transition",
    "escalation_times",
    "next_escalation",
    "transition_error",
    "wire_status",
]

CaseStatus = Literal["open", "acknowledged", "escalated", "resolved"]
STATUSES: tuple[str, ...] = CaseStatus.__args__  # type: ignore[attr-defined]
MAX_LEVEL = 2

ALLOWED_FROM: dict[str, frozenset[str]] = {
    "acknowledged": frozenset({"open", "escalated"}),
    # escalated -> escalated only to a higher level (checked with the levels)
    "escalated": frozenset({"open", "escalated"}),
    "resolved": frozenset({"open", "acknowledged", "escalated"}),
}
"""For each target status, the statuses a case may move to it from. Anything else is refused."""


def transition_error(exception_id: str, from_status: str, to_status: str, detail: str = "") -> TransitionError:
    msg = f"case {exception_id}: cannot move from {from_status} to {to_status}"
    if detail:
        msg += f" ({detail})"
    return TransitionError(msg)


def check_transition(
    exception_id: str, from_status: str, to_status: str, *, from_level: int = 0, to_level: int = 0
) -> None:
    """Raise TransitionError (naming both statuses) unless `from_status -> to_status` is allowed."""
    if from_status not in ALLOWED_FROM.get(to_status, frozenset()):
        raise transition_error(exception_id, from_status, to_status)
    if to_status == "escalated":
        if not 1 <= to_level <= MAX_LEVEL:
            raise transition_error(exception_id, from_status, to_status, f"level {to_level} is not 1..{MAX_LEVEL}")
        if to_level <= from_level:
            raise transition_error(
                exception_id, from_status, to_status, f"level {to_level} is not above level {from_level}"
            )


def wire_status(status: str) -> Literal["open", "resolved", "escalated"]:
    """The exception status on the wire for a case status: an acknowledged exception is still open."""
    if status == "resolved":
        return "resolved"
    if status == "escalated":
        return "escalated"
    return "open"


def change_id(exception_id: str, kind: str, level: int = 0) -> str:
    """Deterministic id of one lifecycle move: a case opens, is acknowledged and resolves at most
    once, and escalates at most once per level, so (exception_id, kind, level) names the move."""
    return f"{exception_id}:{kind}:{level}" if kind == "escalated" else f"{exception_id}:{kind}"


def escalation_times(detected_at: datetime, handle_by: datetime, factor: float) -> tuple[datetime, datetime]:
    """(level 1 due, level 2 due): level 1 at handle_by, level 2 at detected_at + factor x handling time."""
    if factor <= 1:
        msg = f"escalation level_2_factor: expected a number > 1, got {factor!r}"
        raise ConfigError(msg)
    handling = handle_by - detected_at
    return handle_by, detected_at + handling * factor


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    at: datetime
    who: str
    from_status: str | None
    """None for the entry that created the case."""
    to_status: str
    level: int = 0
    note: str | None = None
    event: str = "status"
    """What the entry records: `status` (a lifecycle move), `assigned` (owner/team changed), or an
    audit of another write: `action_approved`, `action_rejected`, `incident_acknowledged`,
    `incident_resolved` (the status does not move then)."""
    owner: str | None = None
    team: str | None = None
    action: str | None = None
    """The action code of an approval or rejection."""

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "at": self.at.isoformat(),
            "who": self.who,
            "from_status": self.from_status,
            "to_status": self.to_status,
            "level": self.level,
            "note": self.note,
            "event": self.event,
        }
        if self.event == "assigned":
            doc["owner"], doc["team"] = self.owner, self.team
        if self.action is not None:
            doc["action"] = self.action
        return doc

    @classmethod
    def from_json(cls, raw: str | bytes) -> HistoryEntry:
        doc = json.loads(raw)
        return cls(
            at=datetime.fromisoformat(doc["at"]),
            who=doc["who"],
            from_status=doc.get("from_status"),
            to_status=doc["to_status"],
            level=int(doc.get("level", 0)),
            note=doc.get("note"),
            event=doc.get("event", "status"),
            owner=doc.get("owner") or None,
            team=doc.get("team") or None,
            action=doc.get("action") or None,
        )


@dataclass(slots=True)
class Case:
    exception_id: str
    rule: str
    category: str
    severity: str
    subject: str
    order_id: str | None
    status: str
    level: int
    detected_at: datetime
    event_time: datetime
    handle_by: datetime
    summary: str
    evidence: dict[str, Any]
    recommended_action: str
    created_at: datetime
    updated_at: datetime
    resolution: Resolution | None = None
    incident_id: str | None = None
    owner: str | None = None
    """The person working the case (None: unassigned)."""
    team: str | None = None
    """The team the case belongs to: the handlers config's default for its rule, merchant or
    category when it opened, changed by hand (an `assigned` history entry)."""

    @property
    def merchant(self) -> str | None:
        """The merchant, when the detector put `merchant_id` in the evidence."""
        value = self.evidence.get("merchant_id")
        return value if isinstance(value, str) and value else None

    @classmethod
    def from_data(
        cls, data: ExceptionData, *, status: str, level: int, created_at: datetime, updated_at: datetime
    ) -> Case:
        return cls(
            exception_id=data.exception_id,
            rule=data.rule,
            category=data.category,
            severity=data.severity,
            subject=data.subject,
            order_id=data.order_id,
            status=status,
            level=level,
            detected_at=data.detected_at,
            event_time=data.event_time,
            handle_by=data.handle_by,
            summary=data.summary,
            evidence=dict(data.evidence),
            recommended_action=data.recommended_action,
            resolution=data.resolution,
            created_at=created_at,
            updated_at=updated_at,
        )

    def to_data(self) -> ExceptionData:
        """The exception as the wire model sees it (an acknowledged case is an open exception)."""
        return ExceptionData(
            exception_id=self.exception_id,
            rule=self.rule,
            category=self.category,
            severity=self.severity,
            status=wire_status(self.status),
            subject=self.subject,
            order_id=self.order_id,
            detected_at=self.detected_at,
            event_time=self.event_time,
            handle_by=self.handle_by,
            summary=self.summary,
            evidence=self.evidence,
            recommended_action=self.recommended_action,
            resolution=self.resolution,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (evidence raw: mask it before showing it to people)."""
        return {
            "exception_id": self.exception_id,
            "rule": self.rule,
            "category": self.category,
            "severity": self.severity,
            "subject": self.subject,
            "order_id": self.order_id,
            "status": self.status,
            "level": self.level,
            "detected_at": self.detected_at.isoformat(),
            "event_time": self.event_time.isoformat(),
            "handle_by": self.handle_by.isoformat(),
            "summary": self.summary,
            "evidence": self.evidence,
            "recommended_action": self.recommended_action,
            "resolution": self.resolution.model_dump(mode="json") if self.resolution else None,
            "incident_id": self.incident_id,
            "owner": self.owner,
            "team": self.team,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Case:
        doc = json.loads(raw)
        status, level = doc.pop("status"), int(doc.pop("level"))
        created_at, updated_at = doc.pop("created_at"), doc.pop("updated_at")
        incident_id = doc.pop("incident_id", None)
        owner, team = doc.pop("owner", None), doc.pop("team", None)
        data = ExceptionData.model_validate({**doc, "status": wire_status(status)})
        case = cls.from_data(
            data,
            status=status,
            level=level,
            created_at=datetime.fromisoformat(created_at),
            updated_at=datetime.fromisoformat(updated_at),
        )
        case.incident_id = incident_id
        case.owner, case.team = owner, team
        return case

    # Redis hash layout: the exception's immutable-ish data as one JSON string (without status and
    # resolution, so that the Lua scripts never parse JSON), the mutable fields next to it.
    @staticmethod
    def data_json(data: ExceptionData) -> str:
        return data.model_dump_json(exclude={"status", "resolution"})

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Case:
        doc = json.loads(fields["data"])
        status = fields["status"]
        resolution = fields.get("resolution") or None
        doc["status"] = wire_status(status)
        doc["resolution"] = json.loads(resolution) if resolution else None
        case = cls.from_data(
            ExceptionData.model_validate(doc),
            status=status,
            level=int(fields.get("level") or 0),
            created_at=datetime.fromisoformat(fields["created_at"]),
            updated_at=datetime.fromisoformat(fields["updated_at"]),
        )
        case.incident_id = fields.get("incident_id") or None
        case.owner = fields.get("owner") or None
        case.team = fields.get("team") or None
        return case


def next_escalation(case: Case, *, factor: float = 2.0, enabled: bool = True) -> tuple[int, datetime] | None:
    """(level, due time) of the case's next escalation, or None: escalation disabled, the case was
    acknowledged or resolved, or it already reached the top level."""
    if not enabled or case.status not in ("open", "escalated") or case.level >= MAX_LEVEL:
        return None
    due1, due2 = escalation_times(case.detected_at, case.handle_by, factor)
    level = case.level + 1
    return level, (due1 if level == 1 else due2)
