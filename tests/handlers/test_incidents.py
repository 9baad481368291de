"""Incident grouping against the real Redis: one incident per rule and shared cause within a
sliding window, one page when it reaches the threshold, later members suppressed, its own lifecycle."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orderwatch.errors import CaseNotFound, TransitionError
from orderwatch.handlers.incidents import IncidentNotFound, IncidentStore, cause_of
from orderwatch.handlers.service import HandlerService
from orderwatch.schemas.exception_event import ExceptionData
from tests.handlers.conftest import T0, Recorder, exception_data, opened, resolved

MIN = timedelta(minutes=1)


def test_cause_of_reads_the_evidence() -> None:
    def cause(rule: str, evidence: dict[str, object], subject: str = "o-1") -> tuple[str, str] | None:
        return cause_of(exception_data(rule=rule, evidence=evidence, order_id=subject))

    assert cause("TRACKING_STALLED", {"carrier": "dhl", "shipment_id": "s1"}) == ("carrier", "dhl")
    assert cause("PAYMENT_NOT_CONFIRMED", {"provider": "adyen"}) == ("provider", "adyen")
    assert cause("STOCK_OVERSOLD", {"sku": "SKU-1", "warehouse_id": "wh-2"}) == ("warehouse_id", "wh-2")
    assert cause("STOCK_OVERSOLD", {"sku": "SKU-1"}) == ("sku", "SKU-1")
    assert cause("PAYMENT_FAILURE_SPIKE", {"failures": 25}, subject="stripe") == ("provider", "stripe")
    assert cause("DUPLICATE_ORDER", {"customer_id": "c-1", "earlier_order_id": "o-0"}) is None
    assert cause("TRACKING_STALLED", {"carrier": ""}) is None
    data = exception_data(rule="STOCK_OVERSOLD", evidence={"sku": "SKU-1", "warehouse_id": "wh-2"})
    assert cause_of(data, ["sku"]) == ("sku", "SKU-1")
    assert cause_of(data, []) is None


pytestmark_integration = pytest.mark.integration


def _stalled(minute: float, carrier: str = "dhl") -> ExceptionData:
    return exception_data(
        rule="TRACKING_STALLED",
        detected_at=T0 + minute * MIN,
        evidence={"carrier": carrier, "shipment_id": f"s-{minute}"},
    )


@pytestmark_integration
async def test_ten_stalls_with_one_carrier_page_once(service: HandlerService, recorder: Recorder) -> None:
    members = [_stalled(5 * i) for i in range(10)]  # spans 45 min, each within 30 min of the previous
    for data in members:
        await service.handle(opened(data), T0 + 50 * MIN)

    changes = recorder.changes
    assert [c.kind for c in changes] == ["opened"] * 10
    iids = {c.incident_id for c in changes}
    assert len(iids) == 1
    (iid,) = iids
    assert iid is not None
    incident = await service.incidents.get(iid)
    assert (incident.status, incident.count, incident.open_count) == ("open", 10, 10)
    assert (incident.rule, incident.dimension, incident.value) == ("TRACKING_STALLED", "carrier", "dhl")
    assert incident.first_detected_at == T0
    assert incident.last_detected_at == T0 + 45 * MIN
    assert [c.incident_count for c in changes] == list(range(1, 11))
    assert [c.suppressed for c in changes] == [False] * 3 + [True] * 7
    pages = [c for c in changes if not c.suppressed and c.incident_count >= 3]
    assert len(pages) == 1
    # the service marks that change as the page, and only that one
    assert [c.paging for c in changes] == [False, False, True] + [False] * 7
    metrics = service.metrics
    assert metrics is not None
    assert metrics.registry.get_sample_value("orderwatch_incidents_opened_total", {"rule": "TRACKING_STALLED"}) == 1
    assert await service.incidents.members(iid) == sorted(d.exception_id for d in members)
    for data in members:
        assert (await service.store.get(data.exception_id)).incident_id == iid

    # a replay of the same events changes nothing and pages nobody
    for data in members:
        assert await service.handle(opened(data), T0 + 60 * MIN) is None
    assert len(recorder.changes) == 10
    assert (await service.incidents.get(iid)).count == 10


@pytestmark_integration
async def test_other_carrier_or_a_gap_longer_than_the_window_start_another_incident(
    service: HandlerService, recorder: Recorder
) -> None:
    dhl = [_stalled(m) for m in (0, 10, 20)]
    ups = [_stalled(m, carrier="ups") for m in (1, 11)]
    late_dhl = [_stalled(m) for m in (20 + 31, 20 + 35)]  # 31 min after the last dhl member
    other_rule = exception_data(rule="DELIVERY_FAILED", detected_at=T0 + 2 * MIN, evidence={"carrier": "dhl"})
    for data in [*dhl, *ups, *late_dhl, other_rule]:
        await service.handle(opened(data), T0 + 90 * MIN)
    by_id = {c.data.exception_id: c for c in recorder.changes}
    groups = [{by_id[d.exception_id].incident_id for d in g} for g in (dhl, ups, late_dhl, [other_rule])]
    assert all(len(g) == 1 for g in groups)
    assert len({next(iter(g)) for g in groups}) == 4
    incidents, total = await service.incidents.query()
    assert total == 4
    assert sorted((i.value, i.rule, i.count, i.status) for i in incidents) == [
        ("dhl", "DELIVERY_FAILED", 1, "forming"),
        ("dhl", "TRACKING_STALLED", 2, "forming"),
        ("dhl", "TRACKING_STALLED", 3, "open"),
        ("ups", "TRACKING_STALLED", 2, "forming"),
    ]
    opened_only, n = await service.incidents.query(status="open")
    assert n == 1 and opened_only[0].value == "dhl"
    assert (await service.incidents.query(rule="DELIVERY_FAILED"))[1] == 1


@pytestmark_integration
async def test_out_of_order_members_join_within_the_window(incidents: IncidentStore) -> None:
    later, earlier, much_earlier = _stalled(30), _stalled(5), _stalled(-40)
    a = await incidents.join(later, T0)
    b = await incidents.join(earlier, T0)
    c = await incidents.join(much_earlier, T0)
    assert a is not None and b is not None and c is not None
    assert a.incident_id == b.incident_id != c.incident_id
    incident = await incidents.get(a.incident_id)
    assert (incident.first_detected_at, incident.last_detected_at) == (T0 + 5 * MIN, T0 + 30 * MIN)


@pytestmark_integration
async def test_joining_twice_counts_once(incidents: IncidentStore) -> None:
    trio = [_stalled(i) for i in range(3)]
    first = [await incidents.join(d, T0) for d in trio]
    again = [await incidents.join(d, T0 + MIN) for d in trio]
    assert [(m.incident_id, m.role, m.count_at_join) for m in again if m] == [
        (m.incident_id, m.role, m.count_at_join) for m in first if m
    ]
    assert [m.count for m in again if m] == [3, 3, 3]
    data = exception_data(rule="TRACKING_STALLED", detected_at=T0, evidence={"carrier": "fedex"})
    m1 = await incidents.join(data, T0)
    m2 = await incidents.join(data, T0 + MIN)
    assert m1 == m2
    assert m1 is not None and m1.count == 1
    assert (await incidents.get(m1.incident_id)).count == 1
    assert [m.role for m in first if m] == ["forming", "forming", "paging"]
    assert await incidents.join(exception_data(rule="DUPLICATE_ORDER", evidence={}), T0) is None


@pytestmark_integration
async def test_incident_resolves_itself_when_every_member_case_resolves(
    service: HandlerService, recorder: Recorder
) -> None:
    members = [_stalled(i) for i in range(4)]
    for data in members:
        await service.handle(opened(data), T0 + 5 * MIN)
    iid = recorder.changes[0].incident_id
    assert iid is not None
    for n, data in enumerate(members, 1):
        change = await service.handle(resolved(data), T0 + (10 + n) * MIN)
        assert change is not None and change.incident_id == iid
        incident = await service.incidents.get(iid)
        assert incident.open_count == 4 - n
        assert incident.status == ("resolved" if n == 4 else "open")
    assert incident.resolved_by == "orderwatch"
    # replayed resolutions do not count twice
    for data in members:
        assert await service.handle(resolved(data), T0 + 20 * MIN) is None
    assert (await service.incidents.get(iid)).open_count == 0
    # a resolved incident takes no new members: the next stall forms a new one
    await service.handle(opened(_stalled(5)), T0 + 30 * MIN)
    assert recorder.changes[-1].incident_id not in (None, iid)


@pytestmark_integration
async def test_manual_lifecycle(incidents: IncidentStore) -> None:
    m = None
    for i in range(3):
        m = await incidents.join(_stalled(i), T0)
    assert m is not None
    iid = m.incident_id
    ack = await incidents.acknowledge(iid, "ana", "carrier called", T0 + 10 * MIN)
    assert (ack.status, ack.acknowledged_by, ack.note) == ("acknowledged", "ana", "carrier called")
    later = await incidents.join(_stalled(4), T0)
    assert later is not None and later.incident_id == iid and later.suppressed
    with pytest.raises(TransitionError, match="from acknowledged to acknowledged"):
        await incidents.acknowledge(iid, "bo", None, T0)
    done = await incidents.resolve(iid, "bo", "carrier back", T0 + 20 * MIN)
    assert (done.status, done.resolved_by, done.count) == ("resolved", "bo", 4)
    with pytest.raises(TransitionError, match="from resolved to resolved"):
        await incidents.resolve(iid, "bo", None, T0)
    with pytest.raises(IncidentNotFound):
        await incidents.get("inc-nope")
    with pytest.raises(CaseNotFound):  # the API maps both to 404
        await incidents.acknowledge("inc-nope", "ana", None, T0)
    assert (await incidents.query(status="resolved"))[1] == 1
    assert (await incidents.query(status="acknowledged"))[1] == 0
