"""RULES.md, refund rules: REFUND_OVERDUE, REFUND_FAILED, REFUND_EXCEEDS_PAYMENT."""

from __future__ import annotations

import pytest

from orderwatch.schemas.events import Event
from tests.factories import (
    T0,
    at,
    created,
    expect_opened,
    expect_resolved,
    opened,
    paid,
    paid_order,
    refund,
    resolved,
    rules_opened,
    run,
    status,
)

OID = "o-1"


def requested(hours: float, refund_id: str = "r-1", amount: str = "20.00", minutes: float = 0) -> Event:
    return refund("refund.requested", OID, at(minutes, hours=hours), refund_id=refund_id, amount=amount)


def succeeded(hours: float, refund_id: str = "r-1", amount: str = "20.00", minutes: float = 0) -> Event:
    return refund("refund.succeeded", OID, at(minutes, hours=hours), refund_id=refund_id, amount=amount)


# -- REFUND_OVERDUE: refund.requested + 24 h, no refund.succeeded for that refund_id ----------


def test_refund_overdue_fires_at_deadline() -> None:
    req = requested(1)
    ems = run([*paid_order(OID, T0), req], until=at(1, hours=25))
    rec = expect_opened(
        ems, "REFUND_OVERDUE", subject=OID, order_id=OID, severity="high", event_time=at(hours=25), start=req
    )
    assert rec.evidence["refund_id"] == "r-1"
    assert rules_opened(ems) == ["REFUND_OVERDUE"]


def test_refund_overdue_cleared_by_success_at_exactly_the_deadline() -> None:
    assert run([*paid_order(OID, T0), requested(1), succeeded(25)], until=at(hours=30)) == []


def test_refund_overdue_not_cleared_by_another_refunds_success() -> None:
    req = requested(1)
    ems = run([*paid_order(OID, T0), req, succeeded(2, refund_id="r-2", amount="5.00")], until=at(hours=26))
    expect_opened(ems, "REFUND_OVERDUE", subject=OID, order_id=OID, severity="high", event_time=at(hours=25), start=req)


def test_refund_overdue_resolves_on_late_success() -> None:
    req, ok = requested(1), succeeded(30)
    ems = run([*paid_order(OID, T0), req, ok], until=at(hours=31))
    rec = expect_opened(
        ems, "REFUND_OVERDUE", subject=OID, order_id=OID, severity="high", event_time=at(hours=25), start=req
    )
    expect_resolved(ems, "REFUND_OVERDUE", by=ok, exception=rec)


def test_refund_overdue_one_exception_per_refund_id() -> None:
    r1, r2 = requested(1), requested(2, refund_id="r-2", amount="10.00")
    ems = run([*paid_order(OID, T0), r1, r2], until=at(hours=27))
    recs = sorted((e.record for e in opened(ems, "REFUND_OVERDUE")), key=lambda r: r.event_time)
    assert [(r.event_time, r.evidence["refund_id"]) for r in recs] == [
        (at(hours=25).timestamp(), "r-1"),
        (at(hours=26).timestamp(), "r-2"),
    ]
    assert recs[0].exception_id != recs[1].exception_id


@pytest.mark.parametrize("terminal", ["refunded", "completed", "cancelled", "delivered"])
def test_refund_overdue_runs_on_after_a_terminal_status(terminal: str) -> None:
    req = requested(1)
    ems = run([*paid_order(OID, T0), req, status(OID, at(hours=2), terminal)], until=at(1, hours=25))
    expect_opened(ems, "REFUND_OVERDUE", subject=OID, order_id=OID, severity="high", event_time=at(hours=25), start=req)
    assert rules_opened(ems) == ["REFUND_OVERDUE"]


def test_refund_overdue_starts_after_a_terminal_status() -> None:
    req = requested(3)
    ems = run([*paid_order(OID, T0), status(OID, at(hours=2), "completed"), req], until=at(1, hours=27))
    expect_opened(ems, "REFUND_OVERDUE", subject=OID, order_id=OID, severity="high", event_time=at(hours=27), start=req)


# -- REFUND_FAILED: refund.failed, resolved by a later refund.succeeded for that refund_id -----


