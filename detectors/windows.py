"""Windowed rules over keys other than the order: ADDRESS_CLUSTER (address fingerprint),
NEW_ACCOUNT_BURST and DUPLICATE_ORDER (customer), PAYMENT_FAILURE_SPIKE (provider).

Windowed rules open one exception per episode: while the condition keeps holding, later events
join its evidence (an `updated` emission); a new one opens only after the condition stopped.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from orderwatch.detectors.base import Detector, Incoming
from orderwatch.detectors.records import Emission, ExceptionRecord, iso
from orderwatch.detectors.snapshots import decode, encode

__all__ = ["AddressDetector", "CustomerDetector", "ProviderDetector", "items_key"]

# Evidence lists stop growing here: a cluster of 10,000 orders needs a count, not 10,000 ids.
MAX_EVIDENCE_IDS = 50


def items_key(items: Any) -> int:
    """Hash of the (sku, quantity) multiset of an order, the same for any item order."""
    # The multiset of (sku, quantity) lines, as RULES.md says: [A x1, A x1] is not [A x2].
    if len(items) == 1:
        # Most orders have one line: the same canonical text, without a Counter and a sort.
        item = items[0]
        canonical = f"{item.sku}\x1f{item.quantity}\x1f1"
    else:
        counts: Counter[tuple[str, int]] = Counter((item.sku, item.quantity) for item in items)
        canonical = "\x1e".join(f"{sku}\x1f{qty}\x1f{n}" for (sku, qty), n in sorted(counts.items()))
    # A stable digest, not hash(): str hashes change per process and this key outlives one.
    return int.from_bytes(hashlib.blake2b(canonical.encode(), digest_size=8).digest(), "big")


class _WindowState:
    __slots__ = ("entries", "holding", "record", "wake")

    def __init__(self) -> None:
        # A tuple, not a list: most keys (an address, a customer) hold one entry, and a 1-tuple
        # is 40 bytes less than a list with room to grow; appending copies, as eviction did.
        self.entries: tuple[tuple[Any, ...], ...] = ()
        self.holding = False
        self.record: ExceptionRecord | None = None
        self.wake: float | None = None


class _SlidingDetector(Detector[str, _WindowState]):
    """Keeps, per key, the entries of the last `window` seconds; drops idle keys by timer."""

    window: float

    def _state(self, key: str) -> _WindowState:
        self.dirty.add(key)
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = _WindowState()
        return st

    def _evict(self, st: _WindowState, t: float) -> None:
        # `e + window < t`, the very expression the expiry timer uses, and over every entry: a late
        # event can sit after a newer one, and a timer armed from an expired entry would re-fire
        # at the same instant forever.
        window = self.window
        if st.entries and any(e[0] + window < t for e in st.entries):
            st.entries = tuple(e for e in st.entries if e[0] + window >= t)

    def _fire(self, now: float) -> list[Emission]:
        for key, st in self._due(now):
            self._evict(st, now)
            if st.entries:
                self._wake_at(key, st, max(e[0] for e in st.entries) + self.window)
            else:
                del self.states[key]
        return []

    def snapshot(self, key: str) -> bytes:
        st = self.states[key]
        return encode([[list(e) for e in st.entries], st.holding, st.record.to_dict() if st.record else None])

    def restore(self, key: str, blob: bytes) -> None:
        _, (entries, holding, record) = decode(blob)  # format 0 has the same fields
        st = self.states[key] = _WindowState()
        st.entries = tuple(tuple(e) for e in entries)
        st.holding = holding
        st.record = ExceptionRecord.from_dict(record) if record else None
        if st.entries:
            self._wake_at(key, st, max(e[0] for e in st.entries) + self.window)

    def _join(self, st: _WindowState, out: list[Emission], **evidence: Any) -> None:
        rec = st.record
        if rec is None:
            return
        rec.revision += 1
        for name, value in evidence.items():
            if isinstance(value, list):
                value = value[:MAX_EVIDENCE_IDS]
            rec.evidence[name] = value
        self._emit(out, "updated", rec)

    def open_exceptions(self) -> int:
        return 0  # windowed fraud exceptions are resolved by people, not tracked here


class AddressDetector(_SlidingDetector):
    """ADDRESS_CLUSTER: >= N orders from >= M distinct customers to one address in a sliding window."""

    name = "address"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        p = self.config.params["ADDRESS_CLUSTER"]
        self.window, self.min_orders, self.min_customers = p["window"], p["min_orders"], p["min_customers"]

    def _holds(self, entries: tuple[tuple[Any, ...], ...]) -> bool:
        return len(entries) >= self.min_orders and len({e[2] for e in entries}) >= self.min_customers

    def on_event(self, key: str, ev: Incoming, t: float, now: float) -> list[Emission]:
        fingerprint = key
        if not self.config.enabled["ADDRESS_CLUSTER"]:
            return []
        d = ev.data
        st = self._state(fingerprint)
        self._evict(st, t)
        if not self._holds(st.entries):
            st.holding, st.record = False, None
        if st.entries and any(e[1] == d.order_id for e in st.entries):
            return []
        st.entries += ((t, d.order_id, d.customer_id),)
        self._wake_at(fingerprint, st, t + self.window)
        out: list[Emission] = []
        if not self._holds(st.entries):
            return out
        orders = [e[1] for e in st.entries]
        customers = len({e[2] for e in st.entries})
        if st.holding:
            self._join(st, out, order_ids=orders, orders=len(orders), customers=customers)
            return out
        st.holding = True
        st.record = self._record(
            "ADDRESS_CLUSTER",
            fingerprint,
            ev.id,
            None,
            now,
            t,
            f"{len(orders)} orders from {customers} customers to one address within {self.window / 3600:g} h.",
            {
                "event_id": ev.id,
                "address_fingerprint": fingerprint,
                "order_ids": orders[:MAX_EVIDENCE_IDS],
                "orders": len(orders),
                "customers": customers,
                "window_start": iso(st.entries[0][0]),
            },
        )
        self._emit(out, "opened", st.record)
        return out


class CustomerDetector(_SlidingDetector):
    """DUPLICATE_ORDER and NEW_ACCOUNT_BURST, both over a customer's recent orders."""

    name = "customer"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        p = self.config.params["NEW_ACCOUNT_BURST"]
        self.account_age, self.burst_window, self.min_orders = p["account_age"], p["window"], p["min_orders"]
        # Keep orders as long as the longest DUPLICATE_ORDER window of any merchant or channel.
        overrides = [
            threshold
            for layer in self.config.segment_layers()
            for code, (_, threshold) in layer.items()
            if code == "DUPLICATE_ORDER" and threshold is not None
        ]
        self.dup_window = max([self.config.thresholds["DUPLICATE_ORDER"], *overrides])
        self.window = max(self.burst_window, self.dup_window)

    def _burst(self, entries: tuple[tuple[Any, ...], ...], t: float) -> list[tuple[Any, ...]]:
        return [e for e in entries if e[3] and t - e[0] <= self.burst_window]

    def on_event(self, key: str, ev: Incoming, t: float, now: float) -> list[Emission]:
        d = ev.data
        profile = self.config.profile(d.merchant_id, d.channel, d.payment_method, d.shipping_address.country or None)
        st = self._state(key)
        self._evict(st, t)
        entries = st.entries
        # Most customers have no recent order: nothing to look through then.
        if entries and any(e[1] == d.order_id for e in entries):
            return []
        out: list[Emission] = []
        items = items_key(d.items)
        young = t - d.customer_since.timestamp() < self.account_age
        burst_before = (len(self._burst(entries, t)) if entries else 0) >= self.min_orders
        dup_window = profile.get("DUPLICATE_ORDER")
        if dup_window is not None and entries:
            earlier = [e for e in entries if e[2] == items and t - e[0] <= dup_window]
            if earlier:
                prev = earlier[-1]
                rec = self._record(
                    "DUPLICATE_ORDER",
                    d.order_id,
                    ev.id,
                    d.order_id,
                    now,
                    t,
                    f"Order {d.order_id} repeats the items of order {prev[1]} placed "
                    f"{(t - prev[0]) / 60:.0f} min earlier by the same customer.",
                    {
                        "event_id": ev.id,
                        "earlier_order_id": prev[1],
                        "earlier_order_time": iso(prev[0]),
                        "customer_id": d.customer_id,
                    },
                )
                self._emit(out, "opened", rec)
        st.entries += ((t, d.order_id, items, young),)
        self._wake_at(key, st, t + self.window)
        if not self.config.enabled["NEW_ACCOUNT_BURST"]:
            return out
        if not burst_before:
            st.holding, st.record = False, None
        burst = self._burst(st.entries, t)
        if len(burst) < self.min_orders:
            return out
        orders = [e[1] for e in burst]
        if st.holding:
            self._join(st, out, order_ids=orders, orders=len(orders))
            return out
        st.holding = True
        st.record = self._record(
            "NEW_ACCOUNT_BURST",
            d.customer_id,
            ev.id,
            None,
            now,
            t,
            f"Customer {d.customer_id}, whose account is under {self.account_age / 86400:g} days old, "
            f"placed {len(orders)} orders within {self.burst_window / 60:g} min.",
            {
                "event_id": ev.id,
                "customer_id": d.customer_id,
                "customer_since": iso(d.customer_since.timestamp()),
                "order_ids": orders[:MAX_EVIDENCE_IDS],
                "orders": len(orders),
            },
        )
        self._emit(out, "opened", st.record)
        return out


