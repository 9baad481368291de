"""Owners and teams in the case store: the default team from `[owners]` (rule, then merchant,
then category, then the default), assignment recorded in the history, the queue's filters and
deadline order, and cases written before teams existed indexed on first use."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from orderwatch.errors import CaseNotFound, ConfigError
from orderwatch.handlers.config import HandlersConfig, OwnersConfig
from orderwatch.handlers.store import CaseStore
from tests.handlers.conftest import T0, _require_redis, exception_data, opened, prefix, redis_client

__fixtures__ = (_require_redis, redis_client, prefix)

OWNERS = OwnersConfig(
    default_team="ops",
    by_rule={"PAYMENT_TIMEOUT": "payments-senior"},
    by_category={"payment": "payments", "logistics": "warehouse"},
    by_merchant={"m-3": "key-accounts"},
)


def test_the_most_specific_team_wins() -> None:
    assert OWNERS.team_for("PAYMENT_TIMEOUT", "payment", "m-3") == "payments-senior"
    assert OWNERS.team_for("DUPLICATE_PAYMENT", "payment", "m-3") == "key-accounts"
    assert OWNERS.team_for("DUPLICATE_PAYMENT", "payment", "m-1") == "payments"
    assert OWNERS.team_for("ORDER_STUCK", "order", None) == "ops"
    assert OwnersConfig().team_for("ORDER_STUCK", "order", None) is None


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"by_rule": {"NOPE": "x"}}, "[owners.by_rule] NOPE: unknown rule"),
        ({"by_category": {"shoes": "x"}}, "[owners.by_category] shoes: unknown category"),
        ({"default_team": "two words"}, "[owners] default_team: expected a name"),
        ({"by_merchant": {"m-1": 3}}, "[owners] by_merchant: expected a table of a name"),
        ({"colour": "red"}, "[owners] colour: unknown key"),
    ],
)
def test_a_wrong_owners_section_is_named(section: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        HandlersConfig.from_toml({"owners": section})
    assert expected in str(err.value)


async def test_default_teams_assignment_and_the_queue(redis_client: aioredis.Redis, prefix: str) -> None:
    store = CaseStore(redis_client, prefix, owners=OWNERS)
    rules = ["PAYMENT_TIMEOUT", "DUPLICATE_PAYMENT", "TRACKING_STALLED", "ORDER_STUCK"]
    ids = []
    for i, rule in enumerate(rules):
        evidence = {"merchant_id": "m-3"} if i == 1 else {"carrier": "dhl"}
        data = exception_data(
            rule=rule, detected_at=T0 + timedelta(minutes=i), order_id=f"o-{i}00{i}", evidence=evidence
        )
        await store.ingest(opened(data), T0)
        ids.append(data.exception_id)
    teams = {c.exception_id: c.team for c in (await store.query(limit=10))[0]}
    assert teams == dict(zip(ids, ["payments-senior", "key-accounts", "warehouse", "ops"], strict=True))

    assert await store.assign(ids[3], "ana", T0, owner="ana", team="night", set_owner=True, set_team=True, note="mine")
    assert not await store.assign(ids[3], "ana", T0, owner="ana", set_owner=True)  # nothing changed
    last = (await store.history(ids[3]))[-1]
    assert (last.event, last.who, last.owner, last.team, last.note) == ("assigned", "ana", "ana", "night", "mine")
    assert (last.from_status, last.to_status) == ("open", "open")
    assert [c.exception_id for c in (await store.query(team="night"))[0]] == [ids[3]]
    assert (await store.query(team="ops"))[1] == 0
    assert [c.exception_id for c in (await store.query(owner="ana"))[0]] == [ids[3]]
    assert await store.assign(ids[3], "lee", T0, owner=None, set_owner=True)
    assert (await store.query(owner="ana"))[1] == 0
    with pytest.raises(CaseNotFound):
        await store.assign("nope", "ana", T0, owner="ana", set_owner=True)

    # filters and the deadline order
    assert [c.exception_id for c in (await store.query(merchant="m-3"))[0]] == [ids[1]]
    assert {c.exception_id for c in (await store.query(category="payment"))[0]} == set(ids[:2])
    assert [c.exception_id for c in (await store.query(order_text="O-200"))[0]] == [ids[2]]
    due = (await store.query(order="due"))[0]
    assert [c.handle_by for c in due] == sorted(c.handle_by for c in due)
    page, total = await store.query(order="due", category="payment", limit=1, offset=1)
    assert total == 2 and len(page) == 1
    await store.resolve(ids[0], "ana", None, T0)
    assert ids[0] not in {c.exception_id for c in (await store.query(status="unresolved"))[0]}
    assert (await store.query(status="unresolved"))[1] == 3
    assert await store.audit(ids[0], "lee", "action_approved", T0, action="retry_payment")
    assert not await store.audit("nope", "lee", "action_approved", T0)
    with pytest.raises(ValueError):
        await store.audit(ids[0], "lee", "hacked", T0)


async def test_cases_written_before_teams_get_their_indexes(redis_client: aioredis.Redis, prefix: str) -> None:
    old = CaseStore(redis_client, prefix)
    ids = []
    for i, rule in enumerate(["PAYMENT_TIMEOUT", "TRACKING_STALLED"]):
        data = exception_data(rule=rule, detected_at=T0 + timedelta(minutes=i), order_id=f"o-9{i}")
        await old.ingest(opened(data), T0)
        ids.append(data.exception_id)
    # as a store of the previous version left them: no deadline, team, category or merchant index
    for xid in ids:
        await redis_client.hdel(f"{prefix}case:{xid}", "handle", "team", "merchant", "owner")
    for key in ("cases:due", "cases:category:payment", "cases:category:logistics", "indexes:version"):
        await redis_client.delete(f"{prefix}{key}")

    store = CaseStore(redis_client, prefix, owners=OWNERS)
    due, total = await store.query(order="due")
    assert total == 2 and {c.exception_id for c in due} == set(ids)
    assert [c.team for c in (await store.query(category="payment"))[0]] == ["payments-senior"]
    assert (await store.query(team="warehouse"))[1] == 1
    assert await redis_client.get(f"{prefix}indexes:version") == b"2"
