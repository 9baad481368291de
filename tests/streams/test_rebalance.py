"""Where the agents read again from after a rebalance: owned partitions and commits in, seek
targets out (no Kafka; the integration test test_rebalance runs it against the broker)."""

from __future__ import annotations

from orderwatch.streams.rebalance import read_again_from, rewind_targets

INPUTS = ["orders", "payments", "app-order-inbox"]


def test_every_owned_input_partition_goes_back_to_its_committed_offset_zero_included() -> None:
    committed = {("orders", 2): 0, ("orders", 3): 41, ("payments", 2): 0, ("app-order-inbox", 2): 7}
    targets, unknown = rewind_targets(committed, INPUTS, committed.get)
    # Offset 0 is a target like any other: aiokafka's seek_to_committed skips it, which is
    # what left a partition read to its end during a rebalance with nothing delivered.
    assert targets == committed
    assert unknown == []


def test_partitions_not_owned_or_not_agent_inputs_are_left_alone() -> None:
    actives = [("orders", 2), ("app-ticks-orders", 2), ("app-orders-state-changelog", 2), ("blocklist", 0)]
    committed = {("orders", 2): 5, ("orders", 0): 9, ("app-ticks-orders", 2): 300}
    targets, unknown = rewind_targets(actives, INPUTS, committed.get)
    assert targets == {("orders", 2): 5}  # orders[0] is another worker's; ticks carry no data
    assert unknown == []


def test_an_owned_input_without_a_commit_is_returned_apart() -> None:
    actives = [("payments", 1), ("orders", 1)]
    targets, unknown = rewind_targets(actives, INPUTS, {("orders", 1): 3}.get)
    assert targets == {("orders", 1): 3}
    assert unknown == [("payments", 1)]  # read from its earliest offset, as the consumer resets


def test_reading_again_starts_after_an_unbroken_run_delivered_from_the_committed_offset() -> None:
    assert read_again_from(0, None) == 0  # nothing delivered: all of it (the stalled replay)
    assert read_again_from(0, (0, 740)) == 741  # all delivered: nothing is read twice
    assert read_again_from(10, (4, 30)) == 31  # the run started below the commit: still unbroken
    assert read_again_from(10, (12, 30)) == 10  # the run started past the commit: 10 and 11 are lost
    assert read_again_from(50, (0, 20)) == 50  # committed past what was delivered (acked since)
