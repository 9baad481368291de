"""parse_event's fast path (in-core twins of the models, schemas/events.py) must give exactly
what the models alone give: the same event (type, class, every field value), or the same
refusal (reason and message). Each case is parsed both ways and compared."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderwatch.errors import InvalidEvent
from orderwatch.schemas import events
from orderwatch.schemas.events import EVENT_MODELS, EVENT_TYPES, parse_event
from tests.schemas.test_events import VALID, envelope, with_data


def _exact_only(raw: str | bytes) -> Any:
    """parse_event as it was before the fast path: the models alone."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(events, "_FAST_VALIDATE_JSON", _refuse)
        return _outcome(raw)


def _refuse(raw: str | bytes) -> Any:
    # A ValidationError of the fast adapter's own making: what parse_event sees for any refusal.
    return events._FAST_ADAPTER.validate_json(b"{}")


def _outcome(raw: str | bytes) -> Any:
    try:
        ev = parse_event(raw)
    except InvalidEvent as exc:
        return ("refused", exc.reason, exc.detail)
    return ("event", ev.type, ev.model_dump(), isinstance(ev, EVENT_MODELS[ev.type]))


def _same_both_ways(doc: Any) -> tuple[Any, ...]:
    raw = doc if isinstance(doc, (str, bytes)) else json.dumps(doc, ensure_ascii=False)
    fast, exact = _outcome(raw), _exact_only(raw)
    assert fast == exact
    return fast  # type: ignore[no-any-return]


def test_the_fast_path_is_taken_for_well_formed_input() -> None:
    raw = json.dumps(envelope("payment.succeeded"))
    ev = events._FAST_VALIDATE_JSON(raw)
    assert type(ev) is not EVENT_MODELS["payment.succeeded"]  # the twin ...
    assert isinstance(ev, EVENT_MODELS["payment.succeeded"])  # ... of the model
    assert parse_event(raw) == ev


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_every_type_gives_the_same_event(type_: str) -> None:
    assert _same_both_ways(envelope(type_))[0] == "event"


ID_CASES = [
    "",
    " ",
    "   ",
    "\t",
    "a\tb",
    "a\nb",
    "é-1",
    "ö",
    "\u00a0",
    "a\u200bb",
    "x" * 256,
    "x" * 257,
    " x ",
    "\u3000",
]
TIME_CASES = [
    "1970-01-01T00:00:00+00:00",
    "1969-12-31T23:59:59+00:00",
    "1970-01-01T00:30:00+01:00",
    "1970-01-01T00:30:00-01:00",
    "2099-12-31T23:30:00-01:00",
    "2099-12-31T23:30:00+01:00",
    "2100-01-01T00:00:00Z",
    "2026-03-02T09:00:00",
    "2026-03-02",
    "2026-03-02 09:00:00+00:00",
    "1700000000",
    "",
    1700000000,
    1700000000.5,
    True,
    None,
]
MONEY_CASES = [
    "19.90",
    "1_000",
    " 12.5 ",
    "1e3",
    "NaN",
    "-1",
    "1.2345",
    19.9,
    1e3,
    True,
    "999999999999999.999",
    12345678901234567.0,
    1234567890123.456,
]


@pytest.mark.parametrize("value", ID_CASES)
@pytest.mark.parametrize("where", ["id", "source", "subject", "order_id", "payment_id"])
def test_ids_get_the_same_verdict(value: str, where: str) -> None:
    if where in ("id", "source", "subject"):
        doc = envelope("payment.succeeded", **{where: value})
    else:
        doc = with_data("payment.succeeded", **{where: value})
    _same_both_ways(doc)


@pytest.mark.parametrize("value", TIME_CASES)
@pytest.mark.parametrize("where", ["time", "customer_since", "promised_delivery_by"])
def test_timestamps_get_the_same_verdict(value: Any, where: str) -> None:
    doc = envelope("order.created", time=value) if where == "time" else with_data("order.created", **{where: value})
    _same_both_ways(doc)


@pytest.mark.parametrize("value", MONEY_CASES)
def test_money_gets_the_same_verdict(value: Any) -> None:
    _same_both_ways(with_data("payment.succeeded", amount=value))


def test_raw_text_cases() -> None:
    good = json.dumps(envelope("order.created"))
    for raw in [good, good.encode(), b"\xef\xbb\xbf" + good.encode(), "\ufeff" + good, "{", "null", "[]", b"\xff\xfe"]:
        _same_both_ways(raw)


_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
_VALUE = st.one_of(_TEXT, st.integers(), st.floats(allow_nan=True), st.booleans(), st.none())


@settings(max_examples=300, deadline=None)
@given(type_=st.sampled_from(sorted(VALID)), field=st.sampled_from(["id", "subject", "time", "data"]), value=_VALUE)
def test_any_envelope_field_gets_the_same_verdict(type_: str, field: str, value: Any) -> None:
    _same_both_ways(envelope(type_, **{field: value}))


@settings(max_examples=300, deadline=None)
@given(type_=st.sampled_from(sorted(VALID)), data=st.data(), value=_VALUE)
def test_any_data_field_gets_the_same_verdict(type_: str, data: st.DataObject, value: Any) -> None:
    name = data.draw(st.sampled_from(sorted(VALID[type_][1])))
    _same_both_ways(with_data(type_, **{name: value}))
