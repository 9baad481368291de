"""`publish`'s record timestamps: strictly increasing in file order, at the wall clock of
publishing (never older, so never past the broker's retention), at most `max_lead_ms` ahead."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderwatch.streams.publish import MAX_LEAD_MS, RecordClock

T0 = 1_772_438_400_000  # 2026-03-02T08:00:00Z


class Wall:
    """A wall clock the test moves (seconds)."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def test_the_rule_on_a_small_run() -> None:
    wall = Wall(T0)
    clock = RecordClock(wall)
    out = [clock.stamp(), clock.stamp(), clock.stamp()]  # faster than the clock's millisecond
    wall.ms += 10
    out.append(clock.stamp())  # the wall clock moved past: its time
    wall.ms -= 5  # the wall clock stepped back (NTP): still after the previous record
    out.append(clock.stamp())
    assert out == [T0, T0 + 1, T0 + 2, T0 + 10, T0 + 11]


def test_no_wait_until_the_lead_passes_the_bound_then_about_a_second_per_thousand_records() -> None:
    wall = Wall(T0)
    clock = RecordClock(wall, max_lead_ms=100)
    assert clock.wait_seconds() == 0.0  # nothing stamped yet
    for _ in range(101):
        assert clock.wait_seconds() == 0.0
        clock.stamp()
    assert clock.last == T0 + 100  # 100 ms ahead: the next one would pass the bound
    wait = clock.wait_seconds()
    assert wait == pytest.approx(1.001)
    wall.ms += round(wait * 1000)
    assert clock.wait_seconds() == 0.0
    assert clock.stamp() - clock.now_ms() <= 100


def test_a_negative_lead_is_refused() -> None:
    with pytest.raises(ValueError, match="max_lead_ms must be 0 or more, got -1"):
        RecordClock(max_lead_ms=-1)


@given(st.lists(st.tuples(st.integers(-5_000, 5_000), st.integers(1, 50)), min_size=1, max_size=60))
def test_strictly_increasing_never_behind_the_wall_and_never_further_ahead_than_the_bound(
    steps: list[tuple[int, int]],
) -> None:
    # Each step: the wall clock moves (forward or back, as NTP may), then a burst of records, each
    # sent after the publisher waited what the clock asked.
    wall = Wall(T0)
    clock = RecordClock(wall, max_lead_ms=200)
    stamps: list[int] = []
    for move, burst in steps:
        wall.ms += move
        for _ in range(burst):
            wall.ms += round(clock.wait_seconds() * 1000)
            stamps.append(clock.stamp())
            assert stamps[-1] >= clock.now_ms()  # never older than the time of publishing
            assert stamps[-1] - clock.now_ms() <= 200  # even after the wall clock stepped back
    assert all(b > a for a, b in itertools.pairwise(stamps))


def test_the_default_bound_is_half_an_hour_well_inside_kafka_4_s_one_hour() -> None:
    assert MAX_LEAD_MS == 30 * 60 * 1000
    assert RecordClock().max_lead_ms == MAX_LEAD_MS
