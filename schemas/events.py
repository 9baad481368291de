"""Wire models for the input topics: the CloudEvents 1.0 envelope and every event type.

These pydantic models are the executable form of CONTRACT.md; `parse_event` is the one door
through which raw bytes become typed events (invalid ones raise `InvalidEvent`).
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
)
from pydantic_core import PydanticCustomError

from orderwatch.errors import InvalidEvent

__all__ = [
    "ADDRESS_PARTS",
    "ENTITY_FIELD",
    "EVENT_MODELS",
    "EVENT_TYPES",
    "INPUT_TOPICS",
    "TOPIC_OF_TYPE",
    "Address",
    "CloudEvent",
    "Event",
    "LineItem",
    "entity_of",
    "parse_event",
]


# Bounds at the edge: anything past them is a dead letter with a reason, never an exception
# further in (a money value of 1E+5000 used to overflow the rules' integer arithmetic, a promise
# in year 9999 the computation of `handle_by`).
MONEY_MAX = Decimal("999999999999999.999")
"""Largest accepted amount: 15 integer digits, 3 decimals (the rules keep money in thousandths)."""
MONEY_DECIMALS = 3
TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TIME_MAX = datetime(2100, 1, 1, tzinfo=UTC)
"""Every timestamp of an event lies in [TIME_MIN, TIME_MAX)."""
ID_MAX = 256
"""Longest id (envelope id, source, subject, and every `*_id`, `sku`, `provider`), in characters."""
TEXT_MAX = 1000
"""Longest free-text field (reasons, statuses, carrier, method, location)."""
COUNT_MAX = 1_000_000_000
_MONEY_TEXT = re.compile(r"[0-9]+(\.[0-9]+)?")


def _money_input(value: Any) -> Any:
    # Strict: a JSON number or a plain decimal string. Python's Decimal also takes "1_000",
    # " +12.5 ", "1e3" and "NaN"; a bool is an int to Python. None of those is money on the wire.
    if isinstance(value, bool):
        raise PydanticCustomError("money_type", "money must be a decimal string or a number, not a boolean")
    if isinstance(value, str) and not _MONEY_TEXT.fullmatch(value):
        raise PydanticCustomError("money_format", "money must be a plain decimal like 19.90 (digits, one dot)")
    return value


# Money: a JSON string or number, always a Decimal (never a float); non-finite values are invalid.
def _exact_money(value: Decimal, info: ValidationInfo) -> Decimal:
    # The fast JSON path reads a JSON number through a float: exact up to 15 significant digits.
    # Longer ones are sent back to parse_event's exact (slower) path instead of being rounded.
    if len(value.as_tuple().digits) > 15 and not (info.context or {}).get("exact"):
        raise PydanticCustomError("needs_exact_parse", "money with more than 15 significant digits")
    return value


def _timestamp_input(value: Any) -> Any:
    # A JSON number would be taken for epoch seconds; the contract says RFC 3339 text.
    if not isinstance(value, str | datetime):
        raise PydanticCustomError("time_type", "a timestamp must be an RFC 3339 string with an offset")
    return value


def _plausible(value: datetime) -> datetime:
    if not TIME_MIN <= value < TIME_MAX:
        raise PydanticCustomError(
            "time_range", "timestamp outside the plausible range {low} to {high}", {"low": "1970", "high": "2100"}
        )
    return value


def _printable_id(value: str) -> str:
    # Called for every id of every event: isprintable() first, since a printable id is blank
    # only when it is all spaces (isspace() decides that without strip()'s copy). Same verdicts,
    # same order of checks as `not value.strip()` then `not value.isprintable()`.
    if value.isprintable():
        if not value or value.isspace():
            raise PydanticCustomError("id_blank", "an id must not be blank")
        return value
    if not value.strip():
        raise PydanticCustomError("id_blank", "an id must not be blank")
    if not value.isprintable():
        raise PydanticCustomError("id_unprintable", "an id must not contain control or separator characters")
    return value


Money = Annotated[
    Decimal,
    BeforeValidator(_money_input),
    Field(allow_inf_nan=False, ge=0, le=MONEY_MAX, decimal_places=MONEY_DECIMALS),
    AfterValidator(_exact_money),
]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp_input), AfterValidator(_plausible)]
Count = Annotated[int, Field(strict=True, ge=0, le=COUNT_MAX)]
Quantity = Annotated[int, Field(strict=True, ge=1, le=COUNT_MAX)]
Text = Annotated[str, Field(max_length=TEXT_MAX)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
NonEmpty = Annotated[str, Field(min_length=1, max_length=ID_MAX), AfterValidator(_printable_id)]
OrderStatus = Literal[
    "pending_payment",
    "paid",
    "allocated",
    "shipped",
    "delivered",
    "completed",
    "cancelled",
    "refunded",
]


class _Data(BaseModel):
    # Upstreams add fields before we do: keep them, ignore them.
    model_config = ConfigDict(extra="allow", frozen=True)


class Address(_Data):
    """A shipping address. Parts may be missing or malformed on the wire: that is a business
    exception (`INVALID_SHIPPING_INFO`), not a schema error, so every part defaults to empty."""

    recipient: Text = ""
    line1: Text = ""
    line2: Text | None = None
    city: Text = ""
    region: Text | None = None
    postal_code: Text = ""
    country: Text = ""


ADDRESS_PARTS = ("recipient", "line1", "city", "postal_code", "country")


class LineItem(_Data):
    sku: NonEmpty
    quantity: Quantity
    unit_price: Money


class OrderCreatedData(_Data):
    order_id: NonEmpty
    customer_id: NonEmpty
    customer_since: Timestamp
    merchant_id: NonEmpty | None = None
    channel: Literal["web", "app", "marketplace", "pos"]
    items: Annotated[list[LineItem], Field(min_length=1)]
    total_amount: Money
    currency: Currency
    shipping_address: Address
    # Invalid phones are a business exception, so any string (even empty) passes the schema.
    contact_phone: Text = ""
    promised_ship_by: Timestamp | None = None
    promised_delivery_by: Timestamp | None = None
    # How the customer chose to pay (card, wallet, bank_transfer, ...): a segment for overrides.
    payment_method: Text | None = None


class OrderStatusChangedData(_Data):
    order_id: NonEmpty
    status: OrderStatus
    previous_status: OrderStatus | None = None


class OrderAddressUpdatedData(_Data):
    order_id: NonEmpty
    shipping_address: Address
    contact_phone: Text | None = None


class OrderCancelData(_Data):
    order_id: NonEmpty
    reason: Text


class PaymentSucceededData(_Data):
    order_id: NonEmpty
    payment_id: NonEmpty
    amount: Money
    currency: Currency
    provider: NonEmpty
    method: Text


class PaymentFailedData(_Data):
    order_id: NonEmpty
    payment_id: NonEmpty
    amount: Money
    currency: Currency
    provider: NonEmpty
    reason_code: Text


class RefundRequestedData(_Data):
    order_id: NonEmpty
    refund_id: NonEmpty
    payment_id: NonEmpty | None = None
    amount: Money
    currency: Currency
    reason: Text


class RefundSucceededData(_Data):
    order_id: NonEmpty
    refund_id: NonEmpty
    amount: Money
    currency: Currency


class RefundFailedData(_Data):
    order_id: NonEmpty
    refund_id: NonEmpty
    reason_code: Text


class InventoryLevelData(_Data):
    sku: NonEmpty
    warehouse_id: NonEmpty
    on_hand: Count
    reserved: Count


class InventoryReservedData(_Data):
    sku: NonEmpty
    warehouse_id: NonEmpty
    order_id: NonEmpty
    quantity: Quantity


class InventoryReservationFailedData(_Data):
    sku: NonEmpty
    warehouse_id: NonEmpty
    order_id: NonEmpty
    quantity: Count
    reason: Text


class ShipmentCreatedData(_Data):
    order_id: NonEmpty
    shipment_id: NonEmpty
    carrier: Text
    tracking_number: Text
    promised_delivery_by: Timestamp | None = None


class ShipmentTrackingData(_Data):
    order_id: NonEmpty
    shipment_id: NonEmpty
    status: Text
    location: Text | None = None


class ShipmentDeliveredData(_Data):
    order_id: NonEmpty
    shipment_id: NonEmpty


class ShipmentExceptionData(_Data):
    order_id: NonEmpty
    shipment_id: NonEmpty
    reason: Literal["lost", "damaged", "refused", "address_invalid", "failed_attempt"]


class CloudEvent(BaseModel):
    """The CloudEvents 1.0 envelope (structured JSON mode) shared by every topic."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: NonEmpty
    source: NonEmpty
    type: str
    time: Timestamp
    subject: NonEmpty
    datacontenttype: Literal["application/json"] | None = None
    data: Any


