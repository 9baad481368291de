"""The blocklist as the detector sees it: entries keyed `customer:<id>` or `address:<fingerprint>`.

Live it mirrors the compacted `blocklist` topic; the backtest loads the same entries from a file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Blocklist"]


class Blocklist:
    """Entries by key; live, `lookup` reads the global table the `blocklist` topic feeds."""

    def __init__(self, lookup: Callable[[str], tuple[str, float | None] | None] | None = None) -> None:
        self._entries: dict[str, tuple[str, float | None]] = {}
        self._lookup = lookup or self._entries.get
        self._shared = lookup is not None

    def apply(self, key: str, value: dict[str, Any] | None, added_at: float | None = None) -> None:
        """One topic record: a value adds or replaces the entry, None removes it (a tombstone)."""
        if value is None:
            self._entries.pop(key, None)
        else:
            self._entries[key] = (str(value.get("reason", "")), added_at)

    def match(self, customer_id: str, fingerprint: str, t: float) -> tuple[str, str, str] | None:
        """(kind, key, reason) of the entry an order created at `t` hits; entries count from
        their `added_at`, so a backtest does not flag orders placed before the entry existed."""
        for kind, key in (("customer", f"customer:{customer_id}"), ("address", f"address:{fingerprint}")):
            entry = self._lookup(key)
            if entry is not None and (entry[1] is None or entry[1] <= t):
                return kind, key, entry[0]
        return None

    def may_match(self) -> bool:
        """False when no entry can match (no entries of its own, no shared table to look up):
        the caller may skip computing what `match` takes."""
        return self._shared or bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
