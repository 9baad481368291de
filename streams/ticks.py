"""Ticks: deadlines fire inside the stream context of their own partition (faust only lets a
stream write a table, and the changelog partition must be the key's partition), so a timer sends
a tick to each actively owned agent partition that has work its clock may have made due. Events
already move the clock: an idle worker sends nothing and a busy one few. Standby partitions
receive no ticks and never fire."""

from __future__ import annotations

from orderwatch.schemas.control import Tick, encode
from orderwatch.streams.driver import AgentDriver
from orderwatch.streams.outputs import Outputs

__all__ = ["INTERVAL", "Ticker"]

INTERVAL = 0.1
"""Seconds between ticks for deadlines and buffered events: bounds deadline detection latency."""
MERGE_INTERVAL = 0.02
"""Seconds between ticks to an agent partition whose merge holds records (the timer's own
interval): a record waiting for another partition or agent (streams.arrivals) goes on at the
next tick once they moved, and a replay waits at every one of them. Only to a partition that got
no message since the last tick: each message lets its merge go on anyway (and a move of another
partition lets every merge go on, `AgentDriver._pump`), so a busy partition's tick would only cost
a produced and a consumed message (0.055 ticks per event in a replay, the skeleton 0.023)."""


class Ticker:
    def __init__(self, outputs: Outputs, drivers: dict[str, AgentDriver]) -> None:
        self._outputs = outputs
        self._drivers = drivers
        self._headers, self._value = encode(Tick())
        self._every = max(1, round(INTERVAL / MERGE_INTERVAL))
        self._calls = 0
        self._received: dict[tuple[str, int], int] = {}  # messages each partition had at the last tick

    async def tick(self) -> int:
        """Send the ticks due now (called every MERGE_INTERVAL); returns how many."""
        sent = 0
        self._calls += 1
        full = self._calls % self._every == 0  # every INTERVAL: every partition's clock and timers
        received = self._received
        for name, driver in self._drivers.items():
            for partition, rt in list(driver.runtimes.items()):
                merge = driver.merges.get(partition)
                busy = False
                if merge is not None:
                    count = driver.received(partition)
                    busy = received.get((name, partition)) != count
                    received[name, partition] = count
                if (merge is not None and merge.waiting() and not busy) or (full and driver.wants_tick(partition, rt)):
                    await self._outputs.send(
                        driver.spec.ticks, None, self._value, partition=partition, headers=self._headers
                    )
                    sent += 1
        return sent
