"""The lag-aware clock: lists of observations in, clock values out (no Kafka)."""

from __future__ import annotations

from orderwatch.streams.clock import LagAwareClock

A, B, R = ("orders", 0), ("payments", 0), ("inbox", 0)


def make(
    mode: str = "event", highwaters: dict[tuple[str, int], int] | None = None, wall: float = 1000.0
) -> tuple[LagAwareClock, dict[tuple[str, int], int], list[float]]:
    hw = dict(highwaters or {})
    now = [wall]
    clock = LagAwareClock(mode=mode, lateness=60, highwater=lambda tp: hw.get(tp), wall=lambda: now[0])
    return clock, hw, now


def test_event_clock_is_held_by_the_slowest_lagging_partition() -> None:
    clock, _hw, _ = make(highwaters={A: 10, B: 10})
    clock.observe(A, 4, 5000.0)
    clock.observe(B, 2, 3000.0)
    assert clock.now([A, B], "x") == 3000.0 - 60
    clock.observe(B, 9, 6000.0)  # B caught up: only A (still lagging) bounds the clock
    assert clock.now([A, B], "x") == 5000.0 - 60


def test_a_partition_never_fetched_holds_the_clock() -> None:
    clock, hw, _ = make(highwaters={A: 1})
    clock.observe(A, 0, 5000.0)
    assert clock.now([A, B], "x") == float("-inf")  # B: no highwater known yet
    hw[B] = 0  # fetched, empty
    assert clock.now([A, B], "x") == 5000.0 - 60


def test_caught_up_event_clock_waits_the_idle_grace_then_takes_the_worker_watermark() -> None:
    clock, _hw, now = make(highwaters={A: 5, B: 1})
    clock.observe(A, 3, 5000.0)
    clock.observe(B, 0, 9000.0)
    assert clock.now([A], "x") == 5000.0 - 60  # A lags
    clock.observe(A, 4, 5100.0)
    assert clock.now([A], "x") == 5100.0 - 60  # caught up just now: own progress
    now[0] += 2.0
    assert clock.now([A], "x") == 9000.0 - 60  # idle: the largest event time of the worker


def test_a_lagging_repartition_topic_freezes_the_clock_and_it_never_runs_backwards() -> None:
    clock, hw, _now = make(highwaters={A: 10, R: 0})
    clock.observe(A, 2, 5000.0)
    assert clock.now([A], "x", [R]) == 5000.0 - 60
    clock.sent(R)  # a forwarded message is on its way to R
    clock.observe(A, 5, 8000.0)
    assert clock.now([A], "x", [R]) == 5000.0 - 60  # frozen, though A moved on
    clock.delivered(R, 0)  # acked at offset 0: still frozen until we consume it
    hw[R] = 1
    assert clock.now([A], "x", [R]) == 5000.0 - 60
    clock.observe(R, 0, 4000.0)
    assert clock.now([A], "x", [R]) == 8000.0 - 60
    hw[B] = 3
    clock.observe(B, 0, 100.0)  # a late-starting, lagging partition would pull the bound down
    assert clock.now([A, B], "x", [R]) == 8000.0 - 60


def test_wall_clock_minus_grace_held_back_by_lag() -> None:
    clock, hw, _now = make(mode="wall", highwaters={A: 10}, wall=10_000.0)
    clock.grace = 5
    clock.observe(A, 9, 9_000.0)
    assert clock.now([A], "x") == 10_000.0 - 5
    hw[A] = 20  # a lag spike: 10 messages behind
    assert clock.now([A], "y") == 9_000.0 - 60


def test_forget_drops_revoked_partitions() -> None:
    clock, _hw, _ = make(highwaters={A: 10})
    clock.observe(A, 1, 100.0)
    clock.forget([A])
    assert A not in clock.progress


def test_a_fresh_assignment_is_lagging_until_its_committed_offset_reaches_the_highwater() -> None:
    hw = {A: 10}
    committed: dict[tuple[str, int], int] = {A: 4}
    clock = LagAwareClock(
        mode="event", lateness=60, highwater=lambda tp: hw.get(tp), committed=lambda tp: committed.get(tp)
    )
    assert clock.lagging(A)
    committed[A] = 10  # the previous owner consumed everything: nothing waits
    assert not clock.lagging(A)
    clock.sent(A)
    assert clock.lagging(A)
    clock.forget([A])  # reassigned: counts from another owner's time mean nothing
    assert not clock.lagging(A)


