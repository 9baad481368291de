"""Per-order rules: one compact state per order id, fed by the order, payment, logistics and
(regrouped) inventory events. Deadline episodes live inside the state; one timer per order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from orderwatch.detectors.base import Detector, Incoming
from orderwatch.detectors.blocklist import Blocklist
from orderwatch.detectors.config import Profile, RulesConfig
from orderwatch.detectors.records import Emission, ExceptionRecord, iso, milli, money
from orderwatch.detectors.shipping import address_problems, phone_ok
from orderwatch.detectors.snapshots import GC, RULE_BY_ID, RULE_IDS, decode, encode
from orderwatch.detectors.topology import ADOPT, address_key

__all__ = ["ORDER_EVENT_TYPES", "OrderDetector", "OrderState"]

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

_FLAG_NAMES = (
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


class OrderDetector(Detector[str, OrderState]):
    """All rules whose subject is one order."""

    name = "orders"

    def __init__(self, config: RulesConfig, blocklist: Blocklist | None = None) -> None:
        super().__init__(config)
        self.blocklist = blocklist if blocklist is not None else Blocklist()
        self.default_profile = config.profile()
        longest = max(v for v in config.thresholds.values())
        self.retention = longest
        self._tol = milli_tolerance(config.amount_tolerance)
        self._handlers: dict[str, Callable[[OrderState, Any, float, float, list[Emission]], None]] = {
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

    # -- entry points -------------------------------------------------------------------------
    def on_event(self, key: str, ev: Incoming, t: float, now: float) -> list[Emission]:
        """Apply one event for order `key` with event time `t`; `now` is the clock (`detected_at`).
        An `Adopt` hands this order an exception another detector opened about it."""
        if ev.type == ADOPT:
            return self.adopt(ev.data)
        out: list[Emission] = []
        handler = self._handlers.get(ev.type)
        self.dirty.add(key)
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = OrderState(key, self.default_profile)
        if handler is not None:
            handler(st, ev, t, now, out)
        self._touch(st, ev, t, now, out)
        return out

    def apply(self, ev: Any, t: float, now: float, fingerprint: str | None = None) -> list[Emission]:
        """Pre-contract entry point streams/app.py still calls; the fingerprint is recomputed."""
        return self.on_event(ev.data.order_id, ev, t, now)

    def _fire(self, now: float) -> list[Emission]:
        """Fire every episode whose deadline the clock `now` has passed."""
        out: list[Emission] = []
        for oid, st in self._due(now):
            due = sorted((ep for ep in st.eps if ep[1] < now), key=lambda ep: ep[1])
            for ep in due:
                st.eps.remove(ep)
                if ep[0] == GC:
                    if not st.opened and not st.eps:
                        del self.states[oid]
                        break
                    self._start(st, GC, now + self._retention(st), "", force=True)
                    continue
                verdict = self._checks[ep[0]](st, ep)
                if verdict is not None:
                    self._open(
                        st,
                        ep[0],
                        ep[2],
                        ep[1],
                        now,
                        verdict[0],
                        {
                            "start_event_id": ep[2],
                            "start_event_time": self._start_time(st, ep),
                            "deadline": iso(ep[1]),
                            **verdict[1],
                        },
                        out,
                        ref=ep[3],
                    )
            else:
                self._reschedule(st)
        return out

    def adopt(self, record: ExceptionRecord) -> list[Emission]:
        """Take ownership of an exception another detector opened about this order (DUPLICATE_ORDER),
        so the order's own events can resolve it."""
        if record.order_id is None:
            msg = f"{record.rule} exception {record.exception_id} names no order to adopt it"
            raise ValueError(msg)
        self.dirty.add(record.order_id)
        st = self.states.get(record.order_id)
        if st is None:
            st = self.states[record.order_id] = OrderState(record.order_id, self.default_profile)
        if st.opened is None:
            st.opened = {}
        # A copy: the emitted snapshot must not change when this order resolves the record.
        rec = dataclasses.replace(record, evidence=dict(record.evidence))
        if st.flags & CANCELLED:
            # Live, the record can reach the order after its cancellation did (it travels through
            # another agent): the clearing event is already here, resolve at once.
            rec.resolve(None, None, rec.detected_at)
            return [Emission.of("resolved", rec)]
        st.opened[(record.rule, None)] = rec
        return []

    # -- snapshots: the changelog / RocksDB value of one order ----------------------------------
    def snapshot(self, oid: str) -> bytes:
        """Compact JSON of one order's state (the key, the order id, is not repeated in it),
        versioned (detectors.snapshots)."""
        st = self.states[oid]
        return encode(
            [
                st.flags,
                st.status,
                st.total,
                st.paid,
                list(st.pay_ids),
                st.refunds,
                _ms(st.last_t),
                _ms(st.ship_by),
                [[RULE_IDS[ep[0]], _ms(ep[1]), ep[2], ep[3]] for ep in st.eps],
                [[rule, ref, rec.to_dict()] for (rule, ref), rec in st.opened.items()] if st.opened else None,
                list(self.config.profile_key(st.profile)),
                [[p[0], p[1], p[2], p[3], _ms(p[4])] for p in st.early] if st.early else None,
            ]
        )

    def restore(self, oid: str, blob: bytes) -> None:
        """Rebuild one order from `snapshot` output (recovery from the changelog)."""
        # Format 0 has the same fields; its rule numbers are the ones RULE_IDS froze.
        _, fields = decode(blob)
        flags, status, total, paid, pay_ids, refunds, last_t, ship_by, eps, opened, pkey, early = fields
        st = OrderState(oid, self.config.profile(*pkey))
        st.flags, st.status, st.total, st.paid = flags, status, total, paid
        st.pay_ids, st.refunds = tuple(pay_ids), refunds
        st.last_t = last_t / 1000 if last_t is not None else float("-inf")
        st.ship_by = _sec(ship_by)
        st.eps = [(RULE_BY_ID[no], _sec(d) or 0.0, sid, ref) for no, d, sid, ref in eps]
        if opened:
            st.opened = {(rule, ref): ExceptionRecord.from_dict(rec) for rule, ref, rec in opened}
        if early:
            st.early = [(p[0], p[1], p[2], p[3], p[4] / 1000) for p in early]
        self.states[oid] = st
        self._reschedule(st)

    def pending(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for st in self.states.values():
            for ep in st.eps:
                if ep[0] != GC:
                    counts[ep[0]] = counts.get(ep[0], 0) + 1
        return counts

    def open_exceptions(self) -> int:
        return sum(len(st.opened) for st in self.states.values() if st.opened)

    def describe(self, oid: str) -> dict[str, Any] | None:
        """What this detector knows of one order, JSON-ready, for people (the ops API's timeline);
        None when it holds no state for it. Ids, statuses, amounts and times only: the state has
        no address or phone, and none is added here."""
        st = self.states.get(oid)
        if st is None:
            return None
        flags = [name for bit, name in _FLAG_NAMES if st.flags & bit]
        return {
            "order_id": oid,
            "status": st.status,
            "flags": flags,
            "total": money(st.total) if st.flags & CREATED else None,
            "paid": money(st.paid),
            "payment_ids": list(st.pay_ids),
            "refunds": [
                {"refund_id": rid, "requested": money(r[0]), "succeeded": money(r[1]), "done": bool(r[2])}
                for rid, r in sorted((st.refunds or {}).items())
            ],
            "last_event_time": iso(st.last_t) if st.last_t != float("-inf") else None,
            "ship_by": iso(st.ship_by) if st.ship_by is not None else None,
            "deadlines": [
                {"rule": rule, "due": iso(due), "start_event_id": start_id, "ref": ref}
                for rule, due, start_id, ref in sorted(st.eps, key=lambda ep: ep[1])
                if rule != GC
            ],
            "open_exceptions": [
                {
                    "exception_id": rec.exception_id,
                    "rule": rule,
                    "ref": ref,
                    "detected_at": iso(rec.detected_at),
                    "event_time": iso(rec.event_time),
                }
                for (rule, ref), rec in sorted((st.opened or {}).items(), key=lambda kv: kv[1].detected_at)
            ],
            "next_wake": iso(st.wake) if st.wake is not None else None,
        }

    # -- episode helpers ----------------------------------------------------------------------
    def _start(
        self,
        st: OrderState,
        rule: str,
        deadline: float,
        start_id: str,
        ref: str | None = None,
        force: bool = False,
    ) -> None:
        if not force:
            if st.flags & TERMINAL and rule != "REFUND_OVERDUE":
                return
            if st.profile.get(rule) is None:
                return
        self._end(st, rule, ref)
        st.eps.append((rule, deadline, start_id, ref))
        # Only an earlier deadline needs a new timer; a later one is found when the current
        # timer pops and the state reschedules itself (lazy, one heap entry per order).
        self._wake_at(st.oid, st, deadline)

    @staticmethod
    def _end(st: OrderState, rule: str, ref: str | None = None) -> None:
        for ep in st.eps:
            if ep[0] == rule and ep[3] == ref:
                st.eps.remove(ep)
                return

    @staticmethod
    def _episode(st: OrderState, rule: str, ref: str | None = None) -> Episode | None:
        for ep in st.eps:
            if ep[0] == rule and ep[3] == ref:
                return ep
        return None

    @staticmethod
    def _start_time(st: OrderState, ep: Episode) -> str | None:
        thr = st.profile.get(ep[0])
        # Promise-based deadlines (DELIVERY_OVERDUE, a promised_ship_by) have no threshold.
        if not thr or ep[0] == "DELIVERY_OVERDUE" or (ep[0] == "SHIPMENT_NOT_CREATED" and st.ship_by == ep[1]):
            return None
        return iso(ep[1] - thr)

    def _reschedule(self, st: OrderState) -> None:
        if st.eps:
            self._wake_at(st.oid, st, min(ep[1] for ep in st.eps))

    def _open(
        self,
        st: OrderState,
        rule: str,
        start_id: str,
        event_time: float,
        now: float,
        summary: str,
        evidence: dict[str, Any],
        out: list[Emission],
        ref: str | None = None,
        severity: str | None = None,
    ) -> ExceptionRecord | None:
        if st.profile.get(rule, 0.0) is None:
            return None
        if st.opened is None:
            st.opened = {}
        elif (rule, ref) in st.opened:
            return None  # one open exception per episode key
        rec = self._record(rule, st.oid, start_id, st.oid, now, event_time, summary, evidence, severity)
        st.opened[(rule, ref)] = rec
        self._emit(out, "opened", rec)
        return rec

    def _resolve(
        self, st: OrderState, rule: str, ev: Any, t: float, now: float, out: list[Emission], ref: str | None = None
    ) -> None:
        if not st.opened:
            return
        rec = st.opened.pop((rule, ref), None)
        if rec is not None:
            rec.resolve(ev.id, t, now)
            self._emit(out, "resolved", rec)

    def _is_open(self, st: OrderState, rule: str, ref: str | None = None) -> bool:
        return st.opened is not None and (rule, ref) in st.opened

    def _terminal(self, st: OrderState, t: float) -> None:
        if st.flags & TERMINAL:
            return
        st.flags |= TERMINAL
        # A finished order ends its pending episodes without an exception; refunds run on.
        st.eps = [ep for ep in st.eps if ep[0] == "REFUND_OVERDUE"]
        self._start(st, GC, t + self._retention(st), "", force=True)

    def _retention(self, st: OrderState) -> float:
        return max(self.retention, CANCELLED_RETENTION) if st.flags & CANCELLED else self.retention

    # -- event handlers -----------------------------------------------------------------------
    def _touch(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        """ORDER_STUCK: every event for the order resolves it and restarts its episode."""
        if t > st.last_t:
            # Only an event newer than the last one is "a later event"; an old one changes nothing.
            self._resolve(st, "ORDER_STUCK", ev, t, now, out)
            st.last_t = t
            if st.flags & CREATED and not st.flags & TERMINAL:
                thr = st.profile["ORDER_STUCK"]
                if thr is not None:
                    self._start(st, "ORDER_STUCK", t + thr, ev.id)

    def _on_created(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        if st.flags & CREATED:
            return
        d = ev.data
        st.flags |= CREATED
        st.total = milli(d.total_amount)
        st.profile = prof = self.config.profile(
            d.merchant_id, d.channel, d.payment_method, d.shipping_address.country or None
        )
        if st.early is not None:
            self._replay_early_payments(st, now, out)
        self._end(st, "PAYMENT_WITHOUT_ORDER")
        self._resolve(st, "PAYMENT_WITHOUT_ORDER", ev, t, now, out)
        addr = d.shipping_address
        if phone_ok(d.contact_phone, addr.country):
            st.flags |= PHONE_OK
        self._check_shipping_info(st, ev, t, now, out)
        hit = self.blocklist.match(d.customer_id, address_key(ev), t)
        if hit is not None:
            self._open(
                st,
                "BLOCKLISTED_ORDER",
                ev.id,
                t,
                now,
                f"Order {st.oid} matches the blocklist ({hit[0]} entry).",
                {"event_id": ev.id, "match": hit[0], "entry": hit[1], "reason": hit[2]},
                out,
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

    def _check_shipping_info(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        problems = address_problems(ev.data.shipping_address)
        if not st.flags & PHONE_OK:
            problems.append("phone_invalid")
        if problems:
            self._open(
                st,
                "INVALID_SHIPPING_INFO",
                ev.id,
                t,
                now,
                f"Order {st.oid} has shipping details that cannot be used ({', '.join(problems)}).",
                {"event_id": ev.id, "event_type": ev.type, "problems": problems},
                out,
            )
        else:
            self._resolve(st, "INVALID_SHIPPING_INFO", ev, t, now, out)

    def _on_address(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        d = ev.data
        if d.contact_phone is not None:
            if phone_ok(d.contact_phone, d.shipping_address.country):
                st.flags |= PHONE_OK
            else:
                st.flags &= ~PHONE_OK
        self._check_shipping_info(st, ev, t, now, out)

    def _on_status(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        status = ev.data.status
        st.status = status
        if status == "cancelled":
            self._cancelled(st, ev, t, now, out)
            return
        if status in PAID_OR_LATER:
            self._reached_paid(st, ev, t, now, out)
            self._mark_paid(st, ev, t)
        if status in TERMINAL_STATUSES:
            self._terminal(st, t)

    def _reached_paid(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        if not st.flags & REACHED_PAID:
            st.flags |= REACHED_PAID
            self._end(st, "PAYMENT_NOT_CONFIRMED")
        self._resolve(st, "PAYMENT_NOT_CONFIRMED", ev, t, now, out)

    def _mark_paid(self, st: OrderState, ev: Any, t: float) -> None:
        if st.flags & SHIP_EPISODE_STARTED:
            return
        st.flags |= SHIP_EPISODE_STARTED
        thr = st.profile["SHIPMENT_NOT_CREATED"]
        if not st.flags & (SHIPPED | CANCELLED) and thr is not None:
            self._start(st, "SHIPMENT_NOT_CREATED", st.ship_by or t + thr, ev.id)

    def _on_cancel_requested(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        thr = st.profile["CANCEL_NOT_PROCESSED"]
        if not st.flags & CANCELLED and thr is not None and not self._episode(st, "CANCEL_NOT_PROCESSED"):
            self._start(st, "CANCEL_NOT_PROCESSED", t + thr, ev.id)

    def _on_cancelled(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        st.status = "cancelled"
        self._cancelled(st, ev, t, now, out)

    def _cancelled(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        st.flags |= CANCELLED
        self._reached_paid(st, ev, t, now, out)
        for rule in ("CANCEL_NOT_PROCESSED", "PAYMENT_TIMEOUT", "DUPLICATE_ORDER"):
            self._resolve(st, rule, ev, t, now, out)
        self._terminal(st, t)

    def _on_payment(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        d = ev.data
        pid = d.payment_id
        if pid in st.pay_ids:
            return  # the same payment reported again under a new event id
        amount = milli(d.amount)
        first = not st.flags & PAID
        if st.flags & CREATED:
            self._check_duplicate_payment(st, pid, amount, d.currency, ev.id, t, now, out)
        else:
            # Before the order is known its total is too: keep what a duplicate check needs.
            if st.early is None:
                st.early = []
            st.early.append((pid, amount, d.currency, ev.id, t))
        st.pay_ids += (pid,)
        st.paid += amount
        st.flags |= PAID
        self._end(st, "PAYMENT_TIMEOUT")
        self._resolve(st, "PAYMENT_TIMEOUT", ev, t, now, out)
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
        self._settle_mismatch(st, ev, t, now, out)

    def _check_duplicate_payment(
        self,
        st: OrderState,
        pid: str,
        amount: int,
        currency: str,
        event_id: str,
        t: float,
        now: float,
        out: list[Emission],
    ) -> None:
        """A new payment id arriving when the earlier distinct payments already cover the total."""
        if not st.pay_ids or st.paid < st.total - self._tol:
            return
        rec = self._open(
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
                "earlier_payment_ids": list(st.pay_ids),
                "earlier_paid": money(st.paid),
                "order_total": money(st.total),
            },
            out,
            ref=pid,
        )
        if rec is not None:
            st.flags |= DUPLICATE_FIRED
            rec.amount = amount

    def _replay_early_payments(self, st: OrderState, now: float, out: list[Emission]) -> None:
        """The order arrived after its payments: judge them for duplicates in the order they came."""
        early, st.early = st.early or [], None
        paid, pay_ids = st.paid, st.pay_ids
        st.paid, st.pay_ids = 0, ()
        for pid, amount, currency, event_id, t in sorted(early, key=lambda p: p[4]):
            self._check_duplicate_payment(st, pid, amount, currency, event_id, t, now, out)
            st.pay_ids += (pid,)
            st.paid += amount
        st.paid, st.pay_ids = paid, pay_ids

    def _refund(self, st: OrderState, refund_id: str) -> list[int]:
        if st.refunds is None:
            st.refunds = {}
        r = st.refunds.get(refund_id)
        if r is None:
            r = st.refunds[refund_id] = [0, 0, 0]
        return r

    def _on_refund_requested(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        d = ev.data
        r = self._refund(st, d.refund_id)
        if r[0]:
            return
        r[0] = milli(d.amount)
        thr = st.profile["REFUND_OVERDUE"]
        if not r[2] and thr is not None:
            self._start(st, "REFUND_OVERDUE", t + thr, ev.id, ref=d.refund_id)
        self._check_exceeds(st, ev, t, now, out)

    def _on_refund_succeeded(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        d = ev.data
        r = self._refund(st, d.refund_id)
        if r[2]:
            return
        r[1], r[2] = milli(d.amount), 1
        self._end(st, "REFUND_OVERDUE", d.refund_id)
        self._resolve(st, "REFUND_OVERDUE", ev, t, now, out, ref=d.refund_id)
        self._resolve(st, "REFUND_FAILED", ev, t, now, out, ref=d.refund_id)
        if st.opened:
            refunded = self._refunded(st)
            dups = sorted(
                (rec for (rule, _), rec in st.opened.items() if rule == "DUPLICATE_PAYMENT"),
                key=lambda rec: rec.event_time,
            )
            covered = 0
            for rec in dups:
                covered += rec.amount
                if refunded >= covered - self._tol:
                    self._resolve(st, "DUPLICATE_PAYMENT", ev, t, now, out, ref=rec.evidence["payment_id"])
        self._settle_mismatch(st, ev, t, now, out)
        self._check_exceeds(st, ev, t, now, out)

    def _on_refund_failed(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        d = ev.data
        r = self._refund(st, d.refund_id)
        if not r[2]:
            self._open(
                st,
                "REFUND_FAILED",
                ev.id,
                t,
                now,
                f"Refund {d.refund_id} for order {st.oid} failed ({d.reason_code}).",
                {"event_id": ev.id, "refund_id": d.refund_id, "reason_code": d.reason_code},
                out,
                ref=d.refund_id,
            )

    @staticmethod
    def _refunded(st: OrderState) -> int:
        return sum(r[1] for r in st.refunds.values()) if st.refunds else 0

    def _settle_mismatch(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        if self._is_open(st, "PAYMENT_AMOUNT_MISMATCH") and abs(st.paid - self._refunded(st) - st.total) <= self._tol:
            self._resolve(st, "PAYMENT_AMOUNT_MISMATCH", ev, t, now, out)

    def _check_exceeds(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        # An order we know nothing of (never created here, or dropped long after it finished) has
        # nothing to compare against; flagging every refund for it would be noise.
        if st.flags & EXCEEDS_FIRED or not st.flags & (PAID | CREATED) or not st.refunds:
            return
        refunds = sum(max(r[0], r[1]) for r in st.refunds.values())
        if refunds > st.paid + self._tol:
            st.flags |= EXCEEDS_FIRED
            self._open(
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
                    "payment_ids": list(st.pay_ids),
                },
                out,
            )

    def _on_reserved(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        st.flags |= RESERVATION_SEEN
        self._end(st, "STOCK_NOT_RESERVED")
        self._resolve(st, "STOCK_NOT_RESERVED", ev, t, now, out)
        self._resolve(st, "STOCK_RESERVATION_FAILED", ev, t, now, out, ref=ev.data.sku)

    def _on_reservation_failed(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        d = ev.data
        st.flags |= RESERVATION_SEEN
        self._end(st, "STOCK_NOT_RESERVED")
        self._open(
            st,
            "STOCK_RESERVATION_FAILED",
            ev.id,
            t,
            now,
            f"Stock for order {st.oid} could not be reserved ({d.reason}).",
            {
                "event_id": ev.id,
                "sku": d.sku,
                "warehouse_id": d.warehouse_id,
                "quantity": d.quantity,
                "reason": d.reason,
            },
            out,
            ref=d.sku,
        )

    def _on_shipment_created(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        d = ev.data
        if st.flags & CANCELLED:
            self._open(
                st,
                "SHIPPED_AFTER_CANCEL",
                ev.id,
                t,
                now,
                f"A shipment was created for order {st.oid}, which is cancelled.",
                {"event_id": ev.id, "shipment_id": d.shipment_id, "carrier": d.carrier},
                out,
                ref=d.shipment_id,
            )
        st.flags |= SHIPPED
        # From here on the carrier is known: episodes started below follow its overrides too.
        st.profile = self.config.with_carrier(st.profile, d.carrier)
        self._end(st, "SHIPMENT_NOT_CREATED")
        self._resolve(st, "SHIPMENT_NOT_CREATED", ev, t, now, out)
        self._tracking_event(st, ev, t, now, out, restart=True)
        if (
            d.promised_delivery_by is not None
            and not st.flags & DELIVERED
            and not self._is_open(st, "DELIVERY_OVERDUE")
        ):
            st.flags |= PROMISE_FROM_SHIPMENT
            self._start(st, "DELIVERY_OVERDUE", d.promised_delivery_by.timestamp(), ev.id)

    def _tracking_event(
        self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission], restart: bool
    ) -> None:
        self._resolve(st, "TRACKING_STALLED", ev, t, now, out)
        ep = self._episode(st, "TRACKING_STALLED")
        thr = st.profile["TRACKING_STALLED"]
        if ep is not None and thr is not None and ep[1] - thr > t:
            return  # a late event older than the current episode's start changes nothing
        if restart and not st.flags & DELIVERED and (thr := st.profile["TRACKING_STALLED"]) is not None:
            self._start(st, "TRACKING_STALLED", t + thr, ev.id)
        elif not restart:
            self._end(st, "TRACKING_STALLED")

    def _on_tracking(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        self._tracking_event(st, ev, t, now, out, restart=True)

    def _on_delivered(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        st.flags |= DELIVERED
        self._tracking_event(st, ev, t, now, out, restart=False)
        self._end(st, "DELIVERY_OVERDUE")
        self._resolve(st, "DELIVERY_OVERDUE", ev, t, now, out)
        self._resolve(st, "DELIVERY_FAILED", ev, t, now, out)

    def _on_shipment_exception(self, st: OrderState, ev: Any, t: float, now: float, out: list[Emission]) -> None:
        d = ev.data
        self._tracking_event(st, ev, t, now, out, restart=False)
        self._open(
            st,
            "DELIVERY_FAILED",
            ev.id,
            t,
            now,
            f"Shipment {d.shipment_id} of order {st.oid} failed ({d.reason}).",
            {"event_id": ev.id, "shipment_id": d.shipment_id, "reason": d.reason},
            out,
            severity="high" if d.reason in ("lost", "damaged") else "medium",
        )

    # -- deadline checks: None = the clearing condition was met, no exception ----------------
    @staticmethod
    def _check_not_confirmed(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        if st.flags & REACHED_PAID:
            return None
        return (
            f"Payment for order {st.oid} succeeded but the order is still not marked paid.",
            {"order_status": st.status, "payment_ids": list(st.pay_ids)},
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
                "payment_ids": list(st.pay_ids),
            },
        )

    @staticmethod
    def _check_without_order(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        if st.flags & CREATED:
            return None
        return (
            f"A payment arrived for order {st.oid}, which orderwatch has never seen created.",
            {"payment_ids": list(st.pay_ids), "paid": money(st.paid)},
        )

    @staticmethod
    def _check_not_reserved(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        if st.flags & RESERVATION_SEEN:
            return None
        return (f"Order {st.oid} is paid but no stock was reserved for it.", {})

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

    @staticmethod
    def _check_stuck(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        if st.flags & TERMINAL:
            return None
        return (
            f"Order {st.oid} has seen no event for {(st.profile['ORDER_STUCK'] or 0) / 86400:g} days.",
            {"order_status": st.status, "last_event_id": ep[2]},
        )


def _ms(t: float | None) -> int | None:
    # Milliseconds as an int: shorter than a float's repr, and event times carry no finer detail.
    return None if t is None or t == float("-inf") else round(t * 1000)


def _sec(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def milli_tolerance(tolerance: float) -> int:
    return round(tolerance * 1000)
