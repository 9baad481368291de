"""The live worker's memory at many open orders (issue 10, item 4: "the worker's RSS at 1M open
orders"): one `--clock event` worker (memory:// unless --store) replays N orders that stay open,
and its resident set is read from /proc once it has committed them, against its resident set idle
on empty topics. With `rocksdb://` the tables' values live in RocksDB (its cache and memtables
count in the resident set), not in Python dicts.

    .venv/bin/python bench/bench_worker_rss.py [--open-orders 100000] [--stage created|paid]
        [--spacing-ms 1] [--store memory://|rocksdb://] [--levers LEVERS]

Orders are created `--spacing-ms` of event time apart, each with its own customer and address
(so the address and customer agents hold a window entry per order too); keep N x spacing under
15 minutes (STOCK_NOT_RESERVED's deadline for an order.created alone) so that no deadline passes
and no exception opens. `created`: order.created only; `paid`: order.created, stock reserved,
payment succeeded (orders awaiting shipment). The events of the last minute of event time (the
lateness) wait in the agents' reorder buffers (each buffered order.created costs about 15 KB: the
parsed event, faust's message, in the orders agent and again in the address and customer agents)
until the clock passes them, so the smaller the spacing, the more of the resident set is that
buffer's high-water mark (CPython does not give it back).

What the worker holds per open order, beyond the detectors' state that bench_backtest.py measures
(about 600 B): the faust tables' in-memory copies of each key's stored value (orders, address and
customer agents), the windows, and whatever the runtime keeps. Figures are measured, never
asserted; results go to bench/results/worker-rss-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_backtest import _event  # noqa: E402
from bench.bench_runtime import (  # noqa: E402
    _working_in,
    committed_total,
    drop_run_topics,
    process_cpu_seconds,
    spawn_shim,
    write_report,
)
from bench.bench_scaleout import PARTITIONS, events_read, probe_lines  # noqa: E402
from orderwatch.streams.publish import publish_lines  # noqa: E402
from orderwatch.streams.settings import Settings  # noqa: E402
from orderwatch.streams.topics import ensure_topics  # noqa: E402
from tests.support.worker import free_port, stop_worker  # noqa: E402

STAGES = {"created": 1, "paid": 3}
"""Events per order of bench_backtest's journey: created; created, reserved, paid."""


def open_order_lines(n: int, per_order: int, spacing_ms: float, end: datetime) -> list[bytes]:
    """`n` orders' first `per_order` journey events, in event-time order, the last order created
    at `end`."""
    t0 = end - timedelta(milliseconds=n * spacing_ms)
    spacing_us = round(spacing_ms * 1000)
    timed: list[tuple[str, bytes]] = []
    for i in range(n):
        for k in range(1, per_order + 1):
            raw = _event(i, k, t0, spacing_us=spacing_us)
            timed.append((json.loads(raw)["time"], raw.encode()))
    timed.sort(key=lambda pair: pair[0])
    return [raw for _, raw in timed]


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


def gauges(port: int) -> dict[str, float]:
    """The worker's reorder-buffer and open-exception gauges, summed over agents."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for name in ("orderwatch_reorder_buffer_events", "orderwatch_exceptions_open", "orderwatch_deadline_queue_size"):
        out[name] = sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} ([\d.e+]+)$", text, re.M))
    return out


async def _ready(log: Path, proc: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while "Worker ready" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            msg = f"the worker did not get ready (exit {proc.poll()}); log: {log}"
            raise RuntimeError(msg)
        await asyncio.sleep(0.2)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    run = f"rss{int(time.time())}"
    settings = Settings(
        topic_prefix=f"{run}-", app_id=f"ow-{run}", partitions=PARTITIONS, web_port=free_port(), store=args.store
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    last_time = datetime.now(UTC) - timedelta(hours=1)
    lines = open_order_lines(args.open_orders, STAGES[args.stage], args.spacing_ms, last_time)
    # One more order per partition two minutes of event time later: it moves the clock past the
    # lateness (60 s), so every order above is applied (open, its state in the tables) and acked,
    # not held in a reorder buffer; no deadline of theirs passes.
    probes = probe_lines("rss", last_time + timedelta(minutes=2))
    lines += probes
    figures: dict[str, Any] = {
        "open_orders": args.open_orders,
        "stage": args.stage,
        "events": len(lines),
        "spacing_ms": args.spacing_ms,
        "store": settings.store,
        "levers": args.levers,
    }
    with _working_in(tmp):
        await ensure_topics(settings)
        log_path = tmp / "worker.log"
        with log_path.open("wb") as log:
            proc = spawn_shim(settings, log, levers=args.levers)
            try:
                await _ready(log_path, proc, 300)
                await asyncio.sleep(5)  # settled: tables opened, first metadata, web server
                figures["idle"] = status(proc.pid)
                started = time.perf_counter()
                res = await publish_lines(iter(lines), settings)
                figures["published"] = sum(res.sent.values())
                figures["publish_seconds"] = round(time.perf_counter() - started, 1)
                inputs = {settings.topic(t) for t in ("orders", "payments", "inventory")}
                last, read, last_change, samples = 0, 0, time.perf_counter(), []
                while True:
                    await asyncio.sleep(2)
                    if proc.poll() is not None:
                        msg = f"worker exited with {proc.returncode}; log: {log_path}"
                        raise RuntimeError(msg)
                    done = await committed_total(settings)
                    seen = events_read(settings.web_port, inputs)
                    now = time.perf_counter()
                    if (done, seen) != (last, read):
                        last, read, last_change = done, seen, now
                        samples.append(
                            {"s": round(now - started, 1), "read": seen, "committed": done, **status(proc.pid)}
                        )
                        rss = samples[-1]["VmRSS"] / 2**20
                        print(f"{now - started:7.1f}s read {seen:,} committed {done:,} rss {rss:,.0f} MiB", flush=True)
                    if done >= len(lines) - len(probes) or now - last_change > args.quiet:
                        break
                figures["committed"] = last
                figures["replay_seconds"] = round(last_change - started, 1)
                figures["cpu_seconds"] = round(process_cpu_seconds(proc.pid), 1)
                await asyncio.sleep(5)
                figures["end"] = status(proc.pid)
                figures["gauges_at_end"] = gauges(settings.web_port)
                figures["samples"] = samples
            finally:
                stop_worker(proc)
        await drop_run_topics(settings, run)
    grown = figures["end"]["VmRSS"] - figures["idle"]["VmRSS"]
    figures["rss_mib"] = round(figures["end"]["VmRSS"] / 2**20, 1)
    figures["rss_peak_mib"] = round(figures["end"]["VmHWM"] / 2**20, 1)
    figures["rss_idle_mib"] = round(figures["idle"]["VmRSS"] / 2**20, 1)
    figures["rss_growth_bytes_per_open_order"] = round(grown / args.open_orders)
    figures["cpu_us_per_event"] = round(figures["cpu_seconds"] / len(lines) * 1e6, 1)
    figures["log"] = str(log_path)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--open-orders", type=int, default=100_000)
    ap.add_argument("--stage", choices=sorted(STAGES), default="created")
    ap.add_argument("--spacing-ms", type=float, default=1.0, help="event time between two orders' creation")
    ap.add_argument("--store", default="memory://", help="the worker's table store: memory:// or rocksdb://")
    ap.add_argument("--levers", default="", help="BENCH_LEVERS of the worker (bench/worker_shim.py)")
    ap.add_argument("--quiet", type=float, default=40.0, help="seconds with nothing committed that end the replay")
    args = ap.parse_args()
    write_report("worker-rss", asyncio.run(measure(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
