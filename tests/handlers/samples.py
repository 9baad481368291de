"""Real exceptions for the action and notification tests: each scenario runs the detector engine
on events and returns the `opened` exception as it goes on the wire."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from orderwatch.detectors.records import to_cloudevent
from orderwatch.handlers.changes import CaseChange, ChangeKind
from orderwatch.schemas.exception_event import ExceptionData
from tests.factories import (
    ADDRESS,
    T0,
    at,
    cancelled,
    created,
    failed,
    level,
    opened,
    paid,
    refund,
    reserved,
    run,
    shipment,
)


def _exception(rule: str, events: list[Any], until: datetime | None = None) -> ExceptionData:
    ems = opened(run(events, until=until), rule)
    assert len(ems) == 1, f"scenario for {rule} opened {len(ems)} exceptions"
    return ExceptionData.model_validate(to_cloudevent(ems[0])["data"])


def duplicate_payment(amount: str = "30.00", order: str = "o-dup") -> ExceptionData:
    return _exception(
        "DUPLICATE_PAYMENT",
        [
            created(order, at(0), total=amount),
            paid(order, at(1), amount=amount, payment="pay-1"),
            paid(order, at(2), amount=amount, payment="pay-2"),
        ],
    )


def refund_failed(order: str = "o-rf") -> ExceptionData:
    return _exception(
        "REFUND_FAILED",
        [
            *[created(order, at(0)), paid(order, at(1))],
            refund("refund.requested", order, at(10), refund_id="r-9", amount="20.00"),
            refund("refund.failed", order, at(11), refund_id="r-9"),
        ],
    )


def refund_overdue(amount: str = "20.00", order: str = "o-ro") -> ExceptionData:
    return _exception(
        "REFUND_OVERDUE",
        [
            created(order, at(0), total=amount),
            paid(order, at(1), amount=amount),
            refund("refund.requested", order, at(10), refund_id="r-7", amount=amount),
        ],
        until=at(10, days=2),
    )


def new_account_burst(customer: str = "c-new") -> ExceptionData:
    young = T0 - timedelta(days=1)
    return _exception(
        "NEW_ACCOUNT_BURST",
        [created(f"o-b{n}", at(5 * n), customer=customer, since=young, items=_items(n)) for n in range(5)],
    )


def address_cluster() -> ExceptionData:
    return _exception(
        "ADDRESS_CLUSTER",
        [created(f"o-a{n}", at(10 * n), customer=f"c-a{n % 3}", items=_items(n)) for n in range(5)],
    )


def shipped_after_cancel(order: str = "o-sac") -> ExceptionData:
    return _exception(
        "SHIPPED_AFTER_CANCEL",
        [created(order, at(0)), cancelled(order, at(5)), shipment("shipment.created", order, at(10))],
    )


def payment_failure_spike(provider: str = "acme-pay") -> ExceptionData:
    events = [failed(f"o-f{n}", at(n * 0.1), provider=provider) for n in range(25)]
    return _exception("PAYMENT_FAILURE_SPIKE", events, until=at(30))


def stock_oversold(sku: str = "SKU-9") -> ExceptionData:
    return _exception(
        "STOCK_OVERSOLD",
        [level(sku, at(0), on_hand=1), reserved("o-s1", at(1), sku=sku), reserved("o-s2", at(2), sku=sku)],
    )


def delivery_failed(order: str = "o-df") -> ExceptionData:
    return _exception(
        "DELIVERY_FAILED",
        [
            *[created(order, at(0)), paid(order, at(1))],
            shipment("shipment.created", order, at(60)),
            shipment("shipment.exception", order, at(120), reason="lost"),
        ],
    )


def invalid_shipping_info(order: str = "o-isi") -> ExceptionData:
    return _exception("INVALID_SHIPPING_INFO", [created(order, at(0), phone="12")])


def _items(n: int) -> list[dict[str, Any]]:
    # Distinct baskets, so DUPLICATE_ORDER stays out of the way.
    return [{"sku": f"SKU-{n}", "quantity": 1, "unit_price": "50.00"}]


SCENARIOS: dict[str, Callable[[], ExceptionData]] = {
    "DUPLICATE_PAYMENT": duplicate_payment,
    "REFUND_FAILED": refund_failed,
    "REFUND_OVERDUE": refund_overdue,
    "NEW_ACCOUNT_BURST": new_account_burst,
    "ADDRESS_CLUSTER": address_cluster,
    "SHIPPED_AFTER_CANCEL": shipped_after_cancel,
    "PAYMENT_FAILURE_SPIKE": payment_failure_spike,
    "STOCK_OVERSOLD": stock_oversold,
    "DELIVERY_FAILED": delivery_failed,
    "INVALID_SHIPPING_INFO": invalid_shipping_info,
}

PHONE_IN_EVIDENCE = "+4915123456789"
STREET_IN_EVIDENCE = ADDRESS["line1"]


def with_personal_data(data: ExceptionData) -> ExceptionData:
    """The same exception with the personal data evidence may carry one day."""
    evidence = {
        **data.evidence,
        "contact_phone": PHONE_IN_EVIDENCE,
        "shipping_address": dict(ADDRESS),
        "customer": {"email": "ada@example.org", "phone": PHONE_IN_EVIDENCE, "id": "c-1"},
        "note": f"call {PHONE_IN_EVIDENCE}",
    }
    return data.model_copy(update={"evidence": evidence})


def change(data: ExceptionData, kind: ChangeKind = "opened", **fields: Any) -> CaseChange:
    status = {"opened": "open", "acknowledged": "acknowledged", "escalated": "escalated", "resolved": "resolved"}
    base = CaseChange(kind=kind, data=data, status=status[kind], at=data.detected_at)
    return dataclasses.replace(base, **fields)


__all__ = ["SCENARIOS", "change", "with_personal_data"]
