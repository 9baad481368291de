"""Analytics on demand (what the ops API and the console call): strict queries, one load per ttl
shared by concurrent requests, JSON-ready answers, and the store going away."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from orderwatch.errors import ConfigError, StoreUnavailable
from orderwatch.review import CaseSet, read_case_set
from orderwatch.review.service import KINDS, AnalyticsService, parse_query
from tests.review.test_analytics import ACTIONS, CASES, INCIDENTS, PERIOD


class Loader:
    """Hands out the hand-built case set, counting calls; `fail` makes the next calls raise."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def __call__(self) -> CaseSet:
        self.calls += 1
        await asyncio.sleep(0.01)  # a real load takes a while: concurrent callers must share it
        if self.fail:
            raise StoreUnavailable("case store unavailable while listing cases: ConnectionError")
        return read_case_set([json.dumps(d).encode() for d in CASES + ACTIONS + INCIDENTS])


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


END = {"end": "2026-03-02T10:00:00+00:00", "period": "10h"}


async def test_every_kind_answers_with_the_known_figures() -> None:
    svc = AnalyticsService(Loader(), clock=Clock(PERIOD.end))
    got = {k: await svc.answer(k, END if k != "backlog" else {"end": END["end"]}) for k in KINDS}
    assert got["summary"]["result"]["current"]["cases"] == 5
    assert got["summary"]["result"]["previous"]["cases"] == 1
    assert got["summary"]["query"]["start"] == PERIOD.start
    assert {r["group"]: r["sla_share"] for r in got["handling"]["result"]} == {"high": 1.0, "medium": 0.0, "low": None}
    assert got["backlog"]["result"][0]["open"] >= 1
    assert got["incidents"]["result"][0]["incident_id"] == "inc-1"
    assert got["causes"]["result"][0]["value"] == "dhl"
    assert {r["action"] for r in got["actions"]["result"]} == {"retry_payment", "contact_carrier"}
    dist = await svc.answer("distribution", {**END, "by": "carrier", "top": "1"})
    assert dist["result"] == [{"value": "(unknown)", "cases": 3, "share": 0.6}]
    freq = await svc.answer("frequency", {**END, "by": "severity", "bucket": "hour"})
    assert sum(r["cases"] for r in freq["result"]) == 5
    json.dumps(got, allow_nan=False)  # strictly JSON: no NaN or infinity anywhere
    assert svc.loads == 1


async def test_one_load_per_ttl_shared_by_concurrent_requests() -> None:
    loader, clock = Loader(), Clock(PERIOD.end)
    svc = AnalyticsService(loader, ttl=60, clock=clock)
    await asyncio.gather(*(svc.answer("summary", END) for _ in range(10)))
    assert loader.calls == 1
    clock.t += 59
    await svc.answer("summary", END)
    assert loader.calls == 1
    clock.t += 2
    await svc.answer("summary", END)
    assert loader.calls == 2


async def test_the_store_gone_is_raised_and_the_next_request_tries_again() -> None:
    loader, clock = Loader(), Clock(PERIOD.end)
    svc = AnalyticsService(loader, ttl=60, clock=clock)
    loader.fail = True
    with pytest.raises(StoreUnavailable):
        await svc.answer("summary", END)
    loader.fail = False
    assert (await svc.answer("summary", END))["result"]["current"]["cases"] == 5
    assert loader.calls == 2


@pytest.mark.parametrize(
    ("kind", "params", "needle"),
    [
        ("everything", {}, "expected one of summary"),
        ("summary", {"by": "rule"}, "not taken by summary"),
        ("summary", {"period": "0s"}, "period"),
        ("summary", {"period": "500d"}, "1h to 400d"),
        ("summary", {"period": "soon"}, "period"),
        ("summary", {"period": "9" * 5000 + "d"}, "1h to 400d"),
        ("summary", {"end": "2" * 100_000}, "RFC 3339"),
        ("summary", {"end": "2026-03-02T10:00:00"}, "offset"),
        ("summary", {"end": "1900-01-01T00:00:00Z"}, "between 2000 and 2100"),
        ("summary", {"end": "yesterday"}, "RFC 3339"),
        ("distribution", {"by": "rule; DROP TABLE cases"}, "parameter by"),
        ("handling", {"by": "merchant"}, "parameter by"),
        ("distribution", {"top": "0"}, "1 to 100"),
        ("distribution", {"top": "101"}, "1 to 100"),
        ("distribution", {"top": "\u0661"}, "1 to 100"),  # an Arabic-Indic digit one
        ("distribution", {"top": "9" * 5000}, "1 to 100"),
        ("frequency", {"bucket": "minute"}, "hour, day, week"),
        ("x" * 10_000, {}, "expected one of"),
    ],
)
async def test_bad_queries_are_refused_before_anything_is_loaded(
    kind: str, params: dict[str, Any], needle: str
) -> None:
    loader = Loader()
    svc = AnalyticsService(loader, clock=Clock(PERIOD.end))
    with pytest.raises(ConfigError, match=needle) as info:
        await svc.answer(kind, params)
    assert len(str(info.value)) < 300
    assert loader.calls == 0


def test_the_default_period_is_the_week_up_to_now() -> None:
    args = parse_query("summary", {}, default_end=PERIOD.end)
    assert (args["period"].start, args["period"].end) == (PERIOD.end - 7 * 86400, PERIOD.end)