def test_messages_other_workers_forwarded_do_not_cancel_ours() -> None:
    # Regression: counting forwards and decrementing on every message received let a message
    # someone else sent (or this worker sent before a restart) cancel ours, so the repartition
    # partition looked caught up while our forward was still in the producer buffer.
    clock, hw, _ = make(highwaters={A: 10, R: 3})
    clock.observe(A, 9, 9000.0)
    clock.observe(R, 0, 100.0)  # an old message, forwarded before we started
    clock.sent(R)
    clock.observe(R, 1, 100.0)  # another old one: says nothing about ours
    assert clock.lagging(R)
    clock.delivered(R, 7)  # ours landed at offset 7 (the last fetch's highwater was 3)
    clock.observe(R, 2, 100.0)
    assert clock.lagging(R)
    hw[R] = 8
    for offset in range(3, 8):
        clock.observe(R, offset, 100.0)
    assert not clock.lagging(R)


def test_a_failed_forward_does_not_freeze_the_clock_forever() -> None:
    clock, _hw, _ = make(highwaters={R: 0})
    clock.sent(R)
    assert clock.lagging(R)
    clock.delivered(R, None)
    assert not clock.lagging(R)


def test_a_partition_with_a_hole_lags_until_the_re_read_reaches_its_end() -> None:
    clock, _hw, _ = make(highwaters={A: 10})
    clock.observe(A, 9, 9000.0)  # delivered from 6 on: 0..5 were skipped by the consumer
    assert not clock.lagging(A)
    clock.hole(A, 0, 5)
    assert clock.lagging(A)
    for offset in range(5):
        clock.observe(A, offset, 100.0)
        assert clock.lagging(A)
    clock.observe(A, 5, 100.0)
    assert not clock.lagging(A)


def test_watermarks_of_upstream_partitions_other_workers_own_bound_the_clock() -> None:
    clock = LagAwareClock(mode="wall", lateness=60.0, wall=lambda: 10_000.0)
    dest = ("inbox", 2)
    sources = [("inventory", 1), ("inventory", 3)]

    # Not heard from a source yet: it may have anything in flight to us.
    assert clock.foreign_bound(dest, sources) == float("-inf")
    clock.watermark(dest, ("inventory", 1), 5_000.0, idle=False)
    assert clock.foreign_bound(dest, sources) == float("-inf")
    clock.watermark(dest, ("inventory", 3), 7_000.0, idle=False)
    assert clock.foreign_bound(dest, sources) == 5_000.0 - 60.0  # the slowest busy source decides
    clock.watermark(dest, ("inventory", 1), None, idle=True)
    assert clock.foreign_bound(dest, sources) == 7_000.0 - 60.0  # a caught-up source bounds nothing
    clock.watermark(dest, ("inventory", 3), 7_500.0, idle=True)
    assert clock.foreign_bound(dest, sources) == float("inf")
    assert clock.foreign_bound(dest, []) == float("inf")  # this worker owns every source

    # Applied as a cap on the clock, which still never runs backwards.
    assert clock.now([], "w", [], bound=6_000.0) == 6_000.0
    assert clock.now([], "w", [], bound=float("-inf")) == 6_000.0
    assert clock.now([], "w", [], bound=float("inf")) == 10_000.0

    # Revoked or reassigned: the marks are forgotten, the new owners send fresh ones.
    clock.forget([dest])
    assert clock.foreign_bound(dest, sources) == float("-inf")


def test_the_delivered_run_is_what_came_since_the_assignment_without_a_skipped_offset() -> None:
    clock, _hw, _ = make(highwaters={A: 100})
    assert clock.delivered_run(A) is None
    for offset in (3, 4, 5, 4, 5, 6):  # a re-delivery (seek back) does not break the run
        clock.observe(A, offset, 5000.0)
    assert clock.delivered_run(A) == (3, 6)
    clock.observe(A, 9, None)  # 7 and 8 never came (dropped by the consumer)
    assert clock.delivered_run(A) is None
    clock.forget([A])  # reassigned: a new run
    clock.observe(A, 7, 5000.0)
    assert clock.delivered_run(A) == (7, 7)


