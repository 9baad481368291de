"""The state of one order: flag bits, deadline episodes, and the helpers every rule family of
the order detector shares (milliseconds in snapshots, the money tolerance)."""

from __future__ import annotations

from orderwatch.detectors.config import Profile
from orderwatch.detectors.records import ExceptionRecord
from orderwatch.detectors.snapshots import GC

__all__ = [
    "CANCELLED",
    "CANCELLED_RETENTION",
    "CREATED",
    "DELIVERED",
    "DUPLICATE_FIRED",
    "EXCEEDS_FIRED",
    "FLAG_NAMES",
    "GC",
    "ORDER_EVENT_TYPES",
    "PAID",
    "PAID_OR_LATER",
    "PHONE_OK",
    "PROMISE_FROM_SHIPMENT",
    "REACHED_PAID",
    "RESERVATION_SEEN",
    "SHIPPED",
    "SHIP_EPISODE_STARTED",
    "TERMINAL",
    "TERMINAL_STATUSES",
    "Episode",
    "OrderState",
    "milli_tolerance",
    "to_ms",
    "to_sec",
]  # fmt: skip

# Flag bits of OrderState.flags (one int instead of a dozen booleans keeps the state small).
CREATED = 1
PAID = 2  # a payment.succeeded was seen
REACHED_PAID = 4  # status paid or later, or cancelled
RESERVATION_SEEN = 8  # inventory.reserved or reservation_failed
SHIPPED = 16
DELIVERED = 32
TERMINAL = 64
PHONE_OK = 128
DUPLICATE_FIRED = 256
EXCEEDS_FIRED = 512
CANCELLED = 1024
SHIP_EPISODE_STARTED = 2048
PROMISE_FROM_SHIPMENT = 4096

FLAG_NAMES = (
    (CREATED, "created"),
    (PAID, "paid"),
    (REACHED_PAID, "reached_paid"),
    (RESERVATION_SEEN, "reservation_seen"),
    (SHIPPED, "shipped"),
    (DELIVERED, "delivered"),
    (CANCELLED, "cancelled"),
    (TERMINAL, "terminal"),
)

PAID_OR_LATER = frozenset({"paid", "allocated", "shipped", "delivered", "completed", "refunded"})
TERMINAL_STATUSES = frozenset({"delivered", "completed", "cancelled", "refunded"})
# A cancelled order is remembered longer than other finished ones: a shipment weeks after the
# cancellation is still SHIPPED_AFTER_CANCEL, and live, a DUPLICATE_ORDER record that travels
# through the customer agent (on another worker, possibly days of event time behind in a
# replay) still finds the cancellation that resolves it.
CANCELLED_RETENTION = 30 * 86400.0

ORDER_EVENT_TYPES = frozenset(
    {
        "order.created",
        "order.status_changed",
        "order.address_updated",
        "order.cancel_requested",
        "order.cancelled",
        "payment.succeeded",
        "payment.failed",
        "refund.requested",
        "refund.succeeded",
        "refund.failed",
        "inventory.reserved",
        "inventory.reservation_failed",
        "inventory.released",
        "shipment.created",
        "shipment.tracking_updated",
        "shipment.delivered",
        "shipment.exception",
    }
)

# An episode: (rule, deadline, start event id, ref). `ref` tells episodes of one rule apart
# within an order (the refund id for REFUND_OVERDUE), else None. The start time is not kept: it
# is the deadline minus the threshold (a float less per episode, and state size is the budget).
Episode = tuple[str, float, str, str | None]


class OrderState:
    __slots__ = (
        "early", "eps", "flags", "last_t", "oid", "opened", "paid", "pay_ids", "profile", "refunds", "ship_by",
        "status", "total", "wake",
    )  # fmt: skip

    def __init__(self, oid: str, profile: Profile) -> None:
        self.oid = oid
        self.flags = 0
        self.status: str | None = None
        self.total = 0  # milli-units
        self.paid = 0  # sum of distinct succeeded payments, milli-units
        self.pay_ids: tuple[str, ...] = ()
        self.refunds: dict[str, list[int]] | None = None  # refund id -> [requested, succeeded, done]
        self.last_t = float("-inf")
        self.ship_by: float | None = None
        self.eps: list[Episode] = []
        # Payments seen before order.created: (payment id, amount, currency, event id, time).
        self.early: list[tuple[str, int, str, str, float]] | None = None
        self.opened: dict[tuple[str, str | None], ExceptionRecord] | None = None
        self.wake: float | None = None
        self.profile = profile


def to_ms(t: float | None) -> int | None:
    # Milliseconds as an int: shorter than a float's repr, and event times carry no finer detail.
    return None if t is None or t == float("-inf") else round(t * 1000)


def to_sec(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def milli_tolerance(tolerance: float) -> int:
    return round(tolerance * 1000)