class OrderCreated(CloudEvent):
    type: Literal["order.created"]
    data: OrderCreatedData


class OrderStatusChanged(CloudEvent):
    type: Literal["order.status_changed"]
    data: OrderStatusChangedData


class OrderAddressUpdated(CloudEvent):
    type: Literal["order.address_updated"]
    data: OrderAddressUpdatedData


class OrderCancelRequested(CloudEvent):
    type: Literal["order.cancel_requested"]
    data: OrderCancelData


class OrderCancelled(CloudEvent):
    type: Literal["order.cancelled"]
    data: OrderCancelData


class PaymentSucceeded(CloudEvent):
    type: Literal["payment.succeeded"]
    data: PaymentSucceededData


class PaymentFailed(CloudEvent):
    type: Literal["payment.failed"]
    data: PaymentFailedData


class RefundRequested(CloudEvent):
    type: Literal["refund.requested"]
    data: RefundRequestedData


class RefundSucceeded(CloudEvent):
    type: Literal["refund.succeeded"]
    data: RefundSucceededData


class RefundFailed(CloudEvent):
    type: Literal["refund.failed"]
    data: RefundFailedData


class InventoryLevelReported(CloudEvent):
    type: Literal["inventory.level_reported"]
    data: InventoryLevelData


class InventoryReserved(CloudEvent):
    type: Literal["inventory.reserved"]
    data: InventoryReservedData


