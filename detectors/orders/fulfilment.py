"""Fulfilment rules of one order (docs/rules.md rows SHIPMENT_NOT_CREATED, TRACKING_STALLED,
DELIVERY_OVERDUE, DELIVERY_FAILED, INVALID_SHIPPING_INFO, and SHIPPED_AFTER_CANCEL, which a
shipment.created opens): shipping details, shipments, tracking and delivery."""

from __future__ import annotations

from typing import Any

from orderwatch.detectors.orders.core import Emitted, OrderCore
from orderwatch.detectors.orders.state import (
    CANCELLED,
    DELIVERED,
    PHONE_OK,
    PROMISE_FROM_SHIPMENT,
    SHIPPED,
    Episode,
    OrderState,
)
from orderwatch.detectors.records import iso
from orderwatch.detectors.shipping import address_problems, phone_ok


class FulfilmentRules(OrderCore):
    """From the shipping address to the delivery."""

    def _on_address(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        d = ev.data
        if d.contact_phone is not None:
            if phone_ok(d.contact_phone, d.shipping_address.country):
                st.flags |= PHONE_OK
            else:
                st.flags &= ~PHONE_OK
        return self._check_shipping_info(st, ev, t, now)

    def _check_shipping_info(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        problems = address_problems(ev.data.shipping_address)
        if not st.flags & PHONE_OK:
            problems.append("phone_invalid")
        if not problems:
            return self._resolve(st, "INVALID_SHIPPING_INFO", ev, t, now)
        return self._open(
            st,
            "INVALID_SHIPPING_INFO",
            ev.id,
            t,
            now,
            f"Order {st.oid} has shipping details that cannot be used ({', '.join(problems)}).",
            {"event_id": ev.id, "event_type": ev.type, "problems": problems},
        )

    def _on_shipment_created(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        d = ev.data
        emitted: Emitted = ()
        if st.flags & CANCELLED:
            emitted = self._open(
                st,
                "SHIPPED_AFTER_CANCEL",
                ev.id,
                t,
                now,
                f"A shipment was created for order {st.oid}, which is cancelled.",
                {"event_id": ev.id, "shipment_id": d.shipment_id, "carrier": d.carrier},
                ref=d.shipment_id,
            )
        st.flags |= SHIPPED
        # From here on the carrier is known: episodes started below follow its overrides too.
        st.profile = self.config.with_carrier(st.profile, d.carrier)
        self._end(st, "SHIPMENT_NOT_CREATED")
        emitted += self._resolve(st, "SHIPMENT_NOT_CREATED", ev, t, now)
        emitted += self._tracking_event(st, ev, t, now, restart=True)
        if (
            d.promised_delivery_by is not None
            and not st.flags & DELIVERED
            and not self._is_open(st, "DELIVERY_OVERDUE")
        ):
            st.flags |= PROMISE_FROM_SHIPMENT
            self._start(st, "DELIVERY_OVERDUE", d.promised_delivery_by.timestamp(), ev.id)
        return emitted

    def _tracking_event(self, st: OrderState, ev: Any, t: float, now: float, restart: bool) -> Emitted:
        emitted = self._resolve(st, "TRACKING_STALLED", ev, t, now)
        due = self._due_at(st, "TRACKING_STALLED")
        thr = st.profile["TRACKING_STALLED"]
        if due is not None and thr is not None and due - thr > t:
            return emitted  # a late event older than the current episode's start changes nothing
        if restart and not st.flags & DELIVERED and (thr := st.profile["TRACKING_STALLED"]) is not None:
            self._start(st, "TRACKING_STALLED", t + thr, ev.id)
        elif not restart:
            self._end(st, "TRACKING_STALLED")
        return emitted

    def _on_tracking(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        return self._tracking_event(st, ev, t, now, restart=True)

    def _on_delivered(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        st.flags |= DELIVERED
        emitted = self._tracking_event(st, ev, t, now, restart=False)
        self._end(st, "DELIVERY_OVERDUE")
        emitted += self._resolve(st, "DELIVERY_OVERDUE", ev, t, now)
        return emitted + self._resolve(st, "DELIVERY_FAILED", ev, t, now)

    def _on_shipment_exception(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        d = ev.data
        emitted = self._tracking_event(st, ev, t, now, restart=False)
        return emitted + self._open(
            st,
            "DELIVERY_FAILED",
            ev.id,
            t,
            now,
            f"Shipment {d.shipment_id} of order {st.oid} failed ({d.reason}).",
            {"event_id": ev.id, "shipment_id": d.shipment_id, "reason": d.reason},
            severity="high" if d.reason in ("lost", "damaged") else "medium",
        )

    @staticmethod
    def _check_not_shipped(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        if st.flags & (SHIPPED | CANCELLED):
            return None
        return (
            f"Order {st.oid} is paid but no shipment was created in time.",
            {"promised_ship_by": iso(st.ship_by) if st.ship_by else None},
        )

    @staticmethod
    def _check_tracking(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        if st.flags & DELIVERED:
            return None
        days = (st.profile["TRACKING_STALLED"] or 0) / 86400
        return (f"Tracking for order {st.oid} has not moved for {days:g} days.", {})

    @staticmethod
    def _check_delivery(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        if st.flags & DELIVERED:
            return None
        return (f"Order {st.oid} was not delivered by its promised date.", {"promised_delivery_by": iso(ep[1])})
