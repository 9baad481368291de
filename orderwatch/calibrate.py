"""`orderwatch calibrate`: learn deadline thresholds from a history of events, per rule and segment,
and check the proposal with a shadow backtest of the current and the proposed config.

Measuring reuses the detectors themselves: the history is replayed once with every deadline rule's
threshold at a millisecond, so every episode opens an exception at once and its resolution marks
the clearing event; the time between is the episode's time to clearing (docs/review.md).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from orderwatch.backtest import open_lines, run_backtest
from orderwatch.detectors.blocklist import Blocklist
from orderwatch.detectors.catalog import RULES
from orderwatch.detectors.config import DEFAULT_THRESHOLDS, KEY_ORDER, SEGMENTS, RulesConfig
from orderwatch.detectors.orders import TERMINAL_STATUSES
from orderwatch.detectors.records import Emission
from orderwatch.errors import ConfigError, InputError

__all__ = [
    "CALIBRATED_RULES",
    "Calibration",
    "History",
    "Proposal",
    "SegmentSniffer",
    "SegmentStat",
    "ShadowResult",
    "calibrate",
    "config_to_toml",
    "format_duration",
    "human_duration",
    "load_labels",
    "measure",
    "shadow_backtest",
]

H = 3600.0
D = 86400.0
PROBE = 0.001
"""The threshold of the measuring replay: every episode opens (almost) at its start."""
# DUPLICATE_ORDER's threshold is a look-back window, not a wait for a clearing event.
CALIBRATED_RULES = tuple(r for r in DEFAULT_THRESHOLDS if r != "DUPLICATE_ORDER")
# The carrier is known only from shipment.created, so only rules timed after it segment by it.
_CARRIER_RULES = frozenset({"TRACKING_STALLED"})
ALL = "*"
"""The scope name of the whole population: a proposal there is a `[rules.X]` default."""
_Z = 3.0
"""How many Poisson standard deviations above the budget an excess must be to count."""


def rule_scopes(rule: str) -> tuple[str, ...]:
    """The segment scopes calibrate measures `rule` by, in override precedence order."""
    return tuple(s for s in SEGMENTS if s != "carrier" or rule in _CARRIER_RULES)


def _grid() -> list[float]:
    """Thresholds a proposal may take: round values a person would write."""
    out = [m * 60.0 for m in range(1, 61)]
    out += [m * 60.0 for m in range(65, 361, 5)]
    out += [h * H for h in range(7, 73)]
    out += [h * H for h in range(78, 30 * 24 + 1, 6)]
    return out


GRID = _grid()


def format_duration(seconds: float) -> str:
    """`"4d"`, `"36h"`, `"90m"`, `"45s"`: the largest unit that divides it (config syntax)."""
    for unit, size in (("d", D), ("h", H), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def human_duration(seconds: float | None) -> str:
    """`45s`, `5m16s`, `3h20m`, `2d9h`: two units at most, for people."""
    if seconds is None:
        return "-"
    if math.isinf(seconds):
        return "never"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m" if s % 3600 // 60 else f"{s // 3600}h"
    return f"{s // 86400}d{s % 86400 // 3600}h" if s % 86400 // 3600 else f"{s // 86400}d"


# -- measuring ------------------------------------------------------------------------------------
@dataclass
class History:
    """What one replay of the history measured: per order its segment values, per rule its
    episodes as (order id, seconds to clearing; inf when nothing cleared it)."""

    orders: dict[str, list[str | None]] = field(default_factory=dict)
    episodes: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    terminal: dict[str, float] = field(default_factory=dict)
    """When each order first reached a final status: that ends its open episodes quietly."""
    lines: int = 0
    invalid: int = 0

    def values(self, oid: str) -> list[str | None]:
        return self.orders.get(oid) or [None] * len(KEY_ORDER)


class SegmentSniffer:
    """Wraps the history's lines: notes each order's segment values on the way to the replay,
    reading only the two event types that carry them."""

    def __init__(self, lines: Iterable[bytes], hist: History) -> None:
        self._lines = lines
        self._orders = hist.orders
        self._terminal = hist.terminal

    def __iter__(self) -> Iterator[bytes]:
        for raw in self._lines:
            if b'"order.created"' in raw or b'"shipment.created"' in raw:
                self._note(raw)
            elif b'"order.cancelled"' in raw or b'"order.status_changed"' in raw:
                self._note_end(raw)
            yield raw

    def _note_end(self, raw: bytes) -> None:
        try:
            doc = json.loads(raw)
            oid = doc["data"]["order_id"]
            if doc["type"] == "order.status_changed" and doc["data"]["status"] not in TERMINAL_STATUSES:
                return
            t = datetime.fromisoformat(doc["time"]).timestamp()
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(oid, str) and t < self._terminal.get(oid, math.inf):
            self._terminal[oid] = t

    def _note(self, raw: bytes) -> None:
        try:
            doc = json.loads(raw)
            data = doc["data"]
            oid = data["order_id"]
        except (ValueError, KeyError, TypeError):
            return  # the replay dead-letters it; nothing to note
        if not isinstance(oid, str) or not isinstance(data, dict):
            return
        row = self._orders.setdefault(oid, [None] * len(KEY_ORDER))
        if doc.get("type") == "order.created":
            addr = data.get("shipping_address")
            country = addr.get("country") if isinstance(addr, dict) else None
            for i, value in enumerate(
                (data.get("merchant_id"), data.get("channel"), data.get("payment_method"), country)
            ):
                row[i] = _segment_value(value)
            if row[3]:
                row[3] = row[3].upper()
        elif doc.get("type") == "shipment.created":
            row[4] = _segment_value(data.get("carrier"))


def _segment_value(value: Any) -> str | None:
    """A segment name as a config could spell it (1 to 128 characters), else None."""
    return value if isinstance(value, str) and 0 < len(value) <= 128 else None


class _EpisodeClock:
    """The sink of the measuring replay: pairs each probe exception's start with its clearing."""

    def __init__(self) -> None:
        self.open: dict[str, tuple[str, str, float]] = {}
        self.done: dict[str, list[tuple[str, float, float]]] = {r: [] for r in CALIBRATED_RULES}

    def __call__(self, emissions: list[Emission]) -> None:
        for em in emissions:
            rec = em.record
            if rec.rule not in self.done or rec.order_id is None:
                continue
            if em.kind == "opened":
                start = rec.evidence.get("start_event_time")
                if start is None:
                    continue  # a promised date, not a threshold, set this deadline
                self.open[rec.exception_id] = (rec.rule, rec.order_id, datetime.fromisoformat(start).timestamp())
            elif em.kind == "resolved":
                began = self.open.pop(rec.exception_id, None)
                if began is not None and rec.resolution_event_time is not None:
                    self.done[began[0]].append((began[1], began[2], rec.resolution_event_time))

    def finish(self, terminal: dict[str, float]) -> dict[str, list[tuple[str, float]]]:
        """Each episode's seconds to clearing: to its resolution or, when sooner, to the order's
        final status (which ends every episode but a refund's without an exception)."""
        for rule, oid, start in self.open.values():
            self.done[rule].append((oid, start, math.inf))
        self.open.clear()
        out: dict[str, list[tuple[str, float]]] = {}
        for rule, eps in self.done.items():
            rows = out[rule] = []
            for oid, start, end in eps:
                if rule != "REFUND_OVERDUE" and start <= terminal.get(oid, math.inf) < end:
                    end = terminal[oid]
                rows.append((oid, max(0.0, end - start)))
        return out


