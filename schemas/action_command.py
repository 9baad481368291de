"""Wire model of what orderwatch asks upstream services to do: an `action.requested` CloudEvent on
`order-actions` (key = order id, else the exception's subject). Consumers dedupe on `id`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = ["ActionCommand", "ActionData", "ActionParams", "idempotency_key"]


def idempotency_key(exception_id: str, action: str) -> str:
    """`<exception_id>:<action>`, unhashed: exception ids are already short hashes, and a readable
    key lets a person find the case behind a command."""
    return f"{exception_id}:{action}"


class ActionParams(BaseModel):
    """What the exception's evidence says about the thing to act on. Only ids, codes and amounts:
    never a phone number, an address or a name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    order_ids: list[str] | None = Field(None, description="the orders concerned, when more than one")
    payment_id: str | None = None
    payment_ids: list[str] | None = None
    refund_id: str | None = None
    refund_ids: list[str] | None = None
    shipment_id: str | None = None
    carrier: str | None = None
    provider: str | None = Field(None, description="payment provider")
    sku: str | None = None
    warehouse_id: str | None = None
    quantity: int | None = None
    customer_id: str | None = None
    address_fingerprint: str | None = Field(None, description="hash of the normalised address, never the address")
    earlier_order_id: str | None = None
    reason: str | None = Field(None, description="a reason code from the evidence, e.g. lost, card_declined")
    problems: list[str] | None = Field(None, description="problem codes of the shipping details")
    amount: Decimal | None = Field(None, description="decimal string; the money the action concerns")
    currency: str | None = None


class ActionData(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: str = Field(description="action code from RULES.md, or blocklist_customer / blocklist_address")
    idempotency_key: str = Field(description="`<exception_id>:<action>`, equal to the event id")
    exception_id: str
    rule: str
    order_id: str | None = None
    params: ActionParams
    mode: Literal["auto", "approved"] = Field(description="auto: by policy; approved: a person approved it")
    approved_by: str | None = None
    requested_at: AwareDatetime = Field(description="when orderwatch decided the action (the case change)")


class ActionCommand(BaseModel):
    """A CloudEvent on `order-actions`; `time` is when it was emitted (the approval, for approved ones)."""

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(description="the idempotency key: `<exception_id>:<action>`")
    source: str = "/orderwatch/handlers"
    type: Literal["action.requested"]
    time: AwareDatetime
    subject: str = Field(description="the order id, else the exception's subject")
    datacontenttype: Literal["application/json"] = "application/json"
    data: ActionData
