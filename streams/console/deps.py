"""The one dependencies object of the ops API and the console: every view reads what it needs
from the `Deps` attached to the aiohttp application (`request.app[DEPS]`), so a view can be read,
built and tested on its own, with no worker around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from orderwatch.review.service import AnalyticsService
    from orderwatch.streams.console.access import LoginLimiter, SessionStore, TokenRegistry
    from orderwatch.streams.console.ops import Ops, OrderPlace
    from orderwatch.streams.metrics import Metrics
    from orderwatch.streams.settings import Settings

__all__ = ["DEPS", "Deps", "WorkerState"]


class WorkerState(Protocol):
    """What the views ask of the worker they run in (`streams.probe.WorkerProbe`)."""

    async def readiness(self) -> tuple[list[str], int]:
        """(why this worker is not ready, partitions assigned): empty reasons when it is."""

    def locate(self, order_id: str) -> OrderPlace:
        """Where the order's detector state lives, and what it holds when it is here."""


@dataclass(frozen=True, slots=True)
class Deps:
    """Everything the ops API and the console use."""

    settings: Settings
    ops: Ops
    """The handlers' stores, service, dispatcher and clock, with what the views do with them."""
    tokens: TokenRegistry
    sessions: SessionStore
    limiter: LoginLimiter
    """Failed tokens and logins, per caller address."""
    metrics: Metrics
    worker: WorkerState
    analytics: AnalyticsService | None = None
    """The review's analytics over the case store (None: not offered)."""


DEPS = web.AppKey("orderwatch.deps", Deps)
"""Where the `Deps` sit on the aiohttp application."""
