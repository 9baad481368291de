"""Wire models for the input topics: the CloudEvents 1.0 envelope and every event type.

These pydantic models are the executable form of CONTRACT.md; `parse_event` is the one door
through which raw bytes become typed events (invalid ones raise `InvalidEvent`).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from orderwatch.errors import InvalidEvent

__all__ = [
    "ADDRESS_PARTS",
    "EVENT_MODELS",
    "EVENT_TYPES",
    "INPUT_TOPICS",
    "TOPIC_OF_TYPE",
    "Address",
    "CloudEvent",
    "Event",
    "LineItem",
    "parse_event",
]


# Money: a JSON string or number, always a Decimal (never a float); non-finite values are invalid.
def _exact_money(value: Decimal, info: ValidationInfo) -> Decimal:
    # The fast JSON path reads a JSON number through a float: exact up to 15 significant digits.
    # Longer ones are sent back to parse_event's exact (slower) path instead of being rounded.
    if len(value.as_tuple().digits) > 15 and not (info.context or {}).get("exact"):
        raise PydanticCustomError("needs_exact_parse", "money with more than 15 significant digits")
    return value


Money = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_exact_money)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
NonEmpty = Annotated[str, Field(min_length=1)]
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

    recipient: str = ""
    line1: str = ""
    line2: str | None = None
    city: str = ""
    region: str | None = None
    postal_code: str = ""
    country: str = ""


ADDRESS_PARTS = ("recipient", "line1", "city", "postal_code", "country")


class LineItem(_Data):
    sku: NonEmpty
    quantity: Annotated[int, Field(ge=1)]
    unit_price: Money


class OrderCreatedData(_Data):
    order_id: NonEmpty
    customer_id: NonEmpty
    customer_since: AwareDatetime
    merchant_id: str | None = None
    channel: Literal["web", "app", "marketplace", "pos"]
    items: Annotated[list[LineItem], Field(min_length=1)]
    total_amount: Money
    currency: Currency
    shipping_address: Address
    # Invalid phones are a business exception, so any string (even empty) passes the schema.
    contact_phone: str = ""
    promised_ship_by: AwareDatetime | None = None
    promised_delivery_by: AwareDatetime | None = None
    # How the customer chose to pay (card, wallet, bank_transfer, ...): a segment for overrides.
    payment_method: str | None = None


class OrderStatusChangedData(_Data):
    order_id: NonEmpty
    status: OrderStatus
    previous_status: OrderStatus | None = None


class OrderAddressUpdatedData(_Data):
    order_id: NonEmpty
    shipping_address: Address
    contact_phone: str | None = None


class OrderCancelData(_Data):
    order_id: NonEmpty
    reason: str


class PaymentSucceededData(_Data):
    order_id: NonEmpty
    payment_id: NonEmpty
    amount: Money
    currency: Currency
    provider: NonEmpty
    method: str


class PaymentFailedData(_Data):
    order_id: NonEmpty
    payment_id: NonEmpty
    amount: Money
    currency: Currency
    provider: NonEmpty
    reason_code: str


class RefundRequestedData(_Data):
    order_id: NonEmpty
    refund_id: NonEmpty
    payment_id: str | None = None
    amount: Money
    currency: Currency
    reason: str


class RefundSucceededData(_Data):
    order_id: NonEmpty
    refund_id: NonEmpty
    amount: Money
    currency: Currency


class RefundFailedData(_Data):
    order_id: NonEmpty
    refund_id: NonEmpty
    reason_code: str


class InventoryLevelData(_Data):
    sku: NonEmpty
    warehouse_id: NonEmpty
    on_hand: Annotated[int, Field(ge=0)]
    reserved: Annotated[int, Field(ge=0)]


class InventoryReservedData(_Data):
    sku: NonEmpty
    warehouse_id: NonEmpty
    order_id: NonEmpty
    quantity: Annotated[int, Field(ge=1)]


class InventoryReservationFailedData(_Data):
    sku: NonEmpty
    warehouse_id: NonEmpty
    order_id: NonEmpty
    quantity: int
    reason: str


class ShipmentCreatedData(_Data):
    order_id: NonEmpty
    shipment_id: NonEmpty
    carrier: str
    tracking_number: str
    promised_delivery_by: AwareDatetime | None = None


class ShipmentTrackingData(_Data):
    order_id: NonEmpty
    shipment_id: NonEmpty
    status: str
    location: str | None = None


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
    time: AwareDatetime
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


def parse_event(raw: bytes | str) -> Event:
    """Validate one raw JSON message into its typed event, or raise `InvalidEvent` whose
    `reason` is a short machine code (`not_json`, `not_cloudevent`, `unknown_type`,
    `invalid_data`) and whose message says what was wrong, never echoing field values."""
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        if not any(e["type"] == "needs_exact_parse" for e in exc.errors(include_url=False, include_input=False)):
            raise InvalidEvent(_classify(exc), _describe(exc)) from exc
    # Rare: a long money number. Parse its JSON numbers as Decimal, never as float.
    try:
        doc = json.loads(raw, parse_float=Decimal)
    except ValueError as exc:  # pragma: no cover - validate_json accepted this text already
        raise InvalidEvent("not_json", f"(message): {exc}") from exc
    try:
        return _ADAPTER.validate_python(doc, context={"exact": True})
    except ValidationError as exc:
        raise InvalidEvent(_classify(exc), _describe(exc)) from exc


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
