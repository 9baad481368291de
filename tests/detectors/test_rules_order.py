"""RULES.md, order and customer rules: DUPLICATE_ORDER, CANCEL_NOT_PROCESSED, SHIPPED_AFTER_CANCEL,
ORDER_STUCK, INVALID_SHIPPING_INFO."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.ids import exception_id
from orderwatch.detectors.records import to_cloudevent
from tests.factories import (
    ADDRESS,
    PHONE,
    T0,
    address_updated,
    at,
    cancel_requested,
    cancelled,
    created,
    expect_opened,
    expect_resolved,
    opened,
    paid_order,
    resolved,
    rules_opened,
    run,
    shipment,
    status,
)

OID = "o-1"
ITEMS = [{"sku": "SKU-A", "quantity": 1, "unit_price": "10.00"}, {"sku": "SKU-B", "quantity": 2, "unit_price": "20.00"}]


# -- DUPLICATE_ORDER: same customer, same (sku, quantity) multiset within the previous 10 min --


def test_duplicate_order_fires_on_the_later_order() -> None:
    b = created("o-b", at(9), items=list(reversed(ITEMS)))  # same multiset, other line order
    ems = run([created("o-a", T0, items=ITEMS), b], until=at(10))
    rec = expect_opened(
        ems, "DUPLICATE_ORDER", subject="o-b", order_id="o-b", severity="medium", event_time=at(9), start=b
    )
    assert rec.evidence["earlier_order_id"] == "o-a"
    assert rules_opened(ems) == ["DUPLICATE_ORDER"]


@pytest.mark.parametrize(("gap", "fires"), [(timedelta(minutes=10), True), (timedelta(minutes=10, seconds=1), False)])
def test_duplicate_order_window_is_10_minutes(gap: timedelta, fires: bool) -> None:
    ems = run([created("o-a", T0, items=ITEMS), created("o-b", T0 + gap, items=ITEMS)], until=at(11))
    assert rules_opened(ems) == (["DUPLICATE_ORDER"] if fires else [])


@pytest.mark.parametrize(
    "other",
    [
        {"customer": "c-2"},
        {
            "items": [
                {"sku": "SKU-A", "quantity": 1, "unit_price": "10.00"},
                {"sku": "SKU-B", "quantity": 3, "unit_price": "20.00"},
            ]
        },
        {"items": [{"sku": "SKU-A", "quantity": 1, "unit_price": "10.00"}]},
    ],
)
def test_duplicate_order_not_fired_for_another_customer_or_other_items(other: dict[str, Any]) -> None:
    later = created("o-b", at(5), **({"items": ITEMS} | other))
    ems = run([created("o-a", T0, items=ITEMS), later], until=at(10))
    assert ems == []


def test_duplicate_order_resolves_when_the_later_order_is_cancelled() -> None:
    b, x = created("o-b", at(5), items=ITEMS), cancelled("o-b", at(20))
    ems = run([created("o-a", T0, items=ITEMS), b, x], until=at(25))
    assert [(e.kind, e.record.rule) for e in ems] == [("opened", "DUPLICATE_ORDER"), ("resolved", "DUPLICATE_ORDER")]
    rec = ems[0].record
    assert (rec.subject, rec.order_id, rec.event_time) == ("o-b", "o-b", at(5).timestamp())
    assert rec.exception_id == exception_id("DUPLICATE_ORDER", "o-b", b.id)
    expect_resolved(ems, "DUPLICATE_ORDER", by=x, exception=rec)


def test_duplicate_order_opened_emission_is_not_rewritten_by_its_resolution() -> None:
    ems = run(
        [created("o-a", T0, items=ITEMS), created("o-b", at(5), items=ITEMS), cancelled("o-b", at(20))], until=at(25)
    )
    first = opened(ems, "DUPLICATE_ORDER")[0]
    assert (first.record.status, first.record.resolution_event_id) == ("open", None)
    assert to_cloudevent(first)["data"]["status"] == "open"


def test_duplicate_order_not_resolved_by_cancelling_the_earlier_order() -> None:
    ems = run(
        [created("o-a", T0, items=ITEMS), created("o-b", at(5), items=ITEMS), cancelled("o-a", at(20))], until=at(25)
    )
    assert len(opened(ems, "DUPLICATE_ORDER")) == 1
    assert resolved(ems, "DUPLICATE_ORDER") == []


def test_duplicate_order_window_per_merchant_shorter() -> None:
    cfg = RulesConfig.from_dict({"merchant": {"m-2": {"rules": {"DUPLICATE_ORDER": {"threshold": "5m"}}}}})
    events = [created("o-a", T0, items=ITEMS, merchant_id="m-2"), created("o-b", at(7), items=ITEMS, merchant_id="m-2")]
    assert run(events, until=at(8), config=cfg) == []
    assert rules_opened(run(events, until=at(8))) == ["DUPLICATE_ORDER"]


def test_duplicate_order_window_per_merchant_longer_than_an_hour() -> None:
    cfg = RulesConfig.from_dict({"merchant": {"m-2": {"rules": {"DUPLICATE_ORDER": {"threshold": "2h"}}}}})
    b = created("o-b", at(90), items=ITEMS, merchant_id="m-2")
    ems = run([created("o-a", T0, items=ITEMS, merchant_id="m-2"), b], until=at(91), config=cfg)
    expect_opened(ems, "DUPLICATE_ORDER", subject="o-b", order_id="o-b", severity="medium", event_time=at(90), start=b)


# -- CANCEL_NOT_PROCESSED: order.cancel_requested + 30 min, no order.cancelled --------------


def test_cancel_not_processed_fires_at_deadline() -> None:
    req = cancel_requested(OID, at(10))
    ems = run([*paid_order(OID, T0), req], until=at(41))
    expect_opened(
        ems, "CANCEL_NOT_PROCESSED", subject=OID, order_id=OID, severity="medium", event_time=at(40), start=req
    )
    assert rules_opened(ems) == ["CANCEL_NOT_PROCESSED"]


def test_cancel_not_processed_cleared_by_cancel_at_exactly_the_deadline() -> None:
    ems = run([*paid_order(OID, T0), cancel_requested(OID, at(10)), cancelled(OID, at(40))], until=at(days=30))
    assert ems == []


def test_cancel_not_processed_cleared_by_cancelled_status() -> None:
    ems = run(
        [*paid_order(OID, T0), cancel_requested(OID, at(10)), status(OID, at(20), "cancelled")], until=at(days=30)
    )
    assert ems == []


def test_cancel_not_processed_resolves_on_late_cancel() -> None:
    req, x = cancel_requested(OID, at(10)), cancelled(OID, at(50))
    ems = run([*paid_order(OID, T0), req, x], until=at(days=30))
    rec = expect_opened(
        ems, "CANCEL_NOT_PROCESSED", subject=OID, order_id=OID, severity="medium", event_time=at(40), start=req
    )
    expect_resolved(ems, "CANCEL_NOT_PROCESSED", by=x, exception=rec)
    assert rules_opened(ems) == ["CANCEL_NOT_PROCESSED"]


# -- SHIPPED_AFTER_CANCEL: shipment.created for a cancelled order (manual) ------------------


def test_shipped_after_cancel_fires() -> None:
    s = shipment("shipment.created", OID, at(60))
    ems = run([*paid_order(OID, T0), cancelled(OID, at(5)), s], until=at(61))
    expect_opened(ems, "SHIPPED_AFTER_CANCEL", subject=OID, order_id=OID, severity="high", event_time=at(60), start=s)
    assert rules_opened(ems) == ["SHIPPED_AFTER_CANCEL"]


def test_shipped_after_cancel_not_fired_when_shipped_before_the_cancel() -> None:
    ems = run(
        [*paid_order(OID, T0), shipment("shipment.created", OID, at(60)), cancelled(OID, at(90))], until=at(days=30)
    )
    assert ems == []


def test_shipped_after_cancel_not_fired_for_an_unprocessed_cancel_request() -> None:
    ems = run(
        [*paid_order(OID, T0), cancel_requested(OID, at(5)), shipment("shipment.created", OID, at(20))],
        until=at(days=1),
    )
    assert rules_opened(ems) == ["CANCEL_NOT_PROCESSED"]


def test_shipped_after_cancel_stays_open() -> None:
    ems = run(
        [
            *paid_order(OID, T0),
            cancelled(OID, at(5)),
            shipment("shipment.created", OID, at(60)),
            shipment("shipment.tracking_updated", OID, at(hours=20)),
            shipment("shipment.delivered", OID, at(days=2)),
            status(OID, at(days=2), "delivered"),
        ],
        until=at(days=30),
    )
    assert len(opened(ems, "SHIPPED_AFTER_CANCEL")) == 1
    assert resolved(ems) == []


def test_shipped_after_cancel_fires_more_than_a_week_after_the_cancel() -> None:
    s = shipment("shipment.created", OID, at(days=8))
    ems = run([*paid_order(OID, T0), cancelled(OID, at(5)), s], until=at(days=9))
    expect_opened(
        ems, "SHIPPED_AFTER_CANCEL", subject=OID, order_id=OID, severity="high", event_time=at(days=8), start=s
    )


def test_a_cancelled_order_is_remembered_for_30_days_then_forgotten() -> None:
    for days, fires in ((29, True), (31, False)):
        ship = shipment("shipment.created", OID, at(days=days))
        ems = run([*paid_order(OID, T0), cancelled(OID, at(5)), ship], until=at(days=days + 1))
        assert bool(opened(ems, "SHIPPED_AFTER_CANCEL")) is fires, days


# -- ORDER_STUCK: a non-terminal order sees no event for 7 days -----------------------------


def test_order_stuck_fires_7_days_after_the_last_event() -> None:
    events = paid_order(OID, T0)  # last event: status paid at 2 min
    ems = run(events, until=at(3, days=7))
    expect_opened(
        ems, "ORDER_STUCK", subject=OID, order_id=OID, severity="medium", event_time=at(2, days=7), start=events[-1]
    )
    assert rules_opened(ems) == ["ORDER_STUCK", "SHIPMENT_NOT_CREATED"]


def test_order_stuck_cleared_by_an_event_at_exactly_the_deadline() -> None:
    ems = run([*paid_order(OID, T0), status(OID, at(2, days=7), "allocated")], until=at(3, days=7))
    assert opened(ems, "ORDER_STUCK") == []


@pytest.mark.parametrize("terminal", ["delivered", "completed", "cancelled", "refunded"])
def test_order_stuck_never_fires_for_a_terminal_order(terminal: str) -> None:
    ems = run([*paid_order(OID, T0), status(OID, at(10), terminal)], until=at(days=60))
    assert ems == []


def test_order_stuck_resolves_on_any_later_event_and_restarts() -> None:
    events = paid_order(OID, T0)
    later = status(OID, at(days=8), "allocated")
    ems = run([*events, later], until=at(days=9))
    rec = expect_opened(
        ems, "ORDER_STUCK", subject=OID, order_id=OID, severity="medium", event_time=at(2, days=7), start=events[-1]
    )
    expect_resolved(ems, "ORDER_STUCK", by=later, exception=rec)
    again = opened(run([*events, later], until=at(1, days=15)), "ORDER_STUCK")
    assert [e.record.event_time for e in again] == [at(2, days=7).timestamp(), at(days=15).timestamp()]


# -- INVALID_SHIPPING_INFO: missing address part, bad postal code, invalid phone -------------


@pytest.mark.parametrize(
    ("address", "phone", "problems"),
    [
        ({**ADDRESS, "city": ""}, PHONE, ["missing_city"]),
        ({k: v for k, v in ADDRESS.items() if k != "line1"}, PHONE, ["missing_line1"]),
        ({**ADDRESS, "postal_code": "1011"}, PHONE, ["postal_code_format"]),
        (ADDRESS, "12345", ["phone_invalid"]),
        ({**ADDRESS, "recipient": " "}, "+49 000", ["missing_recipient", "phone_invalid"]),
    ],
)
def test_invalid_shipping_info_fires_on_created(address: dict[str, str], phone: str, problems: list[str]) -> None:
    c = created(OID, T0, address=address, phone=phone)
    ems = run([c], until=at(1))
    rec = expect_opened(ems, "INVALID_SHIPPING_INFO", subject=OID, order_id=OID, severity="low", event_time=T0, start=c)
    assert rec.evidence["problems"] == problems
    assert phone not in rec.summary and ADDRESS["line1"] not in rec.summary
    assert rules_opened(ems) == ["INVALID_SHIPPING_INFO"]


@pytest.mark.parametrize(
    ("address", "phone"),
    [
        (ADDRESS, PHONE),
        (ADDRESS, "030 12345678"),  # national format for the address's country
        (ADDRESS, "+14155552671"),  # E.164 of another country
        (
            {"recipient": "A", "line1": "10 Downing St", "city": "London", "postal_code": "SW1A 2AA", "country": "GB"},
            "020 7946 0000",
        ),
    ],
)
def test_invalid_shipping_info_not_fired_for_valid_details(address: dict[str, str], phone: str) -> None:
    assert run([created(OID, T0, address=address, phone=phone)], until=at(1)) == []


def test_invalid_shipping_info_fires_on_failing_address_update() -> None:
    u = address_updated(OID, at(5), {**ADDRESS, "postal_code": "ABCDE"})
    ems = run([created(OID, T0), u], until=at(6))
    expect_opened(ems, "INVALID_SHIPPING_INFO", subject=OID, order_id=OID, severity="low", event_time=at(5), start=u)


def test_invalid_shipping_info_resolves_on_passing_update_only() -> None:
    c = created(OID, T0, address={**ADDRESS, "postal_code": "1011"})
    still_bad = address_updated(OID, at(5), {**ADDRESS, "city": ""})
    good = address_updated(OID, at(10))
    ems = run([c, still_bad, good], until=at(11))
    rec = expect_opened(ems, "INVALID_SHIPPING_INFO", subject=OID, order_id=OID, severity="low", event_time=T0, start=c)
    expect_resolved(ems, "INVALID_SHIPPING_INFO", by=good, exception=rec)
    assert [e.kind for e in ems] == ["opened", "resolved"]


def test_invalid_shipping_info_phone_must_be_fixed_too() -> None:
    c = created(OID, T0, phone="12345")
    no_phone = address_updated(OID, at(5))  # address fine, phone not given: still the bad one
    fixed = address_updated(OID, at(10), phone="+4930123456")
    ems = run([c, no_phone, fixed], until=at(11))
    rec = expect_opened(ems, "INVALID_SHIPPING_INFO", subject=OID, order_id=OID, severity="low", event_time=T0, start=c)
    expect_resolved(ems, "INVALID_SHIPPING_INFO", by=fixed, exception=rec)
