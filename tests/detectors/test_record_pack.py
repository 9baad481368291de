"""A record a detector holds open is kept packed (`ExceptionRecord.pack`): it must come back
equal, and go on the wire byte for byte as the record it was."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from orderwatch.detectors.records import Emission, ExceptionRecord, to_cloudevent

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
records = st.builds(
    ExceptionRecord,
    exception_id=st.text(min_size=1, max_size=40),
    rule=st.sampled_from(["DELIVERY_OVERDUE", "DUPLICATE_ORDER", "REFUND_OVERDUE"]),
    subject=st.text(min_size=1),
    order_id=st.none() | st.text(min_size=1),
    severity=st.sampled_from(["low", "medium", "high", "critical"]),
    detected_at=times,
    event_time=times,
    summary=st.text(),  # any text: non-ASCII, lone surrogates
    evidence=st.dictionaries(st.text(max_size=12), json_values, max_size=6),
    revision=st.integers(min_value=0, max_value=10**6),
    amount=st.integers(min_value=-(10**15), max_value=10**15),
)


@settings(max_examples=300, deadline=None)
@given(records)
def test_a_packed_record_reads_back_equal_and_goes_on_the_wire_the_same(rec: ExceptionRecord) -> None:
    back = ExceptionRecord.unpack(rec.pack())
    assert back == rec
    for kind in ("opened", "resolved"):
        wire = json.dumps(to_cloudevent(Emission.of(kind, rec)), sort_keys=True)
        assert json.dumps(to_cloudevent(Emission.of(kind, back)), sort_keys=True) == wire


def test_a_resolved_record_keeps_its_resolution() -> None:
    rec = ExceptionRecord("x", "DELIVERY_OVERDUE", "o-1", "o-1", "medium", 1.5, 1.25, "s", {"a": [1, "b"]})
    rec.resolve("e-9", 2.75, 3.0)
    assert ExceptionRecord.unpack(rec.pack()) == rec