def test_a_lone_partition_far_ahead_does_not_decide_a_drained_replay() -> None:
    # Issue 9: one inventory snapshot a day ahead used to move the drained event clock a day on.
    day = 86_400.0
    clock = LagAwareClock(mode="event", lateness=60, highwater=lambda tp: 10, idle_grace=0.0, max_skew=3600)
    for p in range(4):
        clock.observe(("orders", p), 9, 1000.0 + p)
    clock.observe(("inventory", 0), 9, 1000.0 + day)
    assert clock.now([("orders", 0)], who="a") == 1003.0 - 60
    clock.observe(("inventory", 1), 9, 1000.0 + day + 5)  # a second partition there: real progress
    assert clock.now([("orders", 0)], who="a") == 1000.0 + day + 5 - 60
    off = LagAwareClock(mode="event", lateness=60, highwater=lambda tp: 10, idle_grace=0.0)
    off.observe(("orders", 0), 9, 1000.0)
    off.observe(("inventory", 0), 9, 1000.0 + day)
    assert off.now([("orders", 0)], who="a") == 1000.0 + day - 60


def test_a_forward_is_in_flight_until_its_partition_hands_it_to_the_agent() -> None:
    inbox = ("inbox", 0)
    hw = {inbox: 0}  # empty when this worker first saw it: no backlog
    clock = LagAwareClock(mode="event", highwater=hw.__getitem__)
    assert not clock.in_flight(inbox)
    hw[inbox] = 10
    clock.sent(inbox)
    assert clock.in_flight(inbox)  # not acked by the broker yet
    clock.delivered(inbox, 7)
    assert clock.in_flight(inbox)  # acked at 7; the agent took nothing past 6
    clock.took(inbox, 7)
    assert not clock.in_flight(inbox)
    assert clock.lagging(inbox)  # taken (its merge holds it) is not consumed
    clock.forget([inbox])  # assigned again: our sends are forgotten, the 10 messages are a backlog
    assert clock.in_flight(inbox) and clock.pending == {} and clock.forwarded == {}


def test_only_a_forward_stamped_before_the_next_record_holds_it_back() -> None:
    clock = LagAwareClock(mode="event", highwater=lambda tp: 0)
    inbox = ("inbox", 0)
    clock.sent(inbox, 2_000)
    clock.sent(inbox, 1_000)
    clock.sent(inbox, 1_000)
    assert clock.in_flight(inbox, 1_500) and not clock.in_flight(inbox, 1_000)
    clock.took(inbox, 0, 1_000)
    assert clock.in_flight(inbox, 1_500)  # the second one stamped 1000 is still on its way
    clock.delivered(inbox, None, 1_000)  # its send failed: it will never come
    assert not clock.in_flight(inbox, 1_500)
    assert clock.in_flight(inbox, 2_001)


def test_what_a_repartition_partition_held_before_this_worker_read_it_is_waited_for() -> None:
    # After a restart (or a rebalance) the inbox holds forwards the previous owner sent and its
    # agent never read: their stamps are unknown here, so they count as in flight, whatever
    # their stamps, until the agent has been handed everything below the highwater first seen.
    inbox = ("inbox", 0)
    hw: dict[tuple[str, int], int | None] = {inbox: None}
    committed = {inbox: 96}
    clock = LagAwareClock(mode="event", highwater=hw.__getitem__, committed=committed.__getitem__)
    assert not clock.in_flight(inbox, 1_000)  # not fetched yet: `lagging` holds the agent back
    assert clock.lagging(inbox)
    hw[inbox] = 170
    assert clock.in_flight(inbox, 1_000)
    for offset in range(96, 169):
        clock.took(inbox, offset, 5_000)  # stamps later than the next record's: still waited for
    assert clock.in_flight(inbox, 1_000)
    clock.took(inbox, 169, 5_000)
    assert not clock.in_flight(inbox, 1_000)
    hw[inbox] = 200  # written since (by this worker: its sends are tracked by their stamps)
    assert not clock.in_flight(inbox, 1_000)
    clock.forget([inbox])  # assigned again: what it holds now is a backlog again
    assert clock.in_flight(inbox, 1_000)


def test_a_backlog_already_applied_before_the_restart_is_not_waited_for() -> None:
    inbox = ("inbox", 0)
    clock = LagAwareClock(mode="event", highwater=lambda tp: 170, committed=lambda tp: 170)
    assert not clock.in_flight(inbox, 1_000)
