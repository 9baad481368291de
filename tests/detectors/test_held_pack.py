"""An order holds its open exceptions in a compact form (`detectors.orders.state.hold`) that
leaves out what the order can work out again: each must come back equal and go on the wire
byte for byte as the record it was, whatever the record (fields that match nothing the order
knows, odd text, odd evidence)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from orderwatch.detectors.catalog import RULES
from orderwatch.detectors.ids import exception_id
from orderwatch.detectors.orders.state import hold, unhold
from orderwatch.detectors.records import Emission, ExceptionRecord, to_cloudevent

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
rules = st.sampled_from(["DELIVERY_OVERDUE", "DUPLICATE_ORDER", "REFUND_OVERDUE", "ORDER_STUCK", "NOT_A_RULE"])
oids = st.text(min_size=1, max_size=20)


@st.composite
def held_records(draw: st.DrawFn) -> tuple[str, str, ExceptionRecord]:
    """(order id, rule it is held under, record): fields drawn either as the order detector
    would set them (implied) or as anything else, independently."""
    oid = draw(oids)
    rule = draw(rules)
    subject = draw(st.just(oid) | st.text(min_size=1))
    evidence = draw(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
    start = draw(st.none() | st.text(max_size=40) | json_values)
    if start is not None:
        evidence = {"start_event_id": start, **evidence}
    implied_id = exception_id(rule, subject, start) if isinstance(start, str) else "none"
    meta = RULES.get(rule)
    rec = ExceptionRecord(
        exception_id=draw(st.just(implied_id) | st.text(min_size=1, max_size=40)),
        rule=draw(st.just(rule) | rules),
        subject=subject,
        order_id=draw(st.just(oid) | st.none() | st.text(min_size=1)),
        severity=draw(st.sampled_from([meta.severity if meta else "low", "low", "medium", "high", "critical"])),
        detected_at=draw(times),
        event_time=draw(times),
        summary=draw(st.text()),  # any text: non-ASCII, lone surrogates
        evidence=evidence,
        revision=draw(st.just(0) | st.integers(min_value=0, max_value=10**6)),
        amount=draw(st.just(0) | st.integers(min_value=-(10**15), max_value=10**15)),
    )
    if draw(st.booleans()):
        rec.resolve(draw(st.none() | st.text()), draw(st.none() | times), draw(times))
    return oid, rule, rec


def _wire(rec: ExceptionRecord) -> list[str]:
    return [json.dumps(to_cloudevent(Emission.of(kind, rec))) for kind in ("opened", "resolved")]


@settings(max_examples=400, deadline=None)
@given(held_records())
def test_a_held_record_reads_back_equal_and_goes_on_the_wire_the_same(case: tuple[str, str, ExceptionRecord]) -> None:
    oid, rule, rec = case
    back = unhold(oid, rule, hold(oid, rule, rec))
    assert back == rec
    assert list(back.evidence) == list(rec.evidence)  # key order: the wire keeps it
    if rec.rule in RULES:
        assert _wire(back) == _wire(rec)


def test_values_equal_in_python_but_not_on_the_wire_are_kept_as_they_were() -> None:
    rec = ExceptionRecord("x", "ORDER_STUCK", "o-1", "o-1", "medium", 1.0, 2.0, "s", {})
    rec.revision = False  # type: ignore[assignment]  # == 0, but JSON writes false
    rec.amount = 0.0  # type: ignore[assignment]
    back = unhold("o-1", "ORDER_STUCK", hold("o-1", "ORDER_STUCK", rec))
    assert back.revision is False and type(back.amount) is float


def test_a_deadline_exception_keeps_only_what_the_order_cannot_work_out() -> None:
    oid, start = "o-00000042", "c4673514-65cf-4893-ad83-77770d991ed1"
    evidence = {"start_event_id": start, "start_event_time": None, "deadline": "2026-03-06T09:00:00+00:00"}
    summary = f"Order {oid} has seen no event for 7 days."
    rec = ExceptionRecord(
        exception_id("ORDER_STUCK", oid, start), "ORDER_STUCK", oid, oid, "medium", 1.5, 1.25, summary, evidence
    )
    blob = hold(oid, "ORDER_STUCK", rec)
    assert unhold(oid, "ORDER_STUCK", blob) == rec
    assert rec.exception_id.encode() not in blob and b'"open"' not in blob
    assert len(blob) < len(rec.pack()) * 2 // 3
    # Held by another order, under another rule, the same record keeps its own values.
    assert unhold("o-7", "DELIVERY_OVERDUE", hold("o-7", "DELIVERY_OVERDUE", rec)) == rec
