"""The rule engine of the backtest: every keyed detector in one process, driven by the routing
table (`detectors.topology`): each event goes to the detectors its routes name, by their keys,
and an exception an adoption route claims goes on to its owner. Pure: no I/O, no clock of its
own (the caller passes event time and `now`).

In the live runtime each detector runs in its own agent and the same table decides what each
agent reads, forwards and adopts (streams/).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from orderwatch.detectors.base import Detector, Incoming, KeyedDetector
from orderwatch.detectors.blocklist import Blocklist
from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.orders import OrderDetector
from orderwatch.detectors.records import Emission
from orderwatch.detectors.stock import StockDetector
from orderwatch.detectors.topology import ADOPTIONS, ROUTES, Adopt, Adoption, DetectorName
from orderwatch.detectors.windows import AddressDetector, CustomerDetector, ProviderDetector

__all__ = ["Engine"]


# One step of an event's plan: the detector, its key function, the adoptions of what it finds.
_Step = tuple[KeyedDetector, Callable[[Any], Hashable], tuple[tuple[Adoption, KeyedDetector], ...]]


class Engine:
    def __init__(self, config: RulesConfig | None = None, blocklist: Blocklist | None = None) -> None:
        self.config = config or RulesConfig()
        self.blocklist = blocklist if blocklist is not None else Blocklist()
        self.orders = OrderDetector(self.config, self.blocklist)
        self.stock = StockDetector(self.config)
        self.addresses = AddressDetector(self.config)
        self.customers = CustomerDetector(self.config)
        self.providers = ProviderDetector(self.config)
        self._detectors: tuple[KeyedDetector, ...] = (
            self.orders,
            self.stock,
            self.addresses,
            self.customers,
            self.providers,
        )
        self._by_name: dict[str, KeyedDetector] = {d.name: d for d in self._detectors}
        # The clock is advanced twice per event: skip the detectors that never set a timer.
        self._timed = tuple(d for d in self._detectors if type(d)._fire is not Detector._fire)
        plan: dict[str, list[_Step]] = {}
        for route in ROUTES:
            det = self._by_name[route.detector]
            adopted = tuple((a, self._by_name[a.owner]) for a in ADOPTIONS if a.found_by == route.detector)
            for t in route.types:
                plan.setdefault(t, []).append((det, route.key, adopted))
        self._plan = {t: tuple(steps) for t, steps in plan.items()}

    def detector(self, name: DetectorName | str) -> KeyedDetector:
        """The detector of that name in the routing table."""
        return self._by_name[name]

    def apply(self, ev: Incoming, t: float, now: float) -> list[Emission]:
        """Apply one validated event whose event time is `t` (epoch seconds)."""
        out: list[Emission] = []
        for det, key, adopted in self._plan.get(ev.type, ()):
            emissions = det.on_event(key(ev), ev, t, now)
            if not adopted:
                out += emissions
                continue
            for em in emissions:
                out.append(em)
                for adoption, owner in adopted:
                    if adoption.claims(em):
                        out += owner.on_event(adoption.key(em.record), Adopt.of(em.record), t, now)
        return out

    def advance(self, now: float) -> list[Emission]:
        """Fire whatever the clock `now` has passed: deadlines, closed windows, state expiry."""
        out: list[Emission] = []
        for det in self._timed:
            out += det.on_clock(now)
        return out

    def pending(self) -> dict[str, int]:
        """Deadline episodes not yet decided, per rule."""
        return self.orders.pending()

    def next_deadline(self) -> float | None:
        times = [t for t in (d.notify_at() for d in self._detectors) if t is not None]
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
