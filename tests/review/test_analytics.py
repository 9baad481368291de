"""Every analytic on a hand-built case set whose answers are worked out by hand (docs/review.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orderwatch.errors import ConfigError, InputError
from orderwatch.review import Analytics, CaseSet, Period, read_case_set

T = datetime(2026, 3, 2, tzinfo=UTC)
MIN = 60.0
H = 3600.0


def iso(minutes: float) -> str:
    return (T + timedelta(minutes=minutes)).isoformat()


def case(
    eid: str,
    rule: str,
    category: str,
    severity: str,
    detected: float,
    handle_within: float,
    history: list[tuple[float, str, str, int]],
    *,
    status: str,
    resolution: str | None = None,
    evidence: dict[str, Any] | None = None,
    incident: str | None = None,
    order: str | None = None,
) -> dict[str, Any]:
    """A case as the export writes it; `history` is (minutes, who, to_status, level)."""
    return {
        "kind": "case",
        "exception_id": eid,
        "rule": rule,
        "category": category,
        "severity": severity,
        "subject": order or eid,
        "order_id": order,
        "status": status,
        "level": max((h[3] for h in history), default=0),
        "detected_at": iso(detected),
        "event_time": iso(detected),
        "handle_by": iso(detected + handle_within),
        "summary": "s",
        "evidence": evidence or {},
        "recommended_action": "review_manually",
        "resolution": {"kind": resolution} if resolution else None,
        "incident_id": incident,
        "created_at": iso(detected),
        "updated_at": iso(detected),
        "history": [{"at": iso(detected), "who": "detector", "from_status": None, "to_status": "open", "level": 0}]
        + [
            {"at": iso(m), "who": who, "from_status": None, "to_status": to, "level": lvl}
            for m, who, to, lvl in history
        ],
    }


# Period: [T, T + 10h). c6 is in the previous one. Worked answers are in the tests below.
CASES = [
    case("c1", "PAYMENT_TIMEOUT", "payment", "high", 0, 60,
         [(10, "ana", "acknowledged", 0), (50, "ana", "resolved", 0)], status="resolved", resolution="manual",
         order="o-1", evidence={"provider": "stripe"}),
    case("c2", "PAYMENT_TIMEOUT", "payment", "high", 30, 60,
         [(50, "bob", "acknowledged", 0), (150, "detector", "resolved", 0)], status="resolved", resolution="auto",
         order="o-2", evidence={"provider": "adyen"}),
    case("c3", "TRACKING_STALLED", "logistics", "medium", 60, 240,
         [(300, "detector", "escalated", 1), (360, "cy", "acknowledged", 1), (420, "cy", "resolved", 1)],
         status="resolved", resolution="manual", evidence={"carrier": "dhl"}, incident="inc-1", order="o-3"),
    case("c4", "TRACKING_STALLED", "logistics", "medium", 90, 240,
         [(330, "detector", "escalated", 1), (570, "detector", "escalated", 2)],
         status="escalated", evidence={"carrier": "dhl"}, incident="inc-1", order="o-4"),
    case("c5", "ORDER_STUCK", "order", "low", 100, 1440, [], status="open", order="o-5"),
    case("c6", "PAYMENT_TIMEOUT", "payment", "high", -120, 60, [], status="open", order="o-6"),
]  # fmt: skip
ACTIONS = [
    {"kind": "action", "exception_id": "c1", "action": "retry_payment", "state": "sent", "attempts": 1},
    {"kind": "action", "exception_id": "c2", "action": "retry_payment", "state": "capped", "attempts": 3},
    {"kind": "action", "exception_id": "c3", "action": "contact_carrier", "state": "sent", "approved_by": "cy"},
    {"kind": "action", "exception_id": "c4", "action": "contact_carrier", "state": "rejected", "decided_by": "bob"},
    {"kind": "action", "exception_id": "c5", "action": "contact_carrier", "state": "pending_approval"},
    {"kind": "action", "exception_id": "c6", "action": "retry_payment", "state": "sent"},  # previous period
]
INCIDENTS = [
    {
        "kind": "incident", "incident_id": "inc-1", "rule": "TRACKING_STALLED", "dimension": "carrier",
        "value": "dhl", "status": "open", "count": 2, "open_count": 1, "first_detected_at": iso(60),
        "last_detected_at": iso(90), "opened_at": iso(90), "resolved_at": None,
    },
]  # fmt: skip
PERIOD = Period(T.timestamp(), T.timestamp() + 10 * H)


@pytest.fixture(scope="module")
def an() -> Analytics:
    lines = [json.dumps(d).encode() for d in CASES + ACTIONS + INCIDENTS]
    cs = read_case_set(lines, teams={"payment": "payments-team", "TRACKING_STALLED": "carriers-team"})
    cs.attach_orders({"o-1": ["m-1", "web", "card", "DE", None], "o-2": ["m-1", "app", "bank_transfer", "FR", None]})
    return Analytics(cs)


def by(rows: list[dict[str, Any]], key: str = "group") -> dict[Any, dict[str, Any]]:
    return {r[key]: r for r in rows}


def test_time_to_acknowledge_and_resolve_median_and_p90(an: Analytics) -> None:
    rows = by(an.handling(PERIOD, by="severity"))
    high = rows["high"]
    # Acknowledged after 10 and 20 min: median 15, p90 10 + 0.9 * 10 = 19 (linear interpolation).
    assert high["cases"] == 2 and high["acknowledged"] == 2
    assert high["tta_median"] == pytest.approx(15 * MIN)
    assert high["tta_p90"] == pytest.approx(19 * MIN)
    # Resolved after 50 and 120 min: median 85, p90 50 + 0.9 * 70 = 113.
    assert high["ttr_median"] == pytest.approx(85 * MIN)
    assert high["ttr_p90"] == pytest.approx(113 * MIN)
    medium = rows["medium"]
    assert medium["tta_median"] == pytest.approx(300 * MIN)  # only c3: 360 - 60
    assert medium["ttr_median"] == pytest.approx(360 * MIN)
    assert rows["low"]["tta_median"] is None and rows["low"]["ttr_median"] is None


def test_share_handled_within_handle_by(an: Analytics) -> None:
    rows = by(an.handling(PERIOD, by="severity"))
    # high: both handled (acknowledged) before handle_by -> 2 of 2.
    assert (rows["high"]["due"], rows["high"]["handled_in_time"], rows["high"]["sla_share"]) == (2, 2, 1.0)
    # medium: c3 acknowledged after its 4 h; c4 never handled and past due -> 0 of 2.
    assert (rows["medium"]["due"], rows["medium"]["handled_in_time"], rows["medium"]["sla_share"]) == (2, 0, 0.0)
    # low: c5 is not handled but its 24 h have not passed at the period's end: not due yet.
    assert (rows["low"]["due"], rows["low"]["sla_share"]) == (0, None)
    (everything,) = an.handling(PERIOD, by=None)
    assert everything["cases"] == 5 and everything["sla_share"] == pytest.approx(2 / 4)


def test_escalation_rate_and_auto_vs_manual(an: Analytics) -> None:
    (everything,) = an.handling(PERIOD, by=None)
    assert everything["escalated"] == 2 and everything["escalation_rate"] == pytest.approx(2 / 5)
    assert (everything["auto_resolved"], everything["manual_resolved"]) == (1, 2)
    rows = by(an.handling(PERIOD, by="team"))
    assert set(rows) == {"payments-team", "carriers-team", "order"}  # unmapped categories are their own team
    assert rows["carriers-team"]["escalation_rate"] == 1.0
    assert rows["payments-team"]["escalation_rate"] == 0.0
    assert by(an.handling(PERIOD, by="rule"))["PAYMENT_TIMEOUT"]["cases"] == 2


def test_as_of_hides_what_had_not_happened_yet(an: Analytics) -> None:
    # At T + 100 min: c2 was acknowledged (50) but not yet resolved (150); c3 not yet escalated.
    (row,) = an.handling(PERIOD, by=None, as_of=PERIOD.start + 100 * MIN)
    assert row["resolved"] == 1 and row["ttr_median"] == pytest.approx(50 * MIN)
    assert row["escalated"] == 0
    assert row["due"] == 2  # c1, c2 handled; c3-c5 still inside their window


def test_actions_sent_approved_rejected_failed(an: Analytics) -> None:
    rows = by(an.actions(PERIOD), "action")
    assert rows["retry_payment"] | {} == {
        "action": "retry_payment", "requested": 2, "sent": 1, "dry_run": 0, "approved": 0,
        "rejected": 0, "failed": 1, "pending": 0, "withdrawn": 0,
    }  # fmt: skip
    cc = rows["contact_carrier"]
    assert (cc["requested"], cc["sent"], cc["approved"], cc["rejected"], cc["pending"]) == (3, 1, 1, 1, 1)


def test_backlog_age(an: Analytics) -> None:
    # At the period's end (600 min): c4 (detected 90) and c5 (100) are unresolved; c6 is older.
    rows = by(an.backlog(PERIOD.end, by=None))
    b = rows["all"]
    assert b["open"] == 3  # c4, c5 and c6 (from the previous period, still open)
    assert b["age_max"] == pytest.approx(720 * MIN)
    assert b["age_median"] == pytest.approx(510 * MIN)
    assert (b["under 1h"], b["1h-4h"], b["4h-24h"], b["over 24h"]) == (0, 0, 3, 0)
    assert by(an.backlog(PERIOD.start + 95 * MIN))["medium"]["open"] == 2


def test_frequency_and_distribution(an: Analytics) -> None:
    freq = an.frequency(PERIOD, by="rule", bucket=H)
    # Hour buckets: c1, c2 in the first hour; c3 (60), c4 (90), c5 (100 min) in the second.
    assert [(r["bucket"] - PERIOD.start, r["value"], r["cases"]) for r in freq] == [
        (0.0, "PAYMENT_TIMEOUT", 2),
        (H, "ORDER_STUCK", 1),
        (H, "TRACKING_STALLED", 2),
    ]
    dist = an.distribution(PERIOD, by="carrier")
    assert [(r["value"], r["cases"], r["share"]) for r in dist] == [("(unknown)", 3, 0.6), ("dhl", 2, 0.4)]
    assert [r["value"] for r in an.distribution(PERIOD, by="severity", top=1)] == ["high"]
    assert [(r["value"], r["cases"]) for r in an.distribution(PERIOD, by="merchant")] == [("(unknown)", 3), ("m-1", 2)]
    assert {r["value"] for r in an.distribution(PERIOD, by="payment_method")} == {"card", "bank_transfer", "(unknown)"}
    assert {r["value"] for r in an.distribution(PERIOD, by="provider")} == {"stripe", "adyen", "(unknown)"}
    assert an.total(PERIOD) == 5 and an.total(PERIOD.previous()) == 1


def test_root_causes(an: Analytics) -> None:
    (inc,) = an.incidents(PERIOD)
    assert (inc["incident_id"], inc["members"], inc["dimension"], inc["value"]) == ("inc-1", 2, "carrier", "dhl")
    assert inc["duration"] == pytest.approx((600 - 60) * MIN)  # still open at the period's end
    causes = an.recurring_causes(PERIOD)
    assert (causes[0]["rule"], causes[0]["value"], causes[0]["incidents"], causes[0]["cases"]) == (
        "TRACKING_STALLED",
        "dhl",
        1,
        2,
    )
    assert {(c["dimension"], c["value"]) for c in causes[1:]} == {("provider", "stripe"), ("provider", "adyen")}
    assert an.incident_share(PERIOD) == {"cases": 5, "in_incidents": 2, "incidents": 1, "share": 0.4}


def test_period_against_the_previous_one(an: Analytics) -> None:
    rows = by(an.compare(PERIOD), "value")
    assert (rows["PAYMENT_TIMEOUT"]["current"], rows["PAYMENT_TIMEOUT"]["previous"]) == (2, 1)
    assert rows["TRACKING_STALLED"]["change"] == 2
    s = an.summary(PERIOD)
    assert s["cases"] == 5 and s["backlog"]["open"] == 3 and s["handling"]["sla_share"] == 0.5


def test_an_empty_case_set_answers_with_nothing(tmp_path: Any) -> None:
    empty = Analytics(CaseSet())
    assert empty.total(PERIOD) == 0
    assert empty.handling(PERIOD) == [] and empty.actions(PERIOD) == [] and empty.incidents(PERIOD) == []
    assert empty.summary(PERIOD)["backlog"]["open"] == 0


@pytest.mark.parametrize("bad", ["rule; DROP TABLE cases", "detected_at", "", "RULE"])
def test_dimensions_are_a_whitelist(an: Analytics, bad: str) -> None:
    with pytest.raises(ConfigError, match="expected one of"):
        an.distribution(PERIOD, by=bad)
    with pytest.raises(ConfigError, match="expected one of"):
        an.handling(PERIOD, by=bad)
    assert an.total(PERIOD) == 5  # the table is still there


def test_periods_must_be_real_intervals() -> None:
    for start, end in ((1.0, 1.0), (2.0, 1.0), (float("nan"), 1.0), (0.0, float("inf"))):
        with pytest.raises(ConfigError, match="period"):
            Period(start, end)


def test_exception_events_make_a_case_set_without_handling() -> None:
    def ev(kind: str, eid: str, minutes: float, **data: Any) -> bytes:
        base = {"exception_id": eid, "rule": "PAYMENT_TIMEOUT", "category": "payment", "severity": "high",
                "subject": "o-1", "order_id": "o-1", "detected_at": iso(0), "handle_by": iso(60),
                "evidence": {"provider": "stripe"}, "resolution": None}  # fmt: skip
        suffix = {"exception.escalated": ":escalated:2"}.get(kind, "")
        return json.dumps({"type": kind, "id": eid + suffix, "time": iso(minutes), "data": base | data}).encode()

    lines = [
        ev("exception.opened", "e1", 0),
        ev("exception.resolved", "e1", 45, resolution={"kind": "auto"}),
        ev("exception.opened", "e2", 0),
        ev("exception.escalated", "e2", 70),
        b"",
    ]
    cs = read_case_set(lines)
    assert cs.source == "exceptions"
    an = Analytics(cs)
    (row,) = an.handling(PERIOD, by=None)
    assert (row["cases"], row["resolved"], row["auto_resolved"], row["acknowledged"]) == (2, 1, 1, 0)
    assert row["ttr_median"] == pytest.approx(45 * MIN)
    assert (row["escalated"], row["due"], row["handled_in_time"]) == (1, 2, 1)


@pytest.mark.parametrize(
    "line",
    [b"not json", b"[1, 2]", b'{"kind": "case"}', b'{"type": "order.created", "data": {}}', b'{"kind": "nope"}',
     b'{"type": "exception.opened", "data": 5}', json.dumps({**CASES[0], "detected_at": "yesterday"}).encode(),
     json.dumps({**CASES[0], "detected_at": "2026-03-02T00:00:00"}).encode()],
)  # fmt: skip
def test_bad_lines_name_their_line_number(line: bytes) -> None:
    with pytest.raises(InputError, match="line 2: not a case export record"):
        read_case_set([json.dumps(CASES[0]).encode(), line])


def test_a_case_keeps_its_own_team_and_the_evidence_merchant() -> None:
    doc = {**CASES[0], "team": "night-shift", "evidence": {"merchant_id": "m-9"}}
    cs = read_case_set([json.dumps(doc).encode()], teams={"payment": "payments-team"})
    assert (cs.cases[0]["team"], cs.cases[0]["merchant"]) == ("night-shift", "m-9")
    cs.attach_orders({"o-1": [None, "web", "card", "DE", None]})
    assert (cs.cases[0]["merchant"], cs.cases[0]["channel"]) == ("m-9", "web")


def test_an_empty_period_has_no_rates_rather_than_nan(an: Analytics) -> None:
    empty = Period(PERIOD.start - 30 * 86400, PERIOD.start - 29 * 86400)
    rows = an.handling(empty, by=None)
    assert rows == [] or all(r["escalation_rate"] is None and r["sla_share"] is None for r in rows)
    s = an.summary(empty)
    assert s["cases"] == 0
    assert s["handling"] is None or s["handling"]["escalation_rate"] is None
