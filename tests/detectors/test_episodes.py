"""An order's episodes packed while it waits (detectors/orders/episodes.py): what the rules left
in the working tuple comes back the same after a pack and an unpack (ids and refs as the same
text, deadlines exactly, in the same order), and the order detector packs only orders it is no
longer busy with, to the same exceptions."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderwatch.detectors.engine import Engine
from orderwatch.detectors.orders import episodes as packed
from orderwatch.detectors.records import to_cloudevent
from orderwatch.detectors.snapshots import RULE_IDS
from orderwatch.schemas.events import Event
from tests.factories import T0, paid_order, shipment

ids = st.one_of(
    st.uuids().map(str),  # canonical: stored in 16 bytes
    st.uuids().map(lambda u: str(u).upper()),  # not canonical: kept as text, case and all
    st.uuids().map(lambda u: str(u).replace("-", "")),
    st.sampled_from(
        [
            "",
            "e-1",
            "0" * 16,  # a text field as wide as a UUID's
            "0" * 36,
            "a" * 300,
            "é-ü-Ω",
            "00000000-0000-0000-0000-000000000000",
            "0000000g-0000-0000-0000-000000000000",
            "12 45678-1234-1234-1234-123456789012",  # bytes.fromhex skips spaces
            "12345678-1234-1234-1234-12345678901 ",
            "1234567A-1234-1234-1234-123456789012",
        ]
    ),
    st.text(max_size=40),
)
# A few ids over and over: one event starts several episodes, which then share its id.
shared = st.sampled_from(["e-1", str(uuid.UUID(int=1))])
episodes = st.lists(
    st.tuples(
        st.sampled_from(sorted(RULE_IDS)),
        st.floats(allow_nan=False, allow_infinity=False),
        st.one_of(shared, shared, ids),
        st.one_of(st.none(), st.none(), ids),
    ),
    max_size=20,
)


@settings(max_examples=500, deadline=None)
@given(episodes)
def test_packed_episodes_read_back_the_same(eps: list[packed.Episode]) -> None:
    work = tuple(x for ep in eps for x in ep)
    blob = packed.pack(work)
    assert packed.decode(blob) == packed.decode(work) == eps
    again = packed.unpack(blob)
    assert packed.pack(again) == blob  # ids kept as their fields pack to the same bytes
    assert packed.decode(again) == eps
    for form in (work, blob, again):
        assert packed.rule_names(form) == [ep[0] for ep in eps]
        assert packed.earliest(form) == (min(ep[1] for ep in eps) if eps else None)
    assert packed.encode(eps) == blob


def test_a_canonical_uuid_takes_16_bytes_and_other_text_its_length() -> None:
    u = str(uuid.uuid4())
    assert len(packed.encode([("ORDER_STUCK", 1.5, u, None)])) == 2 + 1 + 8 + 17
    upper = packed.encode([("ORDER_STUCK", 1.5, u.upper(), None)])
    assert len(upper) == 2 + 1 + 8 + 1 + 36
    assert packed.decode(upper) == [("ORDER_STUCK", 1.5, u.upper(), None)]


def test_an_id_shared_by_episodes_is_stored_once() -> None:
    u = str(uuid.uuid4())
    rules = ("PAYMENT_NOT_CONFIRMED", "PAYMENT_AMOUNT_MISMATCH", "STOCK_NOT_RESERVED")
    blob = packed.encode([(rule, float(n), u, None) for n, rule in enumerate(rules)])
    assert len(blob) == 2 + 3 * 9 + 17 + 2  # the oldest holds the id, the others say "the same"
    work = packed.unpack(blob)
    assert work[2] is work[6] is work[10]
    assert [ep[2] for ep in packed.decode(blob)] == [u, u, u]


def test_no_episodes_pack_to_the_empty_bytes() -> None:
    assert packed.pack(()) == b""
    assert packed.unpack(b"") == () and packed.decode(b"") == [] and packed.earliest(b"") is None


def test_many_episodes_and_long_refs() -> None:
    eps = [("REFUND_OVERDUE", float(n), str(uuid.UUID(int=n)), f"refund-{n}-" + "x" * 260) for n in range(300)]
    blob = packed.encode(eps)
    assert packed.decode(blob) == eps and packed.earliest(blob) == 0.0


# Refunds are episodes, one per refund id, and nothing bounds how many an order is sent: past
# 65,534 the count no longer fits its two bytes.
@pytest.mark.parametrize("k", [65_534, 65_535, 70_000])
def test_any_number_of_episodes_packs(k: int) -> None:
    eps = [("REFUND_OVERDUE", float(k - n), "e-1", f"r-{n}") for n in range(k)]
    blob = packed.encode(eps)
    assert packed.decode(blob) == eps
    assert packed.earliest(blob) == 1.0 and packed.rule_names(blob) == ["REFUND_OVERDUE"] * k


def test_an_order_with_70k_refund_episodes_snapshots_and_restores() -> None:
    engine = Engine()
    for ev in paid_order("o-1", T0):
        engine.apply(ev, ev.time.timestamp(), ev.time.timestamp())
    eps = [("REFUND_OVERDUE", 1.8e9 + n, str(uuid.UUID(int=n)), f"r-{n}") for n in range(70_000)]
    engine.orders.states["o-1"].eps = tuple(x for ep in eps for x in ep)  # as the refund rules leave it
    blob = engine.orders.snapshot("o-1")
    again = Engine()
    again.orders.restore("o-1", blob)
    assert isinstance(again.orders.states["o-1"].eps, bytes)
    assert again.orders.snapshot("o-1") == blob
    assert again.orders.pending()["REFUND_OVERDUE"] == 70_000


@pytest.mark.parametrize("rule", ["NOT_A_RULE", ""])
def test_an_unknown_rule_is_refused(rule: str) -> None:
    with pytest.raises(KeyError):
        packed.pack((rule, 1.0, "e", None))


def _journeys(n: int) -> list[Event]:
    """Orders a minute apart, paid, then shipped two hours later: each order is busy twice."""
    evs: list[Event] = []
    for i in range(n):
        start = T0 + timedelta(minutes=i)
        evs += [*paid_order(f"o-{i}", start), shipment("shipment.created", f"o-{i}", start + timedelta(hours=2))]
    return sorted(evs, key=lambda e: e.time)


def _run(evs: list[Event], busy_limit: int) -> tuple[Engine, list[dict[str, Any]]]:
    engine, out = Engine(), []
    engine.orders.busy_limit = busy_limit
    for ev in evs:
        t = ev.time.timestamp()
        out += [to_cloudevent(em) for em in engine.advance(t)]
        out += [to_cloudevent(em) for em in engine.apply(ev, t, t)]
    out += [to_cloudevent(em) for em in engine.advance((T0 + timedelta(days=30)).timestamp())]
    return engine, out


def test_orders_the_detector_is_no_longer_busy_with_are_packed_to_the_same_exceptions() -> None:
    evs = _journeys(60)
    roomy, expected = _run(evs, busy_limit=10**6)
    assert all(isinstance(s.eps, tuple) for s in roomy.orders.states.values())
    cramped, got = _run(evs, busy_limit=5)
    assert got == expected and len(expected) > 60
    states = list(cramped.orders.states.values())
    assert sum(isinstance(s.eps, bytes) for s in states) >= len(states) - 5


def test_a_packed_order_snapshots_and_describes_as_an_unpacked_one() -> None:
    evs = _journeys(60)
    midway = evs[: len(evs) * 2 // 3]  # episodes still running: shipments due, tracking awaited
    engines = []
    for busy_limit in (10**6, 0):
        engine = Engine()
        engine.orders.busy_limit = busy_limit
        for ev in midway:
            t = ev.time.timestamp()
            engine.advance(t)
            engine.apply(ev, t, t)
        engines.append(engine)
    roomy, cramped = engines
    assert sum(isinstance(s.eps, bytes) and bool(s.eps) for s in cramped.orders.states.values()) >= 30
    assert roomy.orders.states.keys() == cramped.orders.states.keys()
    for oid in roomy.orders.states:
        assert cramped.orders.snapshot(oid) == roomy.orders.snapshot(oid)
        assert cramped.orders.describe(oid) == roomy.orders.describe(oid)
    assert cramped.orders.pending() == roomy.orders.pending()


def test_every_rule_number_fits_the_seven_bits_a_rule_byte_has_for_it() -> None:
    # Bit 7 of a rule byte marks an episode with a ref: rule number 128 would be packed as rule 0
    # with a ref, silently. A catalog that outgrows 127 rules needs a wider layout first.
    assert max(RULE_IDS.values()) <= 0x7F
