"""PartitionRuntime: reorder buffer, dedupe, ledger and snapshots, with real detectors."""

from __future__ import annotations

from typing import Any

from orderwatch.detectors.base import KeyedDetector
from orderwatch.detectors.config import RulesConfig
from orderwatch.detectors.orders import OrderDetector
from orderwatch.detectors.records import Emission
from orderwatch.streams.runtime import Ledger, PartitionRuntime, apply_routed
from tests.factories import at, created, paid, status


def make() -> PartitionRuntime[str]:
    return PartitionRuntime(OrderDetector(RulesConfig()))


def test_events_are_applied_in_event_time_order_once_the_clock_passes_them() -> None:
    rt = make()
    pay = paid("o-1", at(2))
    order = created("o-1", at(0))
    assert rt.offer(pay, pay.time.timestamp(), "payments:0", 0, "tok-pay")
    assert rt.offer(order, order.time.timestamp(), "orders:0", 0, "tok-order")
    assert rt.release(at(1).timestamp()).applied == ["tok-order"]
    rel = rt.release(at(3).timestamp())
    assert rel.applied == ["tok-pay"]
    assert rt.buffered == 0


def test_a_deadline_fires_when_the_clock_passes_it_and_not_before() -> None:
    rt = make()
    pay = paid("o-1", at(0))
    rt.offer(pay, pay.time.timestamp(), "payments:0", 0, "t1")
    order = created("o-1", at(0.5))
    rt.offer(order, order.time.timestamp(), "orders:0", 0, "t2")
    assert [e.record.rule for e in rt.release(at(5).timestamp()).emissions] == []
    fired = rt.release(at(5.01).timestamp()).emissions
    assert [(e.kind, e.record.rule) for e in fired] == [("opened", "PAYMENT_NOT_CONFIRMED")]


def test_redeliveries_are_dropped_by_id_and_by_ledger() -> None:
    rt = make()
    order = created("o-1", at(0))
    assert rt.offer(order, order.time.timestamp(), "orders:0", 7, "a")
    assert not rt.offer(order, order.time.timestamp(), "orders:0", 8, "b")  # same id
    rt.release(at(1).timestamp())
    fresh = make()
    fresh.ledger = Ledger.loads(rt.ledger.dumps())
    again = created("o-1", at(0), id_="other-id")
    assert not fresh.offer(again, again.time.timestamp(), "orders:0", 7, "c")  # offset applied
    new = created("o-1", at(0), id_="new-id")
    assert fresh.offer(new, new.time.timestamp(), "orders:0", 9, "d")


def test_a_copy_of_an_event_read_again_after_a_restart_is_still_a_duplicate() -> None:
    # The producer sent order.created twice (offsets 3 and 9). A worker applied offset 3 and was
    # killed; its successor reads from the last commit: 3 is applied (the ledger says so), and
    # 9, the copy, must be dropped as the backtest drops it, not applied a second time.
    rt = make()
    order = created("o-1", at(0))
    rt.offer(order, order.time.timestamp(), "orders:0", 3, "a")
    rt.release(at(1).timestamp())
    fresh = make()
    fresh.ledger = Ledger.loads(rt.ledger.dumps())
    assert not fresh.offer(order, order.time.timestamp(), "orders:0", 3, "b")  # offset applied
    assert not fresh.offer(order, order.time.timestamp(), "orders:0", 9, "c")  # same id
    assert fresh.buffered == 0


def test_ledger_tracks_out_of_order_offsets() -> None:
    led = Ledger()
    led.seen_base("t:0", 10)
    for offset in (12, 10, 14):
        led.mark("t:0", offset)
    assert led.applied("t:0", 10) and led.applied("t:0", 12) and led.applied("t:0", 14)
    assert not led.applied("t:0", 11) and not led.applied("t:0", 13)
    led.mark("t:0", 11)
    assert led.low["t:0"] == 13
    assert Ledger.loads(led.dumps()).applied("t:0", 14)


def test_dirty_keys_snapshot_and_restore_into_a_fresh_detector() -> None:
    rt = make()
    for ev in (created("o-1", at(0)), paid("o-1", at(1)), status("o-1", at(2), "paid")):
        rt.offer(ev, ev.time.timestamp(), "orders:0", 0, "x")
    rt.release(at(3).timestamp())
    dirty = dict(rt.take_dirty())
    assert set(dirty) == {"o-1"} and dirty["o-1"]
    assert rt.take_dirty() == []
    fresh = OrderDetector(RulesConfig())
    fresh.restore("o-1", dirty["o-1"])
    assert fresh.snapshot("o-1") == dirty["o-1"]
    # The restored order keeps its timers: what was pending still fires (no reservation was
    # ever seen, and nothing shipped within 48 h of the payment).
    out = fresh.on_clock(at(1, hours=48).timestamp() + 1)
    assert sorted((e.kind, e.record.rule) for e in out) == [
        ("opened", "SHIPMENT_NOT_CREATED"),
        ("opened", "STOCK_NOT_RESERVED"),
    ]


