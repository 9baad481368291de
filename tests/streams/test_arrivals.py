"""The arrival clock (streams.arrivals): the backtest's clock over the contract records of every
partition a worker reads, in record-timestamp order whatever order the partitions were read in."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from orderwatch.detectors.arrivals import ArrivalWatermark
from orderwatch.streams.arrivals import ArrivalClock

TP = tuple[str, int]
O0, P0, P1 = ("orders", 0), ("payments", 0), ("payments", 1)


class World:
    """The partitions a worker reads and which of them may still deliver (lag)."""

    def __init__(self, tps: list[TP]) -> None:
        self.tps = tps
        self.lagging: set[TP] = set(tps)
        self.t = 0.0

    def clock(self, **kw: float | None) -> ArrivalClock:
        self.arrivals = ArrivalClock(
            lambda: self.tps, lambda tp: tp in self.lagging, lambda topic: topic, wall=lambda: self.t, **kw
        )
        return self.arrivals

    def caught_up(self, *tps: TP) -> None:
        """A fetch found `tps` read to their end (the driver refreshes the clock per message)."""
        self.lagging.difference_update(tps)
        self.arrivals.refresh()


def test_a_partition_with_nothing_fetched_holds_every_other_back_until_it_delivers() -> None:
    w = World([O0, P0])
    c = w.clock()
    c.received(O0, 0, 1_000)
    assert c.safe() == float("-inf")  # payments[0] lags and nothing of it is here: it may hold older
    assert not c.may_go(1_000)
    c.received(P0, 0, 1_500)
    assert c.safe() == 999  # every record up to just before the oldest one held
    assert c.may_go(1_000)
    assert not c.may_go(1_500)  # the orders record at 1000 comes first
    w.caught_up(P0)
    c.done(P0, 0, 1_500, 50.0)
    assert c.safe() == 999  # payments caught up holds nothing; the orders record still does
    c.done(O0, 0, 1_000, 10.0)
    w.caught_up(O0)
    assert c.safe() == float("inf")


def test_records_fold_in_timestamp_order_not_in_the_order_they_were_decided() -> None:
    w = World([O0, P0])
    c = w.clock(max_skew=None, idle_after=1000)
    # payments[0] was read ahead of orders[0]: its records at 2000 and 3000 are decided first.
    c.received(P0, 0, 2_000)
    c.received(P0, 1, 3_000)
    c.received(O0, 0, 1_000)
    c.done(P0, 0, 2_000, 200.0)
    assert c.low() == float("-inf")  # nothing is safe yet: orders[0] holds a record at 1000
    c.done(O0, 0, 1_000, 100.0)
    # Folded: orders@1000 (t=100), then payments@2000 (t=200): both sources active, slowest 100.
    assert c.low() == 100.0
    assert c.low_at(1_500) == 100.0
    w.caught_up(*w.tps)
    c.done(P0, 1, 3_000, 300.0)
    c.received(O0, 1, 4_000)
    c.done(O0, 1, 4_000, 400.0)
    assert c.low() == 300.0  # orders 400, payments 300
    assert c.low_at(2_500) == 100.0  # as it stood once the records up to 2500 were folded
    assert c.low_at(999) == float("-inf")


def test_a_dead_letter_or_re_delivery_moves_the_partition_but_not_the_clock() -> None:
    w = World([O0])
    c = w.clock()
    c.received(O0, 0, 1_000)
    c.done(O0, 0, 1_000)  # dead-lettered: no event time
    assert c.safe() == 1_000  # lagging, everything up to it decided
    assert c.low() == float("-inf")


def test_a_revoked_partition_no_longer_holds_the_others() -> None:
    w = World([O0, P0])
    c = w.clock()
    c.received(O0, 0, 1_000)
    c.received(P0, 0, 5_000)
    w.tps = [P0]  # orders[0] revoked: its held record goes back to Kafka
    c.forget([O0])
    assert c.safe() == 4_999
    assert c.may_go(5_000)


def test_moved_at_is_when_safe_last_moved() -> None:
    w = World([O0, P0])
    c = w.clock()
    c.received(O0, 0, 1_000)
    c.received(P0, 0, 2_000)
    w.t = 5.0
    assert c.moved_at() == 5.0  # safe moved from -inf to 999
    w.t = 9.0
    assert c.moved_at() == 5.0  # nothing moved since
    c.done(O0, 0, 1_000, 1.0)
    assert c.moved_at() == 9.0


# One record: (partition, timestamp ms, event time offset); the test hands each partition's
# records over in offset order but interleaves the partitions at random.
_RECORD = st.tuples(st.sampled_from([O0, P0, P1]), st.integers(0, 10_000), st.floats(-600, 3_600))


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(_RECORD, min_size=1, max_size=60, unique_by=lambda r: r[1]),
    order=st.randoms(use_true_random=False),
)
def test_whatever_order_partitions_are_read_in_the_clock_is_the_one_of_the_timestamp_order(
    records: list[tuple[TP, int, float]], order: random.Random
) -> None:
    # Per partition, timestamps ascend with the offset (a producer's clock); event times do not.
    per_tp: dict[TP, list[tuple[int, int, float]]] = {}
    for tp, ts, dt in sorted(records, key=lambda r: r[1]):
        per_tp.setdefault(tp, []).append((len(per_tp.get(tp, [])), ts, 1_000_000.0 + ts / 10 + dt))
    reference: ArrivalWatermark[None] = ArrivalWatermark(max_skew=3_600.0, idle_after=7)
    for tp, _ts, t in sorted(((tp, ts, t) for tp, rs in per_tp.items() for _, ts, t in rs), key=lambda r: r[1]):
        reference.arrive(t, tp[0], None)
    w = World(list(per_tp))
    c = w.clock(max_skew=3_600.0, idle_after=7)
    queues = {tp: list(rs) for tp, rs in per_tp.items()}
    held: dict[TP, list[tuple[int, int, float]]] = {tp: [] for tp in per_tp}
    while any(queues.values()) or any(held.values()):
        tp = order.choice([tp for tp in per_tp if queues[tp] or held[tp]])
        if queues[tp] and (not held[tp] or order.random() < 0.5):
            rec = queues[tp].pop(0)
            c.received(tp, rec[0], rec[1])
            held[tp].append(rec)
            if not queues[tp]:
                w.caught_up(tp)
        elif held[tp] and c.may_go(held[tp][0][1]):
            offset, ts, t = held[tp].pop(0)
            c.done(tp, offset, ts, t)
        else:
            # Not its turn: the oldest record held anywhere is.
            oldest = min((h[0][1], t) for t, h in held.items() if h)[1] if any(held.values()) else None
            if oldest is not None and c.may_go(held[oldest][0][1]):
                offset, ts, t = held[oldest].pop(0)
                c.done(oldest, offset, ts, t)
    assert c.safe() == float("inf")
    assert c.low() == reference.low


def test_a_record_stamped_earlier_than_the_one_before_it_counts_at_its_partitions_time() -> None:
    # A message written after a fast publish (whose stamps ran ahead of the wall clock) carries an
    # older timestamp than the records before it: held at its own stamp, it would hold every
    # partition back while the records before it in its own partition waited for it.
    w = World([O0, P0])
    c = w.clock()
    c.received(O0, 0, 5_000)
    c.received(O0, 1, 1_000)  # stamped earlier, behind offset 0
    c.received(P0, 0, 6_000)
    assert c.may_go(5_000)  # orders@0 is next: nothing older is still to come
    c.done(O0, 0, 5_000, 1.0)
    assert c.safe() == 4_999  # orders@1 counts at 5000, the partition's time
    c.done(O0, 1, 1_000)
    assert not c.may_go(6_000)  # orders[0] lags: its next record may be older than 6000
    w.caught_up(O0)
    assert c.may_go(6_000)


def test_a_record_handed_over_twice_and_decided_twice_holds_nothing_back() -> None:
    # A re-read after a seek hands the same offset again; both copies are decided (the second as
    # a re-delivery) before anyone asks: neither may stay behind as a record still to come.
    w = World([O0, P0])
    c = w.clock()
    c.received(O0, 0, 1_000)
    c.done(O0, 0, 1_000, 1.0)
    c.received(O0, 0, 1_000)
    c.done(O0, 0, 1_000)
    c.received(P0, 0, 3_000)
    w.caught_up(O0)
    assert c.safe() == 2_999


def test_safe_answers_from_its_last_value_until_a_record_moves_or_a_refresh() -> None:
    # The merges ask `safe` for every record they may let go, over every partition: it is not
    # recomputed until something it reads changes, and what `lagging` answers changes only with
    # a fetch, which the driver marks with `refresh` for every message it is handed.
    w = World([O0, P0])
    c = w.clock()
    c.received(O0, 0, 1_000)
    assert c.safe() == float("-inf")
    w.lagging.discard(P0)  # a fetch the clock was not told about yet
    assert c.safe() == float("-inf")
    c.refresh()
    assert c.safe() == 999
    c.received(P0, 0, 500)  # a record handed over is seen at once
    assert c.safe() == 499
    c.done(P0, 0, 500, 5.0)
    assert c.safe() == 999