class InventoryReservationFailed(CloudEvent):
    type: Literal["inventory.reservation_failed"]
    data: InventoryReservationFailedData


class InventoryReleased(CloudEvent):
    type: Literal["inventory.released"]
    data: InventoryReservedData


class ShipmentCreated(CloudEvent):
    type: Literal["shipment.created"]
    data: ShipmentCreatedData


class ShipmentTrackingUpdated(CloudEvent):
    type: Literal["shipment.tracking_updated"]
    data: ShipmentTrackingData


class ShipmentDelivered(CloudEvent):
    type: Literal["shipment.delivered"]
    data: ShipmentDeliveredData


class ShipmentException(CloudEvent):
    type: Literal["shipment.exception"]
    data: ShipmentExceptionData


Event = Annotated[
    OrderCreated
    | OrderStatusChanged
    | OrderAddressUpdated
    | OrderCancelRequested
    | OrderCancelled
    | PaymentSucceeded
    | PaymentFailed
    | RefundRequested
    | RefundSucceeded
    | RefundFailed
    | InventoryLevelReported
    | InventoryReserved
    | InventoryReservationFailed
    | InventoryReleased
    | ShipmentCreated
    | ShipmentTrackingUpdated
    | ShipmentDelivered
    | ShipmentException,
    Field(discriminator="type"),
]

