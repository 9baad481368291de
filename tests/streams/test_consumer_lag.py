"""The consumer-lag gauge's figures: highwater minus the next offset to read, from what the agents
consumed or, before the first message, the committed offset."""

from __future__ import annotations

from orderwatch.streams.clock import LagAwareClock
from orderwatch.streams.views import lags as _lags


def test_lag_is_highwater_minus_the_next_offset_to_read() -> None:
    highwaters = {("orders", 0): 100, ("orders", 1): 50, ("payments", 0): 7, ("ow-ticks-orders", 0): 9}
    clock = LagAwareClock(
        highwater=highwaters.get,
        committed=lambda tp: 20 if tp == ("orders", 1) else None,
    )
    clock.observe(("orders", 0), 89, 1.0)  # consumed up to 89: 90..99 still to read
    clock.observe(("payments", 0), 6, 1.0)  # caught up
    actives = frozenset({("orders", 0), ("orders", 1), ("payments", 0), ("ow-ticks-orders", 0), ("logistics", 3)})

    lags = dict(_lags(clock, actives, {"orders", "payments", "logistics"}))

    assert lags == {("orders", 0): 10, ("orders", 1): 30, ("payments", 0): 0}  # no highwater yet: no series
