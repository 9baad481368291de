"""The `orderwatch` command line: backtest, simulate, schema, publish, topics, worker,
handlers-config, calibrate, report, demo.

Exit codes: 0 done, 1 an input could not be read, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from orderwatch import __version__
from orderwatch.argtypes import positive_int
from orderwatch.detectors.catalog import RULES
from orderwatch.errors import ConfigError, InputError, OrderwatchError

__all__ = ["main"]


def _timestamp(value: str) -> float:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError as exc:
        msg = f"expected an RFC 3339 timestamp with offset, e.g. 2026-11-22T12:00:00+00:00, got {value!r}"
        raise argparse.ArgumentTypeError(msg) from exc
    if dt.tzinfo is None:
        msg = f"timestamp {value!r} has no offset; add one, e.g. +00:00 or Z"
        raise argparse.ArgumentTypeError(msg)
    return dt.timestamp()


def _seconds(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        v = -1.0
    if v < 0:
        msg = f"expected a number of seconds >= 0, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return v


_positive_int = positive_int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orderwatch",
        description="Detect e-commerce order exceptions from order, payment, inventory and logistics events.",
    )
    parser.add_argument("--version", action="version", version=f"orderwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bt = sub.add_parser(
        "backtest",
        help="replay a CloudEvents JSONL file through the rules in event time",
        description="Replay a JSON Lines file of CloudEvents (arrival order; .gz accepted; - for stdin) "
        "through every rule in event time, exactly as a --clock event worker would. Writes exception "
        "CloudEvents as JSON Lines and prints a summary. Exits 0 when the input was read to the end.",
    )
    bt.add_argument("input", metavar="INPUT", help="JSON Lines file of CloudEvents (.gz accepted, - = stdin)")
    bt.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write exception events here (default: standard output; the summary then goes to stderr)",
    )
    bt.add_argument(
        "--dead-letter", metavar="FILE", help="write each invalid line here with its line number and reason"
    )
    bt.add_argument(
        "--until",
        metavar="TIME",
        type=_timestamp,
        help="after the last event, move the clock to TIME so deadlines up to it fire",
    )
    bt.add_argument("--config", metavar="FILE", help="rules configuration (TOML)")
    bt.add_argument(
        "--lateness",
        metavar="SECONDS",
        type=_seconds,
        default=60.0,
        help="allowed lateness of events behind the largest event time seen (default 60)",
    )
    bt.add_argument(
        "--max-skew",
        metavar="SECONDS",
        type=_seconds,
        default=3600.0,
        help="an event further ahead of the input's progress is held until confirmed, refused as "
        "from_future when the events after it refute it; 0 turns the guard off (default 3600)",
    )
    bt.add_argument(
        "--max-future",
        metavar="SECONDS",
        type=_seconds,
        default=900.0,
        help="an event time further ahead of the wall clock is refused as from_future; 0 turns "
        "the check off (default 900)",
    )
    bt.add_argument("--blocklist", metavar="FILE", help="blocklist entries (JSONL of {key, value})")
    bt.add_argument(
        "--labels", metavar="FILE", help="expected exceptions (from `simulate`): print precision and recall per rule"
    )
    bt.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")

    sim = sub.add_parser(
        "simulate",
        help="generate realistic order journeys with labelled anomalies",
        description="Write a realistic CloudEvents JSONL stream of whole order journeys with injected, "
        "labelled anomalies for every rule, re-delivered duplicates, cross-topic arrival skew and a few "
        "malformed lines. Labels go to --labels (default: OUTPUT with .labels.jsonl), the blocklist "
        "the stream assumes to --blocklist (default: OUTPUT with .blocklist.jsonl).",
    )
    sim.add_argument("--orders", type=_positive_int, default=10_000, help="number of orders (default 10000)")
    sim.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    sim.add_argument("--output", "-o", metavar="FILE", required=True, help="events JSONL (.gz to compress)")
    sim.add_argument("--labels", metavar="FILE", help="where to write the expected exceptions")
    sim.add_argument("--blocklist", metavar="FILE", help="where to write the blocklist entries")
    sim.add_argument(
        "--start",
        metavar="TIME",
        type=_timestamp,
        help="event time of the first order (default 2026-03-02T08:00:00+00:00)",
    )
    sim.add_argument(
        "--payment-methods",
        action="store_true",
        help="add payment_method (card, wallet, bank_transfer) to order.created (default: no such field)",
    )
    sim.add_argument(
        "--slow-method",
        metavar="METHOD",
        choices=["card", "wallet", "bank_transfer"],
        help="healthy orders paid with METHOD clear in 1 to 4 days instead of minutes (implies --payment-methods)",
    )

    sc = sub.add_parser(
        "schema",
        help="write a JSON Schema per event type",
        description="Write one JSON Schema file per input event type and per exception "
        "event, so consumers can validate without Python.",
    )
    sc.add_argument("--out", metavar="DIR", required=True, help="directory to write the schemas into")

    pub = sub.add_parser(
        "publish",
        help="send a CloudEvents JSONL file to the input topics, keyed by subject",
        description="Send each line of a CloudEvents JSONL file (.gz accepted, - = stdin) to the topic of its "
        "event type (orders, payments, inventory, logistics; with ORDERWATCH_TOPIC_PREFIX), keyed by its "
        "subject, as an upstream service would. Kafka is ORDERWATCH_KAFKA_BOOTSTRAP (default localhost:9092).",
    )
    pub.description = (pub.description or "") + (
        " The topics must exist (`orderwatch topics create`): publish checks them first and creates none. "
        "Record timestamps keep the file's order at the time of publishing, as a live upstream's would: record i "
        "gets ts_i = max(ts_(i-1) + 1, wall clock in ms), strictly increasing in file order whatever the events' "
        "own times (a historical file is not stamped older than the broker's retention). Faster than 1,000 lines/s "
        "the stamps run ahead of the wall clock by 1 ms a line; --max-lead-seconds ahead (30 minutes), publishing "
        "slows to 1,000 lines/s, inside Kafka 4's default log.message.timestamp.after.max.ms (1 h). The worker "
        "merges the order topics by these timestamps, so a replay sees the file's interleaving."
    )
    pub.add_argument("input", metavar="FILE", help="JSON Lines file of CloudEvents")
    pub.add_argument(
        "--max-lead-seconds",
        type=_positive_int,
        default=1800,
        metavar="S",
        help="how far ahead of the wall clock record timestamps may run before publishing slows to 1,000 "
        "lines/s (default 1800; keep it under the broker's log.message.timestamp.after.max.ms)",
    )
    pub.add_argument(
        "--unroutable-topic",
        metavar="TOPIC",
        help="send lines with no known type or subject here (default: count and skip them)",
    )

    tp = sub.add_parser(
        "topics",
        help="check or create the topics a worker needs (partitions, compaction, co-partitioning)",
        description="The topics a worker with these ORDERWATCH_* settings needs: the input topics (orders, "
        "payments, logistics, inventory: ORDERWATCH_PARTITIONS partitions each, co-partitioned with the "
        "order inbox and the tick topics), the compacted order-exceptions and blocklist, orders-dlq, "
        "order-actions, and the runtime's internal topics (<ORDERWATCH_APP_ID>-order-inbox, -by-*, "
        "-ticks-*; the tables' changelogs when present). `check` exits 1 with a table of what is wrong; "
        "`create` creates what is missing (idempotent) and refuses to change a partition count.",
    )
    tp.add_argument("action", choices=["check", "create"], help="check: report only; create: create what is missing")
    tp.add_argument(
        "--replication-factor",
        type=_positive_int,
        metavar="N",
        help="replication factor of created topics (default: 3, or the number of brokers when fewer)",
    )

    wk = sub.add_parser(
        "worker",
        help="run the live detector: faust agents over Kafka",
        description="Run a worker of the live detector. Kafka, Redis, topic prefix, store and the rest come "
        "from ORDERWATCH_* environment variables (see docs/operations.md). Stops on SIGTERM/SIGINT.",
    )
    wk.add_argument(
        "--clock",
        choices=["wall", "event"],
        help="wall: live, deadlines by the wall clock (default); event: by the watermark, so replaying "
        "history through Kafka gives what `backtest` gives",
    )
    wk.add_argument("--config", metavar="FILE", help="rules configuration (TOML)")
    wk.add_argument("--web-port", type=int, help="port of /metrics and /health (default ORDERWATCH_WEB_PORT, 6066)")
    wk.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    only = wk.add_mutually_exclusive_group()
    only.add_argument(
        "--no-handlers",
        action="store_true",
        help="detection only: no case handling, no ops API (the handlers run in another worker)",
    )
    only.add_argument(
        "--handlers-only",
        action="store_true",
        help="only the handlers (order-exceptions agent, escalation timer, ops API); no detector agents",
    )
    wk.add_argument(
        "--dry-run",
        action="store_true",
        help="the handlers log actions and notifications instead of sending them (ORDERWATCH_DRY_RUN)",
    )

    hc = sub.add_parser(
        "handlers-config",
        help="validate a handlers config file and print the effective settings",
        description="Read a handlers TOML file ([escalation], [incidents], [actions.<code>], [[webhooks]]), "
        "validate every key and print the effective settings as JSON, defaults filled in. Secrets are not "
        "printed: a webhook shows only the scheme and host of its URL and the names of its headers. "
        "Exits 2 with a message naming the key when a value is wrong.",
    )
    hc.add_argument("file", metavar="FILE", help="handlers config (TOML), e.g. deploy/handlers.example.toml")

    dm = sub.add_parser(
        "demo",
        help="the whole pipeline here: stack, simulated stream, live worker, scorecard",
        description="Start the local stack if Kafka is not reachable, simulate a labelled stream, publish it, "
        "run a --clock event worker, show exceptions as they arrive and finish with precision and recall per "
        "rule. Each run uses its own topic prefix. Exit 0 when every rule scores 1.000.",
    )
    dm.add_argument("--orders", type=_positive_int, default=2000, help="simulated orders (default 2000)")
    dm.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    dm.add_argument("--timeout", type=_seconds, default=300.0, help="give up after this many seconds (default 300)")

    sub.add_parser("rules", help="list the rule catalog with its defaults")
    _add_review_commands(sub)
    return parser


def _add_review_commands(sub: Any) -> None:
    from orderwatch import calibrate_cli
    from orderwatch.review import command

    calibrate_cli.add_parser(sub)
    command.add_parser(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "backtest":
            return _backtest(args)
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "schema":
            return _schema(args)
        if args.command == "rules":
            return _rules()
        if args.command == "publish":
            return _publish(args)
        if args.command == "worker":
            return _worker(args)
        if args.command == "topics":
            return _topics(args)
        if args.command == "handlers-config":
            return _handlers_config(args)
        if args.command == "calibrate":
            from orderwatch import calibrate_cli

            return calibrate_cli.run(args)
        if args.command == "report":
            from orderwatch.review import command

            return command.run(args)
        if args.command == "demo":
            from orderwatch.streams.demo import run_demo

            return 1 if run_demo(orders=args.orders, seed=args.seed, timeout=args.timeout) else 0
    except ConfigError as exc:
        print(f"orderwatch: configuration error: {exc}", file=sys.stderr)
        return 2
    except InputError as exc:
        print(f"orderwatch: {exc}", file=sys.stderr)
        return 1
    except OrderwatchError as exc:
        print(f"orderwatch: {exc}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command}")
    return 2


def _backtest(args: argparse.Namespace) -> int:
    from orderwatch.backtest import load_blocklist, open_lines, run_backtest, score
    from orderwatch.detectors.config import RulesConfig

    config = RulesConfig.load(args.config) if args.config else RulesConfig()
    blocklist = load_blocklist(args.blocklist) if args.blocklist else None
    labels = _read_labels(args.labels) if args.labels else None
    if args.input != "-" and not Path(args.input).is_file():
        raise InputError(f"input file {args.input} does not exist")
    with ExitStack() as stack:
        out: IO[str] = sys.stdout
        if args.output:
            out = stack.enter_context(open(args.output, "w", encoding="utf-8"))
        dlq = stack.enter_context(open(args.dead_letter, "w", encoding="utf-8")) if args.dead_letter else None
        report = sys.stdout if args.output else sys.stderr
        progress = None
        if not args.quiet:

            def progress(n: int, secs: float) -> None:
                print(f"  ... {n:,} lines, {n / secs:,.0f} lines/s", file=sys.stderr, flush=True)

        res = run_backtest(
            open_lines(args.input),
            config=config,
            blocklist=blocklist,
            lateness=args.lateness,
            until=args.until,
            output=out,
            dead_letter=dlq,
            keep=labels is not None,
            progress=progress,
            max_skew=args.max_skew or None,
            max_future=args.max_future or None,
        )
    _print_summary(res, args, report)
    if labels is not None:
        _print_scores(score(res.emissions, labels), report)
    return 0


def _read_labels(path: str) -> list[dict[str, Any]]:
    from orderwatch.backtest import open_lines

    labels = []
    for n, raw in enumerate(open_lines(path), 1):
        if raw.strip():
            try:
                labels.append(json.loads(raw))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{n}: not JSON ({exc.msg})") from exc
    return labels


def _print_summary(res: Any, args: argparse.Namespace, out: IO[str]) -> None:
    invalid = sum(res.invalid.values())
    w = out.write
    w(f"orderwatch backtest {args.input}\n")
    w(f"  lines read        {res.lines:>10,}\n")
    w(f"  valid events      {res.events:>10,}  (duplicates ignored {res.duplicates:,}, late {res.late:,})\n")
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(res.invalid.items()))
    w(f"  invalid           {invalid:>10,}" + (f"  ({reasons})" if reasons else "") + "\n")
    w(
        f"  exceptions        opened {sum(res.opened.values()):,}, resolved {sum(res.resolved.values()):,}, "
        f"open at end {res.open_at_end:,}, evidence updates {res.updated:,}\n"
    )
    w(f"  still pending     {sum(res.pending.values()):,} deadline episodes\n")
    w(f"  throughput        {res.events_per_second:,.0f} events/s ({res.seconds:.2f} s)\n\n")
    w(f"  {'rule':<26}{'opened':>8}{'resolved':>10}{'pending':>9}\n")
    for code in RULES:
        o, r, p = res.opened.get(code, 0), res.resolved.get(code, 0), res.pending.get(code, 0)
        if o or r or p:
            w(f"  {code:<26}{o:>8,}{r:>10,}{p:>9,}\n")


def _print_scores(scores: dict[str, tuple[int, int, int]], out: IO[str]) -> None:
    w = out.write
    w(f"\n  {'rule':<26}{'expected':>9}{'found':>7}{'precision':>11}{'recall':>8}\n")
    for code in RULES:
        if code not in scores:
            w(f"  {code:<26}{0:>9}{0:>7}{'-':>11}{'-':>8}\n")
            continue
        tp, fp, fn = scores[code]
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        w(f"  {code:<26}{tp + fn:>9,}{tp + fp:>7,}{precision:>11.3f}{recall:>8.3f}\n")


def _simulate(args: argparse.Namespace) -> int:
    from orderwatch.simulate import simulate

    out = Path(args.output)
    stem = str(out)[: -len("".join(out.suffixes))] if out.suffixes else str(out)
    labels = args.labels or f"{stem}.labels.jsonl"
    blocklist = args.blocklist or f"{stem}.blocklist.jsonl"
    stats = simulate(
        orders=args.orders,
        seed=args.seed,
        output=out,
        labels=Path(labels),
        blocklist=Path(blocklist),
        start=args.start,
        payment_methods=args.payment_methods,
        slow_method=args.slow_method,
    )
    print(
        f"wrote {stats['lines']:,} lines ({stats['orders']:,} orders, {stats['anomalies']:,} labelled "
        f"anomalies, {stats['duplicates']:,} duplicates, {stats['malformed']:,} malformed) to {out}"
    )
    print(f"labels: {labels}\nblocklist: {blocklist}")
    print(f"replay with: orderwatch backtest {out} --blocklist {blocklist} --labels {labels} --output exceptions.jsonl")
    return 0


def _publish(args: argparse.Namespace) -> int:
    import asyncio

    from orderwatch.backtest import open_lines
    from orderwatch.streams.publish import RecordClock, publish_lines
    from orderwatch.streams.settings import load_settings

    settings = load_settings()
    if args.input != "-" and not Path(args.input).is_file():
        raise InputError(f"input file {args.input} does not exist")

    def progress(n: int, secs: float) -> None:
        print(f"  ... {n:,} lines, {n / secs:,.0f} lines/s", file=sys.stderr, flush=True)

    try:
        res = asyncio.run(
            publish_lines(
                open_lines(args.input),
                settings,
                unroutable_topic=args.unroutable_topic,
                progress=progress,
                clock=RecordClock(max_lead_ms=args.max_lead_seconds * 1000),
            )
        )
    except OSError as exc:
        raise InputError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("aiokafka"):
            raise InputError(f"Kafka at {settings.kafka_bootstrap}: {type(exc).__name__}: {exc}") from exc
        raise
    total = sum(res.sent.values())
    rate = total / res.seconds if res.seconds else 0.0
    print(
        f"published {total:,} events in {res.seconds:.1f} s ({rate:,.0f}/s): "
        + ", ".join(f"{t} {n:,}" for t, n in sorted(res.sent.items()))
    )
    if res.key_mismatch:
        print(
            f"{res.key_mismatch:,} lines refused: their subject is not the entity in their data (key_mismatch)",
            file=sys.stderr,
        )
    if res.unroutable:
        print(
            f"{res.unroutable:,} lines had no known type or subject and were "
            + (f"sent to {args.unroutable_topic}" if args.unroutable_topic else "skipped")
        )
    return 0


def _topics(args: argparse.Namespace) -> int:
    import asyncio

    from orderwatch.streams.settings import load_settings
    from orderwatch.streams.topics import check_topics, create_topics, format_problems, topic_plan

    settings = load_settings()
    if args.action == "create":
        res = asyncio.run(create_topics(settings, replication=args.replication_factor))
        for name in res.created:
            print(f"created {name}")
        problems = res.problems
    else:
        problems = asyncio.run(check_topics(settings))
    if not problems:
        plan = topic_plan(settings)
        print(
            f"topics as needed on {settings.kafka_bootstrap} ({len(plan)} in the plan; prefix "
            f"{settings.topic_prefix!r}, app id {settings.app_id!r}, {settings.partitions} partitions co-partitioned)"
        )
        return 0
    print(f"{len(problems)} problems with the topics on {settings.kafka_bootstrap}:")
    print(format_problems(problems))
    if args.action == "create":
        print("`topics create` creates missing topics only; the rest needs the fix shown.")
    return 1


def _worker(args: argparse.Namespace) -> int:
    from orderwatch.detectors.config import RulesConfig
    from orderwatch.streams.settings import load_settings
    from orderwatch.streams.worker import run_worker

    overrides: dict[str, object] = {}
    if args.clock:
        overrides["clock"] = args.clock
    if args.web_port:
        overrides["web_port"] = args.web_port
    if args.dry_run:
        overrides["dry_run"] = True
    settings = load_settings(**overrides)
    rules = RulesConfig.load(args.config) if args.config else RulesConfig()
    handlers = None
    if not args.no_handlers:
        from orderwatch.handlers.config import load_handlers_config

        handlers = load_handlers_config(settings.handlers_config)
    run_worker(settings, rules, loglevel=args.loglevel, detection=not args.handlers_only, handlers=handlers)
    return 0


def _handlers_config(args: argparse.Namespace) -> int:
    from orderwatch.handlers.config import load_handlers_config

    config = load_handlers_config(args.file)
    print(json.dumps(config.describe(), indent=2))
    return 0


def _schema(args: argparse.Namespace) -> int:
    from orderwatch.schemas.export import write_schemas

    written = write_schemas(Path(args.out))
    print(f"wrote {len(written)} JSON Schemas to {args.out}")
    return 0


def _rules() -> int:
    from orderwatch.detectors.config import DEFAULT_THRESHOLDS, GLOBAL_PARAMS

    for code, r in RULES.items():
        default = DEFAULT_THRESHOLDS.get(code)
        extra = (
            f"{default / 60:g} min"
            if default
            else (", ".join(f"{k}={v:g}" for k, v in GLOBAL_PARAMS[code].items()) if code in GLOBAL_PARAMS else r.kind)
        )
        print(f"{code:<26} {r.category:<10} {r.severity:<9} {extra:<28} {r.action}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
