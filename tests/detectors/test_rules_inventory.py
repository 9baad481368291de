"""RULES.md, inventory rules: STOCK_OVERSOLD, STOCK_RESERVATION_FAILED, STOCK_NOT_RESERVED."""

from __future__ import annotations

from datetime import datetime

from orderwatch.schemas.events import Event
from tests.factories import (
    T0,
    at,
    created,
    expect_opened,
    expect_resolved,
    level,
    opened,
    paid,
    reservation_failed,
    reserved,
    resolved,
    rules_opened,
    run,
    status,
)

OID = "o-1"
SKU = "SKU-1"


def released(order: str, when: datetime, qty: int = 1, wh: str = "W1") -> Event:
    return reserved(order, when, qty=qty, wh=wh, type_="inventory.released")


# -- STOCK_OVERSOLD: per (sku, warehouse), last snapshot plus later reserved/released --------


def test_stock_oversold_fires_when_reserved_exceeds_on_hand() -> None:
    r2 = reserved("o-b", at(2))
    ems = run([level(SKU, T0, on_hand=2, reserved_=1), reserved("o-a", at(1)), r2], until=at(3))
    rec = expect_opened(
        ems, "STOCK_OVERSOLD", subject=SKU, order_id=None, severity="critical", event_time=at(2), start=r2
    )
    assert (rec.evidence["warehouse_id"], rec.evidence["on_hand"], rec.evidence["reserved"]) == ("W1", 2, 3)
    assert rules_opened(ems) == ["STOCK_OVERSOLD"]


def test_stock_oversold_not_fired_when_reserved_equals_on_hand() -> None:
    ems = run([level(SKU, T0, on_hand=2, reserved_=1), reserved("o-a", at(1))], until=at(3))
    assert ems == []


def test_stock_oversold_needs_a_snapshot() -> None:
    ems = run([reserved("o-a", at(1), qty=5), reserved("o-b", at(2), qty=5)], until=at(3))
    assert ems == []


def test_stock_oversold_is_per_warehouse() -> None:
    r = reserved("o-a", at(2), qty=2, wh="W1")
    ems = run(
        [
            level(SKU, T0, on_hand=1, wh="W1"),
            level(SKU, at(1), on_hand=5, wh="W2"),
            r,
            reserved("o-b", at(3), qty=3, wh="W2"),
        ],
        until=at(4),
    )
    rec = expect_opened(
        ems, "STOCK_OVERSOLD", subject=SKU, order_id=None, severity="critical", event_time=at(2), start=r
    )
    assert (rec.evidence["warehouse_id"], rec.evidence["on_hand"], rec.evidence["reserved"]) == ("W1", 1, 2)
    assert len(ems) == 1


def test_stock_oversold_uses_the_last_snapshot() -> None:
    # against the first snapshot (5 on hand, 4 reserved) 3 more would oversell; the later one has room
    ems = run(
        [
            level(SKU, T0, on_hand=5, reserved_=4),
            level(SKU, at(1), on_hand=10, reserved_=4),
            reserved("o-a", at(2), qty=3),
        ],
        until=at(3),
    )
    assert ems == []


def test_stock_oversold_snapshot_replaces_earlier_reservations() -> None:
    ems = run(
        [
            level(SKU, T0, on_hand=3),
            reserved("o-a", at(1), qty=3),
            level(SKU, at(2), on_hand=3, reserved_=0),
            reserved("o-b", at(3), qty=1),
        ],
        until=at(4),
    )
    assert ems == []


def test_stock_oversold_counts_releases_after_the_snapshot() -> None:
    r = reserved("o-b", at(2), qty=2)
    ems = run([level(SKU, T0, on_hand=2, reserved_=2), released("o-a", at(1)), r], until=at(3))
    rec = expect_opened(
        ems, "STOCK_OVERSOLD", subject=SKU, order_id=None, severity="critical", event_time=at(2), start=r
    )
    assert rec.evidence["reserved"] == 3


def test_stock_oversold_resolves_on_release() -> None:
    r, rel = reserved("o-b", at(2), qty=2), released("o-b", at(5))
    ems = run([level(SKU, T0, on_hand=2, reserved_=1), r, rel], until=at(6))
    rec = expect_opened(
        ems, "STOCK_OVERSOLD", subject=SKU, order_id=None, severity="critical", event_time=at(2), start=r
    )
    expect_resolved(ems, "STOCK_OVERSOLD", by=rel, exception=rec)


