"""`orderwatch worker` with the levers of issue 10 applied in-process: how bench_runtime.py
measures a change to the runtime without editing the runtime's files.

    BENCH_LEVERS=flush=0.2:5000,metrics-cache python bench/worker_shim.py worker --clock event --no-handlers

Levers (comma separated in BENCH_LEVERS; each is a patch the runtime could adopt, written out in
bench/results/README.md):

    flush=SECONDS:EVERY  streams.driver.FLUSH_SECONDS / FLUSH_EVERY (the driver reads them per event)
    metrics-cache        prometheus_client's `labels()` answers from a per-metric dict of children
    no-monitor           faust's Monitor sensor (per-message bookkeeping nothing here reads) removed
    uvloop               uvloop's event loop policy (not a dependency: `.venv/bin/pip install uvloop`)
    eager                asyncio.eager_task_factory on every new loop (Python 3.12+)
    fold-heap            streams.runtime.Ledger folds applied upstream offsets through a min-heap
                         per upstream partition instead of rebuilding the set of those above on
                         every fold (which is linear in that set, so quadratic over a replay)
    tick-on-move         streams.ticks.Ticker sends a 20 ms merge tick to a partition only when what
                         its merge waits for may have moved since the last one it got (the arrival
                         clock's `safe`), and otherwise at the full interval (100 ms), which still
                         bounds the idle wait's expiry and the deadlines
    tick-every-merge     streams.ticks.Ticker as before it skipped busy partitions: a 20 ms merge
                         tick to every partition whose merge holds records (the "before" of that
                         change, for A/B runs; the `tick-idle` lever of 2026-11-27, adopted)
    known-lag            a repartition input with lag is not waited for when every record it holds
                         beyond what its agent took is a forward of this worker's, whose stamps
                         `in_flight` already checks (counted: highwater against forwards not taken)
    producer-buffer=N    faust's ProducerBuffer.max_messages (100): the table writes a conductor lets
                         queue before it stops delivering messages ("producer buffer full")
    conf=KEY:INT         one faust setting, e.g. consumer_max_fetch_size:65536,
                         stream_buffer_maxsize:512, broker_max_poll_records:500, producer_linger
                         (seconds, as conf=producer_linger:0 only takes integers: use linger=)
    linger=SECONDS       faust's producer_linger (aiokafka linger_ms)
    pump-once            streams.driver.AgentDriver._pump as before cdc3167: one pass over the other
                         partitions' merges per message (the fix's "before", for A/B runs)
    gc=N                 the cyclic collector's first generation at N allocations (CPython: 700), as
                         `orderwatch backtest` runs since 626479c
    no-safe-memo         streams.arrivals.ArrivalClock.safe recomputed on every call, as before it
                         answered from its last value until a record moved or a refresh (the
                         "before" of that change, for A/B runs)
    arrivals-memo=MS     streams.arrivals.ArrivalClock.safe answered from its last value while no
                         record was received, decided or forgotten, no partition observed, and
                         less than MS milliseconds passed (the highwaters it reads are only as
                         fresh as the last fetch anyway)

bench_runtime.py --profile samples it from outside with py-spy (every thread, idle excluded).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _flush(spec: str) -> None:
    from orderwatch.streams import driver

    seconds, _, every = spec.partition(":")
    driver.FLUSH_SECONDS = float(seconds)  # type: ignore[misc]
    if every:
        driver.FLUSH_EVERY = int(every)  # type: ignore[misc]


def _metrics_cache() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    original = MetricWrapperBase.labels

    def labels(self: Any, *values: Any, **kw: Any) -> Any:
        if kw:
            return original(self, *values, **kw)
        cache = self.__dict__.get("_bench_children")
        if cache is None:
            cache = self.__dict__["_bench_children"] = {}
        child = cache.get(values)
        if child is None:
            child = cache[values] = original(self, *values)
        return child

    MetricWrapperBase.labels = labels  # type: ignore[method-assign]


def _no_monitor() -> None:
    import faust

    original = faust.App.on_init_dependencies

    def on_init_dependencies(self: Any) -> Any:
        deps = original(self)
        self.sensors.remove(self.monitor)
        return deps

    faust.App.on_init_dependencies = on_init_dependencies  # type: ignore[method-assign]


def _no_safe_memo() -> None:
    from orderwatch.streams.arrivals import ArrivalClock

    safe0 = ArrivalClock.safe

    def safe(self: Any) -> float:
        self._memo = None
        return safe0(self)

    ArrivalClock.safe = safe  # type: ignore[method-assign]


def _tick_every_merge() -> None:
    from orderwatch.streams.ticks import Ticker

    async def tick(self: Any) -> int:
        sent = 0
        self._calls += 1
        full = self._calls % self._every == 0
        for driver in self._drivers.values():
            for partition, rt in list(driver.runtimes.items()):
                merge = driver.merges.get(partition)
                if (merge is not None and merge.waiting()) or (full and driver.wants_tick(partition, rt)):
                    await self._outputs.send(
                        driver.spec.ticks, None, self._value, partition=partition, headers=self._headers
                    )
                    sent += 1
        return sent

    Ticker.tick = tick  # type: ignore[method-assign]


def _known_lag() -> None:
    from orderwatch.streams import driver
    from orderwatch.streams.clock import LagAwareClock

    sent0, delivered0 = LagAwareClock.sent, LagAwareClock.delivered

    def unacked(self: Any, tp: Any) -> list[int]:
        # [stamped, unstamped] forwards sent to tp, not acked by the broker yet
        return self.__dict__.setdefault("_bench_unacked", {}).setdefault(tp, [0, 0])  # type: ignore[no-any-return]

    def sent(self: Any, tp: Any, stamp_ms: Any = None) -> None:
        sent0(self, tp, stamp_ms)
        unacked(self, tp)[0 if stamp_ms is not None else 1] += 1

    def delivered(self: Any, tp: Any, offset: Any, stamp_ms: Any = None) -> None:
        delivered0(self, tp, offset, stamp_ms)
        c = unacked(self, tp)
        i = 0 if stamp_ms is not None else 1
        c[i] = max(0, c[i] - 1)

    def lag_known(self: Any, tp: Any) -> bool:
        hw = self.highwater(tp)
        if tp in self.holes or tp not in self.taken or unacked(self, tp)[1] or hw is None:
            return False
        if hw - 1 < self.forwarded.get(tp, -1):
            return False  # a highwater older than our own last forward
        stamps = self.flying.get(tp)
        ours = (sum(stamps._count.values()) if stamps is not None else 0) - unacked(self, tp)[0]
        return bool(hw - 1 - self.taken[tp] <= ours)

    lagging0 = driver._Lagging.__call__

    def lagging(self: Any, topic: str) -> bool:
        if not lagging0(self, topic):
            return False
        repartition = topic.endswith("-order-inbox") or "-by-" in topic
        return not (repartition and lag_known(self._clock, (topic, self._partition)))

    LagAwareClock.sent = sent  # type: ignore[method-assign]
    LagAwareClock.delivered = delivered  # type: ignore[method-assign]
    driver._Lagging.__call__ = lagging  # type: ignore[method-assign]


def _faust_setting(key: str, value: float) -> None:
    import faust

    original = faust.App.__init__

    def init(self: Any, *args: Any, **kw: Any) -> None:
        kw[key] = value
        original(self, *args, **kw)

    faust.App.__init__ = init  # type: ignore[method-assign]


def _arrivals_memo(ms: float) -> None:
    import time

    from orderwatch.streams.arrivals import ArrivalClock
    from orderwatch.streams.clock import LagAwareClock

    state = {"version": 0}
    safe0 = ArrivalClock.safe

    def bump(f: Any) -> Any:
        def wrapped(self: Any, *a: Any, **k: Any) -> Any:
            state["version"] += 1
            return f(self, *a, **k)

        return wrapped

    for cls, names in ((ArrivalClock, ("received", "done", "forget")), (LagAwareClock, ("observe", "hole", "forget"))):
        for name in names:
            setattr(cls, name, bump(getattr(cls, name)))

    def safe(self: Any) -> float:
        memo = self.__dict__.get("_bench_memo")
        now = time.monotonic()
        if memo is not None and memo[0] == state["version"] and now - memo[1] < ms / 1000:
            return memo[2]  # type: ignore[no-any-return]
        value = safe0(self)
        self.__dict__["_bench_memo"] = (state["version"], now, value)
        return value

    ArrivalClock.safe = safe  # type: ignore[method-assign]


def _pump_once() -> None:
    from orderwatch.streams.driver import AgentDriver

    async def pump(self: Any, stream: Any) -> None:
        arrivals = self._arrivals
        if arrivals is None or len(self.merges) < 2:
            return
        safe = arrivals.safe()
        if safe <= self._pumped_at:
            return
        self._pumped_at = safe
        for other, merge in list(self.merges.items()):
            rt = self.runtimes.get(other)
            if merge.held and rt is not None:
                self._batches[other].offered += await self._offer_released(rt, stream, other, merge)

    AgentDriver._pump = pump  # type: ignore[method-assign]


def _uvloop() -> None:
    import uvloop

    uvloop.install()


def _eager() -> None:
    import asyncio

    factory = asyncio.eager_task_factory  # type: ignore[attr-defined]
    base = type(asyncio.get_event_loop_policy())

    class EagerPolicy(base):  # type: ignore[misc,valid-type]
        def new_event_loop(self) -> Any:
            loop = super().new_event_loop()
            loop.set_task_factory(factory)
            return loop

    asyncio.set_event_loop_policy(EagerPolicy())


def _fold_heap() -> None:
    import heapq

    from orderwatch.streams.runtime import Ledger

    def heaps(self: Any) -> dict[str, list[int]]:
        h = self.__dict__.get("_bench_heaps")
        if h is None:
            h = self.__dict__["_bench_heaps"] = {}
        return h  # type: ignore[no-any-return]

    def mark_upstream(self: Any, source: tuple[str, int]) -> None:
        key, offset = source
        if offset > self.src.get(key, -1):
            above = self.src_above.setdefault(key, set())
            if offset not in above:
                above.add(offset)
                heap = heaps(self).get(key)
                if heap is not None:
                    heapq.heappush(heap, offset)

    def upstream_done(self: Any, source: tuple[str, int]) -> None:
        key, offset = source
        if offset > self.src.get(key, -1):
            self.src[key] = offset
            above = self.src_above.get(key)
            if not above:
                return
            heap = heaps(self).get(key)
            if heap is None:
                heap = heaps(self)[key] = sorted(above)  # a sorted list is a heap
            while heap and heap[0] <= offset:
                above.discard(heapq.heappop(heap))
            if not above:
                self.src_above.pop(key, None)
                heaps(self).pop(key, None)

    Ledger.mark_upstream = mark_upstream  # type: ignore[method-assign]
    Ledger.upstream_done = upstream_done  # type: ignore[method-assign]


def _tick_on_move() -> None:
    from orderwatch.streams.ticks import Ticker

    def tick(self: Any) -> Any:
        return _ticks_on_move(self)

    Ticker.tick = tick  # type: ignore[method-assign]


async def _ticks_on_move(ticker: Any) -> int:
    """Ticker.tick, except that a merge tick (between full ones) goes only to a partition whose
    driver's arrival clock moved since that partition's last tick."""
    sent = 0
    ticker._calls += 1
    full = ticker._calls % ticker._every == 0
    seen = ticker.__dict__.setdefault("_bench_seen", {})
    for driver in ticker._drivers.values():
        arrivals = driver._arrivals
        safe = arrivals.safe() if arrivals is not None else None
        for partition, rt in list(driver.runtimes.items()):
            merge = driver.merges.get(partition)
            key = (driver.name, partition)
            moved = merge is not None and merge.waiting() and (safe is None or seen.get(key) != safe)
            if moved or (full and driver.wants_tick(partition, rt)):
                seen[key] = safe
                await ticker._outputs.send(
                    driver.spec.ticks, None, ticker._value, partition=partition, headers=ticker._headers
                )
                sent += 1
    return sent


def apply_levers(spec: str) -> list[str]:
    applied = []
    for lever in filter(None, (s.strip() for s in spec.split(","))):
        name, _, arg = lever.partition("=")
        if name == "flush":
            _flush(arg)
        elif name == "metrics-cache":
            _metrics_cache()
        elif name == "no-monitor":
            _no_monitor()
        elif name == "uvloop":
            _uvloop()
        elif name == "eager":
            _eager()
        elif name == "fold-heap":
            _fold_heap()
        elif name == "no-safe-memo":
            _no_safe_memo()
        elif name == "tick-every-merge":
            _tick_every_merge()
        elif name == "known-lag":
            _known_lag()
        elif name == "producer-buffer":
            from faust.transport.producer import ProducerBuffer

            ProducerBuffer.max_messages = int(arg)
        elif name == "conf":
            key, _, value = arg.partition(":")
            _faust_setting(key, int(value))
        elif name == "linger":
            _faust_setting("producer_linger", float(arg))
        elif name == "gc":
            import gc

            gc.set_threshold(int(arg), *gc.get_threshold()[1:])
        elif name == "pump-once":
            _pump_once()
        elif name == "arrivals-memo":
            _arrivals_memo(float(arg))
        elif name == "tick-on-move":
            _tick_on_move()
        else:
            msg = f"unknown lever {lever!r}"
            raise SystemExit(msg)
        applied.append(lever)
    return applied


def main() -> int:
    applied = apply_levers(os.environ.get("BENCH_LEVERS", ""))
    print(f"bench shim: levers {applied or 'none'}", flush=True)
    from orderwatch.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
