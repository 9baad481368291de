"""RULES.md, logistics rules: SHIPMENT_NOT_CREATED, TRACKING_STALLED, DELIVERY_OVERDUE,
DELIVERY_FAILED."""

from __future__ import annotations

from datetime import datetime

import pytest

from orderwatch.detectors.ids import exception_id
from orderwatch.schemas.events import Event
from tests.factories import (
    T0,
    at,
    cancelled,
    created,
    expect_opened,
    expect_resolved,
    opened,
    paid,
    paid_order,
    reserved,
    resolved,
    rules_opened,
    run,
    shipment,
    status,
)

OID = "o-1"


def shipped(when: datetime, **data: object) -> Event:
    return shipment("shipment.created", OID, when, **data)


def tracking(when: datetime) -> Event:
    return shipment("shipment.tracking_updated", OID, when)


def delivered(when: datetime) -> list[Event]:
    return [shipment("shipment.delivered", OID, when), status(OID, when, "delivered")]


# -- SHIPMENT_NOT_CREATED: order reaches paid, no shipment.created by D (48 h or promised_ship_by)


def test_shipment_not_created_fires_48h_after_payment() -> None:
    events = paid_order(OID, T0)  # payment at 1 min, status paid at 2 min: the payment was first
    ems = run(events, until=at(2, hours=48))
    expect_opened(
        ems,
        "SHIPMENT_NOT_CREATED",
        subject=OID,
        order_id=OID,
        severity="medium",
        event_time=at(1, hours=48),
        start=events[2],
    )
    assert rules_opened(ems) == ["SHIPMENT_NOT_CREATED"]


def test_shipment_not_created_starts_at_paid_status_when_it_comes_first() -> None:
    s = status(OID, at(1), "paid")
    ems = run([created(OID, T0), reserved(OID, at(0.5)), s, paid(OID, at(3))], until=at(2, hours=48))
    expect_opened(
        ems, "SHIPMENT_NOT_CREATED", subject=OID, order_id=OID, severity="medium", event_time=at(1, hours=48), start=s
    )


def test_shipment_not_created_deadline_is_the_promised_ship_by() -> None:
    events = paid_order(OID, T0, promised_ship_by=at(hours=24))
    ems = run(events, until=at(hours=25))
    expect_opened(
        ems,
        "SHIPMENT_NOT_CREATED",
        subject=OID,
        order_id=OID,
        severity="medium",
        event_time=at(hours=24),
        start=events[2],
    )


def test_shipment_not_created_cleared_by_shipment_at_exactly_the_deadline() -> None:
    ems = run([*paid_order(OID, T0), shipped(at(1, hours=48))], until=at(hours=50))
    assert ems == []


def test_shipment_not_created_cleared_by_cancel() -> None:
    ems = run([*paid_order(OID, T0), cancelled(OID, at(hours=47))], until=at(days=30))
    assert ems == []


def test_shipment_not_created_resolves_on_late_shipment() -> None:
    events = paid_order(OID, T0)
    s = shipped(at(hours=50))
    ems = run([*events, s], until=at(hours=51))
    rec = expect_opened(
        ems,
        "SHIPMENT_NOT_CREATED",
        subject=OID,
        order_id=OID,
        severity="medium",
        event_time=at(1, hours=48),
        start=events[2],
    )
    expect_resolved(ems, "SHIPMENT_NOT_CREATED", by=s, exception=rec)


# -- TRACKING_STALLED: 3 days without a further tracking event, delivery or shipment exception --


def test_tracking_stalled_fires_3_days_after_shipment() -> None:
    s = shipped(at(hours=2))
    ems = run([*paid_order(OID, T0), s], until=at(hours=3, days=3))
    expect_opened(
        ems, "TRACKING_STALLED", subject=OID, order_id=OID, severity="medium", event_time=at(hours=2, days=3), start=s
    )
    assert rules_opened(ems) == ["TRACKING_STALLED"]


def test_tracking_stalled_each_update_restarts_the_episode() -> None:
    t = tracking(at(hours=2, days=2))
    events = [*paid_order(OID, T0), shipped(at(hours=2)), t]
    assert run(events, until=at(hours=3, days=3)) == []
    ems = run(events, until=at(hours=3, days=5))
    expect_opened(
        ems, "TRACKING_STALLED", subject=OID, order_id=OID, severity="medium", event_time=at(hours=2, days=5), start=t
    )


def test_tracking_stalled_cleared_by_update_at_exactly_the_deadline() -> None:
    events = [*paid_order(OID, T0), shipped(at(hours=2)), tracking(at(hours=2, days=3))]
    assert run(events, until=at(hours=3, days=3)) == []


def test_tracking_stalled_cleared_by_delivery() -> None:
    events = [*paid_order(OID, T0), shipped(at(hours=2)), *delivered(at(days=2))]
    assert run(events, until=at(days=30)) == []


def test_tracking_stalled_cleared_by_shipment_exception() -> None:
    events = [
        *paid_order(OID, T0),
        shipped(at(hours=2)),
        shipment("shipment.exception", OID, at(days=1), reason="refused"),
    ]
    ems = run(events, until=at(days=5))
    assert rules_opened(ems) == ["DELIVERY_FAILED"]


