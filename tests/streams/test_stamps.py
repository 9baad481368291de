"""The timestamp an input record counts at (streams.stamps): its own, or its partition's time when
it lies more than the bound ahead of the wall clock, the same one for every part that asks until
the record is decided."""

from __future__ import annotations

from orderwatch.streams.publish import MAX_LEAD_MS
from orderwatch.streams.stamps import FUTURE_BOUND_MS, RecordStamps

T0 = 1_772_438_400_000  # 2026-03-02T08:00:00Z, ms
DAY = 86_400_000


class Wall:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def _stamps(wall: Wall) -> tuple[RecordStamps, list[str]]:
    counted: list[str] = []
    return RecordStamps(wall, counted=counted.append), counted


def test_a_record_stamped_in_the_past_or_within_the_bound_counts_at_its_own_stamp() -> None:
    stamps, counted = _stamps(Wall(T0))
    assert stamps.of("orders", 0, 0, (T0 - DAY) / 1000) == T0 - DAY  # a replay of an old stream
    assert stamps.of("orders", 0, 1, (T0 + FUTURE_BOUND_MS) / 1000) == T0 + FUTURE_BOUND_MS
    assert stamps.of("orders", 0, 2, None) == 0
    assert counted == []
    assert stamps.restamp_of("orders", 0, 1) is None


def test_no_stamp_publish_gives_is_restamped() -> None:
    assert MAX_LEAD_MS < FUTURE_BOUND_MS


def test_a_record_from_the_future_counts_at_its_partitions_time_and_is_counted() -> None:
    stamps, counted = _stamps(Wall(T0))
    assert stamps.of("payments", 1, 10, (T0 - 5_000) / 1000) == T0 - 5_000
    assert stamps.of("payments", 1, 11, (T0 + 2 * DAY) / 1000) == T0 - 5_000
    assert stamps.restamp_of("payments", 1, 11) == T0 - 5_000
    # It did not move the partition's time: the next record counts at its own.
    assert stamps.of("payments", 1, 12, (T0 - 4_000) / 1000) == T0 - 4_000
    assert counted == ["payments"]


def test_a_partitions_first_record_from_the_future_counts_at_the_wall_clock() -> None:
    stamps, _ = _stamps(Wall(T0))
    assert stamps.of("orders", 3, 0, (T0 + 3 * DAY) / 1000) == T0


def test_every_part_sees_the_same_stamp_until_the_record_is_decided() -> None:
    wall = Wall(T0)
    stamps, counted = _stamps(wall)
    skewed = (T0 + FUTURE_BOUND_MS + 60_000) / 1000  # a minute past the bound
    assert stamps.of("orders", 0, 7, skewed) == T0
    wall.ms += 5 * 60_000  # later the wall clock has caught up with the bound: still the same stamp
    assert stamps.of("orders", 0, 7, skewed) == T0
    assert counted == ["orders"]  # asked twice, counted once
    stamps.settled("orders", 0, 7)
    assert stamps.restamp_of("orders", 0, 7) is None
    # A re-read after a seek is a new decision, at the wall clock of then: within the bound now.
    assert stamps.of("orders", 0, 7, skewed) == round(skewed * 1000)


def test_a_revoked_partition_forgets_its_records_and_time() -> None:
    stamps, _ = _stamps(Wall(T0))
    stamps.of("orders", 0, 0, (T0 - 10_000) / 1000)
    stamps.of("orders", 0, 1, (T0 + DAY) / 1000)
    stamps.of("orders", 1, 0, (T0 + DAY) / 1000)
    stamps.forget([("orders", 0)])
    assert stamps.restamp_of("orders", 0, 1) is None
    assert stamps.restamp_of("orders", 1, 0) == T0
    assert stamps.of("orders", 0, 2, (T0 + DAY) / 1000) == T0  # no time kept: the wall clock


def test_the_wall_clock_is_read_only_when_a_stamp_passes_the_horizon() -> None:
    reads = 0

    def wall() -> float:
        nonlocal reads
        reads += 1
        return T0 / 1000

    stamps = RecordStamps(wall)
    for offset in range(1000):
        stamps.of("orders", 0, offset, (T0 - 1000 + offset) / 1000)
    assert reads == 1
