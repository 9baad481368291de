"""`publish`'s record timestamps: strictly increasing in file order, never behind an event's time."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from orderwatch.streams.publish import MAX_TIMESTAMP_MS, RecordClock, event_time_ms

T0 = 1_772_438_400_000  # 2026-03-02T08:00:00Z


def test_the_rule_on_a_small_file() -> None:
    clock = RecordClock(wall_ms=5)
    assert [clock.stamp(t) for t in (T0, T0 - 60_000, None, T0 + 10, T0 + 10, T0 + 5)] == [
        T0,
        T0 + 1,  # an event behind: after the previous record, not at its own time
        T0 + 2,  # no time
        T0 + 10,
        T0 + 11,  # same time twice: still strictly increasing
        T0 + 12,
    ]


def test_the_first_line_without_a_time_starts_at_the_wall_clock() -> None:
    clock = RecordClock(wall_ms=T0)
    assert clock.stamp(None) == T0
    assert clock.stamp(None) == T0 + 1


@given(st.lists(st.one_of(st.none(), st.integers(0, MAX_TIMESTAMP_MS - 1)), min_size=1, max_size=200))
def test_strictly_increasing_and_never_behind_the_event(times: list[int | None]) -> None:
    clock = RecordClock(wall_ms=T0)
    stamps = [clock.stamp(t) for t in times]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert all(s >= t for s, t in zip(stamps, times, strict=True) if t is not None)


def test_event_time_reads_rfc3339_with_an_offset_only() -> None:
    assert event_time_ms({"time": "2026-03-02T08:00:00Z"}) == T0
    assert event_time_ms({"time": "2026-03-02T09:00:00.250+01:00"}) == T0 + 250
    for bad in (
        {"time": "2026-03-02T08:00:00"},  # no offset
        {"time": "yesterday"},
        {"time": 1772438400},
        {"time": "1969-12-31T23:59:59Z"},
        {"time": "2100-01-01T00:00:00Z"},
        {},
        None,
        ["time"],
        json.loads('{"time": null}'),
    ):
        assert event_time_ms(bad) is None, bad
