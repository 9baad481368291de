"""EventTimeReplay (its ArrivalWatermark) keeps the slowest active source's progress cached between pushes and
recomputes it only when it can have moved (tests the shortcut against the full computation
after every push, over random multi-source streams with jumps, idle sources and late events)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orderwatch.detectors.records import Emission
from orderwatch.detectors.replay import EventTimeReplay
from orderwatch.errors import InvalidEvent


@dataclass(frozen=True)
class _Time:
    t: float

    def timestamp(self) -> float:
        return self.t


@dataclass(frozen=True)
class _Ev:
    id: str
    time: _Time
    source: str


class _NoRules:
    def apply(self, ev: Any, t: float, now: float) -> list[Emission]:
        return []

    def advance(self, now: float) -> list[Emission]:
        return []


def _source(ev: Any) -> str:
    return str(ev.source)


def _full(replay: EventTimeReplay) -> float:
    """The definition: the smallest progress among sources that delivered one of the last
    `idle_after` events and have any accepted progress (-inf when none)."""
    return replay.arrivals.full_minimum()


_STEP = st.tuples(
    st.sampled_from(["orders", "payments", "inventory", "logistics"]),
    # Mostly small moves, some backwards (late), some far ahead (jumps the guard holds).
    st.one_of(st.floats(-120, 600), st.floats(5000, 90000)),
)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(_STEP, min_size=1, max_size=120), idle_after=st.integers(1, 6), skew=st.sampled_from([None, 3600.0])
)
def test_the_cached_minimum_always_equals_the_full_computation(
    steps: list[tuple[str, float]], idle_after: int, skew: float | None
) -> None:
    replay = EventTimeReplay(_NoRules(), lateness=60, source_of=_source, max_skew=skew, idle_after=idle_after)  # type: ignore[arg-type]
    t = 1_000_000.0
    for n, (source, dt) in enumerate(steps):
        t += dt if dt < 5000 else 0
        when = t + dt if dt >= 5000 else t
        with contextlib.suppress(InvalidEvent):  # too far behind: refused before the clock moves
            replay.push(_Ev(f"e{n}", _Time(when), source))
        replay.refused.clear()
        assert replay.arrivals.low == _full(replay)
        # and the watermark never lags behind what the full computation allows
        assert replay.watermark >= _full(replay) - replay.lateness or _full(replay) == float("-inf")
