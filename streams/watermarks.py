"""Watermarks across workers. An agent fed through a repartition topic is bounded by the upstream
partitions this worker owns through their progress (the clock sees them), but it cannot see those
another worker owns. So each owned upstream partition tells the repartition partitions other
workers own how far it has forwarded (and whether it is caught up), on the same producer as its
forwards, hence after them in every partition. A worker that owns every partition sends none, and
its clocks are exactly what they would be without them. Receiving is the clock's job
(`LagAwareClock.watermark`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from orderwatch.schemas.control import Watermark, encode
from orderwatch.streams.clock import LagAwareClock
from orderwatch.streams.forwarding import Forwarder
from orderwatch.streams.outputs import Outputs

__all__ = ["HEARTBEAT", "WatermarkSender"]

TP = tuple[str, int]

HEARTBEAT = 1.0
"""Seconds: an unchanged watermark is sent again this often."""


class WatermarkSender:
    """`send()` (on a timer) sends each changed watermark, and each unchanged one every HEARTBEAT."""

    def __init__(
        self,
        outputs: Outputs,
        clock: LagAwareClock,
        forwarder: Forwarder,
        actives: Callable[[], frozenset[TP]],
        feeds: dict[str, list[str]],
        partitions: int,
        wall: Callable[[], float] = time.monotonic,
        aligned: Callable[[], float] | None = None,
    ) -> None:
        self._outputs = outputs
        self._clock = clock
        self._forwarder = forwarder
        self._actives = actives
        self.feeds = feeds
        """Upstream topic -> the repartition topics its events are forwarded to."""
        self._partitions = partitions
        self._wall = wall
        self._aligned = aligned
        """Event mode: the worker's arrival clock (streams.arrivals), which caps every watermark."""
        self._sent: dict[tuple[str, int, str, int], tuple[float, bool, float]] = {}

    async def send(self) -> int:
        """Returns how many watermarks were sent."""
        owned = self._actives()
        wall = self._wall()
        # A partition's largest event time says nothing of a record of it still to come that
        # was delivered late (30 minutes, in the simulated streams): the receiving agent took
        # it for late. This worker's own agents wait for it at the arrival clock (the
        # backtest's), so the watermark says no more than that clock either (bench_scaleout:
        # order.created forwarded 29 minutes behind the other worker's watermark).
        cap = self._aligned() if self._aligned is not None else float("inf")
        sent = 0
        for upstream, targets in self.feeds.items():
            for q in range(self._partitions):
                if (upstream, q) not in owned:
                    continue
                progress = self._clock.progress.get((upstream, q))
                t = min(progress.max_event_time if progress is not None else float("-inf"), cap)
                idle = not self._clock.lagging((upstream, q))
                mark = Watermark(
                    source_topic=upstream,
                    source_partition=q,
                    forwarded_upto=t if t > float("-inf") else None,
                    caught_up=idle,
                )
                headers, value = encode(mark)
                for dest in targets:
                    for p in range(self._partitions):
                        if (dest, p) in owned:
                            continue  # our own agent reads the source's progress directly
                        key = (upstream, q, dest, p)
                        last = self._sent.get(key)
                        if last is not None and last[:2] == (t, idle) and wall - last[2] < HEARTBEAT:
                            continue
                        self._sent[key] = (t, idle, wall)
                        # Stamped with the upstream partition's arrival time, the domain the
                        # receiving agent merges its inputs in (streams.forwarding).
                        arrival = self._forwarder.arrival.get((upstream, q))
                        await self._outputs.send(dest, None, value, partition=p, headers=headers, timestamp=arrival)
                        sent += 1
        return sent

    def reset(self) -> None:
        """Partitions moved: the receivers forget what they had, so tell them again."""
        self._sent.clear()