def test_stock_oversold_resolves_on_new_snapshot_and_reopens_with_a_new_id() -> None:
    r1, snap, r2 = (
        reserved("o-b", at(2), qty=2),
        level(SKU, at(5), on_hand=10, reserved_=3),
        reserved("o-c", at(9), qty=8),
    )
    ems = run([level(SKU, T0, on_hand=2, reserved_=1), r1, snap, r2], until=at(10))
    first = opened(ems, "STOCK_OVERSOLD")[0].record
    expect_resolved(ems, "STOCK_OVERSOLD", by=snap, exception=first)
    assert [e.kind for e in ems] == ["opened", "resolved", "opened"]
    assert ems[2].record.exception_id != first.exception_id
    assert ems[2].record.event_time == at(9).timestamp()


# -- STOCK_RESERVATION_FAILED: instant, resolved by inventory.reserved for that order and sku ---


def test_stock_reservation_failed_fires() -> None:
    f = reservation_failed(OID, at(1))
    ems = run([f], until=at(2))
    rec = expect_opened(
        ems, "STOCK_RESERVATION_FAILED", subject=OID, order_id=OID, severity="high", event_time=at(1), start=f
    )
    assert (rec.evidence["sku"], rec.evidence["quantity"]) == (SKU, 1)


def test_stock_reservation_failed_not_fired_on_success() -> None:
    ems = run([reserved(OID, at(1)), reserved(OID, at(2), sku="SKU-2")], until=at(3))
    assert ems == []


def test_stock_reservation_failed_not_resolved_by_another_sku() -> None:
    ems = run([reservation_failed(OID, at(1)), reserved(OID, at(2), sku="SKU-2"), reserved("o-2", at(3))], until=at(4))
    assert len(opened(ems, "STOCK_RESERVATION_FAILED")) == 1
    assert resolved(ems) == []


def test_stock_reservation_failed_resolves_on_reservation() -> None:
    f, r = reservation_failed(OID, at(1)), reserved(OID, at(5))
    ems = run([f, r], until=at(6))
    rec = expect_opened(
        ems, "STOCK_RESERVATION_FAILED", subject=OID, order_id=OID, severity="high", event_time=at(1), start=f
    )
    expect_resolved(ems, "STOCK_RESERVATION_FAILED", by=r, exception=rec)


# -- STOCK_NOT_RESERVED: payment.succeeded + 15 min, no reservation (nor failure) -----------


def _paid_unreserved() -> tuple[list[Event], Event]:
    p = paid(OID, at(1))
    return [created(OID, T0), p, status(OID, at(2), "paid")], p


def test_stock_not_reserved_fires_at_deadline() -> None:
    events, p = _paid_unreserved()
    ems = run(events, until=at(17))
    expect_opened(ems, "STOCK_NOT_RESERVED", subject=OID, order_id=OID, severity="high", event_time=at(16), start=p)
    assert rules_opened(ems) == ["STOCK_NOT_RESERVED"]


def test_stock_not_reserved_cleared_by_reservation_at_exactly_the_deadline() -> None:
    events, _ = _paid_unreserved()
    assert run([*events, reserved(OID, at(16))], until=at(30)) == []


def test_stock_not_reserved_cleared_by_reservation_failure() -> None:
    events, _ = _paid_unreserved()
    ems = run([*events, reservation_failed(OID, at(10))], until=at(30))
    assert rules_opened(ems) == ["STOCK_RESERVATION_FAILED"]


def test_stock_not_reserved_not_started_when_stock_was_reserved_first() -> None:
    ems = run([created(OID, T0), reserved(OID, at(0.5)), paid(OID, at(1)), status(OID, at(2), "paid")], until=at(30))
    assert ems == []


def test_stock_not_reserved_resolves_on_late_reservation() -> None:
    events, p = _paid_unreserved()
    r = reserved(OID, at(20))
    ems = run([*events, r], until=at(30))
    rec = expect_opened(
        ems, "STOCK_NOT_RESERVED", subject=OID, order_id=OID, severity="high", event_time=at(16), start=p
    )
    expect_resolved(ems, "STOCK_NOT_RESERVED", by=r, exception=rec)
