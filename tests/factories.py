"""Event factories shared by the tests: valid CloudEvents with sensible defaults, built through
the real wire parser so tests exercise the contract too."""

from __future__ import annotations

import contextlib
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.engine import Engine
from orderwatch.detectors.ids import exception_id
from orderwatch.detectors.records import Emission, ExceptionRecord
from orderwatch.detectors.replay import EventTimeReplay
from orderwatch.errors import InvalidEvent
from orderwatch.schemas.events import Event, parse_event

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)

ADDRESS = {
    "recipient": "Ada Lovelace",
    "line1": "12 Acacia Avenue",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}
PHONE = "+4915123456789"


def at(minutes: float = 0, *, hours: float = 0, days: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, hours=hours, days=days)


def raw(type_: str, subject: str, when: datetime, data: dict[str, Any], id_: str | None = None) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": id_ or f"evt-{next(_ids)}",
        "source": "/tests",
        "type": type_,
        "time": when.isoformat(),
        "subject": subject,
        "data": data,
    }


def event(type_: str, subject: str, when: datetime, data: dict[str, Any], id_: str | None = None) -> Event:
    return parse_event(json.dumps(raw(type_, subject, when, data, id_)))


def created(
    order: str,
    when: datetime,
    *,
    customer: str = "c-1",
    total: str = "50.00",
    items: list[dict[str, Any]] | None = None,
    address: dict[str, Any] | None = None,
    phone: str = PHONE,
    since: datetime | None = None,
    id_: str | None = None,
    **extra: Any,
) -> Event:
    data = {
        "order_id": order,
        "customer_id": customer,
        "customer_since": (since or T0 - timedelta(days=400)).isoformat(),
        "merchant_id": "m-1",
        "channel": "web",
        "items": items or [{"sku": "SKU-1", "quantity": 1, "unit_price": total}],
        "total_amount": total,
        "currency": "EUR",
        "shipping_address": address or ADDRESS,
        "contact_phone": phone,
        **{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in extra.items()},
    }
    return event("order.created", order, when, data, id_)


def status(order: str, when: datetime, value: str, id_: str | None = None) -> Event:
    return event("order.status_changed", order, when, {"order_id": order, "status": value}, id_)


def paid(
    order: str,
    when: datetime,
    *,
    amount: str = "50.00",
    payment: str | None = None,
    provider: str = "stripe",
    id_: str | None = None,
) -> Event:
    return event(
        "payment.succeeded",
        order,
        when,
        {
            "order_id": order,
            "payment_id": payment or f"pay-{order}",
            "amount": amount,
            "currency": "EUR",
            "provider": provider,
            "method": "card",
        },
        id_,
    )


def failed(order: str, when: datetime, *, provider: str = "stripe", payment: str | None = None) -> Event:
    return event(
        "payment.failed",
        order,
        when,
        {
            "order_id": order,
            "payment_id": payment or f"payf-{next(_ids)}",
            "amount": "10.00",
            "currency": "EUR",
            "provider": provider,
            "reason_code": "card_declined",
        },
    )


def reserved(
    order: str, when: datetime, *, sku: str = "SKU-1", qty: int = 1, wh: str = "W1", type_: str = "inventory.reserved"
) -> Event:
    return event(type_, sku, when, {"sku": sku, "warehouse_id": wh, "order_id": order, "quantity": qty})


def level(sku: str, when: datetime, on_hand: int, reserved_: int = 0, wh: str = "W1") -> Event:
    return event(
        "inventory.level_reported",
        sku,
        when,
        {"sku": sku, "warehouse_id": wh, "on_hand": on_hand, "reserved": reserved_},
    )


def shipment(type_: str, order: str, when: datetime, **data: Any) -> Event:
    base = {"order_id": order, "shipment_id": f"shp-{order}"}
    if type_ == "shipment.created":
        base |= {"carrier": "dhl", "tracking_number": "JD0001"}
    if type_ == "shipment.tracking_updated":
        base |= {"status": "in_transit"}
    base |= {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}
    return event(type_, order, when, base)


def refund(type_: str, order: str, when: datetime, refund_id: str = "r-1", amount: str = "50.00", **data: Any) -> Event:
    base: dict[str, Any] = {"order_id": order, "refund_id": refund_id}
    if type_ == "refund.requested":
        base |= {"amount": amount, "currency": "EUR", "reason": "return"}
    elif type_ == "refund.succeeded":
        base |= {"amount": amount, "currency": "EUR"}
    else:
        base |= {"reason_code": "insufficient_funds"}
    return event(type_, order, when, base | data)


