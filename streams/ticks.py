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
"""Seconds between ticks: bounds deadline detection latency."""


class Ticker:
    def __init__(self, outputs: Outputs, drivers: dict[str, AgentDriver]) -> None:
        self._outputs = outputs
        self._drivers = drivers
        self._headers, self._value = encode(Tick())

    async def tick(self) -> int:
        """Send the ticks due now; returns how many."""
        sent = 0
        for driver in self._drivers.values():
            for partition, rt in list(driver.runtimes.items()):
                if driver.wants_tick(partition, rt):
                    await self._outputs.send(
                        driver.spec.ticks, None, self._value, partition=partition, headers=self._headers
                    )
                    sent += 1
        return sent
