"""The rocksdb:// store's local files: kept after a clean stop, discarded after a crash.

faust's RocksDB store writes a table change to the local database at once and sends it to the
table's changelog in the background; when the broker acknowledges a changelog record, it writes
that record's offset into the database (the persisted offset). A worker that dies without
stopping (kill -9, the OOM killer, a node lost) leaves behind local writes whose changelog
records were never sent, and changelog records whose offset was never persisted. At the next
start faust reads the changelog from the persisted offset over the local files. A key whose
newest local write never reached the changelog then gets its older value back from that read,
while a key whose newest write is not in the part read keeps it. The agent's ledger (which input
offsets were applied) and its orders' state are such keys: they stop agreeing, and an event the
ledger says was applied is missing from the state and never applied again. Seen in
`tests/integration/test_recovery.py` after a kill -9, about one run in six: an order's `paid`
status lost, and PAYMENT_NOT_CONFIRMED raised for it; an order's stock reservation lost, and
STOCK_NOT_RESERVED raised.

The changelog alone is always a prefix of the writes in the order they were made, which is what
memory:// restores from (a re-read event may be applied twice, never skipped). So, as Kafka
Streams does under exactly-once when a store has no checkpoint file (KAFKA-7192): a clean stop
leaves a marker beside the tables, and a start that finds local tables without it discards them;
faust then restores them from their changelogs, from the beginning."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Final

__all__ = ["CLEAN_STOP_MARKER", "LocalTables"]

log = logging.getLogger(__name__)

CLEAN_STOP_MARKER: Final = "orderwatch-clean-stop"


class LocalTables:
    """One worker's local table files under faust's `tabledir`. `claim()` before the worker
    starts; `stopped_cleanly()` once it has stopped and flushed its producer."""

    def __init__(self, tabledir: Path, store: str) -> None:
        self.tabledir = tabledir
        self.persistent = store.startswith("rocksdb://")
        self.outcome = "the store is in memory: no local table files"
        self.discarded = False
        """`claim` discarded local files (the last run did not stop cleanly)."""

    @property
    def _marker(self) -> Path:
        return self.tabledir / CLEAN_STOP_MARKER

    def databases(self) -> list[Path]:
        """The table databases faust keeps here, one directory per table partition."""
        if not self.tabledir.is_dir():
            return []
        return sorted(p for p in self.tabledir.iterdir() if p.is_dir() and p.name.endswith(".db"))

    def claim(self) -> bool:
        """Decide whether the local files can be trusted; discard them if not. Returns True when
        they were discarded. The marker goes either way: from now on only a clean stop leaves one."""
        if not self.persistent:
            return False
        found = self.databases()
        clean = self._marker.exists()
        self._marker.unlink(missing_ok=True)
        if not found:
            self.outcome = f"no local table files in {self.tabledir}: every table restores from its changelog"
            return False
        if clean:
            self.outcome = f"kept {len(found)} local table files (the last run stopped cleanly)"
            return False
        for db in found:
            shutil.rmtree(db)
        self.discarded = True
        self.outcome = (
            f"discarded {len(found)} local table files: the last run did not stop cleanly, so they may"
            " hold writes its changelogs never got; every table restores from its changelog"
        )
        return True

    def stopped_cleanly(self) -> None:
        """The worker stopped by itself: its producer flushed every changelog record."""
        if self.persistent and self.tabledir.is_dir():
            self._marker.touch()

    def report(self) -> None:
        """Log what `claim` decided: a warning when it discarded files."""
        if self.discarded:
            log.warning("local tables: %s", self.outcome)
        else:
            log.info("local tables: %s", self.outcome)