def run(
    events: list[Event],
    *,
    until: datetime | None = None,
    lateness: float = 0.0,
    config: RulesConfig | None = None,
    engine: Engine | None = None,
) -> list[Emission]:
    """Replay events in the given arrival order; return every emission."""
    replay = EventTimeReplay(engine or Engine(config), lateness=lateness)
    out: list[Emission] = []
    for ev in events:
        # A driver dead-letters what the replay refuses (too late to dedupe); so do the tests.
        with contextlib.suppress(InvalidEvent):
            out += replay.push(ev)
    out += replay.finish(until.timestamp() if until else None)
    return out


def opened(emissions: list[Emission], rule: str | None = None) -> list[Emission]:
    return [e for e in emissions if e.kind == "opened" and (rule is None or e.record.rule == rule)]


def resolved(emissions: list[Emission], rule: str | None = None) -> list[Emission]:
    return [e for e in emissions if e.kind == "resolved" and (rule is None or e.record.rule == rule)]


def rules_opened(emissions: list[Emission]) -> list[str]:
    return sorted(e.record.rule for e in opened(emissions))


def happy_journey(order: str, start: datetime) -> list[Event]:
    """A complete, healthy order: no rule may fire on it."""
    m = lambda minutes: start + timedelta(minutes=minutes)  # noqa: E731
    return [
        created(order, m(0), promised_delivery_by=m(5 * 1440)),
        reserved(order, m(0.5)),
        paid(order, m(2)),
        status(order, m(3), "paid"),
        shipment("shipment.created", order, m(600)),
        status(order, m(601), "shipped"),
        shipment("shipment.tracking_updated", order, m(1440)),
        shipment("shipment.delivered", order, m(2880)),
        status(order, m(2881), "delivered"),
    ]


# -- helpers for the rule tests (tests/detectors/test_rules_*.py) ------------------------------


def address_updated(
    order: str, when: datetime, address: dict[str, Any] | None = None, phone: str | None = None, id_: str | None = None
) -> Event:
    data: dict[str, Any] = {"order_id": order, "shipping_address": address or ADDRESS}
    if phone is not None:
        data["contact_phone"] = phone
    return event("order.address_updated", order, when, data, id_)


def cancel_requested(order: str, when: datetime, id_: str | None = None) -> Event:
    return event("order.cancel_requested", order, when, {"order_id": order, "reason": "changed_mind"}, id_)


def cancelled(order: str, when: datetime, id_: str | None = None) -> Event:
    return event("order.cancelled", order, when, {"order_id": order, "reason": "changed_mind"}, id_)


def reservation_failed(order: str, when: datetime, *, sku: str = "SKU-1", qty: int = 1, wh: str = "W1") -> Event:
    return event(
        "inventory.reservation_failed",
        sku,
        when,
        {"sku": sku, "warehouse_id": wh, "order_id": order, "quantity": qty, "reason": "out_of_stock"},
    )


def paid_order(order: str, start: datetime, *, total: str = "50.00", **created_kw: Any) -> list[Event]:
    """Created, stock reserved, paid and marked paid: only SHIPMENT_NOT_CREATED (payment + 48 h)
    and ORDER_STUCK (last event + 7 d) stay pending."""
    m = lambda minutes: start + timedelta(minutes=minutes)  # noqa: E731
    return [
        created(order, start, total=total, **created_kw),
        reserved(order, m(0.5)),
        paid(order, m(1), amount=total),
        status(order, m(2), "paid"),
    ]


def updated(emissions: list[Emission], rule: str | None = None) -> list[Emission]:
    return [e for e in emissions if e.kind == "updated" and (rule is None or e.record.rule == rule)]


def expect_opened(
    emissions: list[Emission],
    rule: str,
    *,
    subject: str,
    order_id: str | None,
    severity: str,
    event_time: datetime,
    start: Event | str,
) -> ExceptionRecord:
    """Exactly one `opened` of `rule`, with these facts; its id is the hash of rule, subject and
    the episode's start event id (CONTRACT.md)."""
    ems = opened(emissions, rule)
    assert len(ems) == 1, f"expected one opened {rule}, got {[e.record for e in ems]}"
    rec = ems[0].record
    start_id = start if isinstance(start, str) else start.id
    assert (rec.subject, rec.order_id, rec.severity, rec.status) == (subject, order_id, severity, "open")
    assert rec.event_time == event_time.timestamp()
    assert rec.exception_id == exception_id(rule, subject, start_id)
    return rec


def expect_resolved(
    emissions: list[Emission], rule: str, *, by: Event, exception: ExceptionRecord | None = None
) -> ExceptionRecord:
    """Exactly one automatic `resolved` of `rule`, naming the clearing event `by`."""
    ems = resolved(emissions, rule)
    assert len(ems) == 1, f"expected one resolved {rule}, got {[e.record for e in ems]}"
    rec = ems[0].record
    assert (rec.status, rec.resolution_kind) == ("resolved", "auto")
    assert rec.resolution_event_id == by.id
    assert rec.resolution_event_time == by.time.timestamp()
    if exception is not None:
        assert rec.exception_id == exception.exception_id
    return rec
