"""Health verdicts: stalled partitions and agents restarting in a loop (issue 9)."""

from __future__ import annotations

from orderwatch.streams.health import CrashLoop, StallWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_partition_whose_commits_stop_while_messages_wait_is_stalled() -> None:
    clock = Clock()
    watch = StallWatch(after=60, wall=clock)
    tp = ("orders", 0)
    assert not watch.check(tp, 10, 50, explained=False)
    clock.now += 59
    assert not watch.check(tp, 10, 50, explained=False)
    clock.now += 2
    assert watch.check(tp, 10, 50, explained=False)
    assert not watch.check(tp, 11, 50, explained=False)  # it moved: the wait starts over


def test_caught_up_or_explained_by_the_buffer_is_not_a_stall() -> None:
    clock = Clock()
    watch = StallWatch(after=60, wall=clock)
    watch.check(("orders", 0), 50, 50, explained=False)
    watch.check(("orders", 1), 10, 50, explained=True)
    clock.now += 3600
    assert not watch.check(("orders", 0), 50, 50, explained=False)  # nothing waits
    assert not watch.check(("orders", 1), 10, 50, explained=True)  # the clock holds it, on purpose
    clock.now += 61
    assert watch.check(("orders", 1), 10, 50, explained=False)  # the buffer let it go, no commit


def test_unknown_offsets_are_not_a_stall_and_forget_starts_over() -> None:
    clock = Clock()
    watch = StallWatch(after=1, wall=clock)
    watch.check(("a", 0), None, 5, explained=False)
    clock.now += 10
    assert not watch.check(("a", 0), None, 5, explained=False)
    watch.check(("a", 1), 1, 5, explained=False)
    watch.forget([("a", 1)])
    clock.now += 10
    assert not watch.check(("a", 1), 1, 5, explained=False)


def test_three_crashes_within_a_minute_is_a_loop() -> None:
    clock = Clock()
    loop = CrashLoop(limit=3, window=60, wall=clock)
    loop.crashed("orders")
    clock.now += 20
    loop.crashed("orders")
    assert loop.looping() == []
    clock.now += 20
    loop.crashed("orders")
    assert loop.looping() == ["orders"]
    clock.now += 61
    assert loop.looping() == []  # the last three are spread over more than a minute now
