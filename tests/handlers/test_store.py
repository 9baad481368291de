"""The case store against the real Redis of the local stack: lifecycle with history, ingest of
opened/resolved/escalated events (replays, compacted input), queries, pending changes, outages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from orderwatch.errors import CaseNotFound, StoreUnavailable, TransitionError
from orderwatch.handlers.changes import CaseChange
from orderwatch.handlers.store import CaseStore
from orderwatch.schemas.exception_event import ExceptionData, ExceptionEvent
from tests.handlers.conftest import T0, exception_data, free_port, opened, resolved

pytestmark = pytest.mark.integration


async def _settled(store: CaseStore, change: CaseChange | None) -> CaseChange:
    """The change, confirmed delivered (as the service does after the listeners ran)."""
    assert change is not None
    await store.change_done(change)
    return change


async def test_lifecycle_with_history(store: CaseStore) -> None:
    data = exception_data()
    xid = data.exception_id
    first = await _settled(store, await store.ingest(opened(data), T0))
    assert (first.kind, first.status, first.level, first.who) == ("opened", "open", 0, "orderwatch")
    assert first.data == data

    t1, t2 = T0 + timedelta(minutes=7), T0 + timedelta(minutes=42)
    ack = await _settled(store, await store.acknowledge(xid, "ana@ops", "calling the carrier", t1))
    assert (ack.kind, ack.status, ack.who, ack.note, ack.at) == (
        "acknowledged",
        "acknowledged",
        "ana@ops",
        "calling the carrier",
        t1,
    )
    assert ack.data.status == "open"  # still an open exception on the wire
    done = await _settled(store, await store.resolve(xid, "bo@ops", "parcel found", t2))
    assert (done.kind, done.status, done.who) == ("resolved", "resolved", "bo@ops")

    case = await store.get(xid)
    assert (case.status, case.created_at, case.updated_at) == ("resolved", T0, t2)
    assert case.resolution is not None
    assert (case.resolution.kind, case.resolution.note) == ("manual", "parcel found")
    history = await store.history(xid)
    assert [(h.from_status, h.to_status, h.who, h.at, h.note) for h in history] == [
        (None, "open", "orderwatch", T0, None),
        ("open", "acknowledged", "ana@ops", t1, "calling the carrier"),
        ("acknowledged", "resolved", "bo@ops", t2, "parcel found"),
    ]


@pytest.mark.parametrize(
    ("setup", "move", "from_status", "to_status"),
    [
        ("resolved", "acknowledge", "resolved", "acknowledged"),
        ("resolved", "resolve", "resolved", "resolved"),
        ("acknowledged", "acknowledge", "acknowledged", "acknowledged"),
    ],
)
async def test_bad_moves_raise_transition_error(
    store: CaseStore, setup: str, move: str, from_status: str, to_status: str
) -> None:
    data = exception_data()
    xid = data.exception_id
    await _settled(store, await store.ingest(opened(data), T0))
    if setup == "resolved":
        await _settled(store, await store.ingest(resolved(data), T0))
    else:
        await _settled(store, await store.acknowledge(xid, "ana", None, T0))
    before = await store.history(xid)
    with pytest.raises(TransitionError) as err:
        await getattr(store, move)(xid, "bo", "again", T0 + timedelta(minutes=1))
    assert f"from {from_status} to {to_status}" in str(err.value)
    assert await store.history(xid) == before
    assert (await store.get(xid)).status == from_status


async def test_unknown_case(store: CaseStore) -> None:
    for call in (
        store.get("nope"),
        store.history("nope"),
        store.acknowledge("nope", "ana", None, T0),
        store.resolve("nope", "ana", None, T0),
        store.escalate("nope", 1, T0),
    ):
        with pytest.raises(CaseNotFound, match="nope"):
            await call


async def test_replayed_opened_changes_nothing(store: CaseStore) -> None:
    data = exception_data()
    await _settled(store, await store.ingest(opened(data), T0))
    before = await store.get(data.exception_id)
    assert await store.ingest(opened(data), T0 + timedelta(hours=1)) is None
    assert await store.get(data.exception_id) == before
    assert len(await store.history(data.exception_id)) == 1


async def test_a_move_asked_again_before_delivery_returns_the_same_change(store: CaseStore) -> None:
    """A retry after a lost reply (or a re-delivered event after a crash before the listeners ran)
    gets the recorded change back instead of None, so no move is lost; once delivered, None."""
    data = exception_data()
    first = await store.ingest(opened(data), T0)
    again = await store.ingest(opened(data), T0 + timedelta(seconds=1))
    assert first is not None
    assert again == first
    assert await store.pending_changes(T0) == [first]
    await store.change_done(first)
    assert await store.pending_changes(T0 + timedelta(days=1)) == []
    assert await store.ingest(opened(data), T0) is None
    ack = await store.acknowledge(data.exception_id, "ana", None, T0)
    assert await store.acknowledge(data.exception_id, "ana", None, T0) == ack
    assert len(await store.history(data.exception_id)) == 2


async def test_detector_resolution_is_automatic_and_names_the_clearing_event(store: CaseStore) -> None:
    data = exception_data()
    await _settled(store, await store.ingest(opened(data), T0))
    t = T0 + timedelta(minutes=30)
    change = await _settled(store, await store.ingest(resolved(data, clearing="evt-42"), t))
    assert (change.kind, change.status, change.who) == ("resolved", "resolved", "orderwatch")
    assert change.note is not None and "evt-42" in change.note
    case = await store.get(data.exception_id)
    assert case.resolution is not None and case.resolution.kind == "auto"
    assert case.resolution.event_id == "evt-42"
    assert await store.next_escalation_at(data.exception_id) is None
    assert await store.ingest(resolved(data, clearing="evt-42"), t) is None
    assert await store.ingest(opened(data), t) is None
    assert (await store.get(data.exception_id)).status == "resolved"


async def test_resolved_without_opened_creates_a_resolved_case(store: CaseStore) -> None:
    """order-exceptions is compacted: a replay may show only the resolution."""
    data = exception_data()
    change = await _settled(store, await store.ingest(resolved(data, clearing="evt-9"), T0))
    assert (change.kind, change.status) == ("resolved", "resolved")
    history = await store.history(data.exception_id)
    assert [(h.from_status, h.to_status) for h in history] == [("open", "resolved")]
    assert history[0].note is not None and "evt-9" in history[0].note
    assert await store.next_escalation_at(data.exception_id) is None
    assert await store.ingest(opened(data), T0) is None


def _escalated_event(source: ExceptionData, level: int) -> ExceptionEvent:
    data = source.model_copy(update={"status": "escalated"})
    return ExceptionEvent(
        id=f"{data.exception_id}:escalated:{level}",
        type="exception.escalated",
        time=T0 + timedelta(hours=4),
        subject=data.subject,
        data=data,
    )


async def test_escalated_events_read_back(store: CaseStore) -> None:
    data = exception_data()
    xid = data.exception_id
    # empty store: the case is created escalated at the event's level, level 2 still scheduled
    change = await _settled(store, await store.ingest(_escalated_event(data, 1), T0 + timedelta(hours=4)))
    assert (change.kind, change.status, change.level) == ("escalated", "escalated", 1)
    assert await store.next_escalation_at(xid) == T0 + timedelta(hours=8)
    # the same level again: nothing; nothing goes to the outbox either way
    assert await store.ingest(_escalated_event(data, 1), T0 + timedelta(hours=5)) is None
    assert await store.outbox_pending() == []

    other = exception_data()
    await _settled(store, await store.ingest(opened(other), T0))
    up = await _settled(store, await store.ingest(_escalated_event(other, 2), T0 + timedelta(hours=9)))
    assert (up.status, up.level) == ("escalated", 2)
    assert await store.next_escalation_at(other.exception_id) is None
    assert await store.ingest(_escalated_event(other, 1), T0 + timedelta(hours=9)) is None
    assert (await store.get(other.exception_id)).level == 2


async def test_evidence_updates_keep_the_newest_revision(store: CaseStore) -> None:
    base = exception_data(rule="ADDRESS_CLUSTER", evidence={"orders": 5})
    rev1 = base.model_copy(update={"evidence": {"orders": 6}})
    await _settled(store, await store.ingest(opened(base), T0))
    assert await store.ingest(opened(rev1, revision=1), T0) is None
    assert (await store.get(base.exception_id)).evidence == {"orders": 6}
    assert await store.ingest(opened(base), T0) is None  # a replay of revision 0 does not go back
    assert (await store.get(base.exception_id)).evidence == {"orders": 6}
    assert len(await store.history(base.exception_id)) == 1


async def test_query_filters_newest_first(store: CaseStore) -> None:
    made = []
    for i in range(12):
        rule = "TRACKING_STALLED" if i % 2 else "DELIVERY_FAILED"
        data = exception_data(rule=rule, detected_at=T0 + timedelta(minutes=i), order_id=f"o-{i % 3}")
        await _settled(store, await store.ingest(opened(data), T0))
        made.append(data)
    for data in made[:4]:
        await _settled(store, await store.acknowledge(data.exception_id, "ana", None, T0))

    def ids(*preds: Callable[[ExceptionData], bool]) -> list[str]:
        return [d.exception_id for d in reversed(made) if all(p(d) for p in preds)]

    cases, total = await store.query()
    assert total == 12
    assert [c.exception_id for c in cases] == ids()
    cases, total = await store.query(rule="TRACKING_STALLED")
    assert (total, [c.exception_id for c in cases]) == (6, ids(lambda d: d.rule == "TRACKING_STALLED"))
    acked = {d.exception_id for d in made[:4]}
    cases, total = await store.query(status="acknowledged", rule="DELIVERY_FAILED", order_id="o-0")
    expected = ids(
        lambda d: d.exception_id in acked, lambda d: d.rule == "DELIVERY_FAILED", lambda d: d.order_id == "o-0"
    )
    assert (total, [c.exception_id for c in cases]) == (len(expected), expected)
    assert expected  # the filter combination is not empty
    cases, total = await store.query(status="open", severity="high")
    high_open = ids(lambda d: d.exception_id not in acked, lambda d: d.severity == "high")
    assert high_open
    assert (total, [c.exception_id for c in cases]) == (len(high_open), high_open)
    assert await store.query(status="resolved", severity="high") == ([], 0)
    cases, total = await store.query(status="open", limit=3, offset=2)
    open_ids = ids(lambda d: d.exception_id not in acked)
    assert (total, [c.exception_id for c in cases]) == (8, open_ids[2:5])
    cases, total = await store.query(status="open", rule="DELIVERY_FAILED", limit=2, offset=1)
    df_open = ids(lambda d: d.exception_id not in acked, lambda d: d.rule == "DELIVERY_FAILED")
    assert (total, [c.exception_id for c in cases]) == (len(df_open), df_open[1:3])
    with pytest.raises(ValueError, match="status"):
        await store.query(status="closed")


async def test_unreachable_redis_raises_store_unavailable() -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1, socket_timeout=1)
    store = CaseStore(client, "t-unreachable:")
    data = exception_data(evidence={"carrier": "dhl", "contact_phone": "+4915123456789"})
    try:
        with pytest.raises(StoreUnavailable) as err:
            await store.ingest(opened(data), T0)
        assert "ingesting exception.opened" in str(err.value)
        assert "+4915123456789" not in str(err.value)
        with pytest.raises(StoreUnavailable, match="reading a case"):
            await store.get(data.exception_id)
        with pytest.raises(StoreUnavailable, match="acknowledging"):
            await store.acknowledge(data.exception_id, "ana", None, T0)
    finally:
        await client.aclose()