class _ProviderState:
    __slots__ = ("attempts", "failures", "first_failure", "record", "wake", "win_start")

    def __init__(self, win_start: float) -> None:
        self.win_start = win_start
        self.attempts = 0
        self.failures = 0
        self.first_failure: str | None = None
        self.record: ExceptionRecord | None = None
        self.wake: float | None = None


class ProviderDetector(Detector[str, _ProviderState]):
    """PAYMENT_FAILURE_SPIKE: per provider, tumbling windows aligned to the epoch, judged when
    the clock passes their end (a window is judged only once it is full)."""

    name = "provider"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        p = self.config.params["PAYMENT_FAILURE_SPIKE"]
        self.window, self.min_failures, self.min_rate = p["window"], p["min_failures"], p["min_rate"]

    def on_event(self, key: str, ev: Incoming, t: float, now: float) -> list[Emission]:
        if not self.config.enabled["PAYMENT_FAILURE_SPIKE"]:
            return []
        provider = key
        start = t - t % self.window
        out: list[Emission] = []
        self.dirty.add(provider)
        st = self.states.get(provider)
        if st is None:
            st = self.states[provider] = _ProviderState(start)
        elif start > st.win_start:
            self._close(provider, st, now, out)
            st.win_start = start
            st.wake = None  # the old window's timer entry is now stale
        elif start < st.win_start:
            return out  # too late for a window already judged
        st.attempts += 1
        if ev.type == "payment.failed":
            st.failures += 1
            if st.first_failure is None:
                st.first_failure = ev.id
        self._wake_at(provider, st, start + self.window)
        return out

    def _fire(self, now: float) -> list[Emission]:
        out: list[Emission] = []
        for provider, st in self._due(now):
            self._close(provider, st, now, out)
        return out

    def snapshot(self, key: str) -> bytes:
        st = self.states[key]
        return encode(
            [st.win_start, st.attempts, st.failures, st.first_failure, st.record.to_dict() if st.record else None]
        )

    def restore(self, key: str, blob: bytes) -> None:
        _, (win_start, attempts, failures, first_failure, record) = decode(blob)  # format 0: same fields
        st = self.states[key] = _ProviderState(win_start)
        st.attempts, st.failures, st.first_failure = attempts, failures, first_failure
        st.record = ExceptionRecord.from_dict(record) if record else None
        if attempts:
            self._wake_at(key, st, win_start + self.window)

    def _close(self, provider: str, st: _ProviderState, now: float, out: list[Emission]) -> None:
        if st.attempts == 0:
            return
        end = st.win_start + self.window
        rate = st.failures / st.attempts
        figures = {
            "window_start": iso(st.win_start),
            "window_end": iso(end),
            "failures": st.failures,
            "attempts": st.attempts,
            "failure_rate": round(rate, 4),
        }
        if st.failures >= self.min_failures and rate >= self.min_rate:
            if st.record is None:
                st.record = self._record(
                    "PAYMENT_FAILURE_SPIKE",
                    provider,
                    st.first_failure or "",
                    None,
                    now,
                    end,
                    f"Payment provider {provider} failed {st.failures} of {st.attempts} payments "
                    f"({rate:.0%}) in {self.window / 60:g} min.",
                    {"provider": provider, "windows": 1, **figures},
                )
                self._emit(out, "opened", st.record)
            else:
                rec = st.record
                rec.revision += 1
                rec.evidence.update(figures, windows=rec.evidence["windows"] + 1)
                self._emit(out, "updated", rec)
        elif st.record is not None and st.failures < self.min_failures and rate < self.min_rate:
            st.record.resolve(f"window:{provider}:{iso(st.win_start)}", end, now)
            self._emit(out, "resolved", st.record)
            st.record = None
        st.attempts = st.failures = 0
        st.first_failure = None

    def open_exceptions(self) -> int:
        return sum(1 for st in self.states.values() if st.record is not None)