def measure(lines: Iterable[bytes], *, blocklist: Blocklist | None = None, lateness: float = 60.0) -> History:
    """Replay `lines` with probe thresholds and return every deadline episode's time to clearing."""
    probe = RulesConfig()
    for rule in CALIBRATED_RULES:
        probe.thresholds[rule] = PROBE
        probe.enabled[rule] = True
    hist = History()
    clock = _EpisodeClock()
    res = run_backtest(
        iter(SegmentSniffer(lines, hist)), config=probe, blocklist=blocklist, lateness=lateness, sink=clock
    )
    hist.episodes = clock.finish(hist.terminal)
    hist.lines, hist.invalid = res.lines, res.invalid.total()
    return hist


# -- evaluating a config against the measured history --------------------------------------------
@dataclass
class SegmentStat:
    """One rule in one segment (scope `*` = every order) under one config."""

    rule: str
    scope: str
    value: str
    orders: int
    episodes: int
    cleared: int
    never_cleared: int
    alerts: int
    late_cleared: int
    threshold: float | None
    """The threshold an order of only this segment gets (None: the rule is off for it)."""
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    @property
    def alert_rate(self) -> float:
        """Exceptions per order of the segment."""
        return self.alerts / self.orders if self.orders else 0.0

    @property
    def late_share(self) -> float:
        """Share of cleared episodes that cleared after the threshold."""
        return self.late_cleared / self.cleared if self.cleared else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "scope": self.scope,
            "value": self.value,
            "orders": self.orders,
            "episodes": self.episodes,
            "cleared": self.cleared,
            "never_cleared": self.never_cleared,
            "alerts": self.alerts,
            "alert_rate": round(self.alert_rate, 6),
            "late_share": round(self.late_share, 6),
            "threshold": self.threshold,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
        }


