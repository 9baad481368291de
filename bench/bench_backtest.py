"""Backtest benchmark: CPU time against plain `json.loads` on the same lines in the same run, split
into buckets, and bytes of detector state per open order (tracemalloc) with the process RSS.
Writes bench/results/.

    .venv/bin/python bench/bench_backtest.py [--orders 20000] [--open-orders 1000000] [--spacing 1] [--repeat 3]

Figures are measured, never asserted: CI machines are shared and noisy; compare ratios taken
in one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hashlib
import heapq
import io
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orderwatch import backtest  # noqa: E402
from orderwatch.backtest import _topic_of, open_lines, run_backtest  # noqa: E402
from orderwatch.detectors.engine import Engine  # noqa: E402
from orderwatch.detectors.records import Emission  # noqa: E402
from orderwatch.detectors.replay import EventTimeReplay  # noqa: E402
from orderwatch.detectors.skew import DEFAULT_MAX_SKEW  # noqa: E402
from orderwatch.errors import InvalidEvent  # noqa: E402
from orderwatch.schemas.events import parse_event  # noqa: E402
from orderwatch.simulate import simulate  # noqa: E402


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_1m": os.getloadavg()[0],
    }


def _cpu_best(fn: Callable[[], Any], best: float) -> float:
    t = time.process_time()
    fn()
    return min(best, time.process_time() - t)


def _loads_all(lines: list[bytes]) -> None:
    for raw in lines:
        with contextlib.suppress(ValueError):
            json.loads(raw)


def _parse_all(lines: list[bytes]) -> None:
    for raw in lines:
        with contextlib.suppress(InvalidEvent):
            parse_event(raw)


def _nothing(*_: Any) -> list[Emission]:
    return []


class _NoRules:
    """An engine that applies nothing: what the replay (reorder buffer, dedupe, clock) costs."""

    def apply(self, ev: Any, t: float, now: float) -> list[Emission]:
        return []

    def advance(self, now: float) -> list[Emission]:
        return []


def _dispatch_only() -> Engine:
    """The real engine (routing table, keys, adoption checks) with every detector's rules
    replaced by a function that does nothing: what dispatch costs."""
    engine = Engine()
    for det in (engine.orders, engine.stock, engine.addresses, engine.customers, engine.providers):
        det.on_event = _nothing  # type: ignore[method-assign,assignment]
        det.on_clock = _nothing  # type: ignore[method-assign,assignment]
        det._fire = _nothing  # type: ignore[method-assign,assignment]
    # Bind the replaced methods (a tree before Engine.route looked them up per event: this bench
    # also measures older commits' trees, see bench/results/README.md).
    if hasattr(engine, "route"):
        engine.route()
    return engine


# run_backtest's collector setting, for its stages here too (a tree before it: CPython's default).
_collector: Callable[[], contextlib.AbstractContextManager[None]] = getattr(
    backtest, "batch_collector", contextlib.nullcontext
)


def _replay_all(lines: list[bytes], engine: Any) -> None:
    """run_backtest's loop without its bookkeeping and output (same parse, same replay, same
    collector setting)."""
    with _collector():
        replay = EventTimeReplay(engine, lateness=60.0, source_of=_topic_of, max_skew=DEFAULT_MAX_SKEW)
        for n, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                replay.push(parse_event(raw), (n, raw))
            except InvalidEvent:
                continue
            replay.refused.clear()
        replay.finish(None)


def _backtest_quiet(lines: list[bytes]) -> None:
    _replay_all(lines, Engine())


def _backtest_full(lines: list[bytes]) -> None:
    run_backtest(iter(lines), output=io.StringIO())


def throughput(lines: list[bytes], repeat: int) -> dict[str, Any]:
    """CPU seconds (time.process_time: robust on a shared machine), best of `repeat` alternating
    runs over the same lines, of `json.loads`, `parse_event` alone and the whole backtest, and
    of the stages in between, whose differences split the backtest into buckets:

    - parsing/validation: `parse_event` alone;
    - reorder buffer + dedupe + clock: parse and replay into an engine that applies nothing;
    - rule dispatch: the real engine (routing, keys, adoptions) over detectors that do nothing;
    - rules: the real detectors, no output;
    - emission/serialisation: `run_backtest` writing the exception CloudEvents (and counting).
    """
    best = dict.fromkeys(("json", "parse", "replay", "dispatch", "rules", "full"), float("inf"))
    for _ in range(repeat):
        best["json"] = _cpu_best(partial(_loads_all, lines), best["json"])
        best["parse"] = _cpu_best(partial(_parse_all, lines), best["parse"])
        best["replay"] = _cpu_best(partial(_replay_all, lines, _NoRules()), best["replay"])
        best["dispatch"] = _cpu_best(partial(_replay_all, lines, _dispatch_only()), best["dispatch"])
        best["rules"] = _cpu_best(partial(_backtest_quiet, lines), best["rules"])
        best["full"] = _cpu_best(partial(_backtest_full, lines), best["full"])
    sink = io.StringIO()
    result = run_backtest(iter(lines), output=sink)
    n = len(lines)
    full = best["full"]
    buckets = {
        "parsing_validation": best["parse"],
        "reorder_dedupe_clock": best["replay"] - best["parse"],
        "rule_dispatch": best["dispatch"] - best["replay"],
        "rules": best["rules"] - best["dispatch"],
        "emission_serialisation": full - best["rules"],
    }
    return {
        "lines": n,
        "timer": f"time.process_time, best of {repeat} alternating runs",
        "json_loads_cpu_s": round(best["json"], 3),
        "parse_event_cpu_s": round(best["parse"], 3),
        "backtest_cpu_s": round(full, 3),
        "ratio_to_json_loads": round(best["json"] / full, 3),
        "parse_event_ratio_to_json_loads": round(best["json"] / best["parse"], 3),
        "backtest_cpu_us_per_line": round(full / n * 1e6, 2),
        "json_loads_cpu_us_per_line": round(best["json"] / n * 1e6, 2),
        "buckets_cpu_s": {k: round(v, 3) for k, v in buckets.items()},
        "buckets_share": {k: round(v / full, 3) for k, v in buckets.items()},
        "exceptions_opened": sum(result.opened.values()),
        "output_sha256": hashlib.sha256(sink.getvalue().encode()).hexdigest(),
    }


# Minutes after an order's creation at which each event of its journey happens, by stage.
_OFFSETS = {"paid": (0, 0.2, 2, 3), "in_transit": (0, 0.2, 2, 3, 600, 601, 1440)}


# Event ids of the state-size stream: "uuid", a canonical UUID as the simulator and most
# CloudEvents producers write, or "text", 36 characters that are not a UUID (what this bench used
# before 2026-11-26's memory levers; a detector may store a UUID in 16 bytes, not any text).
EVENT_ID_FORMS = ("uuid", "text")


def _event_id(oid: str, i: int, n: int, form: str) -> str:
    if form == "text":
        return f"{oid}-{n}-5f0c6a0e-8d1b-4c1e-9a57"
    digest = hashlib.blake2b(f"{i}-{n}".encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def _event(i: int, n: int, t0: datetime, ids: str = "uuid", spacing_us: int = 1_000_000) -> str:
    """Raw event `n` (1-based) of order `i`'s journey (created, reserved, paid, status paid,
    shipment, status shipped, tracking), its order created at `t0 + i * spacing_us`
    microseconds, its id of the form `ids` (EVENT_ID_FORMS)."""
    oid = f"o-{i:08d}"
    created = t0 + timedelta(microseconds=i * spacing_us)
    minutes = _OFFSETS["in_transit"][n - 1]
    sku = f"SKU-{i % 500:04d}"
    subject = oid
    type_: str
    data: dict[str, Any]
    if n == 1:
        type_, data = (
            "order.created",
            {
                "order_id": oid,
                "customer_id": f"c-{i:08d}",
                "customer_since": "2024-01-01T00:00:00+00:00",
                "merchant_id": "m-1",
                "channel": "web",
                "items": [{"sku": sku, "quantity": 1, "unit_price": "19.90"}],
                "total_amount": "19.90",
                "currency": "EUR",
                "shipping_address": {
                    "recipient": "A B",
                    "line1": f"{i} Main Street",
                    "city": "Berlin",
                    "postal_code": "10115",
                    "country": "DE",
                },
                "contact_phone": "+4915123456789",
                "promised_delivery_by": (created + timedelta(days=6)).isoformat(),
            },
        )
    elif n == 2:
        subject = sku
        type_, data = "inventory.reserved", {"sku": sku, "warehouse_id": "W1", "order_id": oid, "quantity": 1}
    elif n == 3:
        type_, data = (
            "payment.succeeded",
            {
                "order_id": oid,
                "payment_id": f"pay-{i:08d}",
                "amount": "19.90",
                "currency": "EUR",
                "provider": "stripe",
                "method": "card",
            },
        )
    elif n == 4:
        type_, data = "order.status_changed", {"order_id": oid, "status": "paid"}
    elif n == 5:
        type_, data = (
            "shipment.created",
            {
                "order_id": oid,
                "shipment_id": f"shp-{i:08d}",
                "carrier": "dhl",
                "tracking_number": f"T{i}",
            },
        )
    elif n == 6:
        type_, data = "order.status_changed", {"order_id": oid, "status": "shipped"}
    else:
        type_, data = (
            "shipment.tracking_updated",
            {"order_id": oid, "shipment_id": f"shp-{i:08d}", "status": "in_transit"},
        )
    return json.dumps(
        {
            "specversion": "1.0",
            "id": _event_id(oid, i, n, ids),
            "source": "/bench",
            "type": type_,
            "time": (created + timedelta(minutes=minutes)).isoformat(),
            "subject": subject,
            "data": data,
        }
    )


def _journeys(n: int, stage: str, t0: datetime, ids: str = "uuid", spacing_us: int = 1_000_000) -> Iterator[str]:
    """The events of `n` journeys, orders created `spacing_us` microseconds apart, in event-time
    order (ties: by order, then step), generated lazily: 1M journeys are ~4-7M events, too many
    to hold as text."""
    offsets = _OFFSETS[stage]
    # Integer microseconds after t0, so the order here is the order of the times written.
    pending: list[tuple[int, int, int]] = []
    for i in range(n):
        start = i * spacing_us
        while pending and pending[0][0] < start:
            _, j, k = heapq.heappop(pending)
            yield _event(j, k, t0, ids, spacing_us)
        for k, minutes in enumerate(offsets, 1):
            heapq.heappush(pending, (start + round(minutes * 60_000_000), i, k))
    while pending:
        _, j, k = heapq.heappop(pending)
        yield _event(j, k, t0, ids, spacing_us)


def _rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _heap_in_use() -> int | None:
    """Bytes the process's heap has handed out and not taken back, without tracing: pymalloc's
    allocated blocks (objects up to 512 B, in its own mmap'd arenas, sizes rounded up to 16 B)
    plus what glibc's malloc has in use (larger objects: dict tables, big tuples). About 4 times
    cheaper than a tracemalloc run at 1M orders; a little above tracemalloc's figure, which counts
    requested sizes. None where glibc's mallinfo2 is missing."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    with tempfile.TemporaryFile() as tmp:
        # sys._debugmallocstats writes to the C stderr: point fd 2 at a file for the call.
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        stats = tmp.read().decode()
    blocks = next(line for line in stats.splitlines() if line.startswith("# bytes in allocated blocks"))
    return int(blocks.split("=")[1].strip().replace(",", "")) + info.uordblks + info.hblkhd


def state_size(n: int, stage: str, trace: bool, ids: str = "uuid", spacing: float = 1.0) -> dict[str, Any]:
    """Bytes held by the engine per open order at `stage`, split into the order state (dict,
    state object, episodes, timer heap) and the windowed detectors' per-order entries (traced:
    tracemalloc; untraced: the process RSS only, tracemalloc's own bookkeeping would inflate it).
    Orders are created `spacing` seconds apart in event time: the stream spans about
    `n * spacing` seconds plus a journey, and an order older than its first deadline (paid: 48 h,
    SHIPMENT_NOT_CREATED; in transit: 24 h + 3 days, TRACKING_STALLED) holds open exceptions."""
    spacing_us = round(spacing * 1_000_000)
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    # Applied in event-time order with the clock advancing, as a live worker would: short episodes
    # (5-15 min) of early orders are decided and stale timers popped, the steady state of a table.
    gc.collect()
    if trace:
        tracemalloc.start()
    rss0, _ = _rss()
    heap0 = None if trace else _heap_in_use()
    engine = Engine()
    base = tracemalloc.get_traced_memory()[0] if trace else 0
    cpu = time.process_time()
    for raw in _journeys(n, stage, t0, ids, spacing_us):
        ev = parse_event(raw)
        t = ev.time.timestamp()
        engine.advance(t)
        engine.apply(ev, t, t)
    del ev
    cpu = time.process_time() - cpu
    gc.collect()
    rss1, hwm = _rss()
    out: dict[str, Any] = {
        "stage": stage,
        "event_ids": ids,
        "spacing_s": spacing_us / 1_000_000,
        "event_time_span_h": round((t - t0.timestamp()) / 3600, 1),
        "open_orders": len(engine.orders.states),
        "orders_with_open_exceptions": sum(1 for st in engine.orders.states.values() if st.opened),
        "open_exceptions": sum(len(st.opened) for st in engine.orders.states.values()) // 3,
        "traced": trace,
        "cpu_s": round(cpu, 1),
    }
    if not trace:
        out |= {
            "rss_mib": round(rss1 / 2**20, 1),
            "rss_peak_mib": round(hwm / 2**20, 1),
            "rss_growth_bytes_per_order": round((rss1 - rss0) / n),
        }
        heap1 = _heap_in_use()
        if heap0 is not None and heap1 is not None:
            heap2 = heap1 - _drop_windows(engine, _heap_in_use)
            out |= {
                "heap_bytes_per_order_total": round((heap1 - heap0) / n),
                "heap_bytes_per_order_order_state": round((heap2 - heap0) / n),
                "heap_bytes_per_order_window_entries": round((heap1 - heap2) / n),
            }
        return out
    total = tracemalloc.get_traced_memory()[0] - base
    # Drop the windowed detectors to see what the order detector alone holds.
    windows = _drop_windows(engine, lambda: tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()
    # What a RocksDB-backed table or the changelog holds per order: the snapshot's bytes.
    blobs = [len(engine.orders.snapshot(oid)) for oid in itertools.islice(engine.orders.states, 100_000)]
    return out | {
        "snapshot_bytes_per_order_mean": round(sum(blobs) / len(blobs)),
        "snapshot_bytes_max": max(blobs),
        "bytes_per_order_total": round(total / n),
        "bytes_per_order_order_state": round((total - windows) / n),
        "bytes_per_order_window_entries": round(windows / n),
    }


def _drop_windows(engine: Engine, used: Callable[[], int | None]) -> int:
    """Empty the windowed detectors; the bytes `used` says that freed."""
    freed = 0
    for det in (engine.addresses, engine.customers, engine.stock, engine.providers):
        before = used() or 0
        det.states.clear()
        det._heap.clear()
        det.dirty.clear()
        gc.collect()
        freed += before - (used() or 0)
    return freed


def _state_size_child(n: int, stage: str, trace: bool, ids: str, spacing: float) -> dict[str, Any]:
    """state_size in a fresh interpreter, so each RSS figure starts from a clean heap."""
    mode = "trace" if trace else "rss"
    cmd = [sys.executable, __file__, "--state-child", stage, str(n), mode, "--event-ids", ids]
    cmd += ["--spacing", str(spacing)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=20_000, help="simulated orders for the throughput run")
    ap.add_argument("--open-orders", type=int, default=1_000_000, help="open orders for the state-size run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--skip-throughput", action="store_true", help="only the state-size part")
    ap.add_argument("--skip-state", action="store_true", help="only the throughput part")
    ap.add_argument(
        "--event-ids", choices=EVENT_ID_FORMS, default="uuid", help="event id form of the state-size stream"
    )
    ap.add_argument("--stages", default="paid,in_transit", help="state-size stages, comma-separated (paid, in_transit)")
    ap.add_argument(
        "--spacing",
        type=float,
        default=1.0,
        help="state size: event-time seconds between two orders' creation (1M orders 1 s apart span 12 days: "
        "the oldest are past their deadlines; 0.1 s keeps 1M orders within 28 h, none past a deadline)",
    )
    ap.add_argument("--traced-only", action="store_true", help="state size: skip the untraced (RSS) runs")
    ap.add_argument("--state-child", nargs=3, metavar=("STAGE", "N", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.state_child:
        stage, n, mode = args.state_child
        print(json.dumps(state_size(int(n), stage, mode == "trace", args.event_ids, args.spacing)))
        return 0

    tp: dict[str, Any] | None = None
    if not args.skip_throughput:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "sim.jsonl"
            simulate(
                orders=args.orders, seed=11, output=path, labels=Path(tmp) / "l.jsonl", blocklist=Path(tmp) / "b.jsonl"
            )
            lines = list(open_lines(path))
        print(f"throughput over {len(lines):,} lines ({args.orders:,} simulated orders) ...", flush=True)
        tp = throughput(lines, args.repeat)
        print(json.dumps(tp, indent=2), flush=True)
    sizes = []
    if not args.skip_state:
        for stage in args.stages.split(","):
            for trace in (True,) if args.traced_only else (True, False):
                print(f"state size: {args.open_orders:,} open orders, {stage}, traced={trace} ...", flush=True)
                sizes.append(_state_size_child(args.open_orders, stage, trace, args.event_ids, args.spacing))
                print(json.dumps(sizes[-1]), flush=True)

    stamp = datetime.now(UTC)
    report = {
        "benchmark": "backtest",
        "date": stamp.isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join([".venv/bin/python", "bench/bench_backtest.py", *sys.argv[1:]]),
        "throughput": tp,
        "state_size": sizes,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"backtest-{stamp:%Y%m%d-%H%M%S}"
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
