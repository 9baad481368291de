"""The handlers, the ops API and the console, composed into a worker app: the one place that
knows all three (`streams.app.create_app` calls `install_handlers` when given a handlers config).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from orderwatch.handlers.config import HandlersConfig
from orderwatch.review.service import AnalyticsService, StoreLoader
from orderwatch.streams.api import install_api
from orderwatch.streams.console.access import LoginLimiter, SessionStore, TokenRegistry, roles_of
from orderwatch.streams.console.deps import Deps
from orderwatch.streams.console.ops import Ops
from orderwatch.streams.console.pages import install_console
from orderwatch.streams.handling import HandlerRuntime, install_handler_agent
from orderwatch.streams.probe import WorkerProbe

if TYPE_CHECKING:
    from collections.abc import Callable

    from orderwatch.streams.host import Host

__all__ = ["EpochClock", "build_deps", "install_handlers"]

log = logging.getLogger("orderwatch.api")


class EpochClock:
    """The handlers' clock (event time in replays) as epoch seconds, for the analytics' default end."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now().timestamp()


def build_deps(host: Host, rt: HandlerRuntime) -> Deps:
    """The dependencies of the ops API and the console on this worker."""
    settings = host.settings
    tokens = TokenRegistry(settings)
    log.info("ops API tokens per role: %s", roles_of(tokens.principals()))
    ops = Ops(
        redis=rt.redis,
        store=rt.store,
        incidents=rt.incidents,
        service=rt.service,
        dispatcher=rt.dispatcher,
        now=rt.now,
    )
    return Deps(
        settings=settings,
        ops=ops,
        tokens=tokens,
        sessions=SessionStore(rt.redis, settings.redis_prefix, tokens, settings.session_minutes),
        limiter=LoginLimiter(rt.redis, settings.redis_prefix, settings.login_attempts, settings.login_window_seconds),
        metrics=host.metrics,
        worker=WorkerProbe(host, rt),
        analytics=AnalyticsService(StoreLoader(rt.redis, settings.redis_prefix), clock=EpochClock(rt.now)),
    )


def install_handlers(
    host: Host,
    config: HandlersConfig | None = None,
    *,
    detection: bool = True,
    tick_interval: float = 1.0,
    redis_max_connections: int = 32,
) -> HandlerRuntime:
    """Add the handlers to the app (the `order-exceptions` agent, the task that starts them and
    runs their timer), then the ops API and the console over the same stores."""
    rt = HandlerRuntime(
        host,
        config or HandlersConfig(),
        detection=detection,
        tick_interval=tick_interval,
        redis_max_connections=redis_max_connections,
    )
    install_handler_agent(host, rt)
    deps = build_deps(host, rt)
    web_app = cast(Any, host.app.web).web_app  # the aiohttp driver's application
    install_api(web_app, deps)
    install_console(web_app, deps)
    return rt
