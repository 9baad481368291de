"""Actions: the pure planner per rule and policy, then the dispatcher against the real Redis and
Kafka of the local stack (dedupe under re-delivery, approvals, blocklist entries, caps, dry run)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from orderwatch.errors import CaseNotFound, DeliveryError, StoreUnavailable, TransitionError
from orderwatch.handlers.actions import ActionDispatcher, DryRunSink, KafkaActionSink, plan
from orderwatch.handlers.policy import ActionPolicy, ActionRule
from orderwatch.schemas.action_command import ActionCommand
from orderwatch.streams.metrics import Metrics
from orderwatch.streams.settings import Settings
from tests.handlers import samples
from tests.handlers.samples import change

# (action, decision, reason, Kafka key or None for the subject, params it must carry)
EXPECTED: dict[str, list[tuple[str, str, str, dict[str, Any]]]] = {
    "DUPLICATE_PAYMENT": [
        (
            "refund_duplicate_payment",
            "auto",
            "policy",
            {"payment_id": "pay-2", "amount": Decimal("30.00"), "currency": "EUR"},
        )
    ],
    "REFUND_FAILED": [
        ("retry_refund", "approval", "amount_unknown", {"refund_id": "r-9", "reason": "insufficient_funds"})
    ],
    "REFUND_OVERDUE": [("expedite_refund", "auto", "policy", {"refund_id": "r-7", "amount": Decimal("20.00")})],
    "NEW_ACCOUNT_BURST": [
        ("hold_orders_for_review", "approval", "policy", {"order_ids": [f"o-b{n}" for n in range(5)]}),
        ("blocklist_customer", "approval", "policy", {"customer_id": "c-new"}),
    ],
    "ADDRESS_CLUSTER": [
        ("hold_orders_for_review", "approval", "policy", {"order_ids": [f"o-a{n}" for n in range(5)]}),
        ("blocklist_address", "approval", "policy", {}),
    ],
    "SHIPPED_AFTER_CANCEL": [
        ("intercept_shipment", "approval", "policy", {"shipment_id": "shp-o-sac", "carrier": "dhl"})
    ],
    "PAYMENT_FAILURE_SPIKE": [("failover_payment_provider", "approval", "policy", {"provider": "acme-pay"})],
    "STOCK_OVERSOLD": [("replenish_or_cancel", "approval", "policy", {"sku": "SKU-9", "warehouse_id": "W1"})],
    "DELIVERY_FAILED": [("reship_or_refund", "approval", "policy", {"shipment_id": "shp-o-df", "reason": "lost"})],
    "INVALID_SHIPPING_INFO": [("confirm_address_with_customer", "auto", "policy", {"problems": ["phone_invalid"]})],
}


# -- planner (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_plan_per_rule_gives_its_commands_and_modes(rule: str) -> None:
    data = samples.SCENARIOS[rule]()
    planned = plan(change(data), ActionPolicy.default())
    assert [(p.action, p.decision, p.reason) for p in planned] == [e[:3] for e in EXPECTED[rule]]
    for p, (action, _, _, params) in zip(planned, EXPECTED[rule], strict=True):
        cmd = p.command
        assert cmd.id == cmd.data.idempotency_key == f"{data.exception_id}:{action}"
        assert (cmd.type, cmd.data.exception_id, cmd.data.rule, cmd.data.mode) == (
            "action.requested",
            data.exception_id,
            rule,
            "auto",
        )
        assert p.key == cmd.subject == (data.order_id or data.subject)
        got = cmd.data.params.model_dump(exclude_none=True)
        assert got.items() >= params.items(), got
        ActionCommand.model_validate_json(cmd.model_dump_json())  # round-trips on the wire


def test_blocklist_actions_name_the_customer_or_the_address_fingerprint() -> None:
    burst = plan(change(samples.new_account_burst("c-77")), ActionPolicy.default())
    assert [p.blocklist_key for p in burst] == [None, "customer:c-77"]
    cluster = samples.address_cluster()
    fingerprint = cluster.evidence["address_fingerprint"]
    planned = plan(change(cluster), ActionPolicy.default())
    assert [p.blocklist_key for p in planned] == [None, f"address:{fingerprint}"]
    assert planned[1].command.data.params.address_fingerprint == fingerprint == cluster.subject


def test_a_refund_above_max_amount_needs_approval_and_at_it_runs() -> None:
    policy = ActionPolicy.default()
    above = plan(change(samples.duplicate_payment("80.00")), policy)[0]
    assert (above.decision, above.reason, above.amount) == ("approval", "over_max_amount", Decimal("80.00"))
    at_cap = plan(change(samples.duplicate_payment("50.00")), policy)[0]
    assert (at_cap.decision, at_cap.amount) == ("auto", Decimal("50.00"))
    raised = ActionPolicy({**policy.rules, "refund_duplicate_payment": ActionRule(max_amount=Decimal("100"))})
    assert plan(change(samples.duplicate_payment("80.00")), raised)[0].decision == "auto"


def test_an_unknown_amount_waits_for_approval_unless_the_cap_is_removed() -> None:
    data = samples.refund_failed()
    assert plan(change(data), ActionPolicy.default())[0].reason == "amount_unknown"
    uncapped = ActionPolicy({**ActionPolicy.default().rules, "retry_refund": ActionRule(max_amount=None)})
    assert plan(change(data), uncapped)[0].decision == "auto"


def test_attempts_cap_per_case() -> None:
    data = samples.duplicate_payment()
    policy = ActionPolicy.default()
    assert plan(change(data), policy, {"refund_duplicate_payment": 2})[0].decision == "auto"
    capped = plan(change(data), policy, {"refund_duplicate_payment": 3})[0]
    assert (capped.decision, capped.reason) == ("capped", "max_attempts")
    one = ActionPolicy({**policy.rules, "refund_duplicate_payment": ActionRule(max_attempts=1)})
    assert plan(change(data), one, {"refund_duplicate_payment": 1})[0].decision == "capped"
    assert plan(change(data), one, {"other_action": 5})[0].decision == "auto"


def test_off_skips_and_only_opened_changes_plan_anything() -> None:
    data = samples.duplicate_payment()
    off = ActionPolicy({**ActionPolicy.default().rules, "refund_duplicate_payment": ActionRule(mode="off")})
    assert [(p.decision, p.reason) for p in plan(change(data), off)] == [("skip", "off")]
    for kind in ("acknowledged", "escalated", "resolved"):
        assert plan(change(data, kind, level=1), ActionPolicy.default()) == []


def test_params_carry_no_personal_data_whatever_the_evidence_holds() -> None:
    for rule, make in samples.SCENARIOS.items():
        data = samples.with_personal_data(make())
        for p in plan(change(data), ActionPolicy.default()):
            wire = p.command.model_dump_json()
            assert samples.PHONE_IN_EVIDENCE not in wire, rule
            assert samples.STREET_IN_EVIDENCE not in wire, rule
            assert "ada@example.org" not in wire, rule


# -- dispatcher against the real Redis and Kafka ---------------------------------------------


async def read_topic(settings: Settings, name: str) -> list[tuple[str, Any]]:
    """Every record of a one-partition topic, as (key, decoded JSON value)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic(name), 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=2000)
            out += [(m.key.decode(), json.loads(m.value)) for m in batch.get(tp, [])]
        return out
    finally:
        await consumer.stop()


