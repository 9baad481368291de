"""ORDER_STUCK (docs/rules.md, its row): every event of a created, non-terminal order restarts
its episode; any later event resolves it."""

from __future__ import annotations

from typing import Any

from orderwatch.detectors.orders.core import Emitted, OrderCore
from orderwatch.detectors.orders.state import (
    CREATED,
    TERMINAL,
    Episode,
    OrderState,
)


class StuckRules(OrderCore):
    """The one rule every event of the order touches."""

    def _touch(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        """ORDER_STUCK: every event for the order resolves it and restarts its episode."""
        if not t > st.last_t:
            return ()  # only an event newer than the last one is "a later event"
        emitted = self._resolve(st, "ORDER_STUCK", ev, t, now) if st.opened else ()
        st.last_t = t
        if st.flags & CREATED and not st.flags & TERMINAL:
            thr = st.profile["ORDER_STUCK"]
            if thr is not None:
                self._start(st, "ORDER_STUCK", t + thr, ev.id)
        return emitted

    @staticmethod
    def _check_stuck(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        if st.flags & TERMINAL:
            return None
        return (
            f"Order {st.oid} has seen no event for {(st.profile['ORDER_STUCK'] or 0) / 86400:g} days.",
            {"order_status": st.status, "last_event_id": ep[2]},
        )
