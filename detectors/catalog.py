"""The rule catalog of RULES.md as data: code, category, severity, action and kind per rule.

Everything that describes a rule but is not its logic lives here, so docs, schemas and metrics
read one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["HANDLING_SECONDS", "RULES", "Rule", "rule"]

Kind = Literal["deadline", "instant", "windowed"]

# Severity decides how long a team has to act (`handle_by`).
HANDLING_SECONDS: dict[str, float] = {
    "critical": 15 * 60.0,
    "high": 60 * 60.0,
    "medium": 4 * 3600.0,
    "low": 24 * 3600.0,
}


@dataclass(frozen=True, slots=True)
class Rule:
    code: str
    category: str
    severity: str
    kind: Kind
    action: str
    fires_when: str
    resolves_when: str
    auto_resolves: bool = True


RULES: dict[str, Rule] = {
    r.code: r
    for r in (
        Rule(
            "PAYMENT_NOT_CONFIRMED",
            "payment",
            "high",
            "deadline",
            "reconcile_order_status",
            "payment.succeeded, and the order has not reached status paid or later (or cancelled) by D",
            "that status arrives",
        ),
        Rule(
            "PAYMENT_TIMEOUT",
            "payment",
            "low",
            "deadline",
            "remind_customer_to_pay",
            "order.created, and no payment.succeeded (nor order.cancelled) by D",
            "payment or cancel arrives",
        ),
        Rule(
            "DUPLICATE_PAYMENT",
            "payment",
            "critical",
            "instant",
            "refund_duplicate_payment",
            "a payment.succeeded with a new payment_id when earlier distinct payments already cover the total",
            "refunds for that order reach the duplicate's amount",
        ),
        Rule(
            "PAYMENT_AMOUNT_MISMATCH",
            "payment",
            "critical",
            "deadline",
            "review_payment_amount",
            "at first payment.succeeded + D, distinct succeeded payments differ from total_amount by > 0.01",
            "later payments or refunds make the sums agree",
        ),
        Rule(
            "PAYMENT_WITHOUT_ORDER",
            "system",
            "high",
            "deadline",
            "investigate_order_sync",
            "payment.succeeded, and no order.created for that order id by D",
            "order.created arrives",
        ),
        Rule(
            "PAYMENT_FAILURE_SPIKE",
            "payment",
            "critical",
            "windowed",
            "failover_payment_provider",
            "per provider, in a tumbling window: failures >= 20 and failure rate >= 30 %",
            "a later full window is under both thresholds",
        ),
        Rule(
            "STOCK_OVERSOLD",
            "inventory",
            "critical",
            "instant",
            "replenish_or_cancel",
            "per (sku, warehouse): reserved > on_hand (last snapshot plus later reserved/released)",
            "reserved <= on_hand again",
        ),
        Rule(
            "STOCK_RESERVATION_FAILED",
            "inventory",
            "high",
            "instant",
            "offer_substitute_or_refund",
            "inventory.reservation_failed for an order",
            "inventory.reserved for that order and sku",
        ),
        Rule(
            "STOCK_NOT_RESERVED",
            "inventory",
            "high",
            "deadline",
            "check_inventory_sync",
            "payment.succeeded, and no inventory.reserved (nor reservation_failed) for the order by D",
            "a reservation arrives",
        ),
        Rule(
            "SHIPMENT_NOT_CREATED",
            "logistics",
            "medium",
            "deadline",
            "expedite_fulfilment",
            "the order reaches paid, and no shipment.created (nor cancel) by D (promised_ship_by when given)",
            "shipment.created",
        ),
        Rule(
            "TRACKING_STALLED",
            "logistics",
            "medium",
            "deadline",
            "contact_carrier",
            "after shipment.created or a tracking update, no further tracking event by D",
            "a later tracking event",
        ),
        Rule(
            "DELIVERY_OVERDUE",
            "logistics",
            "medium",
            "deadline",
            "notify_customer_delay",
            "promised_delivery_by passes without shipment.delivered",
            "shipment.delivered",
        ),
        Rule(
            "DELIVERY_FAILED",
            "logistics",
            "high",
            "instant",
            "reship_or_refund",
            "shipment.exception (high for lost/damaged, medium otherwise)",
            "a later shipment.delivered",
        ),
        Rule(
            "INVALID_SHIPPING_INFO",
            "customer",
            "low",
            "instant",
            "confirm_address_with_customer",
            "order.created or order.address_updated with a missing address part, a bad postal code or phone",
            "an order.address_updated that passes",
        ),
        Rule(
            "ADDRESS_CLUSTER",
            "fraud",
            "high",
            "windowed",
            "hold_orders_for_review",
            ">= 5 orders from >= 3 distinct customers to one normalised address within a sliding 24 h",
            "none (manual)",
            auto_resolves=False,
        ),
        Rule(
            "NEW_ACCOUNT_BURST",
            "fraud",
            "high",
            "windowed",
            "hold_orders_for_review",
            "an account younger than 7 days places >= 5 orders within a sliding 1 h",
            "none (manual)",
            auto_resolves=False,
        ),
        Rule(
            "BLOCKLISTED_ORDER",
            "fraud",
            "high",
            "instant",
            "hold_orders_for_review",
            "order.created whose customer or address fingerprint is on the blocklist",
            "none (manual)",
            auto_resolves=False,
        ),
        Rule(
            "DUPLICATE_ORDER",
            "order",
            "medium",
            "instant",
            "confirm_duplicate_with_customer",
            "order.created with the same (sku, quantity) multiset as the customer's order of the last 10 min",
            "the later order is cancelled",
        ),
        Rule(
            "CANCEL_NOT_PROCESSED",
            "order",
            "medium",
            "deadline",
            "process_cancellation",
            "order.cancel_requested, and no order.cancelled by D",
            "order.cancelled",
        ),
        Rule(
            "SHIPPED_AFTER_CANCEL",
            "order",
            "high",
            "instant",
            "intercept_shipment",
            "shipment.created for an order already cancelled",
            "none (manual)",
            auto_resolves=False,
        ),
        Rule(
            "REFUND_OVERDUE",
            "refund",
            "high",
            "deadline",
            "expedite_refund",
            "refund.requested, and no refund.succeeded for that refund_id by D",
            "refund.succeeded",
        ),
        Rule(
            "REFUND_FAILED",
            "refund",
            "high",
            "instant",
            "retry_refund",
            "refund.failed",
            "a later refund.succeeded for that refund_id",
        ),
        Rule(
            "REFUND_EXCEEDS_PAYMENT",
            "refund",
            "critical",
            "instant",
            "block_refund_and_review",
            "requested or succeeded refunds for an order exceed its distinct succeeded payments",
            "none (manual)",
            auto_resolves=False,
        ),
        Rule(
            "ORDER_STUCK",
            "order",
            "medium",
            "deadline",
            "investigate_stuck_order",
            "an order not in a terminal status sees no event of any type by D after its last event",
            "any later event for the order",
        ),
    )
}


def rule(code: str) -> Rule:
    return RULES[code]