def _count(metrics: Metrics, action: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value("orderwatch_actions_total", {"action": action, "outcome": outcome})
    return value or 0.0


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def dispatcher(
    redis_client: Redis, redis_prefix: str, producer: AIOKafkaProducer, kafka_topics: Settings, metrics: Metrics
) -> ActionDispatcher:
    return ActionDispatcher(
        redis_client, redis_prefix, KafkaActionSink(producer, kafka_topics), ActionPolicy.default(), metrics
    )


@pytest.mark.integration
async def test_the_same_change_delivered_twice_sends_one_command(
    dispatcher: ActionDispatcher, kafka_topics: Settings, metrics: Metrics
) -> None:
    data = samples.duplicate_payment()
    await dispatcher(change(data))
    await dispatcher(change(data))
    other = samples.refund_overdue()
    # Two workers handed the same change at the same moment: still one command.
    await asyncio.gather(dispatcher(change(other)), dispatcher(change(other)))
    records = await read_topic(kafka_topics, "order-actions")
    assert [(key, value["id"]) for key, value in records] == [
        ("o-dup", f"{data.exception_id}:refund_duplicate_payment"),
        ("o-ro", f"{other.exception_id}:expedite_refund"),
    ]
    cmd = ActionCommand.model_validate(records[0][1])
    assert (cmd.data.mode, cmd.data.params.amount, cmd.data.params.payment_id) == ("auto", Decimal("30.00"), "pay-2")
    assert records[0][1]["data"]["params"]["amount"] == "30.00"  # a decimal string on the wire
    assert _count(metrics, "refund_duplicate_payment", "sent") == 1
    assert _count(metrics, "expedite_refund", "sent") == 1
    assert await read_topic(kafka_topics, "blocklist") == []


@pytest.mark.integration
async def test_approval_flow_sends_on_approve_once(
    dispatcher: ActionDispatcher, kafka_topics: Settings, metrics: Metrics
) -> None:
    data = samples.shipped_after_cancel()
    await dispatcher(change(data))
    await dispatcher(change(data))  # re-delivered: still one pending approval
    assert await read_topic(kafka_topics, "order-actions") == []
    pending = await dispatcher.pending()
    assert [(p.exception_id, p.action, p.reason, p.order_id) for p in pending] == [
        (data.exception_id, "intercept_shipment", "policy", "o-sac")
    ]
    assert _count(metrics, "intercept_shipment", "pending_approval") == 1

    sent = await dispatcher.approve(data.exception_id, "intercept_shipment", "alice")
    again = await dispatcher.approve(data.exception_id, "intercept_shipment", "bob")
    await dispatcher(change(data))  # a late re-delivery after the approval sends nothing either
    records = await read_topic(kafka_topics, "order-actions")
    assert len(records) == 1
    cmd = ActionCommand.model_validate(records[0][1])
    assert (cmd.id, cmd.data.mode, cmd.data.approved_by) == (sent.id, "approved", "alice")
    assert again.data.approved_by == "alice"
    assert cmd.data.params.shipment_id == "shp-o-sac"
    assert await dispatcher.pending() == []
    assert _count(metrics, "intercept_shipment", "sent") == 1


@pytest.mark.integration
async def test_reject_never_sends_and_unknown_actions_are_not_found(
    dispatcher: ActionDispatcher, kafka_topics: Settings
) -> None:
    data = samples.duplicate_payment("80.00")
    await dispatcher(change(data))
    [pending] = await dispatcher.pending()
    assert (pending.action, pending.reason, pending.amount) == (
        "refund_duplicate_payment",
        "over_max_amount",
        Decimal("80.00"),
    )
    await dispatcher.reject(data.exception_id, "refund_duplicate_payment", "alice", "customer kept both")
    await dispatcher.reject(data.exception_id, "refund_duplicate_payment", "alice")  # harmless twice
    with pytest.raises(TransitionError, match="rejected"):
        await dispatcher.approve(data.exception_id, "refund_duplicate_payment", "bob")
    with pytest.raises(CaseNotFound):
        await dispatcher.approve("no-such-exception", "refund_duplicate_payment", "bob")
    with pytest.raises(CaseNotFound):
        await dispatcher.reject(data.exception_id, "retry_refund", "bob")
    assert await dispatcher.pending() == []
    assert await read_topic(kafka_topics, "order-actions") == []


@pytest.mark.integration
async def test_resolving_a_case_withdraws_what_waits_for_approval(
    dispatcher: ActionDispatcher, metrics: Metrics
) -> None:
    data = samples.refund_failed()
    await dispatcher(change(data))
    assert len(await dispatcher.pending()) == 1
    await dispatcher(change(data, "resolved"))
    assert await dispatcher.pending() == []
    assert _count(metrics, "retry_refund", "withdrawn") == 1
    with pytest.raises(TransitionError, match="withdrawn"):
        await dispatcher.approve(data.exception_id, "retry_refund", "alice")


@pytest.mark.integration
async def test_blocklist_actions_land_on_the_blocklist_topic_with_their_key(
    dispatcher: ActionDispatcher, kafka_topics: Settings
) -> None:
    cluster = samples.address_cluster()
    dispatcher.policy = ActionPolicy({**dispatcher.policy.rules, "blocklist_address": ActionRule(mode="auto")})
    await dispatcher(change(cluster))
    burst = samples.new_account_burst("c-burst")
    await dispatcher(change(burst))
    await dispatcher.approve(burst.exception_id, "blocklist_customer", "alice")
    await dispatcher.approve(burst.exception_id, "blocklist_customer", "alice")

    entries = await read_topic(kafka_topics, "blocklist")
    assert [key for key, _ in entries] == [f"address:{cluster.subject}", "customer:c-burst"]
    for (_, value), data in zip(entries, (cluster, burst), strict=True):
        assert set(value) == {"reason", "added_at"}
        assert value["reason"] == f"{data.rule} {data.exception_id}"
        assert datetime.fromisoformat(value["added_at"]).tzinfo is not None
    # The holds still wait for a person; nothing went to order-actions.
    assert sorted(p.action for p in await dispatcher.pending()) == ["hold_orders_for_review"] * 2
    assert await read_topic(kafka_topics, "order-actions") == []


@pytest.mark.integration
async def test_dry_run_sends_nothing_and_logs_without_personal_data(
    redis_client: Redis,
    redis_prefix: str,
    kafka_topics: Settings,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = ActionPolicy({**ActionPolicy.default().rules, "blocklist_customer": ActionRule(mode="auto")})
    dry = ActionDispatcher(redis_client, redis_prefix, DryRunSink(kafka_topics), policy, metrics)
    caplog.set_level(logging.DEBUG, logger="orderwatch.handlers.actions")
    shipping = samples.with_personal_data(samples.invalid_shipping_info())
    burst = samples.with_personal_data(samples.new_account_burst("c-dry"))
    for data in (shipping, burst, shipping):
        await dry(change(data))
    await dry.approve(burst.exception_id, "hold_orders_for_review", "alice")

    assert await read_topic(kafka_topics, "order-actions") == []
    assert await read_topic(kafka_topics, "blocklist") == []
    text = caplog.text
    assert text.count("dry run: would send confirm_address_with_customer") == 1
    assert "dry run: would add a customer entry" in text
    assert "dry run: would send hold_orders_for_review" in text
    for secret in (samples.PHONE_IN_EVIDENCE, samples.STREET_IN_EVIDENCE, "ada@example.org", "Ada", "c-dry"):
        assert secret not in text
    assert _count(metrics, "confirm_address_with_customer", "dry_run") == 1
    assert _count(metrics, "blocklist_customer", "dry_run") == 1

    # A live dispatcher on the same store decides afresh what a dry run only logged.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_topics.kafka_bootstrap)
    await producer.start()
    try:
        live = ActionDispatcher(redis_client, redis_prefix, KafkaActionSink(producer, kafka_topics), policy)
        await live(change(shipping))
    finally:
        await producer.stop()
    assert [v["data"]["action"] for _, v in await read_topic(kafka_topics, "order-actions")] == [
        "confirm_address_with_customer"
    ]


@pytest.mark.integration
async def test_a_command_the_producer_refuses_is_tried_max_attempts_times_then_capped(
    redis_client: Redis, redis_prefix: str, kafka_topics: Settings, metrics: Metrics
) -> None:
    # A real producer whose request size limit no command fits: every send fails in the client.
    tiny = AIOKafkaProducer(bootstrap_servers=kafka_topics.kafka_bootstrap, max_request_size=64)
    await tiny.start()
    try:
        sink = KafkaActionSink(tiny, kafka_topics)
        dispatcher = ActionDispatcher(
            redis_client, redis_prefix, sink, ActionPolicy.default(), metrics, retry_backoff_seconds=0.01
        )
        data = samples.duplicate_payment()
        await dispatcher(change(data))  # three attempts, then capped: nothing raised, nothing sent
        await dispatcher(change(data))  # a re-delivery tries no more
        burst = samples.new_account_burst("c-cap")
        await dispatcher(change(burst))
        with pytest.raises(DeliveryError, match="not delivered"):
            await dispatcher.approve(burst.exception_id, "blocklist_customer", "alice")
    finally:
        await tiny.stop()
    assert _count(metrics, "refund_duplicate_payment", "failed") == 3
    assert _count(metrics, "refund_duplicate_payment", "capped") == 1
    key = dispatcher.action_key(data.exception_id, "refund_duplicate_payment")
    assert await redis_client.hmget(key, ["state", "attempts"]) == [b"capped", b"3"]
    assert await read_topic(kafka_topics, "order-actions") == []

    # The broker is reachable again: approving the failed approval once more sends it.
    good = AIOKafkaProducer(bootstrap_servers=kafka_topics.kafka_bootstrap)
    await good.start()
    try:
        dispatcher.sink = KafkaActionSink(good, kafka_topics)
        await dispatcher.approve(burst.exception_id, "blocklist_customer", "alice")
        await dispatcher.approve(burst.exception_id, "blocklist_customer", "alice")
    finally:
        await good.stop()
    assert [key for key, _ in await read_topic(kafka_topics, "blocklist")] == ["customer:c-cap"]
    bkey = dispatcher.action_key(burst.exception_id, "blocklist_customer")
    assert await redis_client.hmget(bkey, ["state", "attempts", "approved_by"]) == [b"sent", b"2", b"alice"]


async def test_redis_down_is_store_unavailable() -> None:
    # Nothing listens on port 1: the client fails at once (no retries), as when Redis is stopped.
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        dispatcher = ActionDispatcher(dead, "t:", DryRunSink(), ActionPolicy.default())
        with pytest.raises(StoreUnavailable):
            await dispatcher(change(samples.duplicate_payment()))
        with pytest.raises(StoreUnavailable):
            await dispatcher.pending()
    finally:
        await dead.aclose()


def test_planned_is_a_frozen_value() -> None:
    p = plan(change(samples.duplicate_payment()), ActionPolicy.default())[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.decision = "skip"  # type: ignore[misc]
