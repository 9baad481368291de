"""Exception analytics on an embedded DuckDB: frequency and distribution, root causes, handling
effectiveness. Every number is one SQL query over the case set; docs/review.md defines each.

A query covers the cases *detected* in [start, end) and sees what happened to them up to `as_of`
(by default `end`): a resolution after `as_of` has not happened yet.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from orderwatch.errors import ConfigError
from orderwatch.review.dataset import ACTION_COLUMNS, CASE_COLUMNS, INCIDENT_COLUMNS, CaseSet

__all__ = ["DIMENSIONS", "GROUPS", "Analytics", "Period"]

# What a distribution or frequency may be split by (a whitelist: these names go into SQL).
DIMENSIONS = (
    "rule",
    "category",
    "severity",
    "team",
    "merchant",
    "channel",
    "carrier",
    "provider",
    "warehouse_id",
    "sku",
    "country",
    "payment_method",
)
# What handling effectiveness may be grouped by.
GROUPS = ("severity", "rule", "team", "category")
_BACKLOG_BUCKETS = ((3600.0, "under 1h"), (4 * 3600.0, "1h-4h"), (86400.0, "4h-24h"), (math.inf, "over 24h"))


@dataclass(frozen=True)
class Period:
    start: float
    end: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and math.isfinite(self.end)) or self.end <= self.start:
            msg = f"period: expected start < end, got {self.start!r} and {self.end!r}"
            raise ConfigError(msg)

    @property
    def length(self) -> float:
        return self.end - self.start

    def previous(self) -> Period:
        return Period(self.start - self.length, self.start)


def _check(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        msg = f"{name}: expected one of {', '.join(allowed)}, got {value!r}"
        raise ConfigError(msg)
    return value


def _rows(rel: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in rel.description or []]
    return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]


class Analytics:
    """The case set loaded into an in-memory DuckDB; one method per analytic."""

    def __init__(self, cases: CaseSet) -> None:
        self.source = cases.source
        self.con = duckdb.connect(":memory:")
        with tempfile.TemporaryDirectory(prefix="orderwatch-review-") as tmp:
            for table, columns, rows in (
                ("cases", CASE_COLUMNS, cases.cases),
                ("actions", ACTION_COLUMNS, cases.actions),
                ("incidents", INCIDENT_COLUMNS, cases.incidents),
            ):
                self._load(Path(tmp), table, columns, rows)
        times = self.con.execute(
            "SELECT min(detected_at), max(greatest(detected_at, resolved_at, acknowledged_at, escalated_at)) FROM cases"
        ).fetchone()
        self.first: float | None = times[0] if times else None
        self.last: float | None = times[1] if times else None

    def _load(self, tmp: Path, table: str, columns: dict[str, str], rows: list[dict[str, Any]]) -> None:
        schema = ", ".join(f"{name} {kind}" for name, kind in columns.items())
        self.con.execute(f"CREATE TABLE {table} ({schema})")
        if not rows:
            return
        # Bulk load through a JSON Lines file: typed by the schema above, and far faster than
        # row-by-row inserts for a month of cases.
        path = tmp / f"{table}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({k: row.get(k) for k in columns}) + "\n")
        spec = "{" + ", ".join(f"'{k}': '{v}'" for k, v in columns.items()) + "}"
        self.con.execute(
            f"INSERT INTO {table} SELECT * FROM read_json(?, format='newline_delimited', columns={spec})", [str(path)]
        )

    def close(self) -> None:
        self.con.close()

    def default_period(self, length: float) -> Period:
        """The `length` seconds ending at the last thing that happened in the set."""
        end = self.last if self.last is not None else 0.0
        return Period(end - length, end + 1e-3)

    # -- the case view as of a moment ----------------------------------------------------------------
    # Cases detected in the period, with every time after `as_of` ($t) blanked: not happened yet.
    _VIEW = """
            WITH c AS (
                SELECT * REPLACE (
                    CASE WHEN acknowledged_at <= $t THEN acknowledged_at END AS acknowledged_at,
                    CASE WHEN resolved_at <= $t THEN resolved_at END AS resolved_at,
                    CASE WHEN escalated_at <= $t THEN escalated_at END AS escalated_at,
                    CASE WHEN resolved_at <= $t THEN resolution_kind END AS resolution_kind
                ),
                least(
                    CASE WHEN acknowledged_at <= $t THEN acknowledged_at END,
                    CASE WHEN resolved_at <= $t THEN resolved_at END
                ) AS handled_at
                FROM cases WHERE detected_at >= $start AND detected_at < $end
            )
        """

    def _params(self, period: Period, as_of: float | None) -> dict[str, Any]:
        return {"start": period.start, "end": period.end, "t": period.end if as_of is None else as_of}

    # -- frequency and distribution ------------------------------------------------------------------
    def total(self, period: Period) -> int:
        row = self.con.execute(
            "SELECT count(*) FROM cases WHERE detected_at >= ? AND detected_at < ?", [period.start, period.end]
        ).fetchone()
        return int(row[0]) if row else 0

    def frequency(self, period: Period, *, by: str = "rule", bucket: float = 86400.0) -> list[dict[str, Any]]:
        """Cases per time bucket (of `bucket` seconds, aligned to the epoch) and value of `by`."""
        col = _check("by", by, DIMENSIONS)
        if not math.isfinite(bucket) or bucket < 60:
            msg = f"bucket: expected at least 60 seconds, got {bucket!r}"
            raise ConfigError(msg)
        return _rows(
            self.con.execute(
                f"""SELECT floor(detected_at / $b) * $b AS bucket, coalesce({col}, '(unknown)') AS value,
                    count(*) AS cases
                FROM cases WHERE detected_at >= $start AND detected_at < $end
                GROUP BY ALL ORDER BY bucket, value""",
                {"b": bucket, "start": period.start, "end": period.end},
            )
        )

    def distribution(self, period: Period, *, by: str = "rule", top: int = 10) -> list[dict[str, Any]]:
        """The `top` values of `by` by cases, with each one's share of all cases in the period;
        `(unknown)` collects cases without a value (e.g. no carrier in the evidence)."""
        col = _check("by", by, DIMENSIONS)
        return _rows(
            self.con.execute(
                f"""SELECT coalesce({col}, '(unknown)') AS value, count(*) AS cases,
                    count(*) / sum(count(*)) OVER () AS share
                FROM cases WHERE detected_at >= $start AND detected_at < $end
                GROUP BY ALL ORDER BY cases DESC, value LIMIT $top""",
                {"start": period.start, "end": period.end, "top": max(1, min(top, 1000))},
            )
        )

    # -- root causes ---------------------------------------------------------------------------------
    def incidents(self, period: Period, *, top: int = 10, as_of: float | None = None) -> list[dict[str, Any]]:
        """Incidents whose first member was detected in the period, most members first; `duration`
        runs from the first member to the resolution (or `as_of` while open)."""
        p = self._params(period, as_of)
        return _rows(
            self.con.execute(
                """SELECT incident_id, rule, dimension, value, status, count AS members,
                    first_detected_at, last_detected_at,
                    CASE WHEN resolved_at <= $t THEN resolved_at END AS resolved_at,
                    coalesce(CASE WHEN resolved_at <= $t THEN resolved_at END, $t) - first_detected_at AS duration
                FROM incidents WHERE first_detected_at >= $start AND first_detected_at < $end
                ORDER BY members DESC, first_detected_at, incident_id LIMIT $top""",
                {**p, "top": max(1, min(top, 1000))},
            )
        )

    def recurring_causes(self, period: Period, *, top: int = 10) -> list[dict[str, Any]]:
        """(rule, cause) pairs by how often they recur: distinct incidents, then cases, then the
        days (UTC) they were seen on. The cause is the first of carrier, provider, warehouse, SKU
        in the evidence, as the incidents group them."""
        return _rows(
            self.con.execute(
                """SELECT rule, cause_dimension AS dimension, cause_value AS value,
                    count(DISTINCT incident_id) AS incidents, count(*) AS cases,
                    count(DISTINCT floor(detected_at / 86400)) AS days,
                    min(detected_at) AS first_detected_at, max(detected_at) AS last_detected_at
                FROM cases WHERE detected_at >= $start AND detected_at < $end AND cause_value IS NOT NULL
                GROUP BY ALL ORDER BY incidents DESC, cases DESC, days DESC, rule, dimension, value LIMIT $top""",
                {"start": period.start, "end": period.end, "top": max(1, min(top, 1000))},
            )
        )

    def incident_share(self, period: Period) -> dict[str, Any]:
        """How many cases of the period belong to an incident (the rest stand alone)."""
        row = self.con.execute(
            """SELECT count(*), count(incident_id), count(DISTINCT incident_id)
            FROM cases WHERE detected_at >= ? AND detected_at < ?""",
            [period.start, period.end],
        ).fetchone()
        cases, grouped, incidents = row if row else (0, 0, 0)
        return {
            "cases": cases,
            "in_incidents": grouped,
            "incidents": incidents,
            "share": grouped / cases if cases else None,
        }

    # -- handling effectiveness ----------------------------------------------------------------------
    def handling(
        self, period: Period, *, by: str | None = "severity", as_of: float | None = None
    ) -> list[dict[str, Any]]:
        """Per value of `by` (or one row for all): time to acknowledge and to resolve (median, p90,
        seconds), the share handled within `handle_by`, escalation rate, auto vs manual."""
        key = f"{_check('by', by, GROUPS)}" if by is not None else "'all'"
        return _rows(
            self.con.execute(
                self._VIEW
                + f"""SELECT {key} AS "group", count(*) AS cases,
                    count(acknowledged_at) AS acknowledged,
                    quantile_cont(acknowledged_at - detected_at, 0.5) AS tta_median,
                    quantile_cont(acknowledged_at - detected_at, 0.9) AS tta_p90,
                    count(resolved_at) AS resolved,
                    quantile_cont(resolved_at - detected_at, 0.5) AS ttr_median,
                    quantile_cont(resolved_at - detected_at, 0.9) AS ttr_p90,
                    count(*) FILTER (WHERE handled_at IS NOT NULL OR handle_by <= $t) AS due,
                    count(*) FILTER (WHERE handled_at <= handle_by) AS handled_in_time,
                    count(*) FILTER (WHERE handled_at <= handle_by)
                        / nullif(count(*) FILTER (WHERE handled_at IS NOT NULL OR handle_by <= $t), 0) AS sla_share,
                    count(*) FILTER (WHERE escalated_at IS NOT NULL) AS escalated,
                    count(*) FILTER (WHERE escalated_at IS NOT NULL) / nullif(count(*), 0) AS escalation_rate,
                    count(*) FILTER (WHERE resolution_kind = 'auto') AS auto_resolved,
                    count(*) FILTER (WHERE resolution_kind = 'manual') AS manual_resolved
                FROM c GROUP BY ALL ORDER BY cases DESC, "group" """,
                self._params(period, as_of),
            )
        )

    def actions(self, period: Period) -> list[dict[str, Any]]:
        """Per action, for the cases detected in the period: how many were requested, sent (or
        only logged in dry-run), approved by a person, rejected, failed (capped after retries),
        still waiting for approval, and withdrawn (their case resolved first)."""
        return _rows(
            self.con.execute(
                """SELECT a.action, count(*) AS requested,
                    count(*) FILTER (WHERE a.state = 'sent') AS sent,
                    count(*) FILTER (WHERE a.state = 'dry_run') AS dry_run,
                    count(a.approved_by) AS approved,
                    count(*) FILTER (WHERE a.state = 'rejected') AS rejected,
                    count(*) FILTER (WHERE a.state = 'capped') AS failed,
                    count(*) FILTER (WHERE a.state = 'pending_approval') AS pending,
                    count(*) FILTER (WHERE a.state = 'withdrawn') AS withdrawn
                FROM actions a JOIN cases c USING (exception_id)
                WHERE c.detected_at >= $start AND c.detected_at < $end
                GROUP BY ALL ORDER BY requested DESC, a.action""",
                {"start": period.start, "end": period.end},
            )
        )

    def backlog(self, as_of: float, *, by: str | None = "severity") -> list[dict[str, Any]]:
        """Cases detected by `as_of` and not resolved by then: how many, how old (seconds:
        median, p90, oldest), and how many in each age band."""
        key = f"{_check('by', by, GROUPS)}" if by is not None else "'all'"
        bands = []
        lo = 0.0
        for hi, label in _BACKLOG_BUCKETS:
            cond = f"age >= {lo}" + (f" AND age < {hi}" if math.isfinite(hi) else "")
            bands.append(f'count(*) FILTER (WHERE {cond}) AS "{label}"')
            lo = hi
        return _rows(
            self.con.execute(
                f"""WITH b AS (
                    SELECT *, $t - detected_at AS age FROM cases
                    WHERE detected_at <= $t AND (resolved_at IS NULL OR resolved_at > $t)
                )
                SELECT {key} AS "group", count(*) AS open, quantile_cont(age, 0.5) AS age_median,
                    quantile_cont(age, 0.9) AS age_p90, max(age) AS age_max, {", ".join(bands)}
                FROM b GROUP BY ALL ORDER BY open DESC, "group" """,
                {"t": as_of},
            )
        )

    # -- the period as a whole -------------------------------------------------------------------------
    def summary(self, period: Period, *, as_of: float | None = None) -> dict[str, Any]:
        """The headline numbers of a period (one `handling` row for all, the backlog at its end)."""
        rows = self.handling(period, by=None, as_of=as_of)
        backlog = self.backlog(period.end if as_of is None else as_of, by=None)
        return {
            "start": period.start,
            "end": period.end,
            "cases": self.total(period),
            "handling": rows[0] if rows else None,
            "backlog": backlog[0] if backlog else {"open": 0},
            "incidents": self.incident_share(period),
        }

    def compare(self, period: Period, *, by: str = "rule") -> list[dict[str, Any]]:
        """Per value of `by`: cases in the period and in the one before it, and the change."""
        col = _check("by", by, DIMENSIONS)
        prev = period.previous()
        return _rows(
            self.con.execute(
                f"""SELECT coalesce({col}, '(unknown)') AS value,
                    count(*) FILTER (WHERE detected_at >= $start) AS current,
                    count(*) FILTER (WHERE detected_at < $start) AS previous,
                    count(*) FILTER (WHERE detected_at >= $start) - count(*) FILTER (WHERE detected_at < $start)
                        AS change
                FROM cases WHERE detected_at >= $pstart AND detected_at < $end
                GROUP BY ALL ORDER BY change DESC, value""",
                {"start": period.start, "end": period.end, "pstart": prev.start},
            )
        )
