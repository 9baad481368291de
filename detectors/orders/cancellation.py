"""Cancellation and refund rules of one order (docs/rules.md rows CANCEL_NOT_PROCESSED,
REFUND_OVERDUE, REFUND_FAILED, REFUND_EXCEEDS_PAYMENT, and the resolution of DUPLICATE_ORDER and
PAYMENT_TIMEOUT by order.cancelled). Refunds settle PAYMENT_AMOUNT_MISMATCH and
DUPLICATE_PAYMENT too, hence the payment family underneath."""

from __future__ import annotations

from typing import Any

from orderwatch.detectors.orders.core import Emitted
from orderwatch.detectors.orders.payment import PaymentRules
from orderwatch.detectors.orders.state import (
    CANCELLED,
    CREATED,
    EXCEEDS_FIRED,
    PAID,
    Episode,
    OrderState,
    held,
    payment_ids,
    unhold,
)
from orderwatch.detectors.records import milli, money


class CancellationRules(PaymentRules):
    """order.cancel_requested / cancelled and refund.*."""

    def _on_cancel_requested(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        thr = st.profile["CANCEL_NOT_PROCESSED"]
        if not st.flags & CANCELLED and thr is not None and not self._episode(st, "CANCEL_NOT_PROCESSED"):
            self._start(st, "CANCEL_NOT_PROCESSED", t + thr, ev.id)
        return ()

    def _on_cancelled(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        st.status = "cancelled"
        return self._cancelled(st, ev, t, now)

    def _cancelled(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        st.flags |= CANCELLED
        emitted = self._reached_paid(st, ev, t, now)
        for rule in ("CANCEL_NOT_PROCESSED", "PAYMENT_TIMEOUT", "DUPLICATE_ORDER"):
            emitted += self._resolve(st, rule, ev, t, now)
        self._terminal(st, t)
        return emitted

    def _refund(self, st: OrderState, refund_id: str) -> list[int]:
        if st.refunds is None:
            st.refunds = {}
        r = st.refunds.get(refund_id)
        if r is None:
            r = st.refunds[refund_id] = [0, 0, 0]
        return r

    def _on_refund_requested(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        d = ev.data
        r = self._refund(st, d.refund_id)
        if r[0]:
            return ()
        r[0] = milli(d.amount)
        thr = st.profile["REFUND_OVERDUE"]
        if not r[2] and thr is not None:
            self._start(st, "REFUND_OVERDUE", t + thr, ev.id, ref=d.refund_id)
        return self._check_exceeds(st, ev, t, now)

    def _on_refund_succeeded(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        d = ev.data
        r = self._refund(st, d.refund_id)
        if r[2]:
            return ()
        r[1], r[2] = milli(d.amount), 1
        self._end(st, "REFUND_OVERDUE", d.refund_id)
        emitted = self._resolve(st, "REFUND_OVERDUE", ev, t, now, ref=d.refund_id)
        emitted += self._resolve(st, "REFUND_FAILED", ev, t, now, ref=d.refund_id)
        if st.opened:
            refunded = self._refunded(st)
            dups = sorted(
                (unhold(st.oid, rule, rec) for rule, _, rec in held(st) if rule == "DUPLICATE_PAYMENT"),
                key=lambda rec: rec.event_time,
            )
            covered = 0
            for rec in dups:
                covered += rec.amount
                if refunded >= covered - self._tol:
                    emitted += self._resolve(st, "DUPLICATE_PAYMENT", ev, t, now, ref=rec.evidence["payment_id"])
        emitted += self._settle_mismatch(st, ev, t, now)
        return emitted + self._check_exceeds(st, ev, t, now)

    def _on_refund_failed(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        d = ev.data
        r = self._refund(st, d.refund_id)
        if r[2]:
            return ()
        return self._open(
            st,
            "REFUND_FAILED",
            ev.id,
            t,
            now,
            f"Refund {d.refund_id} for order {st.oid} failed ({d.reason_code}).",
            {"event_id": ev.id, "refund_id": d.refund_id, "reason_code": d.reason_code},
            ref=d.refund_id,
        )

    def _check_exceeds(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        # An order we know nothing of (never created here, or dropped long after it finished) has
        # nothing to compare against; flagging every refund for it would be noise.
        if st.flags & EXCEEDS_FIRED or not st.flags & (PAID | CREATED) or not st.refunds:
            return ()
        refunds = sum(max(r[0], r[1]) for r in st.refunds.values())
        if refunds <= st.paid + self._tol:
            return ()
        st.flags |= EXCEEDS_FIRED
        return self._open(
            st,
            "REFUND_EXCEEDS_PAYMENT",
            ev.id,
            t,
            now,
            f"Refunds for order {st.oid} exceed what was paid for it.",
            {
                "event_id": ev.id,
                "refunds": money(refunds),
                "paid": money(st.paid),
                "refund_ids": sorted(st.refunds),
                "payment_ids": list(payment_ids(st)),
            },
        )

    @staticmethod
    def _check_cancel(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        if st.flags & CANCELLED:
            return None
        return (f"Cancellation of order {st.oid} was requested but not processed.", {})

    @staticmethod
    def _check_refund(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        r = st.refunds.get(ep[3] or "") if st.refunds else None
        if r is not None and r[2]:
            return None
        return (
            f"Refund {ep[3]} for order {st.oid} has not been paid out.",
            {"refund_id": ep[3], "amount": money(r[0]) if r else None},
        )
