"""The periodic review ("复盘") of order exceptions: a period against the one before it, as
Markdown and as one self-contained HTML file (charts inline as SVG, no script, nothing fetched).

`build_report` asks the analytics for every number once; the two renderers only lay them out, so
the Markdown and the HTML always say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any

from orderwatch.calibrate import human_duration as _dur
from orderwatch.review.analytics import Analytics, Period
from orderwatch.review.charts import diverging_bars, horizontal_bars, stacked_columns

__all__ = ["ReportData", "build_report", "render_body", "render_html", "render_markdown"]

REPORT_DIMENSIONS = ("merchant", "channel", "payment_method", "country", "carrier", "provider", "warehouse_id", "sku")
_SEVERITIES = ("critical", "high", "medium", "low")


@dataclass
class ReportData:
    title: str
    source: str
    period: Period
    previous: Period
    bucket: float
    current: dict[str, Any]
    before: dict[str, Any]
    changes: list[dict[str, Any]]
    frequency: list[dict[str, Any]]
    handling: list[dict[str, Any]]
    handling_before: list[dict[str, Any]]
    handling_by_rule: list[dict[str, Any]]
    handling_by_team: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    backlog: list[dict[str, Any]]
    incidents: list[dict[str, Any]]
    causes: list[dict[str, Any]]
    distributions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def build_report(
    an: Analytics, period: Period, *, calibration: dict[str, Any] | None = None, title: str | None = None
) -> ReportData:
    """Every number of the report, for `period` against the period of equal length before it."""
    prev = period.previous()
    bucket = 3600.0 if period.length <= 2 * 86400 else 86400.0
    distributions = {}
    for dim in REPORT_DIMENSIONS:
        rows = an.distribution(period, by=dim, top=8)
        if any(r["value"] != "(unknown)" for r in rows):
            distributions[dim] = rows
    notes = []
    if an.source != "cases":
        notes.append(
            "Source: exception events only (backtest output or the order-exceptions topic). They carry no "
            "acknowledgement, action or incident: handling figures count automatic resolutions, and the root "
            "causes are the shared causes named in the evidence."
        )
    if not distributions.get("merchant"):
        notes.append("Merchant, channel, payment method and country need the event history (--history).")
    return ReportData(
        title=title or "Order exceptions review",
        source=an.source,
        period=period,
        previous=prev,
        bucket=bucket,
        current=an.summary(period),
        before=an.summary(prev),
        changes=an.compare(period, by="rule"),
        frequency=an.frequency(period, by="category", bucket=bucket),
        handling=an.handling(period, by="severity"),
        handling_before=an.handling(prev, by="severity"),
        handling_by_rule=an.handling(period, by="rule"),
        handling_by_team=an.handling(period, by="team"),
        actions=an.actions(period),
        backlog=an.backlog(period.end, by="severity"),
        incidents=an.incidents(period, top=5),
        causes=an.recurring_causes(period, top=10),
        distributions=distributions,
        calibration=calibration,
        notes=notes,
    )


# -- formatting ---------------------------------------------------------------------------------------
def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _delta(cur: float | None, prev: float | None, *, percent: bool = False) -> str:
    if cur is None or prev is None:
        return "-"
    d = cur - prev
    return f"{d * 100:+.1f} pt" if percent else f"{d:+,.0f}"


def _h(summary: dict[str, Any], key: str) -> Any:
    row = summary.get("handling") or {}
    return row.get(key)


def _headline(data: ReportData) -> list[tuple[str, str, str, str]]:
    c, p = data.current, data.before
    c_open, p_open = c["backlog"]["open"], p["backlog"]["open"]
    return [
        ("Exceptions", f"{c['cases']:,}", f"{p['cases']:,}", _delta(c["cases"], p["cases"])),
        (
            "Handled within handle_by",
            _pct(_h(c, "sla_share")),
            _pct(_h(p, "sla_share")),
            _delta(_h(c, "sla_share"), _h(p, "sla_share"), percent=True),
        ),
        ("Time to acknowledge, median", _dur(_h(c, "tta_median")), _dur(_h(p, "tta_median")), ""),
        ("Time to resolve, median", _dur(_h(c, "ttr_median")), _dur(_h(p, "ttr_median")), ""),
        ("Time to resolve, p90", _dur(_h(c, "ttr_p90")), _dur(_h(p, "ttr_p90")), ""),
        (
            "Escalation rate",
            _pct(_h(c, "escalation_rate")),
            _pct(_h(p, "escalation_rate")),
            _delta(_h(c, "escalation_rate"), _h(p, "escalation_rate"), percent=True),
        ),
        ("Resolved automatically / by a person", _auto_manual(c), _auto_manual(p), ""),
        ("Backlog at the end (open cases)", f"{c_open:,}", f"{p_open:,}", _delta(c_open, p_open)),
    ]  # fmt: skip


def _auto_manual(summary: dict[str, Any]) -> str:
    return f"{_h(summary, 'auto_resolved') or 0:,} / {_h(summary, 'manual_resolved') or 0:,}"


def _rises_falls(data: ReportData) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rises = [r for r in data.changes if r["change"] > 0][:5]
    falls = sorted((r for r in data.changes if r["change"] < 0), key=lambda r: r["change"])[:5]
    return rises, falls


def _mistuned(data: ReportData) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cal = data.calibration or {}
    return list(cal.get("proposals") or []), list(cal.get("unfixable") or [])


def _segment(scope: str, value: str) -> str:
    return "all orders" if scope == "*" else f"{scope}={value}"


# -- Markdown --------------------------------------------------------------------------------------------
def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def render_markdown(data: ReportData) -> str:
    p, prev = data.period, data.previous
    out = [
        f"# {data.title}",
        "",
        f"Period **{_when(p.start)} to {_when(p.end)}**, against {_when(prev.start)} to {_when(prev.end)}.",
        "Every figure is defined in orderwatch's docs/review.md.",
        "",
    ]
    out += [f"> {n}" for n in data.notes] + ([""] if data.notes else [])
    out += ["## Headline", ""]
    out += _md_table(["", "this period", "previous", "change"], [list(r) for r in _headline(data)])
    rises, falls = _rises_falls(data)
    out += ["## What rose, what fell", ""]
    out += _md_table(
        ["rule", "this period", "previous", "change"],
        [[r["value"], f"{r['current']:,}", f"{r['previous']:,}", f"{r['change']:+,}"] for r in rises + falls]
        or [["(no change)", "", "", ""]],
    )
    out += ["## SLA by severity", ""]
    before = {r["group"]: r for r in data.handling_before}
    out += _md_table(
        ["severity", "cases", "due", "in time", "share", "previous share", "TTA median", "TTR median", "TTR p90",
         "escalated"],
        [
            [r["group"], f"{r['cases']:,}", f"{r['due']:,}", f"{r['handled_in_time']:,}", _pct(r["sla_share"]),
             _pct(before.get(r["group"], {}).get("sla_share")), _dur(r["tta_median"]), _dur(r["ttr_median"]),
             _dur(r["ttr_p90"]), _pct(r["escalation_rate"])]
            for r in sorted(data.handling, key=_severity_order)
        ],
    )  # fmt: skip
    if data.handling_by_team:
        out += ["## Handling by team", ""]
        out += _md_table(
            ["team", "cases", "SLA share", "TTA median", "TTR median", "escalation rate"],
            [[r["group"], f"{r['cases']:,}", _pct(r["sla_share"]), _dur(r["tta_median"]), _dur(r["ttr_median"]),
              _pct(r["escalation_rate"])] for r in data.handling_by_team],
        )  # fmt: skip
    out += ["## Worst incidents", ""]
    if data.incidents:
        out += _md_table(
            ["incident", "rule", "cause", "members", "status", "duration"],
            [[r["incident_id"], r["rule"], f"{r['dimension']}={r['value']}", f"{r['members']:,}", r["status"],
              _dur(r["duration"])] for r in data.incidents],
        )  # fmt: skip
    else:
        out += ["No incidents in this period's data.", ""]
    out += ["## Recurring causes", ""]
    out += _md_table(
        ["rule", "cause", "incidents", "cases", "days seen"],
        [[r["rule"], f"{r['dimension']}={r['value']}", f"{r['incidents']:,}", f"{r['cases']:,}", f"{r['days']:,}"]
         for r in data.causes] or [["(none)", "", "", "", ""]],
    )  # fmt: skip
    out += ["## Actions", ""]
    out += _md_table(
        ["action", "requested", "sent", "dry run", "approved", "rejected", "failed", "pending", "withdrawn"],
        [[r["action"]] + [f"{r[k]:,}" for k in ("requested", "sent", "dry_run", "approved", "rejected", "failed",
          "pending", "withdrawn")] for r in data.actions] or [["(none)"] + [""] * 8],
    )  # fmt: skip
    out += [f"## Backlog at {_when(p.end)}", ""]
    out += _md_table(
        ["severity", "open", "age median", "age p90", "oldest", "<1h", "1h-4h", "4h-24h", ">24h"],
        [[r["group"], f"{r['open']:,}", _dur(r["age_median"]), _dur(r["age_p90"]), _dur(r["age_max"]),
          *(f"{r[k]:,}" for k in ("under 1h", "1h-4h", "4h-24h", "over 24h"))] for r in data.backlog]
        or [["(none)"] + [""] * 8],
    )  # fmt: skip
    out += ["## Where exceptions happen", ""]
    for dim, rows in data.distributions.items():
        out += [f"**{dim}**: " + ", ".join(f"{r['value']} {r['cases']:,} ({r['share']:.1%})" for r in rows), ""]
    out += ["## Rules that look mis-tuned", ""]
    out += _md_mistuned(data)
    return "\n".join(out).rstrip() + "\n"


def _severity_order(row: dict[str, Any]) -> int:
    return _SEVERITIES.index(row["group"]) if row["group"] in _SEVERITIES else len(_SEVERITIES)


def _md_mistuned(data: ReportData) -> list[str]:
    if data.calibration is None:
        return ["Not assessed: give `--calibration` (the JSON of `orderwatch calibrate --json`).", ""]
    proposals, unfixable = _mistuned(data)
    out = [
        f"From `orderwatch calibrate` ({data.calibration.get('mode')} {data.calibration.get('limit'):.2%} per rule "
        "and segment):",
        "",
    ]
    metric = "alerts/order" if data.calibration.get("mode") == "budget" else "late share"
    key = "alert_rate" if data.calibration.get("mode") == "budget" else "late_share"
    out += _md_table(
        ["rule", "segment", "threshold now", "proposed", f"{metric} now", "after"],
        [[p["rule"], _segment(p["scope"], p["value"]), _dur(p["current"]), _dur(p["proposed"]),
          _pct(p["before"][key]), _pct(p["after"][key])] for p in proposals] or [["(none)", "", "", "", "", ""]],
    )  # fmt: skip
    if unfixable:
        out += ["Over the limit at any threshold (a process problem, not a threshold):", ""]
        out += [
            f"- {s['rule']} for {_segment(s['scope'], s['value'])}: {_pct(s['alert_rate'])} of orders"
            for s in unfixable
        ]
        out += [""]
    return out


# -- HTML ------------------------------------------------------------------------------------------------------
_CSS = """
body { font-family: sans-serif; max-width: 980px; margin: 2em auto; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f5f8; } .note { background: #fff8e6; padding: 0.5em 1em; border-left: 4px solid #e0b040; }
.rise { color: #b23b30; } .fall { color: #2f7d40; } svg { display: block; margin: 0.5em 0; }
"""


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{escape(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _md_section_to_html(lines: list[str]) -> str:
    """A Markdown table block (as `_md_table` writes it) as an HTML table."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("|")]
    if len(rows) < 2:
        return "".join(f"<p>{escape(line)}</p>" for line in lines if line)
    return _html_table(rows[0], rows[2:])


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document that fetches nothing."""
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(data.title)}</title>",
        # No network: a CSP that forbids fetching anything at all, so the file stays self-contained.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(data.title)}</h1>",
    ]
    return "\n".join([*head, render_body(data), "</body></html>"]) + "\n"


def render_body(data: ReportData) -> str:
    """The report's content without the document around it (the ops console embeds it)."""
    md = render_markdown(data)
    sections: dict[str, list[str]] = {}
    current = ""
    for line in md.splitlines():
        if line.startswith("## "):
            current = line[3:]
            sections[current] = []
        elif current:
            sections[current].append(line)
    p, prev = data.period, data.previous
    parts = [
        f"<p>Period <b>{_when(p.start)} to {_when(p.end)}</b>, against {_when(prev.start)} to {_when(prev.end)}.</p>",
    ]
    parts += [f'<p class="note">{escape(n)}</p>' for n in data.notes]
    parts.append("<h2>Headline</h2>" + _md_section_to_html(sections.get("Headline", [])))
    parts.append(_frequency_chart(data))
    parts.append("<h2>What rose, what fell</h2>")
    rises, falls = _rises_falls(data)
    moved = [(r["value"], float(r["change"])) for r in rises + falls]
    if moved:
        parts.append(diverging_bars(moved, title="Change in exceptions per rule against the previous period"))
    parts.append(_md_section_to_html(sections.get("What rose, what fell", [])))
    parts.append("<h2>SLA by severity</h2>")
    sla = [(r["group"], r["sla_share"]) for r in data.handling if r["sla_share"] is not None]
    if sla:
        parts.append(horizontal_bars(sla, title="Share handled within handle_by", maximum=1.0, percent=True))
    parts.append(_md_section_to_html(sections.get("SLA by severity", [])))
    for name in ("Handling by team", "Worst incidents", "Recurring causes", "Actions", f"Backlog at {_when(p.end)}"):
        if name in sections:
            parts.append(f"<h2>{escape(name)}</h2>" + _md_section_to_html(sections[name]))
    parts.append("<h2>Where exceptions happen</h2>")
    for dim, rows in data.distributions.items():
        parts.append(horizontal_bars([(r["value"], float(r["cases"])) for r in rows], title=f"Exceptions by {dim}"))
    parts.append("<h2>Rules that look mis-tuned</h2>")
    proposals, _ = _mistuned(data)
    if proposals and data.calibration and data.calibration.get("mode") == "budget":
        bars = [(f"{p['rule']} {_segment(p['scope'], p['value'])}", p["before"]["alert_rate"]) for p in proposals]
        parts.append(horizontal_bars(bars, title="Alerts per order at today's threshold", maximum=1.0, percent=True))
    parts.append(_md_section_to_html(sections.get("Rules that look mis-tuned", [])))
    return "\n".join(parts)


def _frequency_chart(data: ReportData) -> str:
    buckets = sorted({r["bucket"] for r in data.frequency})
    if not buckets:
        return ""
    index = {b: i for i, b in enumerate(buckets)}
    series: dict[str, list[float]] = {}
    for r in data.frequency:
        series.setdefault(r["value"], [0.0] * len(buckets))[index[r["bucket"]]] += r["cases"]
    fmt = "%H:%M" if data.bucket < 86400 else "%m-%d"
    labels = [datetime.fromtimestamp(b, UTC).strftime(fmt) for b in buckets]
    unit = "hour" if data.bucket < 86400 else "day"
    return stacked_columns(labels, dict(sorted(series.items())), title=f"Exceptions per {unit}, by category")
