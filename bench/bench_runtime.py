"""Runtime benchmark on the local stack: worker throughput against a raw aiokafka consumer reading
the same topics in the same run and to a bare faust agent (decode and ack only: faust's own
ceiling), detection latency after a deadline (wall clock), broker start.

    make stack-up && .venv/bin/python bench/bench_runtime.py [--orders 5000] [--deadlines 200]

Figures are measured, never asserted; results go to bench/results/runtime-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from bench.bench_backtest import machine  # noqa: E402
from orderwatch.backtest import open_lines  # noqa: E402
from orderwatch.simulate import simulate  # noqa: E402
from orderwatch.streams.publish import publish_lines  # noqa: E402
from orderwatch.streams.settings import Settings  # noqa: E402
from orderwatch.streams.topics import ensure_topics  # noqa: E402
from orderwatch.streams.worker import committed_offsets  # noqa: E402
from tests.support.worker import spawn_worker, stop_worker  # noqa: E402

INPUTS = ("orders", "payments", "inventory", "logistics")


def broker_start_seconds() -> dict[str, float | None]:
    """Restart the local stack; the broker-ready and whole-`up` times `stack.sh up` reports."""
    subprocess.run(["bash", str(ROOT / "deploy/local/stack.sh"), "down"], check=True, capture_output=True)
    out = subprocess.run(
        ["bash", str(ROOT / "deploy/local/stack.sh"), "up"], check=True, capture_output=True, text=True
    ).stdout
    ready = re.search(r"kafka: ready on \S+ after ([\d.]+)s", out)
    whole = re.search(r"stack is up \(([\d.]+)s\)", out)
    return {
        "broker_ready_seconds": float(ready.group(1)) if ready else None,
        "stack_up_seconds": float(whole.group(1)) if whole else None,
    }


async def raw_consume_seconds(settings: Settings, total: int) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024
    )
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic(t), p) for t in INPUTS for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        while seen < total:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                for r in records:
                    json.loads(r.value)  # a consumer that does nothing at all is no baseline
                seen += len(records)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def faust_bare_events_per_s(settings: Settings, total: int) -> float | None:
    """The ceiling of any faust agent here: bench/faust_bare.py (decode and ack, nothing else)
    reading the same topics in the same run."""
    env = {
        **os.environ,
        "BARE_TOPICS": ",".join(settings.topic(t) for t in INPUTS),
        "BARE_GROUP": f"{settings.app_id}-bare",
        "BARE_TOTAL": str(total),
        "BARE_BOOTSTRAP": settings.kafka_bootstrap,
    }
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "faust_bare.py"), "worker", "-l", "info"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    m = re.search(r"faust bare agent: \d+ events, (\d+) events/s", out.stdout + out.stderr)
    return float(m.group(1)) if m else None


async def committed_total(settings: Settings) -> int:
    inputs = {settings.topic(t) for t in INPUTS}
    return sum(off for (topic, _), off in (await committed_offsets(settings)).items() if topic in inputs)


async def worker_throughput(settings: Settings, total: int, log: Any) -> dict[str, float]:
    proc = spawn_worker(settings, "event", log)
    try:
        started = time.perf_counter()
        first = None
        last, last_change = 0, time.perf_counter()
        while True:
            await asyncio.sleep(0.5)
            done = await committed_total(settings)
            now = time.perf_counter()
            if done != last:
                last, last_change = done, now
            if first is None and done > 0:
                first = (now, done)
            # The last minute of event time stays in the reorder buffer (within the lateness), so
            # the committed total stops just short of `total`: done when it stops moving. It can
            # also pause mid-replay while agents wait for their slowest input
            # (the inventory topic, here), hence the long quiet period.
            if done >= total or (first is not None and now - last_change > 30) or now - started > 900:
                break
        end = last_change
    finally:
        stop_worker(proc)
    assert first is not None
    return {
        "seconds_from_start": end - started,
        "seconds_from_first_commit": end - first[0],
        "events_after_first_commit": done - first[1],
        "events": done,
    }


async def detection_latency(settings: Settings, n: int, log: Any) -> list[float]:
    """PAYMENT_WITHOUT_ORDER episodes whose deadlines fall over the next seconds, wall clock."""
    proc = spawn_worker(settings, "wall", log)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    latencies: list[float] = []
    try:
        await asyncio.sleep(15)  # worker start and partition assignment
        tps = [TopicPartition(settings.topic("order-exceptions"), p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        deadlines: dict[str, float] = {}
        base = time.time() + 5
        for i in range(n):
            deadline = base + i * (20 / n)
            t = datetime.fromtimestamp(deadline, UTC) - timedelta(minutes=10)
            oid = f"lat-{uuid.uuid4().hex[:10]}"
            deadlines[oid] = deadline
            ev = {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": "/bench",
                "type": "payment.succeeded",
                "time": t.isoformat(),
                "subject": oid,
                "data": {
                    "order_id": oid,
                    "payment_id": f"p-{oid}",
                    "amount": "10.00",
                    "currency": "EUR",
                    "provider": "bench",
                    "method": "card",
                },
            }
            await producer.send_and_wait(settings.topic("payments"), json.dumps(ev).encode(), key=oid.encode())
        until = base + 20 + 30
        while time.time() < until and len(latencies) < n:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.time()
                for r in records:
                    d = json.loads(r.value)["data"]
                    if d["rule"] == "PAYMENT_WITHOUT_ORDER" and d["order_id"] in deadlines:
                        latencies.append(now - deadlines.pop(d["order_id"]))
    finally:
        await consumer.stop()
        await producer.stop()
        stop_worker(proc)
    return latencies


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    run = f"bench{int(time.time())}"
    settings = Settings(topic_prefix=f"{run}-", app_id=f"ow-{run}", partitions=4, web_port=6199)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sim.jsonl"
        simulate(orders=args.orders, seed=11, output=path, labels=Path(tmp) / "l", blocklist=Path(tmp) / "b")
        await ensure_topics(settings)
        res = await publish_lines(open_lines(path), settings)
        total = sum(res.sent.values())
        print(f"published {total:,} events", flush=True)
        raw = await raw_consume_seconds(settings, total)
        print(f"raw aiokafka consumer: {total / raw:,.0f} events/s", flush=True)
        bare = faust_bare_events_per_s(settings, total)
        print(f"faust bare agent: {bare or 0:,.0f} events/s", flush=True)
        with (Path(tmp) / "worker.log").open("wb") as log:
            wt = await worker_throughput(settings, total, log)
        print(f"worker: {wt}", flush=True)
        lat_settings = Settings(topic_prefix=f"{run}l-", app_id=f"ow-{run}l", partitions=4, web_port=6198)
        await ensure_topics(lat_settings)
        with (Path(tmp) / "worker-lat.log").open("wb") as log:
            lat = await detection_latency(lat_settings, args.deadlines, log)
    lat_sorted = sorted(lat)
    return {
        "events": total,
        "raw_consumer_events_per_s": round(total / raw),
        "worker_events_per_s_after_first_commit": round(
            wt["events_after_first_commit"] / wt["seconds_from_first_commit"]
        ),
        "faust_bare_agent_events_per_s": round(bare) if bare else None,
        "worker_seconds_from_start": round(wt["seconds_from_start"], 1),
        "ratio_worker_to_raw": round(
            (wt["events_after_first_commit"] / wt["seconds_from_first_commit"]) / (total / raw), 3
        ),
        "ratio_worker_to_faust_bare": round(
            (wt["events_after_first_commit"] / wt["seconds_from_first_commit"]) / bare, 3
        )
        if bare
        else None,
        "latency_samples": len(lat),
        "latency_expected": args.deadlines,
        "latency_p50_ms": round(statistics.median(lat) * 1000) if lat else None,
        "latency_p99_ms": round(lat_sorted[min(len(lat_sorted) - 1, int(0.99 * len(lat_sorted)))] * 1000)
        if lat
        else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=5000)
    ap.add_argument("--deadlines", type=int, default=200)
    ap.add_argument("--broker-restart", action="store_true", help="also restart the stack and time the broker start")
    args = ap.parse_args()
    start = broker_start_seconds() if args.broker_restart else {}
    figures = asyncio.run(main_async(args))
    figures.update(start)
    stamp = datetime.now(UTC)
    report = {
        "benchmark": "runtime",
        "date": stamp.isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join([".venv/bin/python", "bench/bench_runtime.py", *sys.argv[1:]]),
        "figures": figures,
    }
    out = ROOT / "bench" / "results" / f"runtime-{stamp:%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
