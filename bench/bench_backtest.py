"""Backtest benchmark: throughput against plain `json.loads` on the same lines in the same run,
and bytes of detector state per open order (tracemalloc). Writes bench/results/.

    .venv/bin/python bench/bench_backtest.py [--orders 20000] [--open-orders 20000] [--repeat 3]

Figures are measured, never asserted: CI machines are shared and noisy; compare ratios taken
in one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orderwatch.backtest import open_lines, run_backtest  # noqa: E402
from orderwatch.detectors.engine import Engine  # noqa: E402
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


def throughput(lines: list[bytes], repeat: int) -> dict[str, Any]:
    """Best of `repeat` alternating runs of json.loads, parse_event alone and the full backtest
    over `lines`: the middle one shows how much of the gap is validation and how much the rules."""
    json_best = bt_best = parse_best = float("inf")
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        for raw in lines:
            with contextlib.suppress(Exception):
                parse_event(raw)
        parse_best = min(parse_best, time.perf_counter() - t)
        t = time.perf_counter()
        for raw in lines:
            with contextlib.suppress(ValueError):
                json.loads(raw)
        json_best = min(json_best, time.perf_counter() - t)
        sink = io.StringIO()
        t = time.perf_counter()
        result = run_backtest(iter(lines), output=sink)
        bt_best = min(bt_best, time.perf_counter() - t)
    assert result is not None
    n = len(lines)
    return {
        "lines": n,
        "json_loads_seconds": round(json_best, 3),
        "json_loads_lines_per_s": round(n / json_best),
        "parse_event_seconds": round(parse_best, 3),
        "parse_event_ratio_to_json_loads": round(json_best / parse_best, 3),
        "backtest_seconds": round(bt_best, 3),
        "backtest_events_per_s": round(n / bt_best),
        "ratio_to_json_loads": round(json_best / bt_best, 3),
        "exceptions_opened": sum(result.opened.values()),
    }


def _journey(i: int, t0: datetime, stage: str) -> list[str]:
    """Raw events of one order up to `stage`: paid (awaiting shipment) or in_transit."""
    oid = f"o-{i:08d}"

    def ts(minutes: float) -> str:
        return (t0 + timedelta(minutes=minutes)).isoformat()

    def ev(n: int, type_: str, minutes: float, subject: str, data: dict[str, Any]) -> str:
        return json.dumps(
            {
                "specversion": "1.0",
                "id": f"{oid}-{n}-5f0c6a0e-8d1b-4c1e-9a57",
                "source": "/bench",
                "type": type_,
                "time": ts(minutes),
                "subject": subject,
                "data": data,
            }
        )

    out = [
        ev(
            1,
            "order.created",
            0,
            oid,
            {
                "order_id": oid,
                "customer_id": f"c-{i:08d}",
                "customer_since": "2024-01-01T00:00:00+00:00",
                "merchant_id": "m-1",
                "channel": "web",
                "items": [{"sku": f"SKU-{i % 500:04d}", "quantity": 1, "unit_price": "19.90"}],
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
                "promised_delivery_by": ts(6 * 1440),
            },
        )
    ]
    out.append(
        ev(
            2,
            "inventory.reserved",
            0.2,
            f"SKU-{i % 500:04d}",
            {"sku": f"SKU-{i % 500:04d}", "warehouse_id": "W1", "order_id": oid, "quantity": 1},
        )
    )
    if stage in ("paid", "in_transit"):
        out.append(
            ev(
                3,
                "payment.succeeded",
                2,
                oid,
                {
                    "order_id": oid,
                    "payment_id": f"pay-{i:08d}",
                    "amount": "19.90",
                    "currency": "EUR",
                    "provider": "stripe",
                    "method": "card",
                },
            )
        )
        out.append(ev(4, "order.status_changed", 3, oid, {"order_id": oid, "status": "paid"}))
    if stage == "in_transit":
        out.append(
            ev(
                5,
                "shipment.created",
                600,
                oid,
                {"order_id": oid, "shipment_id": f"shp-{i:08d}", "carrier": "dhl", "tracking_number": f"T{i}"},
            )
        )
        out.append(ev(6, "order.status_changed", 601, oid, {"order_id": oid, "status": "shipped"}))
        out.append(
            ev(
                7,
                "shipment.tracking_updated",
                1440,
                oid,
                {"order_id": oid, "shipment_id": f"shp-{i:08d}", "status": "in_transit"},
            )
        )
    return out


def state_size(n: int, stage: str) -> dict[str, Any]:
    """Bytes held by the engine per open order at `stage`, split into the order state (dict,
    state object, episodes, timer heap) and the windowed detectors' per-order entries."""
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    raws = [r for i in range(n) for r in _journey(i, t0 + timedelta(seconds=i), stage)]
    # Apply in event-time order with the clock advancing, as a live worker would: short episodes
    # (5-15 min) of early orders are decided and stale timers popped, the steady state of a table.
    timed = sorted(((json.loads(r)["time"], r) for r in raws), key=lambda x: x[0])
    gc.collect()
    tracemalloc.start()
    engine = Engine()
    base = tracemalloc.get_traced_memory()[0]
    for _, raw in timed:
        ev = parse_event(raw)
        t = ev.time.timestamp()
        engine.advance(t)
        engine.apply(ev, t, t)
    del ev
    gc.collect()
    total = tracemalloc.get_traced_memory()[0] - base
    # Drop the windowed detectors to see what the order detector alone holds.
    windows = 0
    for det in (engine.addresses, engine.customers, engine.stock, engine.providers):
        before = tracemalloc.get_traced_memory()[0]
        det.states.clear()
        det._heap.clear()
        gc.collect()
        windows += before - tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # What a RocksDB-backed table or the changelog holds per order: the snapshot's bytes.
    blobs = [len(engine.orders.snapshot(oid)) for oid in engine.orders.states]
    return {
        "stage": stage,
        "open_orders": len(engine.orders.states),
        "snapshot_bytes_per_order_mean": round(sum(blobs) / len(blobs)),
        "snapshot_bytes_max": max(blobs),
        "bytes_per_order_total": round(total / n),
        "bytes_per_order_order_state": round((total - windows) / n),
        "bytes_per_order_window_entries": round(windows / n),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=20_000, help="simulated orders for the throughput run")
    ap.add_argument("--open-orders", type=int, default=20_000, help="open orders for the state-size run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sim.jsonl"
        simulate(
            orders=args.orders, seed=11, output=path, labels=Path(tmp) / "l.jsonl", blocklist=Path(tmp) / "b.jsonl"
        )
        lines = list(open_lines(path))
    print(f"throughput over {len(lines):,} lines ({args.orders:,} simulated orders) ...", flush=True)
    tp = throughput(lines, args.repeat)
    print(json.dumps(tp, indent=2), flush=True)
    sizes = [state_size(args.open_orders, stage) for stage in ("paid", "in_transit")]
    for s in sizes:
        print(json.dumps(s), flush=True)

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
