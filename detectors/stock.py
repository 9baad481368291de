"""STOCK_OVERSOLD: per (sku, warehouse), the last level snapshot plus the reservations and
releases after it; oversold while reserved exceeds on hand. Keys are `sku + "\\x1f" + warehouse`.
"""

from __future__ import annotations

from orderwatch.detectors.base import Detector, Incoming
from orderwatch.detectors.records import Emission, ExceptionRecord
from orderwatch.detectors.snapshots import decode, encode

__all__ = ["StockDetector", "StockState"]


class StockState:
    __slots__ = ("on_hand", "record", "reserved", "wake")

    def __init__(self) -> None:
        self.on_hand: int | None = None  # unknown until the first snapshot
        self.reserved = 0
        self.record: ExceptionRecord | None = None
        self.wake: float | None = None


class StockDetector(Detector[str, StockState]):
    name = "inventory"

    def on_event(self, key: str, ev: Incoming, t: float, now: float) -> list[Emission]:
        if not self.config.enabled["STOCK_OVERSOLD"]:
            return []
        d = ev.data
        self.dirty.add(key)
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = StockState()
        kind = ev.type
        if kind == "inventory.level_reported":
            st.on_hand, st.reserved = d.on_hand, d.reserved
        elif kind == "inventory.reserved":
            st.reserved += d.quantity
        elif kind == "inventory.released":
            st.reserved = max(0, st.reserved - d.quantity)
        else:
            return []
        if st.on_hand is None:
            return []
        out: list[Emission] = []
        if st.reserved > st.on_hand and st.record is None:
            st.record = self._record(
                "STOCK_OVERSOLD",
                d.sku,
                ev.id,
                None,
                now,
                t,
                f"SKU {d.sku} is oversold in warehouse {d.warehouse_id}: {st.reserved} reserved, {st.on_hand} on hand.",
                {
                    "event_id": ev.id,
                    "sku": d.sku,
                    "warehouse_id": d.warehouse_id,
                    "on_hand": st.on_hand,
                    "reserved": st.reserved,
                    "order_id": getattr(d, "order_id", None),
                },
            )
            self._emit(out, "opened", st.record)
        elif st.reserved <= st.on_hand and st.record is not None:
            st.record.resolve(ev.id, t, now)
            self._emit(out, "resolved", st.record)
            st.record = None
        return out

    def snapshot(self, key: str) -> bytes:
        st = self.states[key]
        return encode([st.on_hand, st.reserved, st.record.to_dict() if st.record else None])

    def restore(self, key: str, blob: bytes) -> None:
        _, (on_hand, reserved, record) = decode(blob)  # format 0 has the same fields
        st = self.states[key] = StockState()
        st.on_hand, st.reserved = on_hand, reserved
        st.record = ExceptionRecord.from_dict(record) if record else None

    def open_exceptions(self) -> int:
        return sum(1 for st in self.states.values() if st.record is not None)
