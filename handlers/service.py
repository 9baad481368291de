"""The handler service: exception events in, case moves out to listeners (actions, notifications),
with incident grouping, escalation of overdue cases and the outbox of escalated events.

It outlasts Redis outages: a store call that cannot reach Redis is retried with capped backoff until
it works, so a Kafka consumer that commits after `handle` returns loses nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from orderwatch.errors import CaseNotFound, StoreUnavailable
from orderwatch.handlers.changes import CaseChange, CaseListener
from orderwatch.handlers.config import HandlersConfig
from orderwatch.handlers.incidents import IncidentStore, Membership
from orderwatch.handlers.metrics import NO_METRICS, HandlerMetrics
from orderwatch.handlers.store import CaseStore
from orderwatch.schemas.exception_event import ExceptionEvent

__all__ = ["HandlerService", "Sender"]

log = logging.getLogger(__name__)

T = TypeVar("T")

Sender = Callable[[bytes, bytes], Awaitable[None]]
"""Publishes one message (key, value) on `order-exceptions`; raises when it could not."""


_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class HandlerService:
    """Feeds exception events to the case store and hands every resulting move to the listeners,
    each move exactly once in normal operation and at least once across a crash."""

    def __init__(
        self,
        store: CaseStore,
        incidents: IncidentStore,
        config: HandlersConfig | None = None,
        metrics: HandlerMetrics | None = None,
        listeners: Iterable[CaseListener] = (),
        *,
        clock: Callable[[], datetime] = _utcnow,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        self.store = store
        self.incidents = incidents
        self.config = config or HandlersConfig()
        self.metrics = metrics if metrics is not None else NO_METRICS
        self.listeners: list[CaseListener] = list(listeners)
        self.clock = clock
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._outage_since: float | None = None

    def add_listener(self, listener: CaseListener) -> None:
        self.listeners.append(listener)

    # -- Redis outages -------------------------------------------------------------------------

    async def _retry(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` until it does not raise StoreUnavailable (or the task is cancelled)."""
        delay = self.backoff_initial
        while True:
            try:
                result = await call()
            except StoreUnavailable as exc:
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    log.warning("handlers: Redis unreachable (%s); retrying until it is back", exc)
                self.metrics.store_retried(operation)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            if self._outage_since is not None:
                lasted = time.monotonic() - self._outage_since
                self._outage_since = None
                log.warning("handlers: Redis reachable again after %.1f s", lasted)
                self.metrics.store_outage(lasted)
            return result

    # -- events in -----------------------------------------------------------------------------

    async def handle(
        self,
        event: ExceptionEvent,
        now: datetime | None = None,
        *,
        position: tuple[int, int] | None = None,
        escalate_overdue: bool = False,
    ) -> CaseChange | None:
        """Record the event's move and hand it to the listeners; None when it changed nothing.
        Returns only once everything is recorded: commit the consumed offset after it.

        `position` is the event's (partition, offset) on `order-exceptions`: the store remembers
        where a resolution was read (see `CaseStore.resolved_position`). With `escalate_overdue`
        (replays in event time), a resolution first escalates its case to every level that fell
        due before the resolution's time, so what escalates does not depend on when a timer ran."""
        at = now or self.clock()
        if escalate_overdue and event.type == "exception.resolved":
            await self.escalate_before(event.data.exception_id, event.time)
        change = await self._retry("ingest", lambda: self.store.ingest(event, at, position=position))
        if change is None:
            return None
        return await self._deliver(change, at)

    async def acknowledge(self, exception_id: str, who: str, note: str | None = None) -> CaseChange:
        """A person acknowledges a case (stops its escalation). CaseNotFound, TransitionError."""
        now = self.clock()
        change = await self.store.acknowledge(exception_id, who, note, now)
        return await self._deliver(change, now)

    async def resolve(self, exception_id: str, who: str, note: str | None = None) -> CaseChange:
        """A person resolves a case. CaseNotFound, TransitionError."""
        now = self.clock()
        change = await self.store.resolve(exception_id, who, note, now)
        return await self._deliver(change, now)

    # -- timers --------------------------------------------------------------------------------

    async def escalate_due(self, now: datetime | None = None, *, batch: int = 100) -> list[CaseChange]:
        """Escalate every case due at `now` (level 1 and 2 alike) and hand the moves to the listeners."""
        if not self.config.escalation.enabled:
            return []
        at = now or self.clock()
        done: list[CaseChange] = []
        while True:
            due = await self._retry("due_escalations", lambda: self.store.due_escalations(at, batch))
            moved = 0
            for exception_id, level in due:
                change = await self._retry("escalate", partial(self.store.escalate, exception_id, level, at))
                if change is None:
                    continue
                moved += 1
                self.metrics.escalated(change.level, change.data.severity)
                done.append(await self._deliver(change, at))
            # A case due for level 2 as well comes back in the next round; stop when nothing moved.
            if moved == 0:
                return done

    async def escalate_before(self, exception_id: str, until: datetime) -> list[CaseChange]:
        """Escalate one case to every level due at or before `until`, each at its due time (the
        event-time replay of what a timer would have done); nothing for an unknown case."""
        if not self.config.escalation.enabled:
            return []
        done: list[CaseChange] = []
        while True:
            due = await self._retry("next_escalation", lambda: self.store.next_escalation_at(exception_id))
            if due is None or due > until:
                return done
            try:
                case = await self._retry("read_case", lambda: self.store.get(exception_id))
            except CaseNotFound:
                return done
            change = await self._retry("escalate", partial(self.store.escalate, exception_id, case.level + 1, due))
            if change is None:
                return done
            self.metrics.escalated(change.level, change.data.severity)
            done.append(await self._deliver(change, due))

    async def superseded_resolution(self, event: ExceptionEvent, position: tuple[int, int]) -> ExceptionEvent | None:
        """For an `exception.escalated` read back at `position` (partition, offset) of the
        compacted `order-exceptions`: the resolution to publish again when its case is resolved
        and the escalation landed after the resolution (the handler escalated before it read the
        resolution), else None. Without it the topic's latest value would say escalated forever.
        The event is the resolution as read (same id, data and time); a person's resolution of a
        case the detector never resolved is not published."""
        if event.type != "exception.escalated":
            return None
        xid = event.data.exception_id
        try:
            case = await self._retry("read_case", lambda: self.store.get(xid))
        except CaseNotFound:
            return None
        if case.status != "resolved":
            return None
        where = await self._retry("resolved_position", lambda: self.store.resolved_position(xid))
        if where is None:
            return None
        partition, offset, at = where
        if partition == position[0] and offset > position[1]:
            return None  # the resolution is the later of the two: the topic says resolved
        data = case.to_data()
        return ExceptionEvent(id=f"{xid}:resolved", type="exception.resolved", time=at, subject=data.subject, data=data)

    async def flush_outbox(self, send: Sender, *, batch: int = 100) -> int:
        """Publish the outbox's escalated events with `send`, oldest first; how many were sent.
        A failing send stops the flush and keeps that event (and later ones) for the next flush."""
        sent_total = 0
        while True:
            pending = await self._retry("outbox_pending", lambda: self.store.outbox_pending(batch))
            sent: list[str] = []
            failed = False
            for msg in pending:
                try:
                    await send(msg.key, msg.value)
                except Exception as exc:  # the sender is the caller's code: any failure means "not sent"
                    log.warning("handlers: publishing %s failed, kept in the outbox: %s", msg.id, type(exc).__name__)
                    failed = True
                    break
                sent.append(msg.id)
            if sent:
                await self._retry("outbox_done", partial(self.store.outbox_done, sent))
            sent_total += len(sent)
            if failed or len(pending) < batch:
                return sent_total

    async def redeliver_pending(self, older_than: timedelta = timedelta(minutes=1), *, everything: bool = False) -> int:
        """Hand to the listeners again the changes recorded but never confirmed delivered (the process
        stopped in between); call it at start-up and now and then. Listeners dedupe.

        `everything`: every pending change whatever its time (at start-up, before this process
        recorded anything, all of them are left over; a replay's changes carry event times)."""
        now = self.clock()
        cutoff = _FAR_FUTURE if everything else now - older_than
        total = 0
        while True:
            changes = await self._retry("pending_changes", lambda: self.store.pending_changes(cutoff))
            for change in changes:
                await self._deliver(change, now)
            total += len(changes)
            if len(changes) < 100:
                return total

    # -- delivery ------------------------------------------------------------------------------

    async def _deliver(self, change: CaseChange, now: datetime) -> CaseChange:
        change = await self._with_incident(change, now)
        self.metrics.case_changed(change.kind, change.data.severity)
        for listener in self.listeners:
            await self._notify(listener, change)
        await self._retry("change_done", lambda: self.store.change_done(change))
        return change

    async def _with_incident(self, change: CaseChange, now: datetime) -> CaseChange:
        data = change.data
        member: Membership | None = None
        iid = change.incident_id
        paging = False
        if iid is None:
            if change.kind not in ("opened", "escalated") or change.status == "resolved":
                return change
            # A change handed out again after a crash may concern a case that has resolved since.
            member_open = data.status != "resolved"
            member = await self._retry("incident_join", lambda: self.incidents.join(data, now, member_open=member_open))
            # The change that joined is the one whose arrival reached the threshold.
            paging = member is not None and member.role == "paging"
            if member is not None and member.role == "paging":
                log.warning(
                    "handlers: incident %s opened: %s exceptions of %s share a cause",
                    member.incident_id,
                    member.count,
                    data.rule,
                )
                self.metrics.incident_opened(data.rule)
        else:
            if change.kind == "resolved":
                await self._retry(
                    "incident_member_resolved", lambda: self.incidents.member_resolved(iid, data.exception_id, now)
                )
            member = await self._retry("incident_member", lambda: self.incidents.member(iid, data.exception_id))
            # A re-delivered opened change pages again (the notifier sends the page once); the
            # member's later moves never do.
            paging = member is not None and member.role == "paging" and change.kind == "opened"
        if member is None:
            return change
        # An opened change carries the count when the case joined, so a re-delivered one reads the same.
        count = member.count_at_join if change.kind == "opened" else member.count
        return dataclasses.replace(
            change,
            incident_id=member.incident_id,
            incident_count=count,
            suppressed=member.suppressed,
            paging=paging,
        )

    async def _notify(self, listener: CaseListener, change: CaseChange) -> None:
        try:
            # A listener that needs Redis too waits out the outage like the store does.
            await self._retry("listener", lambda: listener(change))
        except asyncio.CancelledError:
            raise
        except Exception:  # one failing listener must not starve the others or block the stream
            log.exception(
                "handlers: listener %s failed on %s of case %s",
                getattr(listener, "__qualname__", type(listener).__name__),
                change.kind,
                change.data.exception_id,
            )
