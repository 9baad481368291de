"""Payment rules of one order (docs/rules.md, "Per rule": the rows PAYMENT_NOT_CONFIRMED,
PAYMENT_TIMEOUT, DUPLICATE_PAYMENT, PAYMENT_AMOUNT_MISMATCH, PAYMENT_WITHOUT_ORDER; catalog
category "payment"/"system"). PAYMENT_FAILURE_SPIKE is per provider: detectors/windows.py."""

from __future__ import annotations

from typing import Any

from orderwatch.detectors.orders.core import Emitted, OrderCore
from orderwatch.detectors.orders.state import (
    CANCELLED,
    CREATED,
    DUPLICATE_FIRED,
    PAID,
    REACHED_PAID,
    RESERVATION_SEEN,
    Episode,
    OrderState,
    add_payment_id,
    payment_ids,
)
from orderwatch.detectors.records import milli, money


class PaymentRules(OrderCore):
    """payment.succeeded and what it starts, clears and settles."""

    def _on_payment(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        d = ev.data
        pid = d.payment_id
        if pid in payment_ids(st):
            return ()  # the same payment reported again under a new event id
        amount = milli(d.amount)
        first = not st.flags & PAID
        emitted: Emitted = ()
        if st.flags & CREATED:
            emitted = self._check_duplicate_payment(st, pid, amount, d.currency, ev.id, t, now)
        else:
            # Before the order is known its total is too: keep what a duplicate check needs.
            if st.early is None:
                st.early = []
            st.early.append((pid, amount, d.currency, ev.id, t))
        add_payment_id(st, pid)
        st.paid += amount
        st.flags |= PAID
        self._end(st, "PAYMENT_TIMEOUT")
        emitted += self._resolve(st, "PAYMENT_TIMEOUT", ev, t, now)
        if first:
            prof = st.profile
            if not st.flags & REACHED_PAID and (thr := prof["PAYMENT_NOT_CONFIRMED"]) is not None:
                self._start(st, "PAYMENT_NOT_CONFIRMED", t + thr, ev.id)
            if (thr := prof["PAYMENT_AMOUNT_MISMATCH"]) is not None:
                self._start(st, "PAYMENT_AMOUNT_MISMATCH", t + thr, ev.id)
            if not st.flags & CREATED and (thr := prof["PAYMENT_WITHOUT_ORDER"]) is not None:
                self._start(st, "PAYMENT_WITHOUT_ORDER", t + thr, ev.id)
            if not st.flags & RESERVATION_SEEN and (thr := prof["STOCK_NOT_RESERVED"]) is not None:
                self._start(st, "STOCK_NOT_RESERVED", t + thr, ev.id)
        self._mark_paid(st, ev, t)
        return emitted + self._settle_mismatch(st, ev, t, now)

    def _check_duplicate_payment(
        self,
        st: OrderState,
        pid: str,
        amount: int,
        currency: str,
        event_id: str,
        t: float,
        now: float,
    ) -> Emitted:
        """A new payment id arriving when the earlier distinct payments already cover the total."""
        if not st.pay_ids or st.paid < st.total - self._tol:
            return ()
        opened = self._open(
            st,
            "DUPLICATE_PAYMENT",
            event_id,
            t,
            now,
            f"Order {st.oid} was paid again after earlier payments already covered its total.",
            {
                "event_id": event_id,
                "payment_id": pid,
                "amount": money(amount),
                "currency": currency,
                "earlier_payment_ids": list(payment_ids(st)),
                "earlier_paid": money(st.paid),
                "order_total": money(st.total),
            },
            ref=pid,
            amount=amount,
        )
        if opened:
            st.flags |= DUPLICATE_FIRED
        return opened

    def _replay_early_payments(self, st: OrderState, now: float) -> Emitted:
        """The order arrived after its payments: judge them for duplicates in the order they came."""
        early, st.early = st.early or [], None
        paid, pay_ids = st.paid, st.pay_ids
        st.paid, st.pay_ids = 0, ()
        emitted: Emitted = ()
        for pid, amount, currency, event_id, t in sorted(early, key=lambda p: p[4]):
            emitted += self._check_duplicate_payment(st, pid, amount, currency, event_id, t, now)
            add_payment_id(st, pid)
            st.paid += amount
        st.paid, st.pay_ids = paid, pay_ids
        return emitted

    def _settle_mismatch(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        if self._is_open(st, "PAYMENT_AMOUNT_MISMATCH") and abs(st.paid - self._refunded(st) - st.total) <= self._tol:
            return self._resolve(st, "PAYMENT_AMOUNT_MISMATCH", ev, t, now)
        return ()

    @staticmethod
    def _check_not_confirmed(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        if st.flags & REACHED_PAID:
            return None
        return (
            f"Payment for order {st.oid} succeeded but the order is still not marked paid.",
            {"order_status": st.status, "payment_ids": list(payment_ids(st))},
        )

    @staticmethod
    def _check_timeout(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        if st.flags & (PAID | CANCELLED):
            return None
        return (f"Order {st.oid} has not been paid.", {"order_total": money(st.total)})

    def _check_mismatch(self, st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        net = st.paid - self._refunded(st)
        if not st.flags & CREATED or st.flags & DUPLICATE_FIRED or abs(net - st.total) <= self._tol:
            return None
        return (
            f"Payments for order {st.oid} do not add up to its total.",
            {
                "order_total": money(st.total),
                "paid": money(st.paid),
                "difference": money(st.paid - st.total),
                "payment_ids": list(payment_ids(st)),
            },
        )

    @staticmethod
    def _check_without_order(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        if st.flags & CREATED:
            return None
        return (
            f"A payment arrived for order {st.oid}, which orderwatch has never seen created.",
            {"payment_ids": list(payment_ids(st)), "paid": money(st.paid)},
        )
