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

from orderwatch.detectors.base import Detector, Incoming, KeyedDetector, Untracked
from orderwatch.detectors.blocklist import Blocklist
from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.orders import OrderDetector
from orderwatch.detectors.records import Emission
from orderwatch.detectors.stock import StockDetector
from orderwatch.detectors.topology import ADOPTIONS, ROUTES, Adopt, Adoption, DetectorName
from orderwatch.detectors.windows import AddressDetector, CustomerDetector, ProviderDetector

__all__ = ["Engine"]


# One step of an event's plan: the detector's on_event, its key function, the adoptions of what it finds.
_Step = tuple[
    Callable[[Any, Incoming, float, float], list[Emission]],
    Callable[[Any], Hashable],
    tuple[tuple[Adoption, KeyedDetector], ...],
]


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
        for d in self._detectors:
            d.dirty = Untracked()  # all in memory, nothing persisted: no changed keys to list
        self.route()

    def route(self) -> None:
        """Build the per-type plan (and the timer list) from the routing table, binding each
        detector's methods once: `apply` and `advance` run once or twice per event. Call it
        again after replacing a detector's methods (the benchmark's dispatch-only engine)."""
        # The clock is advanced twice per event: skip the detectors that never set a timer.
        timed = [d for d in self._detectors if type(d)._fire is not Detector._fire]
        self._timed = tuple(timed)
        # (heap, fire): `advance` reads each heap's top (the contract's notify_at) and calls the
        # detector's `_fire` only when it is due (what `on_clock` would check again).
        self._timers = tuple((d._heap, d._fire) for d in timed)
        plan: dict[str, list[_Step]] = {}
        for route in ROUTES:
            det = self._by_name[route.detector]
            adopted = tuple((a, self._by_name[a.owner]) for a in ADOPTIONS if a.found_by == route.detector)
            for t in route.types:
                plan.setdefault(t, []).append((det.on_event, route.key, adopted))
        self._plan = {t: tuple(steps) for t, steps in plan.items()}
        # Most types go to one detector and nothing they find is adopted: their emissions are
        # the detector's own list, returned as it is.
        self._direct = {t: steps[0][:2] for t, steps in self._plan.items() if len(steps) == 1 and not steps[0][2]}

    def detector(self, name: DetectorName | str) -> KeyedDetector:
        """The detector of that name in the routing table."""
        return self._by_name[name]

    def apply(self, ev: Incoming, t: float, now: float) -> list[Emission]:
        """Apply one validated event whose event time is `t` (epoch seconds)."""
        kind = ev.type
        direct = self._direct.get(kind)
        if direct is not None:
            on_event, key = direct
            return on_event(key(ev), ev, t, now)
        out: list[Emission] = []
        for on_event, key, adopted in self._plan.get(kind, ()):
            emissions = on_event(key(ev), ev, t, now)
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
        # Called twice per event: ask each detector only when its next timer is due (the
        # contract's notify_at, read straight off the heap the base class keeps).
        out: list[Emission] = []
        for heap, fire in self._timers:
            if heap and heap[0][0] < now:
                out += fire(now)
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
