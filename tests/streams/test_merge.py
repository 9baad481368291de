"""The record-timestamp merge: co-partitioned inputs released in arrival order, a bounded wait for
an input with lag and nothing fetched, a bound on what is held."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderwatch.errors import ConfigError
from orderwatch.streams.merge import TimestampMerge
from orderwatch.streams.settings import load_settings
from tests.streams.agent_harness import AgentHarness


class Wall:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def merge(lagging: set[str], wall: Wall | None = None, **kw: float) -> TimestampMerge[str]:
    return TimestampMerge(["orders", "payments"], lambda t: t in lagging, wall=wall or Wall(), **kw)  # type: ignore[arg-type]


def test_records_come_out_in_timestamp_order_across_inputs_whatever_order_they_were_handed() -> None:
    m = merge(set())
    m.push("orders", 0, 300, "o@300")  # the small partition drained first, as faust does
    m.push("orders", 1, 900, "o@900")
    assert m.release() == [("orders", "o@300"), ("orders", "o@900")]  # nothing else lags: go
    m2 = merge(set())
    for i, ts in enumerate((100, 200, 950)):
        m2.push("payments", i, ts, f"p@{ts}")
    m2.push("orders", 0, 300, "o@300")
    assert [item for _, item in m2.release()] == ["p@100", "p@200", "o@300", "p@950"]


def test_an_input_with_lag_and_nothing_fetched_is_waited_for_then_given_up_on() -> None:
    wall = Wall()
    lagging = {"payments"}
    m = merge(lagging, wall, idle_wait=2.0)
    m.push("orders", 0, 300, "o@300")
    assert m.release() == []  # payments may hold older records not fetched yet
    assert m.waiting()
    wall.t = 1.0
    m.push("payments", 0, 100, "p@100")
    lagging.clear()  # fetched: payments caught up
    assert m.release() == [("payments", "p@100"), ("orders", "o@300")]
    assert m.forced.idle == 0
    lagging.add("payments")
    m.push("orders", 1, 400, "o@400")
    wall.t = 2.0
    assert m.release() == []
    wall.t = 4.5  # the idle wait is over
    assert m.release() == [("orders", "o@400")]
    assert m.forced.idle == 1
    m.push("orders", 2, 500, "o@500")  # still nothing from payments: no second wait
    assert m.release() == [("orders", "o@500")]


def test_overflow_releases_the_oldest_and_counts_it() -> None:
    m = merge({"payments"}, max_held=3)
    for i in range(5):
        m.push("orders", i, 100 + i, f"o{i}")
    out = m.release()
    assert [item for _, item in out] == ["o0", "o1"]
    assert m.held == 3 and m.forced.overflow == 2


def test_a_re_delivered_offset_is_held_once_and_a_re_read_gap_goes_back_in_front() -> None:
    m = merge(set())
    assert m.push("orders", 5, 500, "o5")
    assert not m.push("orders", 5, 500, "o5 again")
    assert m.push("orders", 3, 300, "o3")  # a seek back re-reads a gap
    m.push("payments", 0, 50, "p0")
    assert [item for _, item in m.release()] == ["p0", "o3", "o5"]


def test_ties_follow_the_order_of_the_inputs_and_clear_drops_everything() -> None:
    m = merge(set())
    m.push("payments", 0, 100, "p")
    m.push("orders", 0, 100, "o")
    assert [item for _, item in m.release()] == ["o", "p"]
    m.push("orders", 1, 200, "o1")
    m2 = merge({"payments"})
    m2.push("orders", 1, 200, "o1")
    m2.clear()
    assert m2.held == 0 and m2.release() == []


@given(st.lists(st.tuples(st.sampled_from(["orders", "payments"]), st.integers(0, 10_000)), max_size=60))
def test_with_every_input_handed_whole_the_output_is_sorted_by_timestamp(records: list[tuple[str, int]]) -> None:
    # Each input's timestamps non-decreasing in offset order (as publish stamps them).
    per: dict[str, list[int]] = {"orders": [], "payments": []}
    for topic, ts in records:
        per[topic].append(ts)
    m = merge(set())
    for topic, stamps in per.items():
        for offset, ts in enumerate(sorted(stamps)):
            m.push(topic, offset, ts, f"{topic}:{ts}")
    out = m.release()
    stamps_out = [int(item.split(":")[1]) for _, item in out]
    assert stamps_out == sorted(stamps_out)
    assert len(out) == len(records)


class Aligned:
    """A stand-in for the arrival clock's view (streams.arrivals): records of `contract` topics
    may go up to `safe`; `moved` is when that last moved."""

    def __init__(self, contract: set[str]) -> None:
        self.contract = contract
        self.safe = 0
        self.moved = 0.0

    def may_go(self, topic: str, ts_ms: int) -> bool:
        return topic not in self.contract or ts_ms - 1 <= self.safe

    def moved_at(self) -> float:
        return self.moved


def test_a_contract_record_waits_for_the_other_partitions_while_they_move_then_gives_up_on_a_stall() -> None:
    wall = Wall()
    aligned = Aligned({"orders", "payments"})
    m: TimestampMerge[str] = TimestampMerge(["orders", "payments"], lambda t: False, wall=wall, aligned=aligned)
    m.push("orders", 0, 300, "o@300")
    m.push("orders", 1, 400, "o@400")
    assert m.release() == []  # another partition has not been read past 299 yet
    aligned.safe = 299
    assert m.release() == [("orders", "o@300")]  # its turn; 400 is not yet
    wall.t, aligned.moved = 2.5, 2.5
    assert m.release() == []  # still waiting: the partitions moved 0 s ago
    wall.t = 5.6  # nothing moved for the idle wait (3 s): a stalled partition
    assert m.release() == [("orders", "o@400")]
    assert m.forced.align == 1
    m.push("orders", 2, 500, "o@500")
    aligned.moved = 5.6  # a partition moved a little (as records forced past it can make it)
    assert m.release() == [("orders", "o@500")]  # no second wait until aligned again
    assert m.forced.align == 2
    aligned.safe, aligned.moved = 1_000, 6.0
    m.push("orders", 3, 900, "o@900")
    assert m.release() == [("orders", "o@900")]  # aligned again: not forced
    assert m.forced.align == 2


def test_a_repartition_input_goes_in_timestamp_order_and_is_waited_for_while_an_older_forward_is_in_flight() -> None:
    wall = Wall()
    flying: set[int] = set()  # stamps of forwards sent to the inbox, not handed over yet
    m: TimestampMerge[str] = TimestampMerge(
        ["orders", "inbox"],
        lambda t: False,
        wall=wall,
        by_time=["inbox"],
        in_flight=lambda t, before: any(s < before for s in flying),
    )
    # Forwards from several upstream partitions: offsets not in timestamp order.
    m.push("inbox", 0, 700, "i@700")
    m.push("inbox", 1, 200, "i@200")
    m.push("orders", 0, 500, "o@500")
    flying.add(300)  # one more forward on its way, older than o@500
    assert m.release() == [("inbox", "i@200")]  # older than it: goes
    m.push("inbox", 2, 300, "i@300")
    flying.clear()
    assert m.release() == [("inbox", "i@300"), ("orders", "o@500"), ("inbox", "i@700")]
    flying.add(900)
    m.push("orders", 1, 800, "o@800")
    assert m.release() == [("orders", "o@800")]  # a forward stamped later holds nothing back
    flying.add(100)
    m.push("orders", 2, 850, "o@850")
    assert m.release() == []
    wall.t = 3.5  # past the idle wait: a forward of this worker's will come, still waited for
    assert m.release() == []
    wall.t = 30.5  # never arrived within the flight wait: given up on, counted
    assert m.release() == [("orders", "o@850")]
    assert m.forced.idle == 1


def test_an_own_forward_in_flight_is_waited_for_longer_than_an_input_with_lag() -> None:
    wall = Wall()
    lagging = {"payments"}
    flying = {100}
    m: TimestampMerge[str] = TimestampMerge(
        ["orders", "payments", "inbox"],
        lambda t: t in lagging,
        wall=wall,
        idle_wait=2.0,
        flight_wait=10.0,
        by_time=["inbox"],
        in_flight=lambda t, before: any(s < before for s in flying),
    )
    m.push("orders", 0, 500, "o@500")
    assert m.release() == []
    wall.t = 2.5  # payments' idle wait is over; the inbox's forward stamped 100 is still on its way
    assert m.release() == []
    m.push("inbox", 0, 100, "i@100")
    flying.clear()
    assert m.release() == [("inbox", "i@100"), ("orders", "o@500")]  # payments given up on
    assert m.forced.idle == 2


@pytest.mark.parametrize("value", ["-1", "601", "thirty", ""])
def test_a_bad_flight_wait_is_refused_naming_its_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ORDERWATCH_MERGE_FLIGHT_SECONDS", value)
    with pytest.raises(ConfigError, match="ORDERWATCH_MERGE_FLIGHT_SECONDS"):
        load_settings()


def test_the_flight_wait_reaches_the_orders_agents_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERWATCH_MERGE_FLIGHT_SECONDS", "45")
    h = AgentHarness("orders", 0.0, merge_flight_seconds=load_settings().merge_flight_seconds)
    h.driver.table = {}  # type: ignore[assignment]  # the partition's state comes from an empty table
    assert h.driver.merges == {}
    h.driver.runtime(0)
    assert h.driver.merges[0].flight_wait == 45.0
