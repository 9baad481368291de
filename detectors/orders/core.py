"""What every rule family of the order detector shares: the order states and their timer, the
deadline episodes (start, end, fire), opening and resolving exceptions, the versioned snapshot,
the adoption of an exception another detector found (DUPLICATE_ORDER), and `describe`.

Every rule is "event in, emissions out": it returns its emissions as an `Emitted` tuple, in
the order they happened. Most events emit nothing, and `()` is one shared object (adding two
empty tuples allocates nothing), so the hot path of the backtest pays no list per rule."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from heapq import heappush
from typing import Any, TypeAlias

from orderwatch.detectors.base import Detector
from orderwatch.detectors.blocklist import Blocklist
from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.orders import episodes as packed
from orderwatch.detectors.orders.state import (
    CANCELLED,
    CANCELLED_RETENTION,
    CREATED,
    FLAG_NAMES,
    REACHED_PAID,
    SHIP_EPISODE_STARTED,
    SHIPPED,
    TERMINAL,
    Episode,
    OrderState,
    compact,
    compact_ids,
    episodes,
    held,
    held_at,
    hold,
    milli_tolerance,
    payment_ids,
    to_ms,
    to_sec,
    unhold,
)
from orderwatch.detectors.records import Emission, ExceptionRecord, iso, money
from orderwatch.detectors.snapshots import GC, RULE_BY_ID, RULE_IDS, decode, encode

BUSY_ORDERS = 1024
"""Orders whose episodes stay unpacked between events: the most recently busy ones. More would
hold more memory for little: an order's events come in bursts (the first minutes, then a
shipment hours later); fewer would unpack and pack the same orders over and over."""

Emitted: TypeAlias = tuple[Emission, ...]
"""What a rule returns: the emissions of one event or deadline, in order (`()`: none)."""


def _deadline(ep: Episode) -> float:
    return ep[1]


class OrderCore(Detector[str, OrderState]):
    """The order detector's machinery; the rules live in the family modules beside it."""

    name = "orders"
    _checks: dict[str, Callable[[OrderState, Episode], tuple[str, dict[str, Any]] | None]]
    """Per deadline rule: the check run when its episode is due (None: cleared, no exception)."""

    def __init__(self, config: RulesConfig, blocklist: Blocklist | None = None) -> None:
        super().__init__(config)
        self.blocklist = blocklist if blocklist is not None else Blocklist()
        self.default_profile = config.profile()
        longest = max(v for v in config.thresholds.values())
        self.retention = longest
        self._tol = milli_tolerance(config.amount_tolerance)
        # Orders whose episodes are unpacked (`_unpack`), oldest first: packed again once more
        # than `busy_limit` are (`_cool`).
        self._busy: deque[str] = deque()
        self.busy_limit = BUSY_ORDERS

    def _fire(self, now: float) -> list[Emission]:
        """Fire every episode whose deadline the clock `now` has passed."""
        out: list[Emission] = []
        for oid, st in self._due(now):
            if isinstance(st.eps, bytes):
                first = packed.earliest(st.eps)
                if first is None or first >= now:
                    # A stale timer (its episode ended): nothing due, the order stays packed.
                    self._wake_at(oid, st, first)
                    continue
            work = self._unpack(st)
            due = sorted(
                (
                    (work[i], work[i + 1], packed.text(work[i + 2]), work[i + 3])
                    for i in range(0, len(work), 4)
                    if work[i + 1] < now
                ),
                key=_deadline,
            )
            for ep in due:
                self._end(st, ep[0], ep[3])
                if ep[0] == GC:
                    if not st.opened and not st.eps:
                        del self.states[oid]
                        break
                    self._start(st, GC, now + self._retention(st), "", force=True)
                    continue
                verdict = self._checks[ep[0]](st, ep)
                if verdict is not None:
                    out += self._open(
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
                        ref=ep[3],
                    )
            else:
                self._reschedule(st)
            if len(self._busy) > self.busy_limit:
                self._cool()
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
        if st.flags & CANCELLED:
            # Live, the record can reach the order after its cancellation did (it travels through
            # another agent): the clearing event is already here, resolve at once. A copy: the
            # emitted snapshot must not change.
            rec = dataclasses.replace(record, evidence=dict(record.evidence))
            rec.resolve(None, None, rec.detected_at)
            return [Emission.of("resolved", rec)]
        i = held_at(st, record.rule, None)
        blob = hold(st.oid, record.rule, record)
        st.opened = (*st.opened, record.rule, None, blob) if i < 0 else (*st.opened[: i + 2], blob, *st.opened[i + 3 :])
        return []

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
                list(payment_ids(st)),
                st.refunds,
                to_ms(st.last_t),
                to_ms(st.ship_by),
                [[RULE_IDS[ep[0]], to_ms(ep[1]), ep[2], ep[3]] for ep in episodes(st)],
                [[rule, ref, unhold(oid, rule, rec).to_dict()] for rule, ref, rec in held(st)] if st.opened else None,
                list(self.config.profile_key(st.profile)),
                [[p[0], p[1], p[2], p[3], to_ms(p[4])] for p in st.early] if st.early else None,
            ]
        )

    def restore(self, oid: str, blob: bytes) -> None:
        """Rebuild one order from `snapshot` output (recovery from the changelog)."""
        # Format 0 has the same fields; its rule numbers are the ones RULE_IDS froze.
        _, fields = decode(blob)
        flags, status, total, paid, pay_ids, refunds, last_t, ship_by, eps, opened, pkey, early = fields
        st = OrderState(oid, self.config.profile(*pkey))
        st.flags, st.status, st.total, st.paid = flags, status, total, paid
        st.pay_ids, st.refunds = compact_ids(pay_ids), refunds
        st.last_t = last_t / 1000 if last_t is not None else float("-inf")
        st.ship_by = to_sec(ship_by)
        st.eps = packed.encode((RULE_BY_ID[no], to_sec(d) or 0.0, sid, ref) for no, d, sid, ref in eps)
        if opened:
            st.opened = tuple(
                x for rule, ref, rec in opened for x in (rule, ref, hold(oid, rule, ExceptionRecord.from_dict(rec)))
            )
        if early:
            st.early = [(p[0], p[1], p[2], p[3], p[4] / 1000) for p in early]
        compact(st)
        self.states[oid] = st
        self._reschedule(st)

    def pending(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for st in self.states.values():
            for rule in packed.rule_names(st.eps):
                if rule != GC:
                    counts[rule] = counts.get(rule, 0) + 1
        return counts

    def open_exceptions(self) -> int:
        return sum(len(st.opened) for st in self.states.values()) // 3

    def describe(self, oid: str) -> dict[str, Any] | None:
        """What this detector knows of one order, JSON-ready, for people (the ops API's timeline);
        None when it holds no state for it. Ids, statuses, amounts and times only: the state has
        no address or phone, and none is added here."""
        st = self.states.get(oid)
        if st is None:
            return None
        flags = [name for bit, name in FLAG_NAMES if st.flags & bit]
        return {
            "order_id": oid,
            "status": st.status,
            "flags": flags,
            "total": money(st.total) if st.flags & CREATED else None,
            "paid": money(st.paid),
            "payment_ids": list(payment_ids(st)),
            "refunds": [
                {"refund_id": rid, "requested": money(r[0]), "succeeded": money(r[1]), "done": bool(r[2])}
                for rid, r in sorted((st.refunds or {}).items())
            ],
            "last_event_time": iso(st.last_t) if st.last_t != float("-inf") else None,
            "ship_by": iso(st.ship_by) if st.ship_by is not None else None,
            "deadlines": [
                {"rule": rule, "due": iso(due), "start_event_id": start_id, "ref": ref}
                for rule, due, start_id, ref in sorted(episodes(st), key=_deadline)
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
                for rule, ref, rec in sorted(
                    ((rule, ref, unhold(oid, rule, blob)) for rule, ref, blob in held(st)),
                    key=lambda held_rec: held_rec[2].detected_at,
                )
            ],
            "next_wake": iso(st.wake) if st.wake is not None else None,
        }

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
        st.eps += (rule, deadline, start_id, ref)
        # Only an earlier deadline needs a new timer; a later one is found when the current
        # timer pops and the state reschedules itself (lazy, one heap entry per order).
        # (`_wake_at`, inlined: every event starts an episode, ORDER_STUCK's at least.)
        wake = st.wake
        if wake is None or deadline < wake:
            st.wake = deadline
            heappush(self._heap, (deadline, st.oid))

    def _unpack(self, st: OrderState) -> packed.Work:
        """The order's episodes as a tuple to work on, unpacked if they were packed (on_event
        and _fire call this first: the rules below read `st.eps` as a tuple)."""
        eps: packed.Work
        if isinstance(st.eps, bytes):
            eps = st.eps = packed.unpack(st.eps)
            self._busy.append(st.oid)
        else:
            eps = st.eps
        return eps

    def _cool(self) -> None:
        """Pack the episodes of the orders unpacked longest ago, beyond BUSY_ORDERS: an order is
        busy for a few events in a row (created, reserved, paid), then waits hours or days."""
        busy = self._busy
        while len(busy) > self.busy_limit:
            st = self.states.get(busy.popleft())
            if st is not None and isinstance(st.eps, tuple):
                st.eps = packed.pack(st.eps)

    @staticmethod
    def _end(st: OrderState, rule: str, ref: str | None = None) -> None:
        eps = st.eps
        rules = eps[::4]
        # Most calls end a rule that has no episode: the C-level membership test says so.
        if rule not in rules:
            return
        j = rules.index(rule)
        while True:
            i = 4 * j
            if eps[i + 3] == ref:
                st.eps = eps[:i] + eps[i + 4 :]
                return
            if rule not in rules[j + 1 :]:
                return
            j = rules.index(rule, j + 1)

    @staticmethod
    def _episode(st: OrderState, rule: str, ref: str | None = None) -> Episode | None:
        eps = st.eps
        for i in range(0, len(eps), 4):
            if eps[i] == rule and eps[i + 3] == ref:
                return (rule, eps[i + 1], packed.text(eps[i + 2]), ref)
        return None

    @staticmethod
    def _due_at(st: OrderState, rule: str) -> float | None:
        """The deadline of `rule`'s episode (no ref), None when none runs."""
        eps = st.eps
        for i in range(0, len(eps), 4):
            if eps[i] == rule and eps[i + 3] is None:
                due: float = eps[i + 1]
                return due
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
            self._wake_at(st.oid, st, packed.earliest(st.eps))

    def _open(
        self,
        st: OrderState,
        rule: str,
        start_id: str,
        event_time: float,
        now: float,
        summary: str,
        evidence: dict[str, Any],
        ref: str | None = None,
        severity: str | None = None,
        amount: int = 0,
    ) -> Emitted:
        """Open `rule`'s exception for this episode key unless it is off for the order's profile
        or already open. `amount` is kept on the held record only: the emitted copy is the
        record as it goes on the wire, taken before it."""
        if st.profile.get(rule, 0.0) is None:
            return ()
        if held_at(st, rule, ref) >= 0:
            return ()  # one open exception per episode key
        rec = self._record(rule, st.oid, start_id, st.oid, now, event_time, summary, evidence, severity)
        emitted = (Emission.of("opened", rec),)
        rec.amount = amount
        st.opened += (rule, ref, hold(st.oid, rule, rec))
        return emitted

    def _resolve(self, st: OrderState, rule: str, ev: Any, t: float, now: float, ref: str | None = None) -> Emitted:
        if not st.opened:
            return ()
        i = held_at(st, rule, ref)
        if i < 0:
            return ()
        rec = unhold(st.oid, rule, st.opened[i + 2])
        st.opened = st.opened[:i] + st.opened[i + 3 :]
        rec.resolve(ev.id, t, now)
        return (Emission.of("resolved", rec),)

    def _is_open(self, st: OrderState, rule: str, ref: str | None = None) -> bool:
        return held_at(st, rule, ref) >= 0

    def _terminal(self, st: OrderState, t: float) -> None:
        if st.flags & TERMINAL:
            return
        st.flags |= TERMINAL
        # A finished order ends its pending episodes without an exception; refunds run on.
        eps = st.eps
        st.eps = tuple(x for i in range(0, len(eps), 4) if eps[i] == "REFUND_OVERDUE" for x in eps[i : i + 4])
        self._start(st, GC, t + self._retention(st), "", force=True)

    def _retention(self, st: OrderState) -> float:
        return max(self.retention, CANCELLED_RETENTION) if st.flags & CANCELLED else self.retention

    def _reached_paid(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        if not st.flags & REACHED_PAID:
            st.flags |= REACHED_PAID
            self._end(st, "PAYMENT_NOT_CONFIRMED")
        return self._resolve(st, "PAYMENT_NOT_CONFIRMED", ev, t, now)

    @staticmethod
    def _refunded(st: OrderState) -> int:
        return sum(r[1] for r in st.refunds.values()) if st.refunds else 0

    def _mark_paid(self, st: OrderState, ev: Any, t: float) -> None:
        """The order counts as paid (a payment or a status): start SHIPMENT_NOT_CREATED once."""
        if st.flags & SHIP_EPISODE_STARTED:
            return
        st.flags |= SHIP_EPISODE_STARTED
        thr = st.profile["SHIPMENT_NOT_CREATED"]
        if not st.flags & (SHIPPED | CANCELLED) and thr is not None:
            self._start(st, "SHIPMENT_NOT_CREATED", st.ship_by or t + thr, ev.id)