def _quantile(sorted_values: list[float], q: float) -> float | None:
    """The nearest-rank quantile (docs/review.md): the smallest value with at least q of them at or below."""
    if not sorted_values:
        return None
    k = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[k - 1]


class _Evaluator:
    """Counts, for one config, each rule's alerts per segment from the measured episodes."""

    def __init__(self, hist: History) -> None:
        self.hist = hist
        self.segment_orders: dict[tuple[str, str], int] = Counter()
        for row in hist.orders.values():
            if row[1] is None and row[0] is None and row[2] is None and row[3] is None:
                continue  # seen only through a shipment: no order.created in the history
            self.segment_orders[(ALL, ALL)] += 1
            for scope, value in zip(KEY_ORDER, row, strict=True):
                if value is not None:
                    self.segment_orders[(scope, value)] += 1

    def threshold_of(self, cfg: RulesConfig, rule: str, row: list[str | None]) -> float | None:
        carrier = row[4] if rule in _CARRIER_RULES else None
        return cfg.profile(row[0], row[1], row[2], row[3], carrier)[rule]

    def stats(self, cfg: RulesConfig, rule: str, *, with_quantiles: bool = False) -> dict[tuple[str, str], SegmentStat]:
        scopes = rule_scopes(rule)
        idx = {s: KEY_ORDER.index(s) for s in scopes}
        acc: dict[tuple[str, str], list[int]] = {}
        durations: dict[tuple[str, str], list[float]] = {}
        for oid, dur in self.hist.episodes.get(rule, []):
            row = self.hist.values(oid)
            thr = self.threshold_of(cfg, rule, row)
            alert = thr is not None and dur > thr
            keys: list[tuple[str, str]] = [(ALL, ALL)]
            for s, i in idx.items():
                v = row[i]
                if v is not None:
                    keys.append((s, v))
            for key in keys:
                a = acc.setdefault(key, [0, 0, 0, 0, 0])
                a[0] += 1
                if math.isinf(dur):
                    a[2] += 1
                else:
                    a[1] += 1
                    if alert:
                        a[4] += 1
                    if with_quantiles:
                        durations.setdefault(key, []).append(dur)
                if alert:
                    a[3] += 1
        out: dict[tuple[str, str], SegmentStat] = {}
        for (scope, value), orders in self.segment_orders.items():
            if scope not in scopes and scope != ALL:
                continue
            a = acc.get((scope, value), [0, 0, 0, 0, 0])
            stat = SegmentStat(
                rule,
                scope,
                value,
                orders,
                a[0],
                a[1],
                a[2],
                a[3],
                a[4],
                self._segment_threshold(cfg, rule, scope, value),
            )
            if with_quantiles:
                ds = sorted(durations.get((scope, value), []))
                stat.p50, stat.p90, stat.p99 = _quantile(ds, 0.5), _quantile(ds, 0.9), _quantile(ds, 0.99)
            out[(scope, value)] = stat
        return out

    @staticmethod
    def _segment_threshold(cfg: RulesConfig, rule: str, scope: str, value: str) -> float | None:
        if scope == ALL:
            return cfg.profile()[rule]
        return cfg.profile(**{scope: value})[rule]


