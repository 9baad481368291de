"""The backtest's hot-path shortcuts (issue 10, item 3) decide as the code they spare did: the
one-line item key, the blocklist that cannot match, ending one episode among several of a rule,
the engine's rebinding, and the no-op changed-key set."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orderwatch.detectors.base import Untracked
from orderwatch.detectors.blocklist import Blocklist
from orderwatch.detectors.engine import Engine
from orderwatch.detectors.orders.core import OrderCore
from orderwatch.detectors.orders.state import OrderState
from orderwatch.detectors.records import Emission
from orderwatch.detectors.windows import items_key
from tests.factories import at, created, refund, rules_opened, run


class _Line:
    def __init__(self, sku: str, quantity: int) -> None:
        self.sku, self.quantity = sku, quantity


def _reference_items_key(items: list[_Line]) -> int:
    """The key as it was computed before the one-line shortcut: a Counter of the lines, sorted."""
    counts = Counter((item.sku, item.quantity) for item in items)
    canonical = "\x1e".join(f"{sku}\x1f{qty}\x1f{n}" for (sku, qty), n in sorted(counts.items()))
    return int.from_bytes(hashlib.blake2b(canonical.encode(), digest_size=8).digest(), "big")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["A", "B", "SKU-1", "é\x1f"]), st.integers(0, 5)), max_size=5))
def test_the_item_key_is_the_multiset_digest_for_any_number_of_lines(lines: list[tuple[str, int]]) -> None:
    items = [_Line(sku, qty) for sku, qty in lines]
    assert items_key(items) == _reference_items_key(items)


def test_one_line_and_its_repetition_are_different_keys() -> None:
    assert items_key([_Line("A", 1)]) != items_key([_Line("A", 1), _Line("A", 1)])
    assert items_key([_Line("A", 2)]) != items_key([_Line("A", 1), _Line("A", 1)])


def test_a_blocklist_may_match_only_with_entries_or_a_shared_table() -> None:
    own = Blocklist()
    assert not own.may_match()
    own.apply("customer:c-1", {"reason": "fraud"})
    assert own.may_match()
    own.apply("customer:c-1", None)  # a tombstone empties it again
    assert not own.may_match()
    # Live, the entries are in the global table the lookup reads: always ask it.
    shared = Blocklist(lookup=lambda key: ("fraud", None) if key == "customer:c-9" else None)
    assert shared.may_match()
    assert shared.match("c-9", "f" * 20, at().timestamp()) == ("customer", "customer:c-9", "fraud")


def test_an_order_still_hits_a_shared_blocklist() -> None:
    shared = Blocklist(lookup=lambda key: ("chargebacks", None) if key == "customer:c-9" else None)
    ems = run([created("o-1", at(0), customer="c-9")], engine=Engine(blocklist=shared))
    assert "BLOCKLISTED_ORDER" in rules_opened(ems)
    assert "BLOCKLISTED_ORDER" not in rules_opened(run([created("o-2", at(0), customer="c-9")]))


def test_ending_one_episode_of_a_rule_leaves_its_other_refs_and_rules() -> None:
    st_ = OrderState("o-1", {})
    st_.eps = (
        "REFUND_OVERDUE", 10.0, "e1", "r-1",
        "ORDER_STUCK", 20.0, "e2", None,
        "REFUND_OVERDUE", 30.0, "e3", "r-2",
        "REFUND_OVERDUE", 40.0, "e4", "r-3",
    )  # fmt: skip
    OrderCore._end(st_, "REFUND_OVERDUE", "r-2")
    assert st_.eps == (
        "REFUND_OVERDUE",
        10.0,
        "e1",
        "r-1",
        "ORDER_STUCK",
        20.0,
        "e2",
        None,
        "REFUND_OVERDUE",
        40.0,
        "e4",
        "r-3",
    )
    OrderCore._end(st_, "REFUND_OVERDUE", "r-9")  # no such ref: nothing changes
    OrderCore._end(st_, "PAYMENT_TIMEOUT")  # no such rule: nothing changes
    OrderCore._end(st_, "REFUND_OVERDUE")  # ref None: only an episode without a ref would match
    assert len(st_.eps) == 12
    OrderCore._end(st_, "REFUND_OVERDUE", "r-3")
    OrderCore._end(st_, "ORDER_STUCK")
    assert st_.eps == ("REFUND_OVERDUE", 10.0, "e1", "r-1")


def test_two_refunds_overdue_then_one_paid_out_opens_only_the_other() -> None:
    evs = [
        created("o-1", at(0)),
        refund("refund.requested", "o-1", at(10), refund_id="r-1", amount="10.00"),
        refund("refund.requested", "o-1", at(11), refund_id="r-2", amount="10.00"),
        refund("refund.succeeded", "o-1", at(20), refund_id="r-1", amount="10.00"),
    ]
    ems = run(evs, until=at(days=2))
    overdue = [e.record for e in ems if e.kind == "opened" and e.record.rule == "REFUND_OVERDUE"]
    assert [r.evidence["refund_id"] for r in overdue] == ["r-2"]


def _nothing(*_: Any) -> list[Emission]:
    return []


def test_route_rebinds_replaced_detector_methods() -> None:
    engine = Engine()
    ev = created("o-1", at(0))
    t = at(0).timestamp()
    assert engine.apply(ev, t, t) or engine.orders.states  # the real rules ran
    quiet = Engine()
    for det in (quiet.orders, quiet.stock, quiet.addresses, quiet.customers, quiet.providers):
        det.on_event = _nothing  # type: ignore[method-assign]
    quiet.route()
    assert quiet.apply(ev, t, t) == []
    assert not quiet.orders.states


def test_untracked_keeps_nothing() -> None:
    dirty = Untracked()
    dirty.add("o-1")
    dirty.add(("sku", "W1"))
    assert len(dirty) == 0
    assert "o-1" not in dirty
