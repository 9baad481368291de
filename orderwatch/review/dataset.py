"""The case set the review works on: cases, actions and incidents as flat rows, read from the case
store's export, from exception events (backtest output, a dump of `order-exceptions`), or built by
hand; plus the orders' segments (merchant, channel, ...) read from an event history.

Times are epoch seconds (floats) throughout: the analytics subtract them, nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orderwatch.detectors.catalog import RULES
from orderwatch.errors import InputError

__all__ = [
    "ACTION_COLUMNS",
    "CASE_COLUMNS",
    "CAUSE_DIMENSIONS",
    "INCIDENT_COLUMNS",
    "ORDER_DIMENSIONS",
    "CaseSet",
    "read_case_set",
]

# Evidence keys naming a shared cause, in the incidents' order (handlers.incidents.cause_of).
CAUSE_DIMENSIONS = ("carrier", "provider", "warehouse_id", "sku")
# Segments of the order, known only from its order.created / shipment.created events.
ORDER_DIMENSIONS = ("merchant", "channel", "payment_method", "country")

CASE_COLUMNS: dict[str, str] = {
    "exception_id": "VARCHAR",
    "rule": "VARCHAR",
    "category": "VARCHAR",
    "severity": "VARCHAR",
    "team": "VARCHAR",
    "subject": "VARCHAR",
    "order_id": "VARCHAR",
    "status": "VARCHAR",
    "level": "INTEGER",
    "detected_at": "DOUBLE",
    "handle_by": "DOUBLE",
    "acknowledged_at": "DOUBLE",
    "resolved_at": "DOUBLE",
    "escalated_at": "DOUBLE",
    "resolution_kind": "VARCHAR",
    "incident_id": "VARCHAR",
    "cause_dimension": "VARCHAR",
    "cause_value": "VARCHAR",
    "carrier": "VARCHAR",
    "provider": "VARCHAR",
    "warehouse_id": "VARCHAR",
    "sku": "VARCHAR",
    "merchant": "VARCHAR",
    "channel": "VARCHAR",
    "payment_method": "VARCHAR",
    "country": "VARCHAR",
}
ACTION_COLUMNS: dict[str, str] = {
    "exception_id": "VARCHAR",
    "action": "VARCHAR",
    "state": "VARCHAR",
    "attempts": "INTEGER",
    "approved_by": "VARCHAR",
    "decided_by": "VARCHAR",
    "requested_at": "DOUBLE",
    "sent_at": "DOUBLE",
    "decided_at": "DOUBLE",
}
INCIDENT_COLUMNS: dict[str, str] = {
    "incident_id": "VARCHAR",
    "rule": "VARCHAR",
    "dimension": "VARCHAR",
    "value": "VARCHAR",
    "status": "VARCHAR",
    "count": "INTEGER",
    "first_detected_at": "DOUBLE",
    "last_detected_at": "DOUBLE",
    "opened_at": "DOUBLE",
    "acknowledged_at": "DOUBLE",
    "resolved_at": "DOUBLE",
}


def _epoch(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        dt = datetime.fromisoformat(value)
        if dt.tzinfo is None:
            msg = f"timestamp {value!r} has no offset"
            raise ValueError(msg)
        return dt.timestamp()
    msg = f"expected an RFC 3339 timestamp, got {type(value).__name__}"
    raise ValueError(msg)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str | int):
        return str(value)[:200] or None
    return None


@dataclass
class CaseSet:
    """Rows for the analytics (one dict per row, keys as in the *_COLUMNS tables)."""

    cases: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    source: str = "cases"
    """`cases` (a case store: people acknowledge, escalate, act) or `exceptions` (events only)."""

    def add_case(self, doc: Mapping[str, Any], teams: Mapping[str, str] | None = None) -> None:
        """One case as the export (or the ops API) writes it: the case fields plus `history`."""
        history = sorted(doc.get("history") or [], key=lambda h: _epoch(h["at"]) or 0.0)
        ack = next((h for h in history if h.get("to_status") == "acknowledged"), None)
        esc = next((h for h in history if h.get("to_status") == "escalated"), None)
        res = next((h for h in history if h.get("to_status") == "resolved"), None)
        level = max([int(doc.get("level") or 0), *(int(h.get("level") or 0) for h in history)])
        resolution = doc.get("resolution") or None
        resolved_at = _epoch(res["at"]) if res else None
        if resolved_at is None and doc.get("status") == "resolved":
            resolved_at = _epoch(doc.get("updated_at"))
        kind = resolution.get("kind") if isinstance(resolution, dict) else None
        if kind is None and res is not None:
            kind = "manual" if res.get("who") not in (None, "", "detector") else "auto"
        self.cases.append(
            self._row(
                doc,
                teams,
                status=str(doc.get("status") or "open"),
                level=level,
                acknowledged_at=_epoch(ack["at"]) if ack else None,
                resolved_at=resolved_at,
                escalated_at=_epoch(esc["at"]) if esc else None,
                resolution_kind=kind,
                incident_id=_text(doc.get("incident_id")),
            )
        )

    def add_exception(
        self,
        data: Mapping[str, Any],
        *,
        resolved_at: float | None,
        level: int,
        escalated_at: float | None,
        teams: Mapping[str, str] | None = None,
    ) -> None:
        """One exception known from its events only: no acknowledgement, action or incident."""
        resolution = data.get("resolution") if resolved_at is not None else None
        self.cases.append(
            self._row(
                data,
                teams,
                status="resolved" if resolved_at is not None else ("escalated" if level else "open"),
                level=level,
                acknowledged_at=None,
                resolved_at=resolved_at,
                escalated_at=escalated_at,
                resolution_kind=(resolution or {}).get("kind", "auto") if resolved_at is not None else None,
                incident_id=None,
            )
        )

    @staticmethod
    def _row(doc: Mapping[str, Any], teams: Mapping[str, str] | None, **fields: Any) -> dict[str, Any]:
        rule = str(doc["rule"])
        meta = RULES.get(rule)
        category = str(doc.get("category") or (meta.category if meta else "system"))
        raw_evidence = doc.get("evidence")
        evidence: Mapping[str, Any] = raw_evidence if isinstance(raw_evidence, dict) else {}
        row: dict[str, Any] = {
            "exception_id": str(doc["exception_id"]),
            "rule": rule,
            "category": category,
            "severity": str(doc["severity"]),
            # The case's own team (the handlers' [owners] config) first, then --teams, then the category.
            "team": _text(doc.get("team")) or (teams or {}).get(rule) or (teams or {}).get(category) or category,
            "subject": _text(doc.get("subject")),
            "order_id": _text(doc.get("order_id")),
            "detected_at": _epoch(doc["detected_at"]),
            "handle_by": _epoch(doc["handle_by"]),
            **fields,
        }
        cause = None
        for dim in CAUSE_DIMENSIONS:
            value = _text(evidence.get(dim))
            if value is None and dim == "provider" and rule == "PAYMENT_FAILURE_SPIKE":
                value = row["subject"]
            row[dim] = value
            if cause is None and value is not None:
                cause = (dim, value)
        row["cause_dimension"], row["cause_value"] = cause if cause else (None, None)
        for dim in ORDER_DIMENSIONS:
            row[dim] = None
        row["merchant"] = _text(evidence.get("merchant_id"))
        return row

    def add_action(self, doc: Mapping[str, Any]) -> None:
        self.actions.append(
            {
                "exception_id": str(doc["exception_id"]),
                "action": str(doc["action"]),
                "state": str(doc["state"]),
                "attempts": int(doc.get("attempts") or 0),
                "approved_by": _text(doc.get("approved_by")),
                "decided_by": _text(doc.get("decided_by")),
                "requested_at": _epoch(doc.get("requested_at")),
                "sent_at": _epoch(doc.get("sent_at")),
                "decided_at": _epoch(doc.get("decided_at")),
            }
        )

    def add_incident(self, doc: Mapping[str, Any]) -> None:
        self.incidents.append(
            {
                "incident_id": str(doc["incident_id"]),
                "rule": str(doc["rule"]),
                "dimension": str(doc["dimension"]),
                "value": str(doc["value"]),
                "status": str(doc["status"]),
                "count": int(doc["count"]),
                "first_detected_at": _epoch(doc["first_detected_at"]),
                "last_detected_at": _epoch(doc["last_detected_at"]),
                "opened_at": _epoch(doc.get("opened_at")),
                "acknowledged_at": _epoch(doc.get("acknowledged_at")),
                "resolved_at": _epoch(doc.get("resolved_at")),
            }
        )

    def attach_orders(self, orders: Mapping[str, list[str | None]]) -> int:
        """Fill merchant, channel, payment method and country from the orders' segments (as
        `orderwatch.calibrate.SegmentSniffer` reads them) and the carrier where the evidence has
        none; returns how many cases found their order."""
        found = 0
        for row in self.cases:
            seg = orders.get(row["order_id"] or "")
            if seg is None:
                continue
            found += 1
            row["merchant"] = seg[0] or row["merchant"]
            row["channel"], row["payment_method"], row["country"] = seg[1], seg[2], seg[3]
            if row["carrier"] is None:
                row["carrier"] = seg[4]
        return found


def read_case_set(lines: Iterable[bytes], teams: Mapping[str, str] | None = None) -> CaseSet:
    """A case set from JSON Lines: the case store's export (`kind` = case, action, incident) or
    exception CloudEvents (`type` = exception.opened, .resolved, .escalated), told apart per line.
    A line that is neither raises InputError naming it; blank lines are skipped."""
    cs = CaseSet()
    exceptions: dict[str, dict[str, Any]] = {}
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            kind = doc.get("kind")
            if kind == "case":
                cs.add_case(doc, teams)
            elif kind == "action":
                cs.add_action(doc)
            elif kind == "incident":
                cs.add_incident(doc)
            elif isinstance(doc.get("type"), str) and doc["type"].startswith("exception."):
                _collect_event(exceptions, doc)
            else:
                raise ValueError("neither an export record (kind) nor an exception event (type)")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            msg = f"line {n}: not a case export record or exception event ({type(exc).__name__}: {exc})"
            raise InputError(msg) from exc
    if exceptions:
        cs.source = "exceptions" if not cs.cases else "mixed"
        for ex in exceptions.values():
            if ex.get("data") is None:
                continue  # a resolution whose opening was compacted away and carried no data
            cs.add_exception(
                ex["data"],
                resolved_at=ex.get("resolved_at"),
                level=ex.get("level", 0),
                escalated_at=ex.get("escalated_at"),
                teams=teams,
            )
    return cs


def _collect_event(exceptions: dict[str, dict[str, Any]], doc: dict[str, Any]) -> None:
    data = doc["data"]
    if not isinstance(data, dict):
        raise TypeError("data must be an object")
    eid = str(data["exception_id"])
    ex = exceptions.setdefault(eid, {})
    kind = doc["type"]
    if kind == "exception.opened" or ex.get("data") is None:
        # A later revision (`:opened:N`) carries the grown evidence: keep the newest data.
        ex["data"] = data
    if kind == "exception.resolved":
        ex["resolved_at"] = _epoch(doc["time"])
        ex["data"] = {**ex["data"], "resolution": data.get("resolution")}
    elif kind == "exception.escalated":
        # The id is `<exception_id>:escalated:<level>` (handlers.cases.change_id).
        tail = str(doc.get("id", "")).rsplit(":", 1)[-1]
        ex["level"] = max(ex.get("level", 0), int(tail) if tail.isdigit() else 1)
        at = _epoch(doc["time"])
        if ex.get("escalated_at") is None or (at is not None and at < ex["escalated_at"]):
            ex["escalated_at"] = at
