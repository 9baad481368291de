"""RULES.md, what holds across rules: configuration overrides, terminal statuses, re-delivered
events, out-of-order arrival across topics and deterministic exception ids."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from orderwatch.detectors.catalog import RULES
from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.engine import Engine
from orderwatch.detectors.records import Emission
from orderwatch.errors import ConfigError
from orderwatch.schemas.events import Event
from tests.factories import (
    ADDRESS,
    T0,
    at,
    cancel_requested,
    created,
    expect_opened,
    expect_resolved,
    failed,
    level,
    opened,
    paid,
    paid_order,
    refund,
    reserved,
    resolved,
    rules_opened,
    run,
    shipment,
    status,
)


def _timeouts(ems: list[Emission]) -> dict[str, float]:
    return {e.record.subject: e.record.event_time for e in opened(ems, "PAYMENT_TIMEOUT")}


def _unpaid(order: str, **kw: Any) -> Event:
    return created(order, T0, customer=f"c-{order}", **kw)


# -- configuration: defaults, per-merchant and per-channel overrides ---------------------------


def test_the_catalog_is_the_one_of_rules_md() -> None:
    assert {code: (r.category, r.severity) for code, r in RULES.items()} == {
        "PAYMENT_NOT_CONFIRMED": ("payment", "high"),
        "PAYMENT_TIMEOUT": ("payment", "low"),
        "DUPLICATE_PAYMENT": ("payment", "critical"),
        "PAYMENT_AMOUNT_MISMATCH": ("payment", "critical"),
        "PAYMENT_WITHOUT_ORDER": ("system", "high"),
        "PAYMENT_FAILURE_SPIKE": ("payment", "critical"),
        "STOCK_OVERSOLD": ("inventory", "critical"),
        "STOCK_RESERVATION_FAILED": ("inventory", "high"),
        "STOCK_NOT_RESERVED": ("inventory", "high"),
        "SHIPMENT_NOT_CREATED": ("logistics", "medium"),
        "TRACKING_STALLED": ("logistics", "medium"),
        "DELIVERY_OVERDUE": ("logistics", "medium"),
        "DELIVERY_FAILED": ("logistics", "high"),
        "INVALID_SHIPPING_INFO": ("customer", "low"),
        "ADDRESS_CLUSTER": ("fraud", "high"),
        "NEW_ACCOUNT_BURST": ("fraud", "high"),
        "BLOCKLISTED_ORDER": ("fraud", "high"),
        "DUPLICATE_ORDER": ("order", "medium"),
        "CANCEL_NOT_PROCESSED": ("order", "medium"),
        "SHIPPED_AFTER_CANCEL": ("order", "high"),
        "REFUND_OVERDUE": ("refund", "high"),
        "REFUND_FAILED": ("refund", "high"),
        "REFUND_EXCEEDS_PAYMENT": ("refund", "critical"),
        "ORDER_STUCK": ("order", "medium"),
    }
    manual = {
        "ADDRESS_CLUSTER",
        "NEW_ACCOUNT_BURST",
        "BLOCKLISTED_ORDER",
        "SHIPPED_AFTER_CANCEL",
        "REFUND_EXCEEDS_PAYMENT",
    }
    assert {code for code, r in RULES.items() if not r.auto_resolves} == manual


def test_merchant_override_changes_the_threshold_of_its_orders_only() -> None:
    cfg = RulesConfig.from_dict({"merchant": {"m-2": {"rules": {"PAYMENT_TIMEOUT": {"threshold": "45m"}}}}})
    ems = run([_unpaid("a", merchant_id="m-2"), _unpaid("b")], until=at(46), config=cfg)
    assert _timeouts(ems) == {"a": at(45).timestamp(), "b": at(30).timestamp()}


def test_channel_override_changes_the_threshold() -> None:
    cfg = RulesConfig.from_dict({"channel": {"app": {"rules": {"PAYMENT_TIMEOUT": {"threshold": "1h"}}}}})
    ems = run([_unpaid("a", channel="app"), _unpaid("b", channel="web")], until=at(61), config=cfg)
    assert _timeouts(ems) == {"a": at(60).timestamp(), "b": at(30).timestamp()}


def test_merchant_override_beats_channel_override() -> None:
    cfg = RulesConfig.from_dict(
        {
            "channel": {"app": {"rules": {"PAYMENT_TIMEOUT": {"threshold": "1h"}}}},
            "merchant": {"m-2": {"rules": {"PAYMENT_TIMEOUT": {"threshold": "15m"}}}},
        }
    )
    ems = run([_unpaid("a", channel="app", merchant_id="m-2"), _unpaid("b", channel="app")], until=at(61), config=cfg)
    assert _timeouts(ems) == {"a": at(15).timestamp(), "b": at(60).timestamp()}


def test_rules_default_threshold_override() -> None:
    cfg = RulesConfig.from_dict({"rules": {"SHIPMENT_NOT_CREATED": {"threshold": "24h"}}})
    events = paid_order("o-1", T0)
    ems = run(events, until=at(2, hours=24), config=cfg)
    expect_opened(
        ems,
        "SHIPMENT_NOT_CREATED",
        subject="o-1",
        order_id="o-1",
        severity="medium",
        event_time=at(1, hours=24),
        start=events[2],
    )


def test_merchant_override_disables_a_deadline_rule() -> None:
    cfg = RulesConfig.from_dict({"merchant": {"m-2": {"rules": {"PAYMENT_TIMEOUT": {"enabled": False}}}}})
    ems = run([_unpaid("a", merchant_id="m-2"), _unpaid("b")], until=at(hours=2), config=cfg)
    assert _timeouts(ems) == {"b": at(30).timestamp()}


def test_channel_override_disables_an_instant_rule() -> None:
    cfg = RulesConfig.from_dict({"channel": {"pos": {"rules": {"INVALID_SHIPPING_INFO": {"enabled": False}}}}})
    bad = {**ADDRESS, "city": ""}
    ems = run([_unpaid("a", channel="pos", address=bad), _unpaid("b", address=bad)], until=at(1), config=cfg)
    assert [e.record.subject for e in opened(ems, "INVALID_SHIPPING_INFO")] == ["b"]


def test_rule_disabled_for_everyone() -> None:
    cfg = RulesConfig.from_dict({"rules": {"PAYMENT_TIMEOUT": {"enabled": False}}})
    assert run([_unpaid("a"), _unpaid("b", merchant_id="m-2")], until=at(hours=2), config=cfg) == []


@pytest.mark.parametrize(
    ("doc", "events", "rule"),
    [
        (
            {"rules": {"STOCK_OVERSOLD": {"enabled": False}}},
            [level("SKU-1", T0, on_hand=1), reserved("o-1", at(1), qty=2)],
            "STOCK_OVERSOLD",
        ),
        (
            {"rules": {"PAYMENT_FAILURE_SPIKE": {"enabled": False}}},
            [failed(f"o-{i}", at(i / 10)) for i in range(25)],
            "PAYMENT_FAILURE_SPIKE",
        ),
        (
            {"rules": {"NEW_ACCOUNT_BURST": {"enabled": False}}},
            [created(f"n-{i}", at(11 * i), customer="c-new", since=T0) for i in range(5)],
            "NEW_ACCOUNT_BURST",
        ),
    ],
)
def test_windowed_and_stock_rules_can_be_disabled(doc: dict[str, Any], events: list[Event], rule: str) -> None:
    assert len(opened(run(events, until=at(hours=1)), rule)) == 1
    assert opened(run(events, until=at(hours=1), config=RulesConfig.from_dict(doc)), rule) == []


def test_windowed_rule_parameters() -> None:
    cfg = RulesConfig.from_dict({"rules": {"ADDRESS_CLUSTER": {"min_orders": 3, "min_customers": 2}}})
    events = [created(f"o-{i}", at(hours=i), customer=f"c-{i % 2}") for i in range(3)]
    assert opened(run(events, until=at(hours=3)), "ADDRESS_CLUSTER") == []
    assert len(opened(run(events, until=at(hours=3), config=cfg), "ADDRESS_CLUSTER")) == 1


def test_windowed_rule_cannot_be_overridden_per_merchant() -> None:
    with pytest.raises(ConfigError, match="ADDRESS_CLUSTER"):
        RulesConfig.from_dict({"merchant": {"m-2": {"rules": {"ADDRESS_CLUSTER": {"enabled": False}}}}})


# -- terminal statuses ----------------------------------------------------------------------


def _busy_order() -> list[Event]:
    """Underpaid, unreserved, not marked paid, unshipped, cancel requested, delivery promised, and a
    refund requested: pending PAYMENT_NOT_CONFIRMED, PAYMENT_AMOUNT_MISMATCH, STOCK_NOT_RESERVED,
    CANCEL_NOT_PROCESSED, SHIPMENT_NOT_CREATED, DELIVERY_OVERDUE, ORDER_STUCK and REFUND_OVERDUE."""
    return [
        created("o-1", T0, promised_delivery_by=at(days=3)),
        paid("o-1", at(1), amount="40.00"),
        cancel_requested("o-1", at(2)),
        refund("refund.requested", "o-1", at(3), amount="10.00"),
    ]


@pytest.mark.parametrize("terminal", ["delivered", "completed", "cancelled", "refunded"])
def test_terminal_status_ends_pending_episodes_but_refund_overdue_runs_on(terminal: str) -> None:
    events = [*_busy_order(), status("o-1", at(4), terminal)]
    ems = run(events, until=at(days=30))
    expect_opened(
        ems,
        "REFUND_OVERDUE",
        subject="o-1",
        order_id="o-1",
        severity="high",
        event_time=at(3, hours=24),
        start=events[3],
    )
    assert rules_opened(ems) == ["REFUND_OVERDUE"]


def test_without_the_terminal_status_the_busy_order_raises_all_its_rules() -> None:
    ems = run(_busy_order(), until=at(days=30))
    assert rules_opened(ems) == [
        "CANCEL_NOT_PROCESSED",
        "DELIVERY_OVERDUE",
        "ORDER_STUCK",
        "PAYMENT_AMOUNT_MISMATCH",
        "PAYMENT_NOT_CONFIRMED",
        "REFUND_OVERDUE",
        "SHIPMENT_NOT_CREATED",
        "STOCK_NOT_RESERVED",
    ]


def test_terminal_status_starts_no_new_episodes() -> None:
    events = [
        created("o-1", T0),
        status("o-1", at(1), "completed"),
        paid("o-1", at(2), amount="40.00"),
        cancel_requested("o-1", at(3)),
        shipment("shipment.created", "o-1", at(4)),
        shipment("shipment.tracking_updated", "o-1", at(hours=1)),
    ]
    assert run(events, until=at(days=30)) == []


def test_terminal_status_leaves_open_exceptions_open_until_their_own_clearing_event() -> None:
    r = reserved("o-1", at(30))
    ems = run([created("o-1", T0), paid("o-1", at(1)), status("o-1", at(20), "completed"), r], until=at(31))
    assert [(e.kind, e.record.rule) for e in ems] == [
        ("opened", "PAYMENT_NOT_CONFIRMED"),
        ("opened", "STOCK_NOT_RESERVED"),
        ("resolved", "PAYMENT_NOT_CONFIRMED"),  # completed is "paid or later": its own clearing event
        ("resolved", "STOCK_NOT_RESERVED"),
    ]
    expect_resolved(ems, "STOCK_NOT_RESERVED", by=r)


# -- re-delivered events, out-of-order arrival, deterministic ids ----------------------------


def test_event_seen_twice_changes_nothing() -> None:
    fails = [failed(f"o-{i}", at(i / 10)) for i in range(15)]
    # 15 distinct failures; with the first 5 counted again the window would hold 20 (a spike)
    assert opened(run([*fails, *fails[:5]], until=at(6), lateness=60), "PAYMENT_FAILURE_SPIKE") == []
    c = created("o-1", T0)
    assert run([c, c], until=at(31)) == run([c], until=at(31))


def test_payment_before_its_order_within_lateness_raises_nothing() -> None:
    c = created("o-1", T0, promised_delivery_by=at(days=5))
    r, p, s = (
        reserved("o-1", T0 + timedelta(seconds=10)),
        paid("o-1", T0 + timedelta(seconds=20)),
        status("o-1", T0 + timedelta(seconds=30), "paid"),
    )
    rest = [
        shipment("shipment.created", "o-1", at(hours=10)),
        shipment("shipment.tracking_updated", "o-1", at(days=1)),
        shipment("shipment.delivered", "o-1", at(days=2)),
        status("o-1", at(days=2), "delivered"),
    ]
    # across topics there is no order: payments and inventory first, the order last
    assert run([p, r, s, c, *rest], until=at(days=30), lateness=60) == []


def test_payment_whose_order_comes_later_in_event_time_raises_nothing() -> None:
    # the payment's event time is 9 min before its order.created: still within PAYMENT_WITHOUT_ORDER
    events = [
        paid("o-1", T0),
        reserved("o-1", at(1)),
        status("o-1", at(2), "paid"),
        created("o-1", at(9)),
        shipment("shipment.created", "o-1", at(hours=10)),
        shipment("shipment.delivered", "o-1", at(days=2)),
        status("o-1", at(days=2), "delivered"),
    ]
    assert run(events, until=at(days=30)) == []


def test_exception_ids_are_deterministic_across_runs_and_arrival_orders() -> None:
    events = [created("o-1", T0), paid("o-1", at(1), amount="40.00"), cancel_requested("o-1", at(2))]

    def ids(evs: list[Event], lateness: float) -> list[tuple[str, str, str]]:
        return [(e.kind, e.record.rule, e.record.exception_id) for e in run(evs, until=at(hours=1), lateness=lateness)]

    first = ids(events, 0)
    assert len(first) == 4
    assert ids(events, 0) == first
    assert ids(list(reversed(events)), 300) == first
    assert run(events, until=at(hours=1), engine=Engine()) == run(events, until=at(hours=1))
    assert resolved(run(events, until=at(hours=1))) == []