# -- proposing --------------------------------------------------------------------------------------
@dataclass
class Proposal:
    rule: str
    scope: str
    value: str
    current: float | None
    proposed: float
    before: SegmentStat
    after: SegmentStat

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "scope": self.scope,
            "value": self.value,
            "current": self.current,
            "proposed": self.proposed,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
        }


@dataclass
class Calibration:
    mode: str
    """`budget` (alerts per order) or `quantile` (share of cleared episodes cleared in time)."""
    limit: float
    """The budget, or 1 - quantile: the most a segment may exceed by."""
    min_orders: int
    doc: dict[str, Any]
    """The proposed config as a TOML document (the current one plus the proposals)."""
    proposals: list[Proposal] = field(default_factory=list)
    unfixable: list[SegmentStat] = field(default_factory=list)
    """Over the limit at any threshold up to 30 days: a process problem, not a threshold."""
    distributions: list[SegmentStat] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "limit": self.limit,
            "min_orders": self.min_orders,
            "proposals": [p.to_dict() for p in self.proposals],
            "unfixable": [s.to_dict() for s in self.unfixable],
            "distributions": [s.to_dict() for s in self.distributions],
        }


def _over(stat: SegmentStat, mode: str, limit: float, significant: bool) -> bool:
    """Whether a segment exceeds the limit; `significant` asks for an excess beyond chance."""
    if mode == "budget":
        count, base = stat.alerts, stat.orders
    else:
        count, base = stat.late_cleared, stat.cleared
    if base == 0:
        return False
    allowed = limit * base
    if significant:
        allowed += _Z * math.sqrt(max(allowed, 1.0))
    return count > allowed


def _with_override(doc: dict[str, Any], rule: str, scope: str, value: str, seconds: float) -> dict[str, Any]:
    new: dict[str, Any] = json.loads(json.dumps(doc))
    if scope == ALL:
        table = new.setdefault("rules", {}).setdefault(rule, {})
    else:
        table = new.setdefault(scope, {}).setdefault(value, {}).setdefault("rules", {}).setdefault(rule, {})
    table["threshold"] = format_duration(seconds)
    return new


def calibrate(
    hist: History,
    doc: dict[str, Any] | None = None,
    *,
    budget: float | None = None,
    quantile: float | None = None,
    min_orders: int = 100,
    max_proposals: int = 50,
) -> Calibration:
    """Propose thresholds for the segments whose alerts exceed `budget` (per order) or whose
    cleared episodes clear after the threshold more often than 1 - `quantile`, beyond chance.

    Greedy, most concentrated segment first: after each proposal the others are re-counted under
    it, so one fix for bank transfers is not repeated for every merchant that takes them."""
    if (budget is None) == (quantile is None):
        msg = "calibrate: give exactly one of a budget or a quantile"
        raise ConfigError(msg)
    if budget is not None and not 0 < budget < 1:
        msg = f"calibrate: the budget is a fraction of orders in (0, 1), got {budget!r}"
        raise ConfigError(msg)
    if quantile is not None and not 0 < quantile < 1:
        msg = f"calibrate: the quantile is in (0, 1), got {quantile!r}"
        raise ConfigError(msg)
    mode = "budget" if budget is not None else "quantile"
    limit = budget if budget is not None else 1 - (quantile or 0.0)
    doc = json.loads(json.dumps(doc or {}))
    ev = _Evaluator(hist)
    cfg = RulesConfig.from_dict(doc)
    result = Calibration(mode, limit, min_orders, doc)
    for rule in CALIBRATED_RULES:
        result.distributions += [
            s for s in ev.stats(cfg, rule, with_quantiles=True).values() if s.orders >= min_orders and s.episodes
        ]
    order = {scope: i for i, scope in enumerate((ALL, *SEGMENTS))}
    result.distributions.sort(key=lambda s: (CALIBRATED_RULES.index(s.rule), order[s.scope], s.value))
    skip: set[tuple[str, str, str]] = set()
    breadth = {scope: i for i, scope in enumerate((ALL, *reversed(SEGMENTS)))}
    while len(result.proposals) < max_proposals:
        candidates = []
        for rule in CALIBRATED_RULES:
            for (scope, value), stat in ev.stats(cfg, rule).items():
                if (rule, scope, value) in skip or stat.orders < min_orders or stat.threshold is None:
                    continue
                if _over(stat, mode, limit, significant=True):
                    share = stat.alert_rate if mode == "budget" else stat.late_share
                    # The most concentrated first; among equals the larger, then the broader scope
                    # (a segment that is every order is best fixed in [rules]).
                    candidates.append((-round(share, 9), -stat.orders, breadth[scope], rule, scope, value, stat))
        if not candidates:
            break
        *_, rule, scope, value, before = min(candidates, key=lambda c: c[:6])
        found = _smallest_fix(ev, doc, rule, scope, value, before, mode, limit)
        if found is None:
            skip.add((rule, scope, value))
            result.unfixable.append(before)
            continue
        doc, seconds, after = found
        cfg = RulesConfig.from_dict(doc)
        result.proposals.append(Proposal(rule, scope, value, before.threshold, seconds, before, after))
        skip.add((rule, scope, value))
    result.doc = doc
    return result


