"""The input wire contract (CONTRACT.md): every event type parses, money is an exact Decimal,
timestamps need an offset, extra fields are kept and ignored, and every malformed message
raises `InvalidEvent` with the right bounded `reason` and a message free of field values."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from orderwatch.detectors.records import to_cloudevent
from orderwatch.errors import InvalidEvent, OrderwatchError
from orderwatch.schemas.events import EVENT_MODELS, EVENT_TYPES, TOPIC_OF_TYPE, parse_event
from orderwatch.schemas.exception_event import ExceptionEvent
from tests.factories import T0, at, created, opened, paid, resolved, rules_opened, run

WHEN = "2026-03-02T09:00:00+00:00"
ADDRESS = {
    "recipient": "Ada Lovelace",
    "line1": "12 Acacia Avenue",
    "line2": "Flat 3",
    "city": "Berlin",
    "region": "BE",
    "postal_code": "10115",
    "country": "DE",
}

# One valid `data` per type (with every optional field somewhere), and the event's subject.
VALID: dict[str, tuple[str, dict[str, Any]]] = {
    "order.created": (
        "o-1",
        {
            "order_id": "o-1",
            "customer_id": "c-1",
            "customer_since": "2025-01-01T00:00:00+01:00",
            "merchant_id": "m-1",
            "channel": "web",
            "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": "9.95"}],
            "total_amount": "19.90",
            "currency": "EUR",
            "shipping_address": ADDRESS,
            "contact_phone": "+4915123456789",
            "promised_ship_by": "2026-03-04T09:00:00Z",
            "promised_delivery_by": "2026-03-06T18:00:00+02:00",
        },
    ),
    "order.status_changed": ("o-1", {"order_id": "o-1", "status": "paid", "previous_status": "pending_payment"}),
    "order.address_updated": (
        "o-1",
        {"order_id": "o-1", "shipping_address": ADDRESS, "contact_phone": "+4915123456789"},
    ),
    "order.cancel_requested": ("o-1", {"order_id": "o-1", "reason": "changed_mind"}),
    "order.cancelled": ("o-1", {"order_id": "o-1", "reason": "changed_mind"}),
    "payment.succeeded": (
        "o-1",
        {
            "order_id": "o-1",
            "payment_id": "pay-1",
            "amount": "19.90",
            "currency": "EUR",
            "provider": "stripe",
            "method": "card",
        },
    ),
    "payment.failed": (
        "o-1",
        {
            "order_id": "o-1",
            "payment_id": "pay-1",
            "amount": "19.90",
            "currency": "EUR",
            "provider": "stripe",
            "reason_code": "card_declined",
        },
    ),
    "refund.requested": (
        "o-1",
        {
            "order_id": "o-1",
            "refund_id": "r-1",
            "payment_id": "pay-1",
            "amount": "19.90",
            "currency": "EUR",
            "reason": "return",
        },
    ),
    "refund.succeeded": ("o-1", {"order_id": "o-1", "refund_id": "r-1", "amount": "19.90", "currency": "EUR"}),
    "refund.failed": ("o-1", {"order_id": "o-1", "refund_id": "r-1", "reason_code": "insufficient_funds"}),
    "inventory.level_reported": ("SKU-1", {"sku": "SKU-1", "warehouse_id": "W1", "on_hand": 0, "reserved": 0}),
    "inventory.reserved": ("SKU-1", {"sku": "SKU-1", "warehouse_id": "W1", "order_id": "o-1", "quantity": 1}),
    "inventory.reservation_failed": (
        "SKU-1",
        {"sku": "SKU-1", "warehouse_id": "W1", "order_id": "o-1", "quantity": 3, "reason": "no_stock"},
    ),
    "inventory.released": ("SKU-1", {"sku": "SKU-1", "warehouse_id": "W1", "order_id": "o-1", "quantity": 1}),
    "shipment.created": (
        "o-1",
        {
            "order_id": "o-1",
            "shipment_id": "s-1",
            "carrier": "dhl",
            "tracking_number": "JD0001",
            "promised_delivery_by": "2026-03-06T18:00:00+00:00",
        },
    ),
    "shipment.tracking_updated": (
        "o-1",
        {"order_id": "o-1", "shipment_id": "s-1", "status": "in_transit", "location": "Leipzig hub"},
    ),
    "shipment.delivered": ("o-1", {"order_id": "o-1", "shipment_id": "s-1"}),
    "shipment.exception": ("o-1", {"order_id": "o-1", "shipment_id": "s-1", "reason": "lost"}),
}


def envelope(type_: str, data: Any = None, **overrides: Any) -> dict[str, Any]:
    subject, valid = VALID.get(type_, ("o-1", {}))
    doc = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/tests",
        "type": type_,
        "time": WHEN,
        "subject": subject,
        "datacontenttype": "application/json",
        "data": copy.deepcopy(valid) if data is None else data,
    }
    doc.update(overrides)
    return doc


def with_data(type_: str, **changes: Any) -> dict[str, Any]:
    doc = envelope(type_)
    doc["data"].update(changes)
    return doc


def without(doc: dict[str, Any], *keys: str, where: str | None = None) -> dict[str, Any]:
    target = doc[where] if where else doc
    for key in keys:
        del target[key]
    return doc


def reason_of(raw: str | bytes) -> str:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    return info.value.reason


# -- valid events ------------------------------------------------------------------------------
def test_the_contract_lists_eighteen_types_on_four_topics() -> None:
    assert len(EVENT_TYPES) == 18
    assert set(VALID) == set(EVENT_TYPES) == set(EVENT_MODELS) == set(TOPIC_OF_TYPE)
    assert {t.split(".")[0] for t in EVENT_TYPES if TOPIC_OF_TYPE[t] == "payments"} == {"payment", "refund"}
    assert {TOPIC_OF_TYPE[t] for t in EVENT_TYPES} == {"orders", "payments", "inventory", "logistics"}


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_every_type_parses_from_valid_json(type_: str, as_bytes: bool) -> None:
    doc = envelope(type_)
    text = json.dumps(doc)
    ev = parse_event(text.encode() if as_bytes else text)
    # The model, or its in-core twin (a subclass with the same fields: tests/schemas/test_fast_path.py).
    assert isinstance(ev, EVENT_MODELS[type_])
    assert type(ev).__name__ == EVENT_MODELS[type_].__name__
    assert (ev.type, ev.id, ev.source, ev.subject) == (type_, "evt-1", "/tests", doc["subject"])
    assert ev.time == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert ev.time.utcoffset() is not None
    _same(ev.data.model_dump(), VALID[type_][1])
    assert parse_event(ev.model_dump_json()) == ev  # and it survives a round trip


def _same(parsed: Any, given: Any) -> None:
    """`parsed` (a model dump) holds every value of `given` (JSON), typed per the contract."""
    if isinstance(given, dict):
        for key, value in given.items():
            _same(parsed[key], value)
    elif isinstance(given, list):
        assert len(parsed) == len(given)
        for p, g in zip(parsed, given, strict=True):
            _same(p, g)
    elif isinstance(parsed, datetime):
        assert parsed == datetime.fromisoformat(given)
        assert parsed.utcoffset() is not None
    elif isinstance(parsed, Decimal):
        assert parsed == Decimal(given)
    else:
        assert parsed == given


def test_optional_fields_may_be_left_out() -> None:
    doc = envelope("order.created")
    without(doc, "merchant_id", "contact_phone", "promised_ship_by", "promised_delivery_by", where="data")
    without(doc["data"]["shipping_address"], "line2", "region")
    without(doc, "datacontenttype")
    ev = parse_event(json.dumps(doc))
    assert ev.data.merchant_id is None
    assert ev.data.promised_ship_by is None and ev.data.promised_delivery_by is None
    assert ev.data.shipping_address.line2 is None
    assert ev.datacontenttype is None


def test_timestamps_keep_their_offset() -> None:
    ev = parse_event(json.dumps(envelope("order.created", time="2026-03-02T10:00:00+01:00")))
    assert ev.time == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert ev.data.promised_delivery_by == datetime(2026, 3, 6, 16, 0, tzinfo=UTC)
    assert ev.data.customer_since.utcoffset() == timedelta(hours=1)


# -- money -------------------------------------------------------------------------------------
MONEY_FIELDS = [
    ("order.created", ("total_amount",)),
    ("order.created", ("items", 0, "unit_price")),
    ("payment.succeeded", ("amount",)),
    ("payment.failed", ("amount",)),
    ("refund.requested", ("amount",)),
    ("refund.succeeded", ("amount",)),
]


def _money_json(type_: str, path: tuple[Any, ...], literal: str) -> str:
    """The event as JSON text with `literal` written verbatim at `path` inside `data`."""
    doc = envelope(type_)
    target = doc["data"]
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = "__MONEY__"
    return json.dumps(doc).replace('"__MONEY__"', literal)


def _money(ev: Any, path: tuple[Any, ...]) -> Any:
    value = ev.data
    for step in path:
        value = value[step] if isinstance(step, int) else getattr(value, step)
    return value


@pytest.mark.parametrize("literal", ['"19.90"', "19.90"], ids=["json-string", "json-number"])
@pytest.mark.parametrize(("type_", "path"), MONEY_FIELDS, ids=[f"{t}:{'.'.join(map(str, p))}" for t, p in MONEY_FIELDS])
def test_money_is_a_decimal_never_a_float(type_: str, path: tuple[Any, ...], literal: str) -> None:
    ev = parse_event(_money_json(type_, path, literal))
    amount = _money(ev, path)
    assert type(amount) is Decimal
    assert amount == Decimal("19.90")


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("0.1", "0.1"),  # a float detour would give 0.1000000000000000055511151231257827...
        ('"0.1"', "0.1"),
        ("0.29", "0.29"),
        ("1e2", "100"),
        ('"0.001"', "0.001"),
        ('"12345678901234.567"', "12345678901234.567"),
        ('"999999999999999.999"', "999999999999999.999"),
        ("0", "0"),
    ],
)
def test_money_values_are_exact(literal: str, expected: str) -> None:
    ev = parse_event(_money_json("payment.succeeded", ("amount",), literal))
    assert type(ev.data.amount) is Decimal
    assert ev.data.amount == Decimal(expected)


def test_money_json_number_keeps_every_digit() -> None:
    ev = parse_event(_money_json("payment.succeeded", ("amount",), "12345678901234.567"))
    assert ev.data.amount == Decimal("12345678901234.567")


# -- timestamps --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("time", "not_cloudevent"),
        ("customer_since", "invalid_data"),
        ("promised_ship_by", "invalid_data"),
        ("promised_delivery_by", "invalid_data"),
    ],
)
def test_a_timestamp_without_offset_is_invalid(field: str, reason: str) -> None:
    doc = envelope("order.created")
    if field == "time":
        doc["time"] = "2026-03-02T09:00:00"
    else:
        doc["data"][field] = "2026-03-02T09:00:00"
    assert reason_of(json.dumps(doc)) == reason


def test_shipment_promise_without_offset_is_invalid() -> None:
    doc = with_data("shipment.created", promised_delivery_by="2026-03-06T18:00:00")
    assert reason_of(json.dumps(doc)) == "invalid_data"


# -- unknown extra fields ----------------------------------------------------------------------
def test_unknown_extra_fields_are_kept_and_ignored() -> None:
    plain = envelope("order.created")
    extended = copy.deepcopy(plain)
    extended["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    extended["data"]["loyalty_tier"] = "gold"
    extended["data"]["gift_wrap"] = {"paper": "blue"}
    extended["data"]["items"][0]["engraving"] = "A.L."
    extended["data"]["shipping_address"]["door_code"] = "1234"
    ev = parse_event(json.dumps(extended))
    assert ev.model_extra == {"traceparent": extended["traceparent"]}
    assert ev.data.model_extra == {"loyalty_tier": "gold", "gift_wrap": {"paper": "blue"}}
    assert ev.data.items[0].model_extra == {"engraving": "A.L."}
    assert ev.data.shipping_address.model_extra == {"door_code": "1234"}
    # ignored: the declared fields are exactly those of the plain event
    base = parse_event(json.dumps(plain))
    declared = set(type(base).model_fields)
    assert ev.model_dump(include=declared, exclude={"data"}) == base.model_dump(include=declared, exclude={"data"})
    data_fields = set(type(base.data).model_fields)
    assert ev.data.model_dump(include=data_fields - {"items", "shipping_address"}) == base.data.model_dump(
        include=data_fields - {"items", "shipping_address"}
    )


def test_extra_fields_do_not_change_what_the_rules_see() -> None:
    plain = created("o-1", T0)
    doc = json.loads(plain.model_dump_json())
    doc["id"] = "evt-extra"
    doc["partitionkey"] = "o-1"
    doc["data"]["coupon"] = "SPRING"
    extended = parse_event(json.dumps(doc))
    until = at(days=30)
    assert rules_opened(run([extended], until=until)) == rules_opened(run([plain], until=until))
    assert rules_opened(run([plain], until=until)) == ["ORDER_STUCK", "PAYMENT_TIMEOUT"]


# -- malformed messages ------------------------------------------------------------------------
def _valid(type_: str = "payment.succeeded") -> dict[str, Any]:
    return envelope(type_)


MALFORMED: list[tuple[str, str | bytes, str]] = [
    # not JSON at all
    ("plain text", "not json", "not_json"),
    ("empty", "", "not_json"),
    ("truncated", json.dumps(_valid())[:-5], "not_json"),
    ("trailing comma", '{"id": "evt-1",}', "not_json"),
    ("binary", b"\xff\xfe\x00garbage", "not_json"),
    # JSON, but not a CloudEvent
    ("array", "[]", "not_cloudevent"),
    ("array of an event", json.dumps([_valid()]), "not_cloudevent"),
    ("number", "42", "not_cloudevent"),
    ("string", '"order.created"', "not_cloudevent"),
    ("null", "null", "not_cloudevent"),
    ("empty object", "{}", "not_cloudevent"),
    ("missing id", json.dumps(without(_valid(), "id")), "not_cloudevent"),
    ("missing specversion", json.dumps(without(_valid(), "specversion")), "not_cloudevent"),
    ("missing type", json.dumps(without(_valid(), "type")), "not_cloudevent"),
    ("missing time", json.dumps(without(_valid(), "time")), "not_cloudevent"),
    ("missing source", json.dumps(without(_valid(), "source")), "not_cloudevent"),
    ("missing subject", json.dumps(without(_valid(), "subject")), "not_cloudevent"),
    ("specversion 0.3", json.dumps(_valid() | {"specversion": "0.3"}), "not_cloudevent"),
    ("empty id", json.dumps(_valid() | {"id": ""}), "not_cloudevent"),
    ("time not a time", json.dumps(_valid() | {"time": "yesterday"}), "not_cloudevent"),
    ("wrong datacontenttype", json.dumps(_valid() | {"datacontenttype": "text/xml"}), "not_cloudevent"),
    # a CloudEvent of a type we do not know
    ("unknown type", json.dumps(envelope("order.exploded")), "unknown_type"),
    ("type in wrong case", json.dumps(envelope("Order.Created")), "unknown_type"),
    ("empty type", json.dumps(envelope("")), "unknown_type"),
    # a known type whose data fails validation
    ("missing order_id", json.dumps(without(_valid(), "order_id", where="data")), "invalid_data"),
    ("empty order_id", json.dumps(with_data("order.cancelled", order_id="")), "invalid_data"),
    ("quantity 0", json.dumps(with_data("inventory.reserved", quantity=0)), "invalid_data"),
    (
        "line item quantity 0",
        json.dumps(with_data("order.created", items=[{"sku": "SKU-1", "quantity": 0, "unit_price": "1.00"}])),
        "invalid_data",
    ),
    ("no line items", json.dumps(with_data("order.created", items=[])), "invalid_data"),
    ("negative on_hand", json.dumps(with_data("inventory.level_reported", on_hand=-1)), "invalid_data"),
    ("negative reserved", json.dumps(with_data("inventory.level_reported", reserved=-3)), "invalid_data"),
    ("currency eur", json.dumps(with_data("payment.succeeded", currency="eur")), "invalid_data"),
    ("currency EURO", json.dumps(with_data("refund.requested", currency="EURO")), "invalid_data"),
    ("NaN amount (string)", json.dumps(with_data("payment.succeeded", amount="NaN")), "invalid_data"),
    ("infinite amount", _money_json("payment.succeeded", ("amount",), "1e400"), "invalid_data"),
    ("amount not a number", json.dumps(with_data("payment.succeeded", amount="19,90 EUR")), "invalid_data"),
    ("wrong channel", json.dumps(with_data("order.created", channel="fax")), "invalid_data"),
    ("unknown status", json.dumps(with_data("order.status_changed", status="teleported")), "invalid_data"),
    ("unknown shipment exception", json.dumps(with_data("shipment.exception", reason="stolen")), "invalid_data"),
    ("missing data", json.dumps(without(_valid(), "data")), "invalid_data"),
]


@pytest.mark.parametrize(
    ("raw", "reason"), [(r, why) for _, r, why in MALFORMED], ids=[name for name, _, _ in MALFORMED]
)
def test_malformed_messages_raise_invalid_event_with_their_reason(raw: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    exc = info.value
    assert exc.reason == reason
    assert isinstance(exc, OrderwatchError)
    assert str(exc).startswith(f"{reason}: ")
    assert exc.detail  # says what was wrong


def test_a_nan_json_literal_is_rejected() -> None:
    # NaN is not JSON (RFC 8259); whether the parser or the money check rejects it, it is bad
    assert reason_of(_money_json("payment.succeeded", ("amount",), "NaN")) in ("not_json", "invalid_data")


def test_the_reason_names_the_bad_field() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(json.dumps(with_data("inventory.level_reported", on_hand=-1)))
    assert "on_hand" in info.value.detail
    with pytest.raises(InvalidEvent) as info:
        parse_event(json.dumps(envelope("order.exploded")))
    assert "order.exploded" in str(info.value)


@pytest.mark.parametrize(
    "change",
    [
        {"shipping_address": "12 Acacia Avenue, 10115 Berlin"},
        {"items": ["SKU-1"]},
    ],
    ids=["address-as-string", "line-item-as-string"],
)
def test_a_data_part_that_is_not_an_object_is_invalid_data(change: dict[str, Any]) -> None:
    assert reason_of(json.dumps(with_data("order.created", **change))) == "invalid_data"


# -- personal data never in the message --------------------------------------------------------
PHONE = "+4915123456789"
STREET = "Zypressenweg"


def _personal(**changes: Any) -> dict[str, Any]:
    doc = envelope("order.created")
    doc["data"]["contact_phone"] = PHONE
    doc["data"]["shipping_address"] = dict(ADDRESS, line1=f"{STREET} 7")
    doc["data"].update(changes)
    return doc


def _street_as_list() -> dict[str, Any]:
    doc = _personal()
    doc["data"]["shipping_address"]["line1"] = [STREET, 7]
    return doc


PERSONAL_BAD: list[tuple[str, str]] = [
    ("quantity 0", json.dumps(_personal(items=[{"sku": "SKU-1", "quantity": 0, "unit_price": "1.00"}]))),
    ("phone as a number", json.dumps(_personal(contact_phone=4915123456789))),
    ("address as a string", json.dumps(_personal(shipping_address=f"{STREET} 7, 10115 Berlin"))),
    ("street as a list", json.dumps(_street_as_list())),
    ("phone as a channel", json.dumps(_personal(channel=PHONE))),
    ("street as currency", json.dumps(_personal(currency=STREET))),
    ("street as the time", json.dumps(_personal() | {"time": STREET})),
    ("phone as the specversion", json.dumps(_personal() | {"specversion": PHONE})),
    ("truncated", json.dumps(_personal())[:-40]),
    (
        "many errors",
        json.dumps(
            _personal(currency=STREET, channel=PHONE, total_amount=STREET, customer_since=PHONE, items=[{"sku": PHONE}])
        ),
    ),
]


@pytest.mark.parametrize("raw", [r for _, r in PERSONAL_BAD], ids=[n for n, _ in PERSONAL_BAD])
def test_the_message_never_contains_field_values(raw: str) -> None:
    assert PHONE[1:] in raw and STREET in raw  # the bad event does carry personal data
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    text = str(info.value)
    for secret in (PHONE, PHONE[1:], "15123456789", STREET, "Berlin"):
        assert secret not in text
        assert secret not in info.value.detail


# -- the output wire model ---------------------------------------------------------------------
def test_exception_event_validates_opened_and_resolved_emissions() -> None:
    payment = paid("o-1", at(40))
    ems = run([created("o-1", T0), payment], lateness=0)
    opening = opened(ems, "PAYMENT_TIMEOUT")
    closing = resolved(ems, "PAYMENT_TIMEOUT")
    assert len(opening) == 1 and len(closing) == 1

    ce = to_cloudevent(opening[0])
    ev = ExceptionEvent.model_validate_json(json.dumps(ce))
    assert ev.type == "exception.opened"
    assert ev.subject == ev.data.subject == "o-1"
    assert (ev.data.rule, ev.data.category, ev.data.severity, ev.data.status) == (
        "PAYMENT_TIMEOUT",
        "payment",
        "low",
        "open",
    )
    assert ev.data.recommended_action == "remind_customer_to_pay"
    assert ev.data.order_id == "o-1"
    assert ev.data.event_time == at(30)  # the deadline
    assert ev.data.handle_by - ev.data.detected_at == timedelta(hours=24)  # low: 24 h
    assert ev.data.resolution is None

    ce = to_cloudevent(closing[0])
    ev = ExceptionEvent.model_validate_json(json.dumps(ce))
    assert ev.type == "exception.resolved"
    assert ev.data.exception_id == opening[0].record.exception_id
    assert ev.data.status == "resolved"
    assert ev.data.resolution is not None
    assert ev.data.resolution.kind == "auto"
    assert ev.data.resolution.event_id == payment.id
    assert ev.data.resolution.event_time == at(40)
    # and the Python dict validates as is, without a JSON round trip
    assert ExceptionEvent.model_validate(ce) == ev


def test_exception_event_rejects_what_the_contract_forbids() -> None:
    ems = run([created("o-1", T0)], until=at(days=1))
    ce = to_cloudevent(opened(ems, "PAYMENT_TIMEOUT")[0])
    ExceptionEvent.model_validate(ce)
    for path, value in [
        (("type",), "exception.updated"),
        (("data", "severity"), "urgent"),
        (("data", "category"), "billing"),
        (("data", "status"), "closed"),
        (("time",), "2026-03-02T09:00:00"),
    ]:
        bad = copy.deepcopy(ce)
        target = bad
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        with pytest.raises(ValueError, match=path[-1]):
            ExceptionEvent.model_validate(bad)


# -- bounds at the edge: hostile values are dead letters with a reason, never an exception further in
@pytest.mark.parametrize(
    "literal",
    [
        "1e999999999",
        "1E+5000",
        '"1E+5000"',
        "1234567890123456789012345678.5",
        '"1234567890123456789012345678"',
        '"0.0000000000000000000000000001"',
        '"1000000000000000"',
        '"-5.00"',
        "-0.01",
        '"1_000"',
        '" +12.5 "',
        '"12.5 "',
        '"NaN"',
        '"Infinity"',
        '"1e3"',
        "true",
        '""',
        "null",
        "[1]",
    ],
)
def test_money_out_of_range_or_format_is_invalid_data(literal: str) -> None:
    assert reason_of(_money_json("payment.succeeded", ("amount",), literal)) == "invalid_data"


@pytest.mark.parametrize("literal", ['"1.2345"', "19.9999"])
def test_money_has_at_most_three_decimals(literal: str) -> None:
    assert reason_of(_money_json("refund.requested", ("amount",), literal)) == "invalid_data"


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59+00:00",
        "2100-01-01T00:00:00+00:00",
        "1969-12-31T23:59:59+00:00",
        "0001-01-01T00:00:00+00:00",
    ],
)
@pytest.mark.parametrize(
    ("field", "reason"),
    [("time", "not_cloudevent"), ("customer_since", "invalid_data"), ("promised_delivery_by", "invalid_data")],
)
def test_timestamps_outside_the_plausible_range_are_invalid(field: str, reason: str, value: str) -> None:
    doc = envelope("order.created")
    if field == "time":
        doc["time"] = value
    else:
        doc["data"][field] = value
    assert reason_of(json.dumps(doc)) == reason


@pytest.mark.parametrize("value", [1772442000, 1772442000.5, True, None])
def test_a_timestamp_must_be_text(value: Any) -> None:
    assert reason_of(json.dumps(envelope("order.created", time=value))) == "not_cloudevent"


@pytest.mark.parametrize("value", [True, False, "5", 5.0, -1, 10**12])
def test_counts_are_strict_bounded_integers(value: Any) -> None:
    doc = with_data("inventory.level_reported", on_hand=value)
    assert reason_of(json.dumps(doc)) == "invalid_data"


def test_a_quantity_may_not_be_a_boolean() -> None:
    doc = envelope("order.created")
    doc["data"]["items"][0]["quantity"] = True
    assert reason_of(json.dumps(doc)) == "invalid_data"


@pytest.mark.parametrize(
    "value", ["", "   ", "\t", "o-1\x00", "o\n1", "o-1\x7f", "x" * 257, "x" * 1_000_000, "o\u20281"]
)
def test_ids_are_non_blank_bounded_and_printable(value: str) -> None:
    doc = envelope("payment.succeeded", subject=value)
    doc["data"]["order_id"] = value
    assert reason_of(json.dumps(doc)) in {"invalid_data", "not_cloudevent"}
    doc = envelope("payment.succeeded")
    doc["data"]["payment_id"] = value
    assert reason_of(json.dumps(doc)) == "invalid_data"
    assert reason_of(json.dumps(envelope("payment.succeeded", id=value))) == "not_cloudevent"


def test_an_id_of_256_printable_characters_passes() -> None:
    doc = envelope("payment.succeeded")
    doc["data"]["payment_id"] = "p" * 255 + "é"
    assert parse_event(json.dumps(doc)).data.payment_id.endswith("é")


def test_free_text_is_bounded() -> None:
    assert reason_of(json.dumps(with_data("order.cancelled", reason="r" * 1001))) == "invalid_data"


def test_a_utf8_bom_is_not_a_reason_to_reject() -> None:
    text = json.dumps(envelope("order.cancelled"))
    assert parse_event(b"\xef\xbb\xbf" + text.encode()).type == "order.cancelled"
    assert parse_event("\ufeff" + text).type == "order.cancelled"


@pytest.mark.parametrize("type_", sorted(EVENT_TYPES))
def test_a_subject_other_than_the_entity_is_a_key_mismatch(type_: str) -> None:
    doc = envelope(type_, subject="someone-else")
    with pytest.raises(InvalidEvent) as info:
        parse_event(json.dumps(doc))
    assert info.value.reason == "key_mismatch"
    assert "someone-else" not in str(info.value)
