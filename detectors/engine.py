"""The rule engine: routes each event to the keyed detectors that care about it and advances
their timers. Pure: no I/O, no clock of its own (the caller passes event time and `now`).

In the live runtime each detector runs in its own agent, keyed as here; the backtest runs them
all in one process through this class.
"""

from __future__ import annotations

from typing import Any

from orderwatch.detectors.blocklist import Blocklist
from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.ids import address_fingerprint
from orderwatch.detectors.orders import ORDER_EVENT_TYPES, OrderDetector
from orderwatch.detectors.records import Emission
from orderwatch.detectors.stock import StockDetector
from orderwatch.detectors.windows import AddressDetector, CustomerDetector, ProviderDetector

__all__ = ["Engine"]

_STOCK_TYPES = frozenset(
    {"inventory.level_reported", "inventory.reserved", "inventory.released", "inventory.reservation_failed"}
)
_PAYMENT_TYPES = frozenset({"payment.succeeded", "payment.failed"})


class Engine:
    def __init__(self, config: RulesConfig | None = None, blocklist: Blocklist | None = None) -> None:
        self.config = config or RulesConfig()
        self.blocklist = blocklist if blocklist is not None else Blocklist()
        self.orders = OrderDetector(self.config, self.blocklist)
        self.stock = StockDetector(self.config)
        self.addresses = AddressDetector(self.config)
        self.customers = CustomerDetector(self.config)
        self.providers = ProviderDetector(self.config)
        self._detectors = (self.orders, self.stock, self.addresses, self.customers, self.providers)

    def apply(self, ev: Any, t: float, now: float) -> list[Emission]:
        """Apply one validated event whose event time is `t` (epoch seconds)."""
        kind = ev.type
        out: list[Emission] = []
        if kind == "order.created":
            addr = ev.data.shipping_address
            fp = address_fingerprint(addr.line1, addr.postal_code, addr.country)
            out += self.orders.apply(ev, t, now, fp)
            out += self.addresses.apply(ev, t, now, fp)
            for em in self.customers.apply(ev, t, now):
                out.append(em)
                if em.record.rule == "DUPLICATE_ORDER" and em.kind == "opened":
                    out += self.orders.adopt(em.record)
            return out
        if kind in ORDER_EVENT_TYPES:
            out += self.orders.apply(ev, t, now)
        if kind in _STOCK_TYPES:
            out += self.stock.apply(ev, t, now)
        if kind in _PAYMENT_TYPES:
            out += self.providers.apply(ev, t, now)
        return out

    def advance(self, now: float) -> list[Emission]:
        """Fire whatever the clock `now` has passed: deadlines, closed windows, state expiry."""
        out: list[Emission] = []
        for det in self._detectors:
            # Called twice per event on the hot path: peek at the heap before paying for a call.
            heap = det._heap
            if heap and heap[0][0] < now:
                out += det.advance(now)
        return out

    def pending(self) -> dict[str, int]:
        """Deadline episodes not yet decided, per rule."""
        return self.orders.pending()

    def next_deadline(self) -> float | None:
        times = [t for t in (d.next_timer() for d in self._detectors) if t is not None]
        return min(times) if times else None

    def stats(self) -> dict[str, int]:
        return {
            "orders": len(self.orders.states),
            "skus": len(self.stock.states),
            "addresses": len(self.addresses.states),
            "customers": len(self.customers.states),
            "providers": len(self.providers.states),
            "timers": sum(d.timers() for d in self._detectors),
            "open_exceptions": sum(d.open_exceptions() for d in self._detectors),
        }