def _smallest_fix(
    ev: _Evaluator,
    doc: dict[str, Any],
    rule: str,
    scope: str,
    value: str,
    before: SegmentStat,
    mode: str,
    limit: float,
) -> tuple[dict[str, Any], float, SegmentStat] | None:
    """Binary search over the grid for the smallest threshold that brings the segment within the
    limit (alerts fall as the threshold grows); None when even the largest does not."""
    current = before.threshold or 0.0
    grid = [g for g in GRID if g > current]

    def trial(seconds: float) -> tuple[dict[str, Any], SegmentStat]:
        new = _with_override(doc, rule, scope, value, seconds)
        return new, ev.stats(RulesConfig.from_dict(new), rule)[(scope, value)]

    lo, hi = 0, len(grid) - 1
    if hi < 0 or _over(trial(grid[hi])[1], mode, limit, significant=False):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if _over(trial(grid[mid])[1], mode, limit, significant=False):
            lo = mid + 1
        else:
            hi = mid
    new, after = trial(grid[lo])
    return new, grid[lo], after


# -- writing the proposal ----------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    msg = f"cannot write {type(value).__name__} {value!r} as a rules TOML value"
    raise ConfigError(msg)


def _toml_key(name: str) -> str:
    return name if name.replace("_", "").replace("-", "").isalnum() else json.dumps(name)


