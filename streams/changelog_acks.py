"""Whether the broker acknowledged every table changelog record a worker wrote: a faust sensor,
the evidence the rocksdb:// clean-stop marker needs (streams.local_tables)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import faust

__all__ = ["ChangelogAcks", "ChangelogTally"]


@dataclass(frozen=True, slots=True)
class ChangelogTally:
    """A worker's table changelog records so far."""

    written: int
    """Table writes (sets and deletes): faust sends one changelog record for each."""
    acknowledged: int
    """Changelog records the broker acknowledged."""
    failed: int
    """Changelog records aiokafka gave up on (an error, or their batch expired unsent)."""

    @property
    def complete(self) -> bool:
        """Every record written reached the changelog: the local files hold nothing it lacks."""
        return self.failed == 0 and self.acknowledged == self.written

    def __str__(self) -> str:
        return (
            f"the broker acknowledged {self.acknowledged} of {self.written} changelog records"
            f" ({self.failed} failed, {max(0, self.written - self.acknowledged - self.failed)} never answered)"
        )


class ChangelogAcks(faust.Sensor):
    """Counts table writes and the broker's answers to their changelog records.

    Counted from the writes (faust's `on_table_set`/`on_table_del`, one changelog record each,
    faust/tables/table.py), not from the sends: a record still in faust's ProducerBuffer at the
    stop, or taken from it but not yet handed to aiokafka (publish_message yields before
    `on_send_initiated`), is never seen as sent, and it is missing from the changelog all the
    same. Only `changelogs` (the tables' changelog topic names) count among the sends."""

    def __init__(self, changelogs: Iterable[str]) -> None:
        super().__init__()
        self.changelogs = frozenset(changelogs)
        self.written = 0
        self.acknowledged = 0
        self.failed = 0

    def tally(self) -> ChangelogTally:
        return ChangelogTally(self.written, self.acknowledged, self.failed)

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        self.written += 1

    def on_table_del(self, table: Any, key: Any) -> None:
        self.written += 1

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> Any:
        # The state faust hands back to on_send_completed/on_send_error: is it a changelog record.
        return topic in self.changelogs

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        if state is True:
            self.acknowledged += 1

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        if state is True:
            self.failed += 1
