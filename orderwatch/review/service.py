"""Analytics on demand, for the ops API's `/analytics/<kind>` and the console's analytics page:
strict parsing of the query, one case set loaded at most once per `ttl` seconds however many
requests arrive, and JSON-ready answers.

The loader is any coroutine returning a CaseSet; `StoreLoader` reads the live case store through
the handlers' export (imported lazily: this package does not need Redis to be installed to run).
"""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from orderwatch.detectors.config import parse_duration
from orderwatch.errors import ConfigError
from orderwatch.review.analytics import DIMENSIONS, GROUPS, Analytics, Period
from orderwatch.review.dataset import CaseSet, read_case_set

__all__ = ["KINDS", "AnalyticsService", "StoreLoader", "parse_query"]

KINDS = ("summary", "compare", "frequency", "distribution", "handling", "actions", "backlog", "incidents", "causes")
_PARAMS: dict[str, frozenset[str]] = {
    "summary": frozenset({"period", "end"}),
    "compare": frozenset({"period", "end", "by"}),
    "frequency": frozenset({"period", "end", "by", "bucket"}),
    "distribution": frozenset({"period", "end", "by", "top"}),
    "handling": frozenset({"period", "end", "by"}),
    "actions": frozenset({"period", "end"}),
    "backlog": frozenset({"end", "by"}),
    "incidents": frozenset({"period", "end", "top"}),
    "causes": frozenset({"period", "end", "top"}),
}
_MIN_PERIOD, _MAX_PERIOD = 3600.0, 400 * 86400.0
_BUCKETS = {"hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0}
_EPOCH_MIN, _EPOCH_MAX = 946684800.0, 4102444800.0  # 2000-01-01 .. 2100-01-01


def _bad(msg: str) -> ConfigError:
    return ConfigError(msg)


def parse_query(kind: str, params: Mapping[str, str], *, default_end: float) -> dict[str, Any]:
    """The arguments of one analytic from query-string parameters, or ConfigError naming the
    parameter: unknown kinds and parameters, out-of-range periods, ends and counts are refused."""
    if kind not in _PARAMS:
        raise _bad(f"analytic {kind[:40]!r}: expected one of {', '.join(KINDS)}")
    extra = sorted(set(params) - _PARAMS[kind])
    if extra:
        allowed = ", ".join(sorted(_PARAMS[kind])) or "none"
        raise _bad(f"parameter {extra[0][:40]!r}: not taken by {kind}; expected {allowed}")
    out: dict[str, Any] = {}
    end = default_end
    if "end" in params:
        from datetime import datetime

        try:
            dt = datetime.fromisoformat(params["end"])
        except ValueError as exc:
            raise _bad("parameter end: expected an RFC 3339 timestamp with offset") from exc
        if dt.tzinfo is None:
            raise _bad("parameter end: the timestamp needs an offset, e.g. Z or +00:00")
        end = dt.timestamp()
        if not _EPOCH_MIN <= end <= _EPOCH_MAX:
            raise _bad("parameter end: expected a time between 2000 and 2100")
    length = 7 * 86400.0
    if "period" in params:
        length = parse_duration(params["period"], "period")
        if not _MIN_PERIOD <= length <= _MAX_PERIOD:
            raise _bad("parameter period: expected 1h to 400d")
    if kind == "backlog":
        out["as_of"] = end
    else:
        out["period"] = Period(end - length, end)
    if "by" in params:
        choices: tuple[str, ...] = GROUPS if kind in ("handling", "backlog") else DIMENSIONS
        if params["by"] not in choices:
            raise _bad(f"parameter by: expected one of {', '.join(choices)}")
        out["by"] = params["by"]
    if "bucket" in params:
        if params["bucket"] not in _BUCKETS:
            raise _bad(f"parameter bucket: expected one of {', '.join(_BUCKETS)}")
        out["bucket"] = _BUCKETS[params["bucket"]]
    if "top" in params:
        top = params["top"]
        if not (len(top) <= 3 and top.isascii() and top.isdigit()) or not 1 <= int(top) <= 100:
            raise _bad("parameter top: expected a whole number from 1 to 100")
        out["top"] = int(top)
    return out


def _json_ready(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


class AnalyticsService:
    """Answers analytics queries from a case set reloaded at most every `ttl` seconds."""

    def __init__(
        self, load: Callable[[], Awaitable[CaseSet]], *, ttl: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._load = load
        self.ttl = ttl
        self.clock = clock
        self._analytics: Analytics | None = None
        self._loaded_at = -math.inf
        self._lock = asyncio.Lock()
        self.loads = 0
        """How many times the case set was loaded (the cache's effect, for tests and logs)."""

    async def analytics(self) -> tuple[Analytics, float]:
        """The current analytics and when they were loaded; concurrent callers share one load."""
        async with self._lock:
            now = self.clock()
            if self._analytics is None or now - self._loaded_at >= self.ttl:
                cases = await self._load()
                old, self._analytics = self._analytics, await asyncio.to_thread(Analytics, cases)
                self._loaded_at = now
                self.loads += 1
                if old is not None:
                    old.close()
            return self._analytics, self._loaded_at

    async def answer(self, kind: str, params: Mapping[str, str]) -> dict[str, Any]:
        """`{"kind", "loaded_at", "source", "query", "result"}` for one analytic; ConfigError on a bad query."""
        parse_query(kind, params, default_end=self.clock())  # refuse bad input before loading anything
        an, loaded_at = await self.analytics()
        args = parse_query(kind, params, default_end=self.clock())
        result: Any
        period: Period | None = None
        if kind == "backlog":
            result = an.backlog(args["as_of"], by=args.get("by", "severity"))
        else:
            period = args["period"]
            result = self._period_result(an, kind, period, args)
        query: dict[str, Any] = {k: v for k, v in params.items()}
        if period is not None:
            query |= {"start": period.start, "end": period.end}
        answer: dict[str, Any] = _json_ready(
            {"kind": kind, "loaded_at": loaded_at, "source": an.source, "query": query, "result": result}
        )
        return answer

    @staticmethod
    def _period_result(an: Analytics, kind: str, period: Period, args: dict[str, Any]) -> Any:
        if kind == "summary":
            return {"current": an.summary(period), "previous": an.summary(period.previous())}
        if kind == "compare":
            return an.compare(period, by=args.get("by", "rule"))
        if kind == "frequency":
            return an.frequency(period, by=args.get("by", "rule"), bucket=args.get("bucket", 86400.0))
        if kind == "distribution":
            return an.distribution(period, by=args.get("by", "rule"), top=args.get("top", 10))
        if kind == "handling":
            return an.handling(period, by=args.get("by", "severity"))
        if kind == "actions":
            return an.actions(period)
        if kind == "incidents":
            return an.incidents(period, top=args.get("top", 10))
        return an.recurring_causes(period, top=args.get("top", 10))


class StoreLoader:
    """Loads the case set from the live case store through `handlers.export` (StoreUnavailable
    if Redis is gone)."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    async def __call__(self) -> CaseSet:
        from orderwatch.handlers.export import export_case_store

        buf = io.StringIO()
        await export_case_store(self.redis, self.prefix, buf)
        return read_case_set(line.encode() for line in buf.getvalue().splitlines())
