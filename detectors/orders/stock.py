"""Order-side stock rules (docs/rules.md rows STOCK_RESERVATION_FAILED and STOCK_NOT_RESERVED):
reservations of one order. STOCK_OVERSOLD is per (sku, warehouse): detectors/stock.py."""

from __future__ import annotations

from typing import Any

from orderwatch.detectors.orders.core import Emitted, OrderCore
from orderwatch.detectors.orders.state import (
    RESERVATION_SEEN,
    Episode,
    OrderState,
)


class OrderStockRules(OrderCore):
    """inventory.reserved / reservation_failed for one order."""

    def _on_reserved(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        st.flags |= RESERVATION_SEEN
        self._end(st, "STOCK_NOT_RESERVED")
        return self._resolve(st, "STOCK_NOT_RESERVED", ev, t, now) + self._resolve(
            st, "STOCK_RESERVATION_FAILED", ev, t, now, ref=ev.data.sku
        )

    def _on_reservation_failed(self, st: OrderState, ev: Any, t: float, now: float) -> Emitted:
        d = ev.data
        st.flags |= RESERVATION_SEEN
        self._end(st, "STOCK_NOT_RESERVED")
        return self._open(
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
            ref=d.sku,
        )

    @staticmethod
    def _check_not_reserved(st: OrderState, ep: Episode) -> tuple[str, dict[str, Any]] | None:
        if st.flags & RESERVATION_SEEN:
            return None
        return (f"Order {st.oid} is paid but no stock was reserved for it.", {})
