"""Per-order rules: one compact state per order id, fed by the order, payment, logistics and
(regrouped) inventory events. Deadline episodes live inside the state; one timer per order.

The rules are split by family, each module readable next to its rows of docs/rules.md:
`payment`, `stock` (the order side), `fulfilment`, `cancellation` (and refunds), `stuck`;
`core` holds what they share and `state` the order's state. `OrderDetector` composes them and
keeps the two handlers that span families (order.created, order.status_changed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orderwatch.detectors.base import Incoming
from orderwatch.detectors.blocklist import Blocklist
from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.orders.cancellation import CancellationRules
from orderwatch.detectors.orders.core import Emitted
from orderwatch.detectors.orders.fulfilment import FulfilmentRules
from orderwatch.detectors.orders.state import (
    CANCELLED,
    CREATED,
    DELIVERED,
    ORDER_EVENT_TYPES,
    PAID,
    PAID_OR_LATER,
    PHONE_OK,
    PROMISE_FROM_SHIPMENT,
    TERMINAL_STATUSES,
    Episode,
    OrderState,
    compact,
    known_status,
)
from orderwatch.detectors.orders.stock import OrderStockRules
from orderwatch.detectors.orders.stuck import StuckRules
from orderwatch.detectors.records import Emission, milli
from orderwatch.detectors.shipping import phone_ok
from orderwatch.detectors.topology import ADOPT, address_key

__all__ = ["ORDER_EVENT_TYPES", "TERMINAL_STATUSES", "OrderDetector", "OrderState"]


class OrderDetector(CancellationRules, OrderStockRules, FulfilmentRules, StuckRules):
    """All rules whose subject is one order."""

    def __init__(self, config: RulesConfig, blocklist: Blocklist | None = None) -> None:
        super().__init__(config, blocklist)
        # Every handler is "event in, emissions out"; ORDER_STUCK (`_touch`) runs after each.
        self._handlers: dict[str, Callable[[OrderState, Any, float, float], Emitted]] = {
            "order.created": self._on_created,
            "order.status_changed": self._on_status,
            "order.address_updated": self._on_address,
            "order.cancel_requested": self._on_cancel_requested,
            "order.cancelled": self._on_cancelled,
            "payment.succeeded": self._on_payment,
            "refund.requested": self._on_refund_requested,
            "refund.succeeded": self._on_refund_succeeded,
            "refund.failed": self._on_refund_failed,
            "inventory.reserved": self._on_reserved,
            "inventory.reservation_failed": self._on_reservation_failed,
            "shipment.created": self._on_shipment_created,
            "shipment.tracking_updated": self._on_tracking,
            "shipment.delivered": self._on_delivered,
            "shipment.exception": self._on_shipment_exception,
        }
        self._checks: dict[str, Callable[[OrderState, Episode], tuple[str, dict[str, Any]] | None]] = {
            "PAYMENT_NOT_CONFIRMED": self._check_not_confirmed,
            "PAYMENT_TIMEOUT": self._check_timeout,
            "PAYMENT_AMOUNT_MISMATCH": self._check_mismatch,
            "PAYMENT_WITHOUT_ORDER": self._check_without_order,
            "STOCK_NOT_RESERVED": self._check_not_reserved,
            "SHIPMENT_NOT_CREATED": self._check_not_shipped,
            "TRACKING_STALLED": self._check_tracking,
            "DELIVERY_OVERDUE": self._check_delivery,
            "CANCEL_NOT_PROCESSED": self._check_cancel,
            "REFUND_OVERDUE": self._check_refund,
            "ORDER_STUCK": self._check_stuck,
        }

    def on_event(self, key: str, ev: Incoming, t: float, now: float) -> list[Emission]:
        """Apply one event for order `key` with event time `t`; `now` is the clock (`detected_at`).
        An `Adopt` hands this order an exception another detector opened about it."""
        kind = ev.type
        if kind == ADOPT:
            return self.adopt(ev.data)
        handler = self._handlers.get(kind)
        self.dirty.add(key)
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = OrderState(key, self.default_profile)
        if st.eps.__class__ is bytes:
            self._unpack(st)
        if handler is None:
            emitted = self._touch(st, ev, t, now)
        else:
            emitted = handler(st, ev, t, now)
            if t > st.last_t:  # else `_touch` has nothing to do: spare the call
                emitted += self._touch(st, ev, t, now)
        compact(st)
        if len(self._busy) > self.busy_limit:
            self._cool()
        return list(emitted) if emitted else []

    def _on_created(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        if st.flags & CREATED:
            return ()
        d = ev.data
        st.flags |= CREATED
        st.total = milli(d.total_amount)
        st.profile = prof = self.config.profile(
            d.merchant_id, d.channel, d.payment_method, d.shipping_address.country or None
        )
        emitted = self._replay_early_payments(st, now) if st.early is not None else ()
        self._end(st, "PAYMENT_WITHOUT_ORDER")
        emitted += self._resolve(st, "PAYMENT_WITHOUT_ORDER", ev, t, now)
        addr = d.shipping_address
        if phone_ok(d.contact_phone, addr.country):
            st.flags |= PHONE_OK
        emitted += self._check_shipping_info(st, ev, t, now)
        hit = self.blocklist.match(d.customer_id, address_key(ev), t) if self.blocklist.may_match() else None
        if hit is not None:
            emitted += self._open(
                st,
                "BLOCKLISTED_ORDER",
                ev.id,
                t,
                now,
                f"Order {st.oid} matches the blocklist ({hit[0]} entry).",
                {"event_id": ev.id, "match": hit[0], "entry": hit[1], "reason": hit[2]},
            )
        if not st.flags & (PAID | CANCELLED) and (thr := prof["PAYMENT_TIMEOUT"]) is not None:
            self._start(st, "PAYMENT_TIMEOUT", t + thr, ev.id)
        if d.promised_ship_by is not None:
            st.ship_by = d.promised_ship_by.timestamp()
            ep = self._episode(st, "SHIPMENT_NOT_CREATED")
            if ep is not None:
                self._start(st, "SHIPMENT_NOT_CREATED", st.ship_by, ep[2])
        if d.promised_delivery_by is not None and not st.flags & (DELIVERED | PROMISE_FROM_SHIPMENT):
            self._start(st, "DELIVERY_OVERDUE", d.promised_delivery_by.timestamp(), ev.id)
        return emitted

    def _on_status(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        status = known_status(ev.data.status)
        st.status = status
        if status == "cancelled":
            return self._cancelled(st, ev, t, now)
        emitted: Emitted = ()
        if status in PAID_OR_LATER:
            emitted = self._reached_paid(st, ev, t, now)
            self._mark_paid(st, ev, t)
        if status in TERMINAL_STATUSES:
            self._terminal(st, t)
        return emitted