def test_refund_failed_fires() -> None:
    f = refund("refund.failed", OID, at(hours=1))
    ems = run([*paid_order(OID, T0), requested(0, minutes=30), f], until=at(hours=2))
    rec = expect_opened(
        ems, "REFUND_FAILED", subject=OID, order_id=OID, severity="high", event_time=at(hours=1), start=f
    )
    assert rec.evidence["refund_id"] == "r-1"
    assert rules_opened(ems) == ["REFUND_FAILED"]


def test_refund_failed_not_fired_for_a_successful_refund_and_once_per_refund() -> None:
    assert run([*paid_order(OID, T0), requested(1), succeeded(2)], until=at(hours=3)) == []
    ems = run(
        [*paid_order(OID, T0), refund("refund.failed", OID, at(hours=1)), refund("refund.failed", OID, at(hours=2))],
        until=at(hours=3),
    )
    assert len(opened(ems, "REFUND_FAILED")) == 1


def test_refund_failed_not_resolved_by_another_refunds_success() -> None:
    ems = run(
        [*paid_order(OID, T0), refund("refund.failed", OID, at(hours=1)), succeeded(2, refund_id="r-2")],
        until=at(hours=3),
    )
    assert len(opened(ems, "REFUND_FAILED")) == 1
    assert resolved(ems) == []


def test_refund_failed_resolves_on_later_success() -> None:
    f, ok = refund("refund.failed", OID, at(hours=1)), succeeded(3)
    ems = run([*paid_order(OID, T0), f, ok], until=at(hours=4))
    rec = expect_opened(
        ems, "REFUND_FAILED", subject=OID, order_id=OID, severity="high", event_time=at(hours=1), start=f
    )
    expect_resolved(ems, "REFUND_FAILED", by=ok, exception=rec)


# -- REFUND_EXCEEDS_PAYMENT: requested or succeeded refunds exceed distinct payments (manual) --


def test_refund_exceeds_payment_fires() -> None:
    r2 = requested(2, refund_id="r-2", amount="30.00")
    ems = run([*paid_order(OID, T0), requested(1, amount="30.00"), r2], until=at(hours=3))
    rec = expect_opened(
        ems, "REFUND_EXCEEDS_PAYMENT", subject=OID, order_id=OID, severity="critical", event_time=at(hours=2), start=r2
    )
    assert (rec.evidence["refunds"], rec.evidence["paid"]) == ("60.00", "50.00")
    assert rules_opened(ems) == ["REFUND_EXCEEDS_PAYMENT"]


def test_refund_exceeds_payment_not_fired_up_to_the_payment() -> None:
    events = [
        *paid_order(OID, T0),
        requested(1, amount="30.00"),
        succeeded(2, amount="30.00"),  # the same refund requested then paid out: counted once
        requested(3, refund_id="r-2", amount="20.00"),
    ]
    assert run(events, until=at(hours=4)) == []


def test_refund_exceeds_payment_counts_a_re_reported_payment_once() -> None:
    r = requested(1, amount="100.00")
    ems = run([*paid_order(OID, T0), paid(OID, at(3)), r], until=at(hours=2))
    expect_opened(
        ems, "REFUND_EXCEEDS_PAYMENT", subject=OID, order_id=OID, severity="critical", event_time=at(hours=1), start=r
    )


def test_refund_exceeds_payment_stays_open() -> None:
    events = [
        *paid_order(OID, T0),
        requested(1, amount="80.00"),
        paid(OID, at(hours=2), amount="50.00", payment="pay-2"),
        succeeded(3, amount="80.00"),
    ]
    ems = run(events, until=at(hours=5))
    assert len(opened(ems, "REFUND_EXCEEDS_PAYMENT")) == 1
    assert resolved(ems, "REFUND_EXCEEDS_PAYMENT") == []


def test_refund_exceeds_payment_for_a_known_unpaid_order() -> None:
    r = requested(1)
    ems = run([created(OID, T0), r], until=at(hours=2))
    expect_opened(
        ems, "REFUND_EXCEEDS_PAYMENT", subject=OID, order_id=OID, severity="critical", event_time=at(hours=1), start=r
    )
