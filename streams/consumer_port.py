"""The one place that reaches into faust's and aiokafka's consumer: every private attribute the
project reads or replaces, and the consumer calls the runtime makes, behind named methods.

faust-streaming has no public accessor for the committed offsets it sought to, nor a switch for
its drop-what-was-read filter; both are private attributes that a faust upgrade may rename. So
they live here only, pinned to the versions tested (`TESTED`): a worker on other versions logs a
warning at start-up naming both, and tests/streams/test_consumer_port.py checks each accessor
against the real faust objects of the installed version.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import faust
from faust.types import TP as FaustTP

__all__ = ["TESTED", "ConsumerPort", "committed_offset", "committed_offsets", "version_mismatch"]

log = logging.getLogger(__name__)

TP = tuple[str, int]

TESTED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}
"""The versions this port was written and tested against (constraints.txt pins the same)."""


def version_mismatch(installed: Mapping[str, str | None] | None = None) -> str | None:
    """A sentence naming the tested and installed versions when they differ, else None."""
    if installed is None:
        installed = {name: _installed(name) for name in TESTED}
    wrong = {name: installed.get(name) for name, want in TESTED.items() if installed.get(name) != want}
    if not wrong:
        return None
    found = ", ".join(f"{name} {got or 'missing'} (tested: {TESTED[name]})" for name, got in sorted(wrong.items()))
    return (
        f"streams.consumer_port reads private consumer attributes checked only against "
        f"{', '.join(f'{n} {v}' for n, v in TESTED.items())}; installed: {found}. "
        "Run tests/streams/test_consumer_port.py before trusting offsets and rebalances."
    )


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def committed_offset(consumer: Any, tp: TP) -> int | None:
    """The committed offset faust sought to (or last committed) for `tp`, None when it knows of
    no commit. faust stores offset 0 as None (its `perform_seek` maps falsy offsets to None), so
    a key present with None is a commit at 0, a missing key no commit."""
    offsets = getattr(consumer, "_committed_offset", None)
    if offsets is None:
        return None
    key = FaustTP(tp[0], tp[1])
    if key not in offsets:  # `in`, not get: faust's mapping is a defaultdict
        return None
    off = offsets[key]
    if off is None:
        return 0
    return int(off) if off >= 0 else None


def committed_offsets(consumer: Any, topics: Iterable[str]) -> dict[TP, int | None]:
    """Every committed offset faust holds for a partition of `topics` (raw: None is 0)."""
    wanted = frozenset(topics)
    offsets = getattr(consumer, "_committed_offset", None) or {}
    return {(tp.topic, tp.partition): off for tp, off in list(offsets.items()) if tp.topic in wanted}


class _NothingRead(dict):  # type: ignore[type-arg]
    """faust's per-partition 'read up to' offsets, always answering 'nothing read yet'."""

    def __getitem__(self, key: Any) -> None:
        return None


class ConsumerPort:
    """The consumer of one faust app, as the runtime needs it."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._start: dict[TP, int] = {}
        self._log_start: dict[TP, int] = {}
        mismatch = version_mismatch()
        if mismatch is not None:
            log.warning("%s", mismatch)

    def deliver_everything(self) -> None:
        """Make faust deliver every message it fetches, re-deliveries included.

        faust drops a fetched message at or below the last offset it handed to a stream. After a
        rebalance it resumes fetching before it seeks back to the committed offset (faust-streaming
        issue #216), and a batch fetched before the seek keeps moving that mark past the offsets
        the seek is about to re-read, so they are dropped: seen as a joining or restarted worker
        whose order topics started at offset 5, 6 or 18 while 0 was committed, and false
        exceptions for the events it never saw. The runtime dedupes by offset and event id anyway
        (Ledger, PartitionRuntime.waiting), so faust's own filter is switched off. Must run before
        the worker starts its fetcher (which binds the mapping's methods once)."""
        consumer: Any = self._app.consumer
        if not hasattr(consumer, "_read_offset"):
            msg = "faust's consumer has no _read_offset: this faust version is not the one tested (see TESTED)"
            raise RuntimeError(msg)
        consumer._read_offset = _NothingRead()

    def actives(self) -> frozenset[TP]:
        """The partitions this worker actively owns (empty before the first assignment)."""
        try:
            return frozenset((tp.topic, tp.partition) for tp in self._app.assignor.assigned_actives())
        except Exception:  # faust raises before its first assignment (no assignment object yet)
            return frozenset()

    def highwater(self, tp: TP) -> int | None:
        """The partition's highwater (offset of the next message to be written), None before the
        consumer has fetched it."""
        try:
            hw = self._app.consumer.highwater(FaustTP(tp[0], tp[1]))
        except Exception:  # consumer not started, or the partition unknown to it yet
            return None
        return int(hw) if hw is not None else None

    def committed(self, tp: TP) -> int | None:
        """See `committed_offset`."""
        try:
            consumer = self._app.consumer
        except Exception:  # the app has no consumer yet (not configured to run one)
            return None
        return committed_offset(consumer, tp)

    def start_from(self, committed: Mapping[TP, int], log_starts: Mapping[TP, int] | None = None) -> None:
        """What the worker read before faust started (streams.worker.run_worker): the group's
        committed offsets (every partition has one once pinned) and each partition's log start
        offset. `resume_offset` answers from them while faust does not know a commit yet."""
        self._start = dict(committed)
        self._log_start = dict(log_starts or {})

    def resume_offset(self, tp: TP) -> int | None:
        """Where reading `tp` must start, as far as known without asking the broker: the
        committed offset faust sought to, else the group's commit at start-up, else None; never
        below the partition's log start at start-up (what retention deleted cannot be read again,
        and a reader waiting for it would wait forever).

        faust resumes fetching before it seeks to the committed offsets (faust-streaming issue
        #216), so an agent's first message of a partition can come before faust knows its
        commit. The agent loop does not ask the broker then: faust runs such calls on its
        consumer thread, which a rebalance keeps busy while it waits for the agents, and the
        loop must not wait on that (a 4-minute stall once blamed on it turned out to be
        retention deleting a test's input topics, docs/operations.md; the hazard stays). The
        start-up commit may be older than a later member's: reading from it reads more again,
        which the runtime drops as applied, never less."""
        committed = self.committed(tp)
        if committed is None:
            committed = self._start.get(tp)
        if committed is None:
            return None
        return max(committed, self._log_start.get(tp, 0))

    async def seek(self, tp: TP, offset: int) -> None:
        await self._app.consumer.seek(FaustTP(tp[0], tp[1]), offset)

    async def earliest_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        consumer: Any = self._app.consumer
        earliest = await consumer.earliest_offsets(*(FaustTP(t, p) for t, p in tps))
        return {(tp.topic, tp.partition): int(off) for tp, off in earliest.items()}

    async def seek_wait(self, targets: Mapping[TP, int]) -> None:
        """Seek each partition and wait until the fetcher has moved there."""
        consumer: Any = self._app.consumer
        await consumer.seek_wait({FaustTP(t, p): off for (t, p), off in targets.items()})

    def generation(self) -> int:
        return int(self._app.consumer_generation_id)

    def rebalancing(self) -> bool:
        return bool(self._app.rebalancing)
