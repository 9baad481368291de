"""RULES.md, fraud rules (all manual): ADDRESS_CLUSTER, NEW_ACCOUNT_BURST, BLOCKLISTED_ORDER."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from orderwatch.detectors.blocklist import Blocklist
from orderwatch.detectors.engine import Engine
from orderwatch.detectors.ids import address_fingerprint
from orderwatch.schemas.events import Event
from tests.factories import (
    ADDRESS,
    T0,
    at,
    cancelled,
    created,
    expect_opened,
    opened,
    paid_order,
    resolved,
    rules_opened,
    run,
    shipment,
    status,
    updated,
)

FP = address_fingerprint(ADDRESS["line1"], ADDRESS["postal_code"], ADDRESS["country"])
# The same address as checkouts spell it: case, whitespace and punctuation differ, city too.
VARIANTS = [
    ADDRESS,
    {**ADDRESS, "line1": "12, ACACIA  avenue."},
    {**ADDRESS, "line1": "12 acacia-Avenue", "city": "BERLIN"},
    {**ADDRESS, "line1": " 12 Acacia Avenue "},
    {**ADDRESS, "recipient": "Someone Else", "line1": "12 Acacia Ave.nue"},
]


def _to_address(specs: list[tuple[float, str]], first: int = 0) -> list[Event]:
    """One order per (hours after T0, customer) to the watched address, spelled variously."""
    return [
        created(f"o-{first + i}", at(hours=h), customer=c, address=VARIANTS[i % len(VARIANTS)])
        for i, (h, c) in enumerate(specs)
    ]


# -- ADDRESS_CLUSTER: >= 5 orders from >= 3 customers to one address within a sliding 24 h ----

CLUSTER = [(0, "c-1"), (1, "c-2"), (2, "c-3"), (3, "c-1"), (4, "c-2")]


def test_address_cluster_fires_on_the_fifth_order() -> None:
    events = _to_address(CLUSTER)
    ems = run(events, until=at(hours=5))
    rec = expect_opened(
        ems, "ADDRESS_CLUSTER", subject=FP, order_id=None, severity="high", event_time=at(hours=4), start=events[-1]
    )
    assert rec.evidence["order_ids"] == ["o-0", "o-1", "o-2", "o-3", "o-4"]
    assert (rec.evidence["orders"], rec.evidence["customers"]) == (5, 3)
    assert ADDRESS["line1"] not in rec.summary


@pytest.mark.parametrize(
    "specs",
    [
        [(0, "c-1"), (1, "c-2"), (2, "c-1"), (3, "c-2"), (4, "c-1")],  # two customers
        [(0, "c-1"), (1, "c-2"), (2, "c-3"), (3, "c-4")],  # four orders
        [(0, "c-1"), (6, "c-2"), (12, "c-3"), (18, "c-1"), (24 + 1 / 60, "c-2")],  # over 24 h
    ],
)
def test_address_cluster_not_fired_below_thresholds(specs: list[tuple[float, str]]) -> None:
    assert opened(run(_to_address(specs), until=at(days=2)), "ADDRESS_CLUSTER") == []


def test_address_cluster_counts_an_order_once() -> None:
    events = _to_address(CLUSTER[:4])
    again = created("o-3", at(hours=4), customer="c-1")  # the same order re-sent under a new event id
    assert opened(run([*events, again], until=at(hours=5)), "ADDRESS_CLUSTER") == []


def test_address_cluster_updates_while_it_holds_and_stays_open() -> None:
    events = _to_address([*CLUSTER, (5, "c-4")])
    ems = run([*events, *(cancelled(f"o-{i}", at(hours=6)) for i in range(6))], until=at(days=10))
    first = opened(ems, "ADDRESS_CLUSTER")
    more = updated(ems, "ADDRESS_CLUSTER")
    assert len(first) == 1 and len(more) == 1
    assert more[0].record.exception_id == first[0].record.exception_id
    assert (more[0].record.evidence["orders"], more[0].record.evidence["customers"]) == (6, 4)
    assert more[0].record.revision == 1
    assert resolved(ems, "ADDRESS_CLUSTER") == []


def test_address_cluster_opens_a_new_exception_after_it_stopped_holding() -> None:
    events = _to_address(CLUSTER) + _to_address([(h + 30, c) for h, c in CLUSTER], first=10)
    ems = run(events, until=at(hours=40))
    recs = [e.record for e in opened(ems, "ADDRESS_CLUSTER")]
    assert [r.event_time for r in recs] == [at(hours=4).timestamp(), at(hours=34).timestamp()]
    assert recs[0].exception_id != recs[1].exception_id
    assert updated(ems, "ADDRESS_CLUSTER") == []


# -- NEW_ACCOUNT_BURST: an account younger than 7 days places >= 5 orders within a sliding 1 h --

YOUNG = T0 - timedelta(days=2)


def _burst(minutes: list[float], since: datetime = YOUNG, first: int = 0) -> list[Event]:
    return [created(f"n-{first + i}", at(m), customer="c-new", since=since) for i, m in enumerate(minutes)]


def test_new_account_burst_fires_on_the_fifth_order() -> None:
    events = _burst([0, 11, 22, 33, 44])
    ems = run(events, until=at(45))
    rec = expect_opened(
        ems, "NEW_ACCOUNT_BURST", subject="c-new", order_id=None, severity="high", event_time=at(44), start=events[-1]
    )
    assert rec.evidence["order_ids"] == ["n-0", "n-1", "n-2", "n-3", "n-4"]
    # one customer: no ADDRESS_CLUSTER; 11 min apart: no DUPLICATE_ORDER; the first two are unpaid
    assert rules_opened(ems) == ["NEW_ACCOUNT_BURST", "PAYMENT_TIMEOUT", "PAYMENT_TIMEOUT"]


@pytest.mark.parametrize(
    ("minutes", "since"),
    [
        ([0, 11, 22, 33, 44], T0 - timedelta(days=8)),  # old account
        ([0, 11, 22, 33], YOUNG),  # four orders
        ([0, 20, 40, 60, 80], YOUNG),  # never five within one hour
    ],
)
def test_new_account_burst_not_fired_below_thresholds(minutes: list[float], since: datetime) -> None:
    assert opened(run(_burst(minutes, since), until=at(90)), "NEW_ACCOUNT_BURST") == []


def test_new_account_burst_updates_while_it_holds_and_stays_open() -> None:
    events = _burst([0, 11, 22, 33, 44, 50])
    ems = run([*events, cancelled("n-5", at(55))], until=at(days=3))
    first, more = opened(ems, "NEW_ACCOUNT_BURST"), updated(ems, "NEW_ACCOUNT_BURST")
    assert len(first) == 1 and len(more) == 1
    assert more[0].record.exception_id == first[0].record.exception_id
    assert more[0].record.evidence["orders"] == 6
    assert resolved(ems, "NEW_ACCOUNT_BURST") == []


def test_new_account_burst_opens_a_new_exception_after_it_stopped_holding() -> None:
    # at 60 min the order at 0 leaves the window: 4 left, the burst stopped; at 65 it holds again
    events = _burst([0, 11, 22, 33, 44, 65])
    ems = run(events, until=at(70))
    recs = [e.record for e in opened(ems, "NEW_ACCOUNT_BURST")]
    assert [r.event_time for r in recs] == [at(44).timestamp(), at(65).timestamp()]
    assert recs[0].exception_id != recs[1].exception_id
    assert updated(ems, "NEW_ACCOUNT_BURST") == []


# -- BLOCKLISTED_ORDER: order.created whose customer or address is on the blocklist ----------


def _engine(*entries: tuple[str, dict[str, Any] | None, datetime | None]) -> Engine:
    bl = Blocklist()
    for key, value, added in entries:
        bl.apply(key, value, added.timestamp() if added else None)
    return Engine(blocklist=bl)


def test_blocklisted_order_fires_on_customer_entry() -> None:
    c = created("o-1", at(5), customer="c-9")
    ems = run([c], until=at(6), engine=_engine(("customer:c-9", {"reason": "chargeback"}, None)))
    rec = expect_opened(
        ems, "BLOCKLISTED_ORDER", subject="o-1", order_id="o-1", severity="high", event_time=at(5), start=c
    )
    assert (rec.evidence["match"], rec.evidence["reason"]) == ("customer", "chargeback")
    assert rules_opened(ems) == ["BLOCKLISTED_ORDER"]


def test_blocklisted_order_fires_on_normalised_address_entry() -> None:
    c = created("o-1", at(5), address=VARIANTS[1])
    ems = run([c], until=at(6), engine=_engine((f"address:{FP}", {"reason": "reshipper"}, T0)))
    rec = expect_opened(
        ems, "BLOCKLISTED_ORDER", subject="o-1", order_id="o-1", severity="high", event_time=at(5), start=c
    )
    assert rec.evidence["match"] == "address"


@pytest.mark.parametrize(
    "entries",
    [
        [("customer:c-8", {"reason": "chargeback"}, None)],  # someone else
        [("customer:c-9", {"reason": "chargeback"}, None), ("customer:c-9", None, None)],  # removed
        [("customer:c-9", {"reason": "chargeback"}, at(10))],  # added after the order
    ],
)
def test_blocklisted_order_not_fired(entries: list[tuple[str, dict[str, Any] | None, datetime | None]]) -> None:
    ems = run([created("o-1", at(5), customer="c-9")], until=at(6), engine=_engine(*entries))
    assert ems == []


def test_blocklisted_order_stays_open() -> None:
    events = [
        *paid_order("o-1", T0, customer="c-9"),
        shipment("shipment.created", "o-1", at(hours=2)),
        shipment("shipment.delivered", "o-1", at(days=1)),
        status("o-1", at(days=1), "delivered"),
    ]
    ems = run(events, until=at(days=30), engine=_engine(("customer:c-9", {"reason": "chargeback"}, None)))
    assert rules_opened(ems) == ["BLOCKLISTED_ORDER"]
    assert resolved(ems) == []
