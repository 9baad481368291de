"""The `orderwatch calibrate` command: arguments, the run, and the printed comparison."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import IO, Any

from orderwatch.argtypes import positive_int
from orderwatch.detectors.config import RulesConfig
from orderwatch.errors import InputError

__all__ = ["add_parser", "run"]


def _fraction(value: str) -> float:
    text = value.strip()
    try:
        v = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        v = -1.0
    if not 0 < v < 1:
        msg = f"expected a fraction in (0, 1) such as 0.01 or 1%, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return v


def add_parser(sub: Any) -> None:
    cal = sub.add_parser(
        "calibrate",
        help="learn deadline thresholds per segment from history; shadow-compare them",
        description="Measure, per deadline rule and segment (merchant, channel, payment method, country; carrier "
        "for TRACKING_STALLED), the time from each episode's start to its clearing event in HISTORY; propose "
        "thresholds where a segment exceeds the alert budget (or where more than 1 - QUANTILE of its cleared "
        "episodes clear late) beyond chance, as a rules TOML with segment overrides; then backtest the current "
        "and the proposed config on the same history and print, per rule, the exceptions each raises and the "
        "labelled anomalies each catches.",
    )
    cal.add_argument("history", metavar="HISTORY", help="JSON Lines file of CloudEvents (.gz accepted)")
    cal.add_argument("--config", metavar="FILE", help="the current rules TOML (default: built-in defaults)")
    cal.add_argument("--blocklist", metavar="FILE", help="blocklist entries, as for backtest")
    cal.add_argument("--labels", metavar="FILE", help="labelled anomalies (from simulate) for the shadow comparison")
    goal = cal.add_mutually_exclusive_group()
    goal.add_argument(
        "--budget",
        type=_fraction,
        help="most exceptions per order a rule may raise in a segment, e.g. 1%% or 0.01 (default 1%%)",
    )
    goal.add_argument("--quantile", type=_fraction, help="cover this quantile of cleared episodes, e.g. 0.99")
    cal.add_argument(
        "--min-orders", type=positive_int, default=100, help="ignore segments with fewer orders (default 100)"
    )
    cal.add_argument("--output", "-o", metavar="FILE", help="write the proposed rules TOML here (default: stdout)")
    cal.add_argument("--json", metavar="FILE", help="write distributions, proposals and the shadow result as JSON")
    cal.add_argument("--distributions", action="store_true", help="print every segment's distribution, not only *")
    cal.add_argument("--no-shadow", action="store_true", help="skip the shadow backtest")
    cal.add_argument("--lateness", type=float, default=60.0, help="allowed lateness in seconds (default 60)")


def human_duration(seconds: float | None) -> str:
    from orderwatch.calibrate import human_duration as hd  # lazily: `orderwatch --help` stays quick

    return hd(seconds)


def _segment(scope: str, value: str) -> str:
    return "all orders" if scope == "*" else f"{scope}={value}"


def run(args: argparse.Namespace) -> int:
    from orderwatch.backtest import load_blocklist, open_lines
    from orderwatch.calibrate import calibrate, config_to_toml, load_labels, measure, shadow_backtest

    if args.history == "-":
        raise InputError("calibrate reads HISTORY three times: give a file, not standard input")
    if not Path(args.history).is_file():
        raise InputError(f"input file {args.history} does not exist")
    doc: dict[str, Any] = {}
    if args.config:
        current = RulesConfig.load(args.config)  # validates, with the file's own error messages
        with open(args.config, "rb") as fh:
            doc = tomllib.load(fh)
    else:
        current = RulesConfig()
    labels = load_labels(args.labels) if args.labels else None

    def blocklist() -> Any:
        return load_blocklist(args.blocklist) if args.blocklist else None

    budget = args.budget if args.budget is not None or args.quantile is not None else 0.01
    out = sys.stdout
    hist = measure(open_lines(args.history), blocklist=blocklist(), lateness=args.lateness)
    cal = calibrate(hist, doc, budget=budget, quantile=args.quantile, min_orders=args.min_orders)
    goal = (
        f"budget {budget:.2%} of orders per rule and segment"
        if args.quantile is None
        else f"quantile {args.quantile:g} of cleared episodes"
    )
    header = [
        f"Proposed by `orderwatch calibrate {args.history}` ({goal}, segments of >= {args.min_orders} orders).",
        "Review before use: docs/review.md explains each number.",
    ]
    toml_text = config_to_toml(cal.doc, header)
    _print_distributions(cal, hist, goal, args, out)
    _print_proposals(cal, out)
    shadow = None
    if not args.no_shadow:
        proposed = RulesConfig.from_dict(tomllib.loads(toml_text))
        shadow = shadow_backtest(
            lambda: open_lines(args.history),
            current,
            proposed,
            hist,
            cal.proposals,
            labels=labels,
            blocklist=blocklist,
            lateness=args.lateness,
        )
        _print_shadow(shadow, labels is not None, out)
    if args.output:
        Path(args.output).write_text(toml_text, encoding="utf-8")
        out.write(f"\nproposed rules written to {args.output}\n")
    else:
        out.write("\n" + toml_text)
    if args.json:
        doc_out = {"history": args.history, **cal.to_dict(), "shadow": shadow.to_dict() if shadow else None}
        Path(args.json).write_text(json.dumps(doc_out, indent=1), encoding="utf-8")
    return 0


def _print_distributions(cal: Any, hist: Any, goal: str, args: argparse.Namespace, out: IO[str]) -> None:
    w = out.write
    w(f"orderwatch calibrate {args.history} ({goal})\n")
    w(f"  lines {hist.lines:,}, invalid {hist.invalid:,}, orders {len(hist.orders):,}\n\n")
    w("time to clearing per deadline rule (nearest-rank quantiles of cleared episodes)\n")
    w(
        f"  {'rule':<24} {'segment':<30} {'orders':>7} {'episodes':>8} {'never':>6} {'p50':>7} {'p90':>7} "
        f"{'p99':>7} {'threshold':>9} {'alerts/order':>12}\n"
    )
    for s in cal.distributions:
        if s.scope != "*" and not args.distributions:
            continue
        w(
            f"  {s.rule:<24} {_segment(s.scope, s.value):<30} {s.orders:>7,} {s.episodes:>8,} {s.never_cleared:>6,} "
            f"{human_duration(s.p50):>7} {human_duration(s.p90):>7} {human_duration(s.p99):>7} "
            f"{human_duration(s.threshold):>9} {s.alert_rate:>12.2%}\n"
        )


def _print_proposals(cal: Any, out: IO[str]) -> None:
    w = out.write
    w("\nproposals (estimated from the measured episodes)\n")
    if not cal.proposals:
        w("  none: every segment is within the limit\n")
    for p in cal.proposals:
        metric = "alerts/order" if cal.mode == "budget" else "late share"
        before = p.before.alert_rate if cal.mode == "budget" else p.before.late_share
        after = p.after.alert_rate if cal.mode == "budget" else p.after.late_share
        w(
            f"  {p.rule:<24} {_segment(p.scope, p.value):<30} {human_duration(p.current):>6} -> "
            f"{human_duration(p.proposed):<6} {metric} {before:.2%} -> {after:.2%}\n"
        )
    if cal.unfixable:
        w("over the limit at every threshold up to 30 days (a process problem, not a threshold):\n")
        for s in cal.unfixable:
            w(f"  {s.rule:<24} {_segment(s.scope, s.value):<30} alerts/order {s.alert_rate:.2%}\n")


def _print_shadow(shadow: Any, with_labels: bool, out: IO[str]) -> None:
    w = out.write
    w("\nshadow backtest: current vs proposed config on the same history\n")
    head = f"  {'rule':<24} {'current':>8} {'proposed':>8}"
    if with_labels:
        head += f" {'labelled':>8} {'caught now':>10} {'caught new':>10}  lost"
    w(head + "\n")
    for r in shadow.rules.values():
        line = f"  {r.rule:<24} {r.current:>8,} {r.proposed:>8,}"
        if with_labels:
            lost = ", ".join(r.lost[:5]) + (f" (+{len(r.lost) - 5})" if len(r.lost) > 5 else "") if r.lost else "-"
            line += f" {r.labelled:>8,} {r.caught_current:>10,} {r.caught_proposed:>10,}  {lost}"
        w(line + "\n")
    for s in shadow.segments:
        w(
            f"  {s['rule']} for {_segment(s['scope'], s['value'])} ({s['orders']:,} orders): {s['current']:,} "
            f"exceptions ({s['current_rate']:.2%} per order) -> {s['proposed']:,} ({s['proposed_rate']:.2%})"
            + (f"; labelled anomalies no longer caught there: {s['lost_labelled']:,}" if with_labels else "")
            + "\n"
        )
    if with_labels:
        n = len(shadow.lost_outside)
        w(f"  labelled anomalies lost outside the proposals' segments: {n:,}" + (" (none)" if not n else "") + "\n")
