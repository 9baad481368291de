from tests.factories import T0, at, created, happy_journey, opened, rules_opened, run


def test_happy_journey_raises_nothing() -> None:
    assert run(happy_journey("o-1", T0), until=at(days=30)) == []


def test_unpaid_order_times_out_then_gets_stuck() -> None:
    ems = run([created("o-2", T0)], until=at(days=30))
    assert rules_opened(ems) == ["ORDER_STUCK", "PAYMENT_TIMEOUT"]
    timeout = opened(ems, "PAYMENT_TIMEOUT")[0].record
    assert timeout.event_time == at(30).timestamp()
