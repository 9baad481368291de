"""The detector's own web views (/metrics, /clock, /health, /ready) and the stall check, over an
explicit `Orderwatch` (what create_app built). The ops API of the handlers is streams.api."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from prometheus_client import generate_latest

from orderwatch.detectors.records import iso
from orderwatch.streams.agents import AgentClocks
from orderwatch.streams.clock import LagAwareClock
from orderwatch.streams.console.access import TokenRegistry, bearer_token
from orderwatch.streams.consumer_port import ConsumerPort
from orderwatch.streams.driver import AgentDriver
from orderwatch.streams.health import StallWatch
from orderwatch.streams.metrics import Metrics
from orderwatch.streams.settings import Settings

__all__ = ["STALL_CHECK_SECONDS", "RuntimeViews", "lags", "page", "stalled"]

TP = tuple[str, int]

STALL_CHECK_SECONDS = 5.0
"""How often the input partitions are checked for stalled commits."""


class Orderwatch(Protocol):
    """What the views read of streams.app.Orderwatch (a protocol: app imports this module)."""

    settings: Settings
    metrics: Metrics
    clock: LagAwareClock
    agents: dict[str, AgentDriver]
    port: ConsumerPort
    clocks: AgentClocks
    detection: bool
    stalls: StallWatch
    stalled: list[TP]

    @property
    def actives(self) -> Callable[[], frozenset[TP]]: ...

    def problems(self) -> list[str]: ...

    def readiness(self, *, detection: bool = True) -> tuple[list[str], int]: ...


def lags(clock: LagAwareClock, actives: frozenset[TP], inputs: set[str]) -> list[tuple[TP, int]]:
    """Messages behind the highwater per actively owned partition, from what the agents consumed
    (the clock's progress) or, before the first message, the committed offset."""
    out = []
    for tp in sorted(actives):
        if tp[0] not in inputs:
            continue  # ticks, changelogs, the handlers' topic: not what the agents consume
        hw = clock.highwater(tp)
        if hw is None:
            continue
        p = clock.progress.get(tp)
        position = p.offset + 1 if p is not None and p.offset >= 0 else (clock.committed(tp) or 0)
        out.append((tp, max(0, hw - position)))
    return out


def stalled(ow: Orderwatch, inputs: set[str]) -> list[TP]:
    """The owned input partitions whose commits stopped although messages wait (StallWatch), each
    explained or not by an event the agent holds on purpose (the reorder buffer)."""
    out = []
    actives = ow.actives()
    for driver in ow.agents.values():
        for tp in sorted(actives):
            topic, partition = tp
            if topic not in driver.inputs or topic not in inputs:
                continue
            rt = driver.runtimes.get(partition)
            committed = ow.port.committed(tp)
            explained = rt is not None and committed is not None and rt.waiting(f"{topic}:{partition}", committed)
            merge = driver.merges.get(partition)
            if merge is not None and committed is not None and merge.holds(topic, committed):
                explained = True  # held by the record-timestamp merge, waiting for another input
            if ow.stalls.check(tp, committed, ow.clock.highwater(tp), explained):
                out.append(tp)
            elif tp in ow.stalled:
                ow.metrics.partition_stalled.labels(topic, str(partition)).set(0)
    return out


def page(handler: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    """A plain function for faust's `app.page`: faust makes the function a method of its View
    class, so a bound method would be called without the view (and miss the request)."""

    async def view(web: Any, request: Any) -> Any:
        return await handler(web, request)

    view.__name__ = view.__qualname__ = getattr(handler, "__name__", "view")
    return view


class RuntimeViews:
    def __init__(self, ow: Orderwatch, inputs: set[str]) -> None:
        self.ow = ow
        self._inputs = inputs
        self._tokens = TokenRegistry(ow.settings)

    async def check_stalls(self) -> None:
        ow = self.ow
        ow.stalled = stalled(ow, self._inputs)
        for topic, partition in ow.stalled:
            ow.metrics.partition_stalled.labels(topic, str(partition)).set(1)

    async def metrics(self, web: Any, request: Any) -> Any:
        ow = self.ow
        metrics = ow.metrics
        metrics.report_partitions(lags(ow.clock, ow.actives(), self._inputs), ow.stalled)
        for name, driver in ow.agents.items():
            rts = list(driver.runtimes.values())
            metrics.deadline_queue.labels(name).set(sum(rt.detector.timers() for rt in rts))
            metrics.buffered.labels(name).set(sum(rt.buffered for rt in rts))
            metrics.open_exceptions.labels(name).set(sum(rt.detector.open_exceptions() for rt in rts))
            clocks = [ow.clocks.now(name, p) for p in list(driver.runtimes)]
            if clocks and min(clocks) > 0:
                metrics.event_clock.labels(name).set(min(clocks))
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain; version=0.0.4")

    async def clock(self, web: Any, request: Any) -> Any:
        # For operators: why a partition's deadlines have not fired yet (which input holds it).
        # Only /health, /ready and /metrics are open: any role's token reads this (no Redis
        # here, so no failed-token limiter: the tokens are long random secrets).
        if not self._tokens.configured:
            return web.json({"error": "no tokens configured: /clock is closed"}, status=503)
        if self._tokens.lookup(bearer_token(request.headers)) is None:
            body = {"error": "a valid bearer token is required (Authorization: Bearer <token>)"}
            return web.json(body, status=401, headers={"WWW-Authenticate": "Bearer"})
        return web.json(self.clock_doc())

    def clock_doc(self) -> dict[str, Any]:
        ow = self.ow
        clock = ow.clock
        doc: dict[str, Any] = {
            "mode": clock.mode,
            "max_event_time": iso(clock.max_event_time) if clock.max_event_time > 0 else None,
            "agents": {},
        }
        for name, driver in ow.agents.items():
            parts = {}
            for partition, rt in sorted(driver.runtimes.items()):
                tps, frozen = ow.clocks.tps(name, partition)
                now = ow.clocks.now(name, partition)
                marks = {src: mark for dest in frozen for src, mark in clock.foreign.get(dest, {}).items()}
                merge = driver.merges.get(partition)
                parts[str(partition)] = {
                    "clock": iso(now) if now > 0 else None,
                    "buffered": rt.buffered,
                    "merging": merge.held if merge is not None else 0,
                    # upstream partitions other workers own: how far they say they have forwarded
                    "watermarks": {
                        f"{u}[{q}]": {"forwarded_upto": iso(t) if t > 0 else None, "caught_up": idle}
                        for (u, q), (t, idle) in sorted(marks.items())
                    },
                    "holding": [
                        {
                            "tp": f"{t}[{p}]",
                            "pending": clock.pending.get((t, p), 0),
                            "forwarded_upto": clock.forwarded.get((t, p)),
                            "highwater": clock.highwater((t, p)),
                            "offset": clock.progress[(t, p)].offset if (t, p) in clock.progress else None,
                        }
                        for t, p in tps + frozen
                        if clock.lagging((t, p))
                    ],
                }
            doc["agents"][name] = parts
        return doc

    async def health(self, web: Any, request: Any) -> Any:
        problems = self.ow.problems()
        if problems:
            return web.json({"status": "unhealthy", "problems": problems}, status=503)
        return web.json({"status": "ok"})

    async def ready(self, web: Any, request: Any) -> Any:
        reasons, assigned = self.ow.readiness(detection=self.ow.detection)
        if reasons:
            return web.json({"status": "not ready", "reasons": reasons}, status=503)
        return web.json({"status": "ready", "partitions": assigned})