def test_tracking_stalled_resolves_on_late_update_which_starts_a_new_episode() -> None:
    s, t = shipped(at(hours=2)), tracking(at(days=4))
    ems = run([*paid_order(OID, T0), s, t], until=at(days=6))
    first = expect_opened(
        ems, "TRACKING_STALLED", subject=OID, order_id=OID, severity="medium", event_time=at(hours=2, days=3), start=s
    )
    expect_resolved(ems, "TRACKING_STALLED", by=t, exception=first)
    ems = run([*paid_order(OID, T0), s, t], until=at(hours=1, days=7))
    second = opened(ems, "TRACKING_STALLED")[1].record
    assert second.event_time == at(days=7).timestamp()
    assert second.exception_id == exception_id("TRACKING_STALLED", OID, t.id) != first.exception_id


# -- DELIVERY_OVERDUE: promised_delivery_by (shipment's, else order's) passes undelivered ------


def test_delivery_overdue_fires_at_the_orders_promise() -> None:
    events = paid_order(OID, T0, promised_delivery_by=at(days=3))
    ems = run([*events, shipped(at(hours=2)), tracking(at(days=1)), tracking(at(days=2))], until=at(1, days=3))
    expect_opened(
        ems, "DELIVERY_OVERDUE", subject=OID, order_id=OID, severity="medium", event_time=at(days=3), start=events[0]
    )
    assert rules_opened(ems) == ["DELIVERY_OVERDUE"]


def test_delivery_overdue_uses_the_shipments_promise_over_the_orders() -> None:
    s = shipped(at(hours=2), promised_delivery_by=at(days=5))
    events = [*paid_order(OID, T0, promised_delivery_by=at(days=3)), s]
    assert opened(run(events, until=at(hours=1, days=3)), "DELIVERY_OVERDUE") == []
    ems = run(events, until=at(1, days=5))
    expect_opened(ems, "DELIVERY_OVERDUE", subject=OID, order_id=OID, severity="medium", event_time=at(days=5), start=s)


def test_delivery_overdue_cleared_by_delivery_at_exactly_the_promise() -> None:
    events = [
        *paid_order(OID, T0, promised_delivery_by=at(days=3)),
        shipped(at(hours=2)),
        tracking(at(days=2)),
        *delivered(at(days=3)),
    ]
    assert run(events, until=at(days=30)) == []


def test_delivery_overdue_resolves_on_late_delivery() -> None:
    events = paid_order(OID, T0, promised_delivery_by=at(days=3))
    d = shipment("shipment.delivered", OID, at(hours=12, days=3))
    ems = run([*events, shipped(at(hours=2)), tracking(at(days=2)), d], until=at(days=4))
    rec = expect_opened(
        ems, "DELIVERY_OVERDUE", subject=OID, order_id=OID, severity="medium", event_time=at(days=3), start=events[0]
    )
    expect_resolved(ems, "DELIVERY_OVERDUE", by=d, exception=rec)


# -- DELIVERY_FAILED: shipment.exception, high for lost/damaged, medium otherwise ------------


@pytest.mark.parametrize(
    ("reason", "severity"),
    [
        ("lost", "high"),
        ("damaged", "high"),
        ("refused", "medium"),
        ("address_invalid", "medium"),
        ("failed_attempt", "medium"),
    ],
)
def test_delivery_failed_fires_with_severity_by_reason(reason: str, severity: str) -> None:
    x = shipment("shipment.exception", OID, at(hours=5), reason=reason)
    ems = run([*paid_order(OID, T0), shipped(at(hours=2)), x], until=at(hours=6))
    rec = expect_opened(
        ems, "DELIVERY_FAILED", subject=OID, order_id=OID, severity=severity, event_time=at(hours=5), start=x
    )
    assert rec.evidence["reason"] == reason
    assert rules_opened(ems) == ["DELIVERY_FAILED"]


def test_delivery_failed_one_exception_while_open_and_not_resolved_by_tracking() -> None:
    x = shipment("shipment.exception", OID, at(hours=5), reason="failed_attempt")
    ems = run(
        [
            *paid_order(OID, T0),
            shipped(at(hours=2)),
            x,
            tracking(at(hours=20)),
            shipment("shipment.exception", OID, at(hours=30), reason="failed_attempt"),
        ],
        until=at(hours=31),
    )
    expect_opened(ems, "DELIVERY_FAILED", subject=OID, order_id=OID, severity="medium", event_time=at(hours=5), start=x)
    assert resolved(ems) == []


def test_delivery_failed_resolves_on_later_delivery() -> None:
    x = shipment("shipment.exception", OID, at(hours=5), reason="damaged")
    d = shipment("shipment.delivered", OID, at(days=2))
    ems = run([*paid_order(OID, T0), shipped(at(hours=2)), x, d], until=at(days=2, hours=1))
    rec = expect_opened(
        ems, "DELIVERY_FAILED", subject=OID, order_id=OID, severity="high", event_time=at(hours=5), start=x
    )
    expect_resolved(ems, "DELIVERY_FAILED", by=d, exception=rec)


def test_delivery_failed_reopens_with_a_new_id_after_resolution() -> None:
    x1 = shipment("shipment.exception", OID, at(hours=5), reason="failed_attempt")
    x2 = shipment("shipment.exception", OID, at(hours=30), reason="lost")
    ems = run(
        [*paid_order(OID, T0), shipped(at(hours=2)), x1, shipment("shipment.delivered", OID, at(hours=20)), x2],
        until=at(hours=31),
    )
    recs = [e.record for e in opened(ems, "DELIVERY_FAILED")]
    assert [(r.event_time, r.severity) for r in recs] == [
        (at(hours=5).timestamp(), "medium"),
        (at(hours=30).timestamp(), "high"),
    ]
    assert recs[0].exception_id != recs[1].exception_id