EVENT_MODELS: dict[str, type[CloudEvent]] = {
    "order.created": OrderCreated,
    "order.status_changed": OrderStatusChanged,
    "order.address_updated": OrderAddressUpdated,
    "order.cancel_requested": OrderCancelRequested,
    "order.cancelled": OrderCancelled,
    "payment.succeeded": PaymentSucceeded,
    "payment.failed": PaymentFailed,
    "refund.requested": RefundRequested,
    "refund.succeeded": RefundSucceeded,
    "refund.failed": RefundFailed,
    "inventory.level_reported": InventoryLevelReported,
    "inventory.reserved": InventoryReserved,
    "inventory.reservation_failed": InventoryReservationFailed,
    "inventory.released": InventoryReleased,
    "shipment.created": ShipmentCreated,
    "shipment.tracking_updated": ShipmentTrackingUpdated,
    "shipment.delivered": ShipmentDelivered,
    "shipment.exception": ShipmentException,
}
TOPIC_OF_TYPE: dict[str, str] = {
    "order.created": "orders",
    "order.status_changed": "orders",
    "order.address_updated": "orders",
    "order.cancel_requested": "orders",
    "order.cancelled": "orders",
    "payment.succeeded": "payments",
    "payment.failed": "payments",
    "refund.requested": "payments",
    "refund.succeeded": "payments",
    "refund.failed": "payments",
    "inventory.level_reported": "inventory",
    "inventory.reserved": "inventory",
    "inventory.reservation_failed": "inventory",
    "inventory.released": "inventory",
    "shipment.created": "logistics",
    "shipment.tracking_updated": "logistics",
    "shipment.delivered": "logistics",
    "shipment.exception": "logistics",
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_MODELS)
INPUT_TOPICS: tuple[str, ...] = ("orders", "payments", "inventory", "logistics")

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
# The core validator's own method: TypeAdapter.validate_json adds a Python frame and keyword
# handling per call, on the one call every input message makes.
_VALIDATE_JSON: Callable[[str | bytes], Event] = _ADAPTER.validator.validate_json
_BOM, _BOM_TEXT = b"\xef\xbb\xbf", "\ufeff"
ENTITY_FIELD: dict[str, str] = {
    t: ("sku" if topic == "inventory" else "order_id") for t, topic in TOPIC_OF_TYPE.items()
}
"""The data field that names the entity of each event type (its key on its topic)."""


# -- the fast path -----------------------------------------------------------------------------
# Well-formed input is validated first by twins of the models above whose id and timestamp
# checks run inside pydantic-core (a pattern, strict parsing, ge/lt) instead of calling back into
# Python for every field: about 40 % of `parse_event`'s CPU on a simulated stream went to those
# calls. Each twin accepts a subset of what its model accepts, with the same values:
# - an id: printable ASCII with a non-space character (the model: any printable, not blank);
# - a timestamp: a string, strictly parsed, in [TIME_MIN, TIME_MAX) compared as instants (the
#   model: a string or datetime parsed laxly, then the same range);
# - money: the same validators as the model.
# Anything the twins refuse (a bad message, or a good one outside the subset: a non-ASCII id, a
# long money number) goes through the models above, which give the verdict, the reason and the
# message as before. The twins subclass the models: `isinstance` and the field values agree.
_FAST_ID = Annotated[
    str, Field(min_length=1, max_length=ID_MAX), StringConstraints(pattern=r"^[\x20-\x7e]*[\x21-\x7e][\x20-\x7e]*$")
]
_FAST_TIME = Annotated[AwareDatetime, Field(strict=True, ge=TIME_MIN, lt=TIME_MAX)]


def _fast_type(tp: Any, twins: dict[type, type]) -> Any:
    """`tp` with NonEmpty and Timestamp replaced by their in-core twins, models by their twins."""
    if tp == NonEmpty:
        return _FAST_ID
    if tp == Timestamp:
        return _FAST_TIME
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return Annotated[(_fast_type(args[0], twins), *tp.__metadata__)]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_fast_type(a, twins) for a in args)]  # noqa: UP007
    if origin is list:
        return list[_fast_type(args[0], twins)]  # type: ignore[misc]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _fast_model(tp, twins)
    return tp


