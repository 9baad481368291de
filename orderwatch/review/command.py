"""The `orderwatch report` command: read a case set (a file, or the live case store), build the
review for a period and write it as HTML and/or Markdown."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from orderwatch.errors import ConfigError, InputError

__all__ = ["add_parser", "run"]


def _duration(value: str) -> float:
    from orderwatch.detectors.config import parse_duration

    try:
        return parse_duration(value, "--period")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _time(value: str) -> float:
    from datetime import datetime

    try:
        dt = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an RFC 3339 timestamp with offset, got {value!r}") from exc
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"timestamp {value!r} has no offset; add one, e.g. +00:00 or Z")
    return dt.timestamp()


def add_parser(sub: Any) -> None:
    rep = sub.add_parser(
        "report",
        help="the periodic review: this period against the previous one, as HTML and Markdown",
        description="Build the review of a period against the one before it: exceptions that rose and fell, the "
        "worst incidents and recurring causes, SLA per severity and team, actions, the backlog, where exceptions "
        "happen, and the rules that look mis-tuned. Reads the case store's export or exception events "
        "(--cases, e.g. backtest output), or the live case store (--redis). The HTML is one self-contained file.",
    )
    src = rep.add_mutually_exclusive_group(required=True)
    src.add_argument("--cases", metavar="FILE", help="case store export or exception events, JSON Lines (.gz ok)")
    src.add_argument("--redis", metavar="URL", help="read the live case store at this Redis URL")
    src.add_argument(
        "--exceptions-topic",
        action="store_true",
        help="read the order-exceptions topic from its start (ORDERWATCH_KAFKA_BOOTSTRAP, ORDERWATCH_TOPIC_PREFIX)",
    )
    rep.add_argument("--prefix", default="orderwatch:", help="the handlers' Redis key prefix (default orderwatch:)")
    rep.add_argument("--history", metavar="FILE", help="event history: merchant, channel, payment method, country")
    rep.add_argument("--calibration", metavar="FILE", help="`orderwatch calibrate --json` output: mis-tuned rules")
    rep.add_argument(
        "--teams", metavar="FILE", help='TOML [teams] table: rule or category = "team" (default: category)'
    )
    rep.add_argument("--period", type=_duration, default=7 * 86400.0, help="period length, e.g. 1d, 7d (default 7d)")
    rep.add_argument("--end", type=_time, help="end of the period (default: the last thing that happened)")
    rep.add_argument("--title", default="Order exceptions review", help="the report's title")
    rep.add_argument("--html", metavar="FILE", help="write the HTML report here")
    rep.add_argument("--markdown", metavar="FILE", help="write the Markdown report here (default: stdout)")


def _teams(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"teams file {path}: cannot read it ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"teams file {path}: not valid TOML ({exc})") from exc
    teams = doc.get("teams")
    if not isinstance(teams, dict) or not all(isinstance(v, str) and v for v in teams.values()):
        raise ConfigError(f'teams file {path}: expected a [teams] table of rule or category = "team name"')
    return teams


async def _live_export(url: str, prefix: str) -> list[bytes]:
    from orderwatch.handlers.export import export_case_store
    from orderwatch.handlers.store import open_redis

    client = open_redis(url, timeout=5.0)
    try:
        buf = io.StringIO()
        await export_case_store(client, prefix, buf)
    finally:
        await client.aclose()
    return [line.encode() for line in buf.getvalue().splitlines()]


def run(args: argparse.Namespace) -> int:
    from orderwatch.backtest import open_lines
    from orderwatch.calibrate import History, SegmentSniffer
    from orderwatch.review.analytics import Analytics, Period
    from orderwatch.review.dataset import read_case_set
    from orderwatch.review.report import build_report, render_html, render_markdown

    teams = _teams(args.teams)
    if args.cases:
        if not Path(args.cases).is_file():
            raise InputError(f"input file {args.cases} does not exist")
        cases = read_case_set(open_lines(args.cases), teams)
    elif args.redis:
        cases = read_case_set(asyncio.run(_live_export(args.redis, args.prefix)), teams)
    else:
        from orderwatch.review.topic import read_topic
        from orderwatch.streams.settings import load_settings

        cases = read_case_set(asyncio.run(read_topic(load_settings())), teams)
    if args.history:
        hist = History()
        for _ in SegmentSniffer(open_lines(args.history), hist):
            pass
        found = cases.attach_orders(hist.orders)
        print(f"orders: {len(hist.orders):,} in the history, {found:,} cases matched", file=sys.stderr)
    calibration = None
    if args.calibration:
        try:
            calibration = json.loads(Path(args.calibration).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"calibration {args.calibration}: not readable JSON ({exc})") from exc
        if not isinstance(calibration, dict) or "proposals" not in calibration:
            raise InputError(f"calibration {args.calibration}: not `orderwatch calibrate --json` output")
    an = Analytics(cases)
    try:
        end = args.end
        period = Period(end - args.period, end) if end is not None else an.default_period(args.period)
        data = build_report(an, period, calibration=calibration, title=args.title)
    finally:
        an.close()
    md = render_markdown(data)
    if args.html:
        Path(args.html).write_text(render_html(data), encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(md, encoding="utf-8")
    elif not args.html:
        sys.stdout.write(md)
    print(f"report: {data.current['cases']:,} exceptions this period, {data.before['cases']:,} before", file=sys.stderr)
    return 0
