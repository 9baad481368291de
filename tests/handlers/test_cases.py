"""The pure case model: allowed moves, the escalation schedule, JSON round trips."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from orderwatch.errors import ConfigError, TransitionError
from orderwatch.handlers.cases import (
    ALLOWED_FROM,
    STATUSES,
    Case,
    HistoryEntry,
    change_id,
    check_transition,
    escalation_times,
    next_escalation,
)
from orderwatch.schemas.exception_event import Resolution
from tests.handlers.conftest import T0, exception_data

ALLOWED = {
    ("open", "acknowledged"),
    ("open", "escalated"),
    ("escalated", "escalated"),
    ("escalated", "acknowledged"),
    ("open", "resolved"),
    ("acknowledged", "resolved"),
    ("escalated", "resolved"),
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(STATUSES, STATUSES)))
def test_only_the_listed_moves_are_allowed(src: str, dst: str) -> None:
    level_from, level_to = (1, 2) if src == "escalated" else (0, 1)
    if (src, dst) in ALLOWED:
        check_transition("x1", src, dst, from_level=level_from, to_level=level_to)
    else:
        with pytest.raises(TransitionError) as err:
            check_transition("x1", src, dst, from_level=level_from, to_level=level_to)
        assert src in str(err.value)
        assert dst in str(err.value)
        assert "x1" in str(err.value)


def test_the_table_matches_the_listed_moves() -> None:
    assert {(s, d) for d, froms in ALLOWED_FROM.items() for s in froms} == ALLOWED


@pytest.mark.parametrize(("level_from", "level_to"), [(1, 1), (2, 1), (2, 2), (0, 3), (0, 0)])
def test_escalation_must_raise_the_level_within_range(level_from: int, level_to: int) -> None:
    src = "escalated" if level_from else "open"
    with pytest.raises(TransitionError, match="level"):
        check_transition("x1", src, "escalated", from_level=level_from, to_level=level_to)


def _case(status: str = "open", level: int = 0, severity: str = "medium") -> Case:
    data = exception_data(severity=severity)
    return Case.from_data(data, status=status, level=level, created_at=T0, updated_at=T0)


@pytest.mark.parametrize(("severity", "hours"), [("critical", 0.25), ("high", 1), ("medium", 4), ("low", 24)])
def test_schedule_level_1_at_handle_by_level_2_at_twice_the_handling_time(severity: str, hours: float) -> None:
    case = _case(severity=severity)
    assert next_escalation(case) == (1, T0 + timedelta(hours=hours))
    case.status, case.level = "escalated", 1
    assert next_escalation(case) == (2, T0 + timedelta(hours=2 * hours))
    assert next_escalation(case, factor=3.0) == (2, T0 + timedelta(hours=3 * hours))
    case.level = 2
    assert next_escalation(case) is None


@pytest.mark.parametrize("status", ["acknowledged", "resolved"])
def test_no_escalation_once_acknowledged_or_resolved(status: str) -> None:
    assert next_escalation(_case(status=status)) is None
    assert next_escalation(_case(status=status, level=1)) is None


def test_no_escalation_when_disabled() -> None:
    assert next_escalation(_case(), enabled=False) is None


def test_factor_must_exceed_one() -> None:
    with pytest.raises(ConfigError, match="level_2_factor"):
        escalation_times(T0, T0 + timedelta(hours=1), 1.0)


def test_case_json_round_trip() -> None:
    res = Resolution(kind="manual", note="called the carrier")
    case = _case(status="resolved", level=2)
    case.resolution = res
    case.incident_id = "inc-1"
    case.updated_at = T0 + timedelta(hours=3)
    again = Case.from_json(case.to_json())
    assert again == case
    assert again.to_data().status == "resolved"


def test_case_fields_round_trip_and_wire_status() -> None:
    data = exception_data(evidence={"carrier": "ups", "amount": "12.50", "n": 0.3333333333333333})
    case = Case.from_data(data, status="acknowledged", level=1, created_at=T0, updated_at=T0)
    fields = {
        "data": Case.data_json(data),
        "status": "acknowledged",
        "level": "1",
        "resolution": "",
        "incident_id": "",
        "created_at": T0.isoformat(),
        "updated_at": T0.isoformat(),
    }
    assert Case.from_fields(fields) == case
    # an acknowledged case is an open exception on the wire
    assert case.to_data() == data.model_copy(update={"status": "open"})


def test_history_entry_json() -> None:
    entry = HistoryEntry(
        at=datetime(2026, 1, 1, tzinfo=UTC), who="ana", from_status="open", to_status="resolved", note="x"
    )
    import json

    assert HistoryEntry.from_json(json.dumps(entry.to_dict())) == entry


def test_change_ids_name_each_move_once() -> None:
    ids = {
        change_id("x", k, lvl)
        for k, lvl in [("opened", 0), ("acknowledged", 1), ("resolved", 2), ("escalated", 1), ("escalated", 2)]
    }
    assert len(ids) == 5
    assert change_id("x", "escalated", 2) == "x:escalated:2"
    assert change_id("x", "resolved", 2) == "x:resolved"
