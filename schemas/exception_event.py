"""Wire model of what orderwatch emits on `order-exceptions`: the exception CloudEvent.

Downstream consumers depend on these field names; change them only with a new contract version.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "CATEGORIES",
    "SEVERITIES",
    "ExceptionData",
    "ExceptionEvent",
    "Resolution",
]

Category = Literal["payment", "inventory", "logistics", "customer", "fraud", "order", "refund", "system"]
Severity = Literal["critical", "high", "medium", "low"]
CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]
SEVERITIES: tuple[str, ...] = Severity.__args__  # type: ignore[attr-defined]


class Resolution(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["auto", "manual"] = Field(description="auto: the condition cleared; manual: a person closed it")
    event_id: str | None = Field(None, description="id of the clearing event (auto)")
    event_time: AwareDatetime | None = Field(None, description="event time of the clearing event")
    note: str | None = None


class ExceptionData(BaseModel):
    model_config = ConfigDict(frozen=True)

    exception_id: str = Field(description="deterministic: hash of rule, subject and episode start event id")
    rule: str = Field(description="rule code from the catalog, e.g. PAYMENT_NOT_CONFIRMED")
    category: Category
    severity: Severity
    status: Literal["open", "resolved", "escalated"]
    subject: str = Field(description="order id, SKU, provider, address fingerprint or customer id")
    order_id: str | None = None
    detected_at: AwareDatetime = Field(description="processing time the rule fired (engine clock)")
    event_time: AwareDatetime = Field(description="event time of the fact that made it fire")
    handle_by: AwareDatetime
    summary: str
    evidence: dict[str, Any]
    recommended_action: str
    resolution: Resolution | None = None


class ExceptionEvent(BaseModel):
    """A CloudEvent on `order-exceptions`, key = `data.exception_id` (log-compacted)."""

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str = "/orderwatch"
    type: Literal["exception.opened", "exception.resolved", "exception.escalated"]
    time: AwareDatetime
    subject: str
    datacontenttype: Literal["application/json"] = "application/json"
    data: ExceptionData