def test_an_order_detector_uses_the_blocklist_it_is_given_even_while_empty() -> None:
    # Live, the lookup reads a dict the blocklist consumer fills later: an empty blocklist object
    # must not be swapped for a fresh one (it is falsy through __len__).
    entries: dict[str, tuple[str, float | None]] = {}
    from orderwatch.detectors.blocklist import Blocklist

    det = OrderDetector(RulesConfig(), Blocklist(lookup=entries.get))
    entries["customer:c-9"] = ("chargebacks", None)
    ev = created("o-1", at(0), customer="c-9")
    out = det.on_event("o-1", ev, ev.time.timestamp(), ev.time.timestamp())
    assert [e.record.rule for e in out] == ["BLOCKLISTED_ORDER"]


def test_an_event_whose_rules_raise_is_reported_and_the_batch_keeps_its_emissions() -> None:
    # Issue 9: a raise used to drop the emissions of every other event released with it.
    poison = status("o-2", at(1), "paid")

    def apply(det: KeyedDetector, ev: Any, t: float) -> list[Emission]:
        if ev is poison:
            raise RuntimeError("a bug in a rule")
        return apply_routed(det, ev, t)

    rt: PartitionRuntime[str] = PartitionRuntime(OrderDetector(RulesConfig()), apply)
    first, last = created("o-1", at(0)), created("o-3", at(2))
    for n, ev in enumerate((first, poison, last)):
        assert rt.offer(ev, ev.time.timestamp(), "orders:0", n, f"tok-{n}")
    released = rt.release(at(60).timestamp())
    assert [tok for tok, _ in released.failed] == ["tok-1"]
    assert isinstance(released.failed[0][1], RuntimeError)
    assert released.applied == ["tok-0", "tok-1", "tok-2"]  # acked: the partition moves on
    assert rt.ledger.low["orders:0"] == 3
    opened = {(em.record.rule, em.record.order_id) for em in released.emissions if em.kind == "opened"}
    assert ("PAYMENT_TIMEOUT", "o-1") in opened and ("PAYMENT_TIMEOUT", "o-3") in opened


def test_a_forward_sent_again_after_a_crash_is_recognised_by_its_upstream_offset() -> None:
    # Issue 9: the upstream agent re-forwards what it had not committed, as new messages at new
    # offsets; the event-id dedupe is lost with the process, the ledger's upstream marks are not.
    rt = make()
    first, second = created("o-1", at(0)), created("o-2", at(1))
    assert rt.offer(first, first.time.timestamp(), "by:0", 10, "t10", ("orders:3", 5))
    assert rt.offer(second, second.time.timestamp(), "by:0", 11, "t11", ("orders:3", 6))
    rt.release(at(5).timestamp())
    restarted = PartitionRuntime(OrderDetector(RulesConfig()), ledger=Ledger.loads(rt.ledger.dumps()))
    again = created("o-1", at(0))  # same event, same id: the id set is gone with the process
    assert not restarted.offer(again, again.time.timestamp(), "by:0", 12, "t12", ("orders:3", 5))
    assert not restarted.offer(again, again.time.timestamp(), "by:0", 13, "t13", ("orders:3", 6))
    third = created("o-3", at(2))
    assert restarted.offer(third, third.time.timestamp(), "by:0", 14, "t14", ("orders:3", 7))


def test_upstream_offsets_applied_out_of_order_are_remembered_until_the_prefix_passes_them() -> None:
    rt = make()
    late, early = created("o-1", at(5)), created("o-2", at(0))
    rt.offer(late, late.time.timestamp(), "by:0", 10, "t10", ("orders:3", 5))
    rt.offer(early, early.time.timestamp(), "by:0", 11, "t11", ("orders:3", 6))
    rt.release(at(1).timestamp())  # only the earlier event (offset 11) is applied
    led = Ledger.loads(rt.ledger.dumps())
    assert led.applied_upstream(("orders:3", 6)) and not led.applied_upstream(("orders:3", 5))
    rt.release(at(10).timestamp())
    led = Ledger.loads(rt.ledger.dumps())
    assert led.src == {"orders:3": 6} and led.src_above == {}
    assert led.applied_upstream(("orders:3", 5)) and not led.applied_upstream(("orders:3", 7))


def test_a_ledger_written_before_upstream_marks_still_loads() -> None:
    led = Ledger.loads(b'{"orders:0": [5, [7]]}')
    assert led.low == {"orders:0": 5} and led.above == {"orders:0": {7}} and led.src == {}
