"""The routing table (detectors.topology): what it routes where, by which key, and that the
backtest's Engine and a partition runtime driven by it agree on the DUPLICATE_ORDER adoption."""

from __future__ import annotations

import pytest

from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.engine import Engine
from orderwatch.detectors.ids import address_fingerprint
from orderwatch.detectors.orders import OrderDetector
from orderwatch.detectors.records import Emission, ExceptionRecord
from orderwatch.detectors.topology import (
    ADOPT,
    DETECTORS,
    ROUTES,
    Adopt,
    adoption_for,
    direct_topics,
    forward_topics,
    forwards,
    home_of,
    key_for,
    routes_for,
)
from orderwatch.detectors.windows import CustomerDetector
from orderwatch.schemas.events import EVENT_TYPES, INPUT_TOPICS, TOPIC_OF_TYPE, Event
from orderwatch.streams.runtime import PartitionRuntime
from tests.factories import ADDRESS, at, cancelled, created, failed, level, reserved


def test_every_contract_event_type_reaches_a_detector() -> None:
    assert {t for r in ROUTES for t in r.types} == set(EVENT_TYPES)
    assert [r.detector for r in routes_for("order.created")] == ["orders", "address", "customer"]
    assert [r.detector for r in routes_for("inventory.reserved")] == ["orders", "inventory"]
    assert [r.detector for r in routes_for("inventory.level_reported")] == ["inventory"]
    assert [r.detector for r in routes_for("payment.failed")] == ["orders", "provider"]
    assert [r.detector for r in routes_for("shipment.delivered")] == ["orders"]
    assert routes_for("orderwatch.unknown") == ()


def test_each_contract_topic_has_one_home_agent_and_forwards_only_what_it_does_not_hold() -> None:
    assert {t: home_of(t) for t in INPUT_TOPICS} == {
        "orders": "orders",
        "payments": "orders",
        "logistics": "orders",
        "inventory": "inventory",
    }
    assert direct_topics("orders") == {"orders", "payments", "logistics"}
    assert direct_topics("address") == frozenset()
    assert forward_topics("orders") == {"order-inbox"}  # reservations and adoptions
    assert {d: forward_topics(d) for d in ("address", "customer", "provider")} == {
        "address": {"by-address"},
        "customer": {"by-customer"},
        "provider": {"by-provider"},
    }
    assert [(r.detector, r.forward) for r in forwards("order.created")] == [
        ("address", "by-address"),
        ("customer", "by-customer"),
    ]
    assert [r.forward for r in forwards("inventory.released")] == ["order-inbox"]
    assert forwards("shipment.created") == ()
    # A forward always leaves the topic's home for another detector's agent.
    for t in EVENT_TYPES:
        assert all(r.detector != home_of(TOPIC_OF_TYPE[t]) or r.forward == "order-inbox" for r in forwards(t))
    with pytest.raises(KeyError):
        home_of("order-exceptions")


def test_keys_come_from_the_event_as_each_detector_needs_them() -> None:
    order = created("o-1", at(0), customer="c-7")
    assert key_for("orders", order) == "o-1"
    assert key_for("customer", order) == "c-7"
    assert key_for("address", order) == address_fingerprint(ADDRESS["line1"], ADDRESS["postal_code"], "DE")
    assert key_for("inventory", reserved("o-1", at(1), sku="S", wh="W9")) == "S\x1fW9"
    assert key_for("inventory", level("S", at(1), 3, wh="W9")) == "S\x1fW9"
    assert key_for("provider", failed("o-1", at(1), provider="adyen")) == "adyen"
    with pytest.raises(KeyError):
        key_for("provider", order)  # the table sends no order.created to the provider detector


def _duplicate_pair() -> tuple[Event, Event, Event]:
    """Two orders with the same items by one customer, the second cancelled."""
    items = [{"sku": "A", "quantity": 1, "unit_price": "50.00"}]
    return created("o-1", at(0), items=items), created("o-2", at(5), items=items), cancelled("o-2", at(30))


def test_duplicate_order_is_found_by_the_customer_detector_and_resolved_by_the_order_detector() -> None:
    engine = Engine()
    first, second, cancel = _duplicate_pair()
    out: list[Emission] = []
    for ev in (first, second, cancel):
        t = ev.time.timestamp()
        out += engine.advance(t)
        out += engine.apply(ev, t, t)
    dup = [(em.kind, em.record.subject) for em in out if em.record.rule == "DUPLICATE_ORDER"]
    assert dup == [("opened", "o-2"), ("resolved", "o-2")]
    assert engine.customers.open_exceptions() == 0 and engine.orders.open_exceptions() == 0


def test_the_adoption_route_works_across_separate_runtimes_in_either_order() -> None:
    # Live: the customer agent finds the duplicate, the order agent gets an Adopt through its
    # inbox, before or after the cancellation (another agent, another clock).
    for adopt_first in (True, False):
        customers: PartitionRuntime[str] = PartitionRuntime(CustomerDetector(RulesConfig()))
        orders: PartitionRuntime[str] = PartitionRuntime(OrderDetector(RulesConfig()))
        first, second, cancel = _duplicate_pair()
        for n, ev in enumerate((first, second)):
            customers.offer(ev, ev.time.timestamp(), "by-customer:0", n, f"c{n}")
            orders.offer(ev, ev.time.timestamp(), "orders:0", n, f"o{n}")
        found = customers.release(at(10).timestamp()).emissions
        claimed = [em for em in found if adoption_for("customer", em) is not None]
        assert [em.record.rule for em in claimed] == ["DUPLICATE_ORDER"]
        adopt = Adopt.of(claimed[0].record)
        assert adopt.type == ADOPT and key_for("orders", adopt) == "o-2"
        if adopt_first:
            orders.offer(adopt, adopt.time, "order-inbox:0", 0, "adopt")
        orders.offer(cancel, cancel.time.timestamp(), "orders:0", 2, "o2")
        if not adopt_first:
            orders.release(at(40).timestamp())
            orders.offer(adopt, adopt.time, "order-inbox:0", 0, "adopt")
        rel = orders.release(at(60).timestamp())
        resolved = [em for em in rel.emissions if em.record.rule == "DUPLICATE_ORDER"]
        assert [(em.kind, em.record.exception_id) for em in resolved] == [
            ("resolved", claimed[0].record.exception_id)
        ], adopt_first


def test_an_adoption_names_its_order() -> None:
    rec = ExceptionRecord("x", "DUPLICATE_ORDER", "s", None, "low", 0.0, 0.0, "", {})
    with pytest.raises(ValueError, match="names no order"):
        key_for("orders", Adopt.of(rec))


def test_the_table_names_only_known_detectors() -> None:
    assert {r.detector for r in ROUTES} == set(DETECTORS)