def config_to_toml(doc: dict[str, Any], header: Iterable[str] = ()) -> str:
    """A rules TOML document (the shape `RulesConfig.from_dict` reads) as text."""
    lines = [f"# {h}" for h in header]
    if "amount_tolerance" in doc:
        lines.append(f"amount_tolerance = {_toml_value(doc['amount_tolerance'])}")
    for code, table in doc.get("rules", {}).items():
        lines += ["", f"[rules.{code}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for scope in SEGMENTS:
        for name, section in doc.get(scope, {}).items():
            for code, table in section.get("rules", {}).items():
                lines += ["", f"[{scope}.{_toml_key(name)}.rules.{code}]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    text = "\n".join(lines).lstrip("\n") + "\n"
    RulesConfig.from_dict(tomllib.loads(text))  # what we write must load
    return text


# -- the shadow comparison -----------------------------------------------------------------------------
@dataclass
class ShadowRule:
    rule: str
    current: int
    proposed: int
    labelled: int = 0
    caught_current: int = 0
    caught_proposed: int = 0
    lost: list[str] = field(default_factory=list)
    """Subjects of labelled anomalies the current config catches and the proposed one misses."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "current": self.current,
            "proposed": self.proposed,
            "labelled": self.labelled,
            "caught_current": self.caught_current,
            "caught_proposed": self.caught_proposed,
            "lost": self.lost,
        }


@dataclass
class ShadowResult:
    rules: dict[str, ShadowRule]
    segments: list[dict[str, Any]]
    """Per proposal: its segment's exceptions (and per order) under each config, counted, not estimated."""
    opened_current: set[tuple[str, str]]
    opened_proposed: set[tuple[str, str]]
    lost_outside: list[str] = field(default_factory=list)
    """Orders of labelled anomalies lost outside every proposal's segment: a proposal's side effect."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": [r.to_dict() for r in self.rules.values()],
            "segments": self.segments,
            "lost_outside": self.lost_outside,
        }


def shadow_backtest(
    lines: Callable[[], Iterable[bytes]],
    current: RulesConfig,
    proposed: RulesConfig,
    hist: History,
    proposals: list[Proposal],
    *,
    labels: list[dict[str, Any]] | None = None,
    blocklist: Callable[[], Blocklist | None] = lambda: None,
    lateness: float = 60.0,
) -> ShadowResult:
    """Backtest both configs on the same history; per rule, the exceptions each raises and the
    labelled anomalies each catches (matched on rule and subject, as `backtest --labels` does)."""
    opened: list[set[tuple[str, str]]] = []
    per_order: list[Counter[tuple[str, str]]] = []
    for cfg in (current, proposed):
        seen: set[tuple[str, str]] = set()
        orders: Counter[tuple[str, str]] = Counter()

        def note(emissions: list[Emission], seen: set[tuple[str, str]] = seen, orders: Counter[Any] = orders) -> None:
            for em in emissions:
                if em.kind == "opened":
                    seen.add((em.record.rule, em.record.subject))
                    if em.record.order_id is not None:
                        orders[(em.record.rule, em.record.order_id)] += 1

        run_backtest(iter(lines()), config=cfg, blocklist=blocklist(), lateness=lateness, sink=note)
        opened.append(seen)
        per_order.append(orders)
    expected = {(lab["rule"], lab["subject"]) for lab in labels or []}
    rules: dict[str, ShadowRule] = {}
    for code in RULES:
        cur = {x for x in opened[0] if x[0] == code}
        new = {x for x in opened[1] if x[0] == code}
        exp = {x for x in expected if x[0] == code}
        if not (cur or new or exp):
            continue
        rules[code] = ShadowRule(
            code,
            len(cur),
            len(new),
            len(exp),
            len(cur & exp),
            len(new & exp),
            sorted(s for _, s in (cur & exp) - new),
        )
    segments = []
    ev = _Evaluator(hist)
    lost_orders = {
        (lab["rule"], lab.get("order_id"))
        for lab in labels or []
        if (lab["rule"], lab["subject"]) in opened[0] and (lab["rule"], lab["subject"]) not in opened[1]
    }
    for p in proposals:
        members = _members(hist, p.scope, p.value)
        n = ev.segment_orders.get((p.scope, p.value), 0)
        counts = [sum(orders[(p.rule, oid)] for oid in members) for orders in per_order]
        lost_here = sum(1 for oid in members if (p.rule, oid) in lost_orders)
        segments.append(
            {
                "rule": p.rule,
                "scope": p.scope,
                "value": p.value,
                "orders": n,
                "current": counts[0],
                "proposed": counts[1],
                "current_rate": counts[0] / n if n else 0.0,
                "proposed_rate": counts[1] / n if n else 0.0,
                "lost_labelled": lost_here,
            }
        )
    inside = {(p.rule, oid) for p in proposals for oid in _members(hist, p.scope, p.value)}
    outside = sorted(oid or "" for key in lost_orders if key not in inside for oid in [key[1]])
    return ShadowResult(rules, segments, opened[0], opened[1], outside)


def _members(hist: History, scope: str, value: str) -> list[str]:
    i = KEY_ORDER.index(scope) if scope != ALL else None
    return [oid for oid, row in hist.orders.items() if i is None or row[i] == value]


def load_labels(path: str | Path) -> list[dict[str, Any]]:
    """`simulate`'s labels: one `{"rule", "subject", "order_id"}` per line."""
    out = []
    for n, raw in enumerate(open_lines(path), 1):
        if not raw.strip():
            continue
        try:
            lab = json.loads(raw)
            if not isinstance(lab.get("rule"), str) or not isinstance(lab.get("subject"), str):
                raise ValueError("rule and subject must be strings")
        except (ValueError, AttributeError) as exc:
            msg = f"{path}:{n}: not a label ({exc})"
            raise InputError(msg) from exc
        out.append(lab)
    return out