def _fast_model(model: type[BaseModel], twins: dict[type, type]) -> type[BaseModel]:
    if model not in twins:
        hints = typing.get_type_hints(model, include_extras=True)
        fields: dict[str, Any] = {}
        for name, info in model.model_fields.items():
            fast = _fast_type(hints[name], twins)
            if fast is not hints[name]:
                fields[name] = (fast, ... if info.is_required() else info.default)
        twins[model] = create_model(model.__name__, __base__=model, __module__=model.__module__, **fields)
    return twins[model]


_TWINS: dict[type, type] = {}
_FAST_ADAPTER: TypeAdapter[Any] = TypeAdapter(
    typing.cast(
        Any,
        Annotated[
            typing.Union[tuple(_fast_model(m, _TWINS) for m in EVENT_MODELS.values())],  # noqa: UP007
            Field(discriminator="type"),
        ],
    )
)
_FAST_VALIDATE_JSON: Callable[[str | bytes], Event] = _FAST_ADAPTER.validator.validate_json


def parse_event(raw: bytes | str) -> Event:
    """Validate one raw JSON message into its typed event, or raise `InvalidEvent` whose
    `reason` is a short machine code (`not_json`, `not_cloudevent`, `unknown_type`,
    `invalid_data`, `key_mismatch`: the subject is not the entity in the data) and whose message
    says what was wrong, never echoing field values."""
    if isinstance(raw, bytes):
        if raw.startswith(_BOM):
            raw = raw[3:]  # editors on Windows write one
    elif raw.startswith(_BOM_TEXT):
        raw = raw[1:]
    ev: Event | None
    try:
        ev = _FAST_VALIDATE_JSON(raw)
    except ValidationError:
        ev = None  # invalid, or outside the fast path's subset: the models decide
    if ev is None:
        try:
            ev = _VALIDATE_JSON(raw)
        except ValidationError as exc:
            if not any(e["type"] == "needs_exact_parse" for e in exc.errors(include_url=False, include_input=False)):
                raise InvalidEvent(_classify(exc), _describe(exc)) from exc
            ev = _parse_exact(raw)
    if ev.subject != entity_of(ev):
        msg = f"subject does not match data.{ENTITY_FIELD[ev.type]} (the entity the event is about)"
        raise InvalidEvent("key_mismatch", msg)
    return ev


def _parse_exact(raw: bytes | str) -> Event:
    # Rare: a long money number. Parse its JSON numbers as Decimal, never as float.
    try:
        doc = json.loads(raw, parse_float=Decimal)
    except ValueError as exc:  # pragma: no cover - validate_json accepted this text already
        raise InvalidEvent("not_json", f"(message): {exc}") from exc
    try:
        return _ADAPTER.validate_python(doc, context={"exact": True})
    except ValidationError as exc:
        raise InvalidEvent(_classify(exc), _describe(exc)) from exc


def entity_of(ev: Event) -> str:
    """The entity an event is about, which its Kafka key and CloudEvent subject must name: the
    SKU for inventory events, the order id for every other type."""
    return str(getattr(ev.data, ENTITY_FIELD[ev.type]))


def _classify(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    kind, loc = first["type"], first["loc"]
    if kind == "json_invalid":
        return "not_json"
    if kind == "union_tag_invalid":
        return "unknown_type"
    # Anything wrong at or below `data` (missing, not an object, a bad field) is the type's data.
    if len(loc) >= 2 and loc[1] == "data":
        return "invalid_data"
    return "not_cloudevent"


def _describe(exc: ValidationError) -> str:
    # Only locations and messages: the input may hold a phone number or an address.
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"][1:]) or "(message)"
        if err["type"] == "union_tag_invalid":
            ctx = err.get("ctx") or {}
            parts.append(f"unknown event type {ctx.get('tag')!r}")
            continue
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - 5
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
