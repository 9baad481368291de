"""After every rebalance, read again what the agents did not get of their owned input partitions:
faust can drop what it fetched while the rebalance was in progress (see `RewindAfterRebalance`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import faust

from orderwatch.streams.consumer_port import ConsumerPort

__all__ = ["RewindAfterRebalance", "read_again_from", "rewind_targets"]

log = logging.getLogger("orderwatch.streams")

TP = tuple[str, int]


def rewind_targets(
    actives: Iterable[TP], topics: Iterable[str], committed: Callable[[TP], int | None]
) -> tuple[dict[TP, int], list[TP]]:
    """Where each actively owned partition of `topics` must be read from again: its committed
    offset, 0 included (the offset aiokafka's `seek_to_committed` skips). Partitions without a
    commit are returned apart: they start at the earliest offset, as the consumer's reset does."""
    wanted = set(topics)
    targets: dict[TP, int] = {}
    unknown: list[TP] = []
    for tp in sorted(actives):
        if tp[0] not in wanted:
            continue
        offset = committed(tp)
        if offset is None:
            unknown.append(tp)
        else:
            targets[tp] = offset
    return targets, unknown


def read_again_from(start: int, delivered: tuple[int, int] | None) -> int:
    """The offset to read a partition from again, given where reading should have started
    (`start`, its committed offset) and the unbroken run of offsets (first, last) the agent got
    since the assignment: only what follows the run if it began at `start` or before, else
    everything from `start`. Re-reading less means fewer events forwarded twice downstream."""
    if delivered is not None and delivered[0] <= start:
        return max(start, delivered[1] + 1)
    return start


class RewindAfterRebalance(faust.Sensor):
    """Seeks the agents' input partitions back to the first offset their agents have not got
    once faust says a rebalance is over (stream flow resumed, recovery done).

    faust loses messages it fetched during a rebalance in two ways: while recovery pauses
    every partition, its fetch asks aiokafka for an empty set of partitions, which aiokafka
    reads as all of them, and the records of paused partitions are dropped (robinhood/faust
    PR #69 fixed this once; faust-streaming passes the live set again); and records queued
    between resuming the partitions and resuming the flow are cleared from the agents' queues.
    Its seek back to the committed offsets cannot repair either: it runs before the queues are
    cleared, and aiokafka's `seek_to_committed` skips partitions committed at offset 0
    (aio-libs/aiokafka issue #1003). A partition whose every message was fetched in that
    window (a replay read to its end in one fetch) then delivers nothing, ever: its clock
    stays held and the replay stalls. Seen in test_rebalance as a worker whose order topics
    were read to their end while its agent received none of it.

    A partition is read again from its committed offset, or from just after what its agent
    already got if that was one unbroken run from there (`read_again_from`, `delivered`: the
    clock's `delivered_run`). Re-reading is safe: the runtime drops what it already applied or
    buffered (Ledger, PartitionRuntime.waiting)."""

    def __init__(
        self,
        port: ConsumerPort,
        topics: Iterable[str],
        delivered: Callable[[TP], tuple[int, int] | None],
    ) -> None:
        super().__init__()
        self._port = port
        self._topics = frozenset(topics)
        self._delivered = delivered
        self._rewinds: set[asyncio.Future[dict[TP, int]]] = set()

    def on_rebalance_end(self, app: Any, state: Any) -> None:
        # Called synchronously at the very end of faust's recovery, after the flow resumed.
        task = asyncio.ensure_future(self.rewind(self._port.generation()))
        self._rewinds.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._rewinds.discard)

    def _superseded(self, generation: int) -> bool:
        return self._port.rebalancing() or self._port.generation() != generation

    async def rewind(self, generation: int) -> dict[TP, int]:
        """Seek every actively owned input partition back (unless another rebalance started
        since: it ends with its own rewind). Returns the offsets sought."""
        port = self._port
        if self._superseded(generation):
            return {}
        targets, unknown = rewind_targets(port.actives(), self._topics, port.committed)
        try:
            if unknown:
                targets.update(await port.earliest_offsets(unknown))
            if self._superseded(generation):
                return {}
            targets = {tp: read_again_from(off, self._delivered(tp)) for tp, off in targets.items()}
            await port.seek_wait(targets)
        except Exception as exc:  # a new rebalance took partitions away: it rewinds on its end
            log.warning("rewind after rebalance (generation %s) failed: %r", generation, exc)
            return {}
        log.info(
            "rebalance %s done: %s input partitions sought to what their agents have not got yet: %s",
            generation,
            len(targets),
            ", ".join(f"{t}[{p}]@{off}" for (t, p), off in sorted(targets.items())),
        )
        return targets
