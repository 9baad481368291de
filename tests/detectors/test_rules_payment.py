"""RULES.md, payment rules: PAYMENT_NOT_CONFIRMED, PAYMENT_TIMEOUT, DUPLICATE_PAYMENT,
PAYMENT_AMOUNT_MISMATCH, PAYMENT_WITHOUT_ORDER, PAYMENT_FAILURE_SPIKE."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from orderwatch.detectors.engine import Engine
from orderwatch.detectors.records import Emission, to_cloudevent
from orderwatch.schemas.events import Event
from tests.factories import (
    T0,
    at,
    cancelled,
    created,
    expect_opened,
    expect_resolved,
    failed,
    opened,
    paid,
    refund,
    reserved,
    resolved,
    rules_opened,
    run,
    status,
    updated,
)

OID = "o-1"


def _order_paid_at(minutes: float) -> tuple[list[Event], Event]:
    """An order created at T0 with stock reserved, paid at `minutes` (not yet marked paid)."""
    p = paid(OID, at(minutes))
    return [created(OID, T0), reserved(OID, at(0.5)), p], p


# -- PAYMENT_NOT_CONFIRMED: payment.succeeded + 5 min, order status paid or later (or cancelled) --


def test_payment_not_confirmed_fires_at_deadline() -> None:
    events, p = _order_paid_at(1)
    ems = run(events, until=at(6) + timedelta(seconds=1))
    expect_opened(ems, "PAYMENT_NOT_CONFIRMED", subject=OID, order_id=OID, severity="high", event_time=at(6), start=p)
    assert rules_opened(ems) == ["PAYMENT_NOT_CONFIRMED"]


def test_payment_not_confirmed_is_pending_until_the_clock_passes_the_deadline() -> None:
    events, _ = _order_paid_at(1)
    engine = Engine()
    ems = run(events, until=at(6), engine=engine)
    assert ems == []
    assert engine.pending()["PAYMENT_NOT_CONFIRMED"] == 1


@pytest.mark.parametrize("value", ["paid", "allocated", "shipped", "cancelled"])
def test_payment_not_confirmed_cleared_by_status_at_exactly_the_deadline(value: str) -> None:
    events, _ = _order_paid_at(1)
    ems = run([*events, status(OID, at(6), value)], until=at(20))
    assert rules_opened(ems) == []


def test_payment_not_confirmed_not_cleared_by_pending_payment_status() -> None:
    events, p = _order_paid_at(1)
    ems = run([*events, status(OID, at(3), "pending_payment")], until=at(7))
    expect_opened(ems, "PAYMENT_NOT_CONFIRMED", subject=OID, order_id=OID, severity="high", event_time=at(6), start=p)


def test_payment_not_confirmed_resolves_when_status_arrives_late() -> None:
    events, p = _order_paid_at(1)
    s = status(OID, at(6) + timedelta(seconds=1), "paid")
    ems = run([*events, s], until=at(8))
    rec = expect_opened(
        ems, "PAYMENT_NOT_CONFIRMED", subject=OID, order_id=OID, severity="high", event_time=at(6), start=p
    )
    expect_resolved(ems, "PAYMENT_NOT_CONFIRMED", by=s, exception=rec)
    assert [e.kind for e in ems] == ["opened", "resolved"]


# -- PAYMENT_TIMEOUT: order.created + 30 min, no payment nor cancel ---------------------------


def test_payment_timeout_fires_at_deadline() -> None:
    c = created(OID, T0)
    ems = run([c], until=at(31))
    expect_opened(ems, "PAYMENT_TIMEOUT", subject=OID, order_id=OID, severity="low", event_time=at(30), start=c)
    assert rules_opened(ems) == ["PAYMENT_TIMEOUT"]


def test_payment_timeout_cleared_by_payment_at_exactly_the_deadline() -> None:
    ems = run([created(OID, T0), reserved(OID, at(1)), paid(OID, at(30))], until=at(31))
    assert rules_opened(ems) == []


def test_payment_timeout_cleared_by_cancel_at_exactly_the_deadline() -> None:
    # cancelled is terminal: nothing at all may fire afterwards, ORDER_STUCK included
    ems = run([created(OID, T0), cancelled(OID, at(30))], until=at(days=30))
    assert ems == []


def test_payment_timeout_resolves_on_late_payment() -> None:
    c, p = created(OID, T0), paid(OID, at(45))
    ems = run([c, reserved(OID, at(1)), p], until=at(46))
    rec = expect_opened(ems, "PAYMENT_TIMEOUT", subject=OID, order_id=OID, severity="low", event_time=at(30), start=c)
    expect_resolved(ems, "PAYMENT_TIMEOUT", by=p, exception=rec)


def test_payment_timeout_resolves_on_late_cancel() -> None:
    c, x = created(OID, T0), cancelled(OID, at(45))
    ems = run([c, x], until=at(days=30))
    rec = expect_opened(ems, "PAYMENT_TIMEOUT", subject=OID, order_id=OID, severity="low", event_time=at(30), start=c)
    expect_resolved(ems, "PAYMENT_TIMEOUT", by=x, exception=rec)
    assert rules_opened(ems) == ["PAYMENT_TIMEOUT"]


# -- DUPLICATE_PAYMENT: a new payment_id when earlier payments already cover the total -------


def _two_payments(first: str, second: str) -> tuple[list[Event], Event]:
    p2 = paid(OID, at(3), amount=second, payment="pay-b")
    return [
        created(OID, T0),
        reserved(OID, at(0.5)),
        paid(OID, at(1), amount=first, payment="pay-a"),
        status(OID, at(2), "paid"),
        p2,
    ], p2


def test_duplicate_payment_fires_instantly_and_suppresses_mismatch() -> None:
    events, p2 = _two_payments("50.00", "50.00")
    ems = run(events, until=at(30))
    rec = expect_opened(
        ems, "DUPLICATE_PAYMENT", subject=OID, order_id=OID, severity="critical", event_time=at(3), start=p2
    )
    assert rec.detected_at == at(3).timestamp()
    assert rec.evidence["payment_id"] == "pay-b"
    assert rec.evidence["earlier_payment_ids"] == ["pay-a"]
    # paid 100 for a total of 50, but DUPLICATE_PAYMENT fired: no PAYMENT_AMOUNT_MISMATCH
    assert rules_opened(ems) == ["DUPLICATE_PAYMENT"]


def test_duplicate_payment_counts_earlier_payments_within_the_tolerance() -> None:
    events, p2 = _two_payments("49.99", "0.01")  # 49.99 covers 50.00 within 0.01
    ems = run(events, until=at(5))
    expect_opened(ems, "DUPLICATE_PAYMENT", subject=OID, order_id=OID, severity="critical", event_time=at(3), start=p2)


def test_duplicate_payment_not_fired_for_partial_payments() -> None:
    events, _ = _two_payments("49.98", "0.02")  # 49.98 does not cover 50.00: a split payment
    ems = run(events, until=at(30))
    assert ems == []


def test_duplicate_payment_not_fired_for_the_same_payment_reported_again() -> None:
    events = [
        created(OID, T0),
        reserved(OID, at(0.5)),
        paid(OID, at(1), payment="pay-a"),
        status(OID, at(2), "paid"),
        paid(OID, at(3), payment="pay-a"),
    ]  # new event id, same payment
    ems = run(events, until=at(30))
    assert ems == []


def test_duplicate_payment_resolves_once_refunds_reach_its_amount() -> None:
    events, p2 = _two_payments("50.00", "50.00")
    r1 = refund("refund.succeeded", OID, at(10), refund_id="r-1", amount="20.00")
    r2 = refund("refund.succeeded", OID, at(20), refund_id="r-2", amount="30.00")
    ems = run([*events, r1], until=at(15))
    assert resolved(ems) == []
    ems = run([*events, r1, r2], until=at(30))
    rec = expect_opened(
        ems, "DUPLICATE_PAYMENT", subject=OID, order_id=OID, severity="critical", event_time=at(3), start=p2
    )
    expect_resolved(ems, "DUPLICATE_PAYMENT", by=r2, exception=rec)
    assert rules_opened(ems) == ["DUPLICATE_PAYMENT"]


def test_duplicate_payment_detected_when_the_order_arrives_after_its_payments() -> None:
    pb = paid(OID, at(3), payment="pay-b")
    # the orders topic lags 10 min (beyond the 60 s lateness) but within PAYMENT_WITHOUT_ORDER's 10 min
    events = [
        paid(OID, at(1), payment="pay-a"),
        pb,
        reserved(OID, at(3.5)),
        status(OID, at(4), "paid"),
        created("o-x", at(10), customer="c-x"),
        created(OID, T0),
    ]
    ems = run(events, lateness=60, until=at(20))
    expect_opened(ems, "DUPLICATE_PAYMENT", subject=OID, order_id=OID, severity="critical", event_time=at(3), start=pb)
    assert rules_opened(ems) == ["DUPLICATE_PAYMENT"]


# -- PAYMENT_AMOUNT_MISMATCH: first payment + 10 min, payments differ from the total ----------


def _underpaid() -> tuple[list[Event], Event]:
    p = paid(OID, at(1), amount="40.00", payment="pay-a")
    return [created(OID, T0), reserved(OID, at(0.5)), p, status(OID, at(2), "paid")], p


def test_payment_amount_mismatch_fires_at_deadline() -> None:
    events, p = _underpaid()
    ems = run(events, until=at(12))
    rec = expect_opened(
        ems, "PAYMENT_AMOUNT_MISMATCH", subject=OID, order_id=OID, severity="critical", event_time=at(11), start=p
    )
    assert (rec.evidence["order_total"], rec.evidence["paid"]) == ("50.00", "40.00")
    assert rules_opened(ems) == ["PAYMENT_AMOUNT_MISMATCH"]


def test_payment_amount_mismatch_cleared_by_payment_at_exactly_the_deadline() -> None:
    events, _ = _underpaid()
    ems = run([*events, paid(OID, at(11), amount="10.00", payment="pay-b")], until=at(30))
    assert ems == []


def test_payment_amount_mismatch_tolerates_one_cent() -> None:
    events = [created(OID, T0), reserved(OID, at(0.5)), paid(OID, at(1), amount="49.99"), status(OID, at(2), "paid")]
    assert run(events, until=at(30)) == []


def test_payment_amount_mismatch_resolves_on_late_payment() -> None:
    events, p = _underpaid()
    p2 = paid(OID, at(20), amount="10.00", payment="pay-b")
    ems = run([*events, p2], until=at(30))
    rec = expect_opened(
        ems, "PAYMENT_AMOUNT_MISMATCH", subject=OID, order_id=OID, severity="critical", event_time=at(11), start=p
    )
    expect_resolved(ems, "PAYMENT_AMOUNT_MISMATCH", by=p2, exception=rec)
    assert opened(ems, "DUPLICATE_PAYMENT") == []


def test_payment_amount_mismatch_resolves_on_late_refund_of_the_overpayment() -> None:
    p = paid(OID, at(1), amount="60.00")
    r = refund("refund.succeeded", OID, at(20), amount="10.00")
    ems = run([created(OID, T0), reserved(OID, at(0.5)), p, status(OID, at(2), "paid"), r], until=at(30))
    rec = expect_opened(
        ems, "PAYMENT_AMOUNT_MISMATCH", subject=OID, order_id=OID, severity="critical", event_time=at(11), start=p
    )
    expect_resolved(ems, "PAYMENT_AMOUNT_MISMATCH", by=r, exception=rec)


def test_payment_amount_mismatch_cleared_by_refund_before_the_deadline() -> None:
    events = [
        created(OID, T0),
        reserved(OID, at(0.5)),
        paid(OID, at(1), amount="60.00"),
        status(OID, at(2), "paid"),
        refund("refund.succeeded", OID, at(5), amount="10.00"),
    ]
    ems = run(events, until=at(30))
    assert rules_opened(ems) == []


# -- PAYMENT_WITHOUT_ORDER: payment + 10 min, no order.created -------------------------------


def test_payment_without_order_fires_at_deadline() -> None:
    p = paid(OID, T0)
    ems = run([p, reserved(OID, at(0.5)), status(OID, at(1), "paid")], until=at(11))
    expect_opened(ems, "PAYMENT_WITHOUT_ORDER", subject=OID, order_id=OID, severity="high", event_time=at(10), start=p)
    assert to_cloudevent(opened(ems, "PAYMENT_WITHOUT_ORDER")[0])["data"]["category"] == "system"
    assert rules_opened(ems) == ["PAYMENT_WITHOUT_ORDER"]


def test_payment_without_order_cleared_by_order_at_exactly_the_deadline() -> None:
    ems = run([paid(OID, T0), reserved(OID, at(0.5)), status(OID, at(1), "paid"), created(OID, at(10))], until=at(30))
    assert ems == []


def test_payment_without_order_resolves_when_the_order_arrives() -> None:
    p, c = paid(OID, T0), created(OID, at(15))
    ems = run([p, reserved(OID, at(0.5)), status(OID, at(1), "paid"), c], until=at(30))
    rec = expect_opened(
        ems, "PAYMENT_WITHOUT_ORDER", subject=OID, order_id=OID, severity="high", event_time=at(10), start=p
    )
    expect_resolved(ems, "PAYMENT_WITHOUT_ORDER", by=c, exception=rec)
    assert rules_opened(ems) == ["PAYMENT_WITHOUT_ORDER"]


# -- PAYMENT_FAILURE_SPIKE: per provider, 5 min tumbling windows, >= 20 failures and >= 30 % ---


def _window(start: datetime, failures: int, successes: int, provider: str = "stripe") -> list[Event]:
    """`failures` failed and `successes` succeeded payments spread over the 5 min window at `start`
    (T0 is aligned to 5 min), failures first."""
    n = failures + successes
    step = 240.0 / max(n, 1)
    evs: list[Event] = []
    for i in range(n):
        when = start + timedelta(seconds=i * step)
        tag = f"{provider}-{start:%H%M}-{i}"
        evs.append(failed(tag, when, provider=provider) if i < failures else paid(tag, when, provider=provider))
    return evs


def _spikes(ems: list[Emission]) -> tuple[list[Emission], list[Emission], list[Emission]]:
    rule = "PAYMENT_FAILURE_SPIKE"
    return opened(ems, rule), updated(ems, rule), resolved(ems, rule)


def test_payment_failure_spike_fires_when_the_window_closes() -> None:
    w0 = _window(T0, 20, 46)  # 20 / 66 = 30.3 %
    ems = run(w0, until=at(5.5))
    rec = expect_opened(
        ems,
        "PAYMENT_FAILURE_SPIKE",
        subject="stripe",
        order_id=None,
        severity="critical",
        event_time=at(5),
        start=w0[0],
    )
    assert (rec.evidence["failures"], rec.evidence["attempts"]) == (20, 66)


def test_payment_failure_spike_not_judged_before_the_window_is_full() -> None:
    assert _spikes(run(_window(T0, 30, 0), until=at(4.9))) == ([], [], [])


@pytest.mark.parametrize(
    ("failures", "successes", "fires"),
    [
        (21, 49, True),  # exactly 30 %
        (20, 47, False),  # 29.9 %
        (19, 0, False),  # 100 % but fewer than 20 failures
    ],
)
def test_payment_failure_spike_thresholds(failures: int, successes: int, fires: bool) -> None:
    ems = run(_window(T0, failures, successes), until=at(6))
    assert len(opened(ems, "PAYMENT_FAILURE_SPIKE")) == int(fires)


def test_payment_failure_spike_is_per_provider() -> None:
    ems = run(sorted(_window(T0, 10, 0, "stripe") + _window(T0, 10, 0, "adyen"), key=lambda e: e.time), until=at(6))
    assert opened(ems, "PAYMENT_FAILURE_SPIKE") == []


def test_payment_failure_spike_updates_while_it_holds() -> None:
    w0, w1 = _window(T0, 20, 10), _window(at(5), 25, 10)
    ems = run(w0 + w1, until=at(10.5))
    op, up, res = _spikes(ems)
    assert (len(op), len(up), res) == (1, 1, [])
    assert up[0].record.exception_id == op[0].record.exception_id
    assert up[0].record.evidence["windows"] == 2
    assert up[0].record.evidence["failures"] == 25


def test_payment_failure_spike_resolves_after_a_later_full_window_under_both_thresholds() -> None:
    w0, w1 = _window(T0, 20, 10), _window(at(5), 5, 50)
    assert _spikes(run(w0 + w1, until=at(9.9)))[2] == []  # the healthy window is not full yet
    ems = run(w0 + w1, until=at(10.5))
    op, up, res = _spikes(ems)
    assert (len(op), up, len(res)) == (1, [], 1)
    rec = res[0].record
    assert rec.exception_id == op[0].record.exception_id
    assert (rec.status, rec.resolution_kind) == ("resolved", "auto")
    assert rec.resolution_event_time == at(10).timestamp()
    assert rec.resolution_event_id is not None and "stripe" in rec.resolution_event_id


def test_payment_failure_spike_stays_open_when_a_window_is_under_only_one_threshold() -> None:
    w0, w1 = _window(T0, 20, 10), _window(at(5), 19, 0)  # fewer failures, but 100 %
    op, up, res = _spikes(run(w0 + w1, until=at(10.5)))
    assert (len(op), up, res) == (1, [], [])


def test_payment_failure_spike_opens_a_new_exception_after_it_stopped() -> None:
    w0, w1, w2 = _window(T0, 20, 10), _window(at(5), 0, 20), _window(at(10), 22, 0)
    op, up, res = _spikes(run(w0 + w1 + w2, until=at(15.5)))
    assert (len(op), up, len(res)) == (2, [], 1)
    assert op[1].record.exception_id != op[0].record.exception_id
    assert op[1].record.event_time == at(15).timestamp()
