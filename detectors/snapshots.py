"""The stored form of detector state: versioned, with rule identifiers from a frozen table.

Every snapshot (a changelog / RocksDB value, one key of one detector) is a compact JSON list
whose first element is the format marker (`"v1"`). Format 0, written before snapshots were
versioned, is the same kind of list without a marker; its first element is never a string,
so `decode` tells the two apart and the detectors restore both.

Deadline episodes name their rule by a number from `RULE_IDS`, a table frozen here: a number,
once given, never changes meaning, and a new rule is appended with the next number. Format 0
took the numbers from the position of each rule in the catalog, so inserting a rule there
would have remapped every stored episode; `RULE_IDS` starts as exactly that numbering, frozen,
so format-0 episodes read with the same table.
"""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any, Final

__all__ = ["CURRENT", "GC", "RULE_BY_ID", "RULE_IDS", "decode", "encode"]

CURRENT: Final = 1
_MARK: Final = f"v{CURRENT}"

GC: Final = "_GC"
"""Internal episode of the order detector: drop the state of a finished order."""

RULE_IDS: Final = MappingProxyType(
    {
        # Append only. Never renumber, never reuse a number (stored state names rules by it).
        GC: 0,
        "PAYMENT_NOT_CONFIRMED": 1,
        "PAYMENT_TIMEOUT": 2,
        "DUPLICATE_PAYMENT": 3,
        "PAYMENT_AMOUNT_MISMATCH": 4,
        "PAYMENT_WITHOUT_ORDER": 5,
        "PAYMENT_FAILURE_SPIKE": 6,
        "STOCK_OVERSOLD": 7,
        "STOCK_RESERVATION_FAILED": 8,
        "STOCK_NOT_RESERVED": 9,
        "SHIPMENT_NOT_CREATED": 10,
        "TRACKING_STALLED": 11,
        "DELIVERY_OVERDUE": 12,
        "DELIVERY_FAILED": 13,
        "INVALID_SHIPPING_INFO": 14,
        "ADDRESS_CLUSTER": 15,
        "NEW_ACCOUNT_BURST": 16,
        "BLOCKLISTED_ORDER": 17,
        "DUPLICATE_ORDER": 18,
        "CANCEL_NOT_PROCESSED": 19,
        "SHIPPED_AFTER_CANCEL": 20,
        "REFUND_OVERDUE": 21,
        "REFUND_FAILED": 22,
        "REFUND_EXCEEDS_PAYMENT": 23,
        "ORDER_STUCK": 24,
    }
)
RULE_BY_ID: Final = MappingProxyType({n: code for code, n in RULE_IDS.items()})


def encode(fields: list[Any]) -> bytes:
    """The current format: the marker, then the detector's fields."""
    return json.dumps([_MARK, *fields], separators=(",", ":")).encode()


def decode(blob: bytes) -> tuple[int, list[Any]]:
    """(format, fields) of a stored snapshot, format 0 (no marker) included."""
    doc = json.loads(blob)
    if not isinstance(doc, list):
        msg = f"snapshot: expected a JSON list, got {type(doc).__name__}"
        raise ValueError(msg)
    if doc and isinstance(doc[0], str):
        mark = doc[0]
        if mark != _MARK:
            msg = f"snapshot format {mark!r} is newer than this code reads ({_MARK!r}): upgrade orderwatch"
            raise ValueError(msg)
        return CURRENT, doc[1:]
    return 0, doc
