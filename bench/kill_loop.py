"""kill -9 loop on the local stack (issue 9): a `--clock event` worker replaying a published stream
is killed with SIGKILL at random moments, several times per run, then left to finish; every run
must lose no exception and give no episode a second id (the outcome is `backtest`'s, id for id).

    make stack-up && .venv/bin/python bench/kill_loop.py [--runs 3] [--kills 4] [--orders 600]

Figures are counted, never asserted; results go to bench/results/killloop-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_backtest import machine  # noqa: E402
from orderwatch.backtest import open_lines, run_backtest  # noqa: E402
from orderwatch.detectors.records import to_cloudevent  # noqa: E402
from orderwatch.review.topic import read_topic  # noqa: E402
from orderwatch.simulate import simulate  # noqa: E402
from orderwatch.streams.publish import publish_lines  # noqa: E402
from orderwatch.streams.settings import Settings  # noqa: E402
from orderwatch.streams.topics import ensure_topics  # noqa: E402
from orderwatch.streams.worker import committed_offsets  # noqa: E402
from tests.support.worker import free_port, spawn_worker, stop_worker  # noqa: E402


async def read_exceptions(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(value) for value in await read_topic(settings, "order-exceptions")]


async def committed_share(settings: Settings, total: int) -> float:
    """How much of the published input the worker group has committed (0..1): where a kill landed."""
    inputs = {settings.topic(t) for t in ("orders", "payments", "inventory", "logistics")}
    offsets = await committed_offsets(settings)
    return round(sum(o for (t, _), o in offsets.items() if t in inputs) / total, 3) if total else 0.0


def keys(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["data"]["exception_id"], e["type"].split(".")[1]) for e in events}


async def one_run(run: int, args: argparse.Namespace, rng: random.Random, work: Path) -> dict[str, Any]:
    prefix = f"kill{uuid.uuid4().hex[:8]}-"
    settings = Settings(
        kafka_bootstrap=args.bootstrap,
        topic_prefix=prefix,
        partitions=4,
        app_id=f"orderwatch-{prefix[:-1]}",
        web_port=free_port(),
        store=args.store,
        data_dir=str(work / f"data-{run}"),
    )
    path = work / f"sim-{run}.jsonl"
    simulate(orders=args.orders, seed=100 + run, output=path, labels=work / "l", blocklist=work / "b")
    res = run_backtest(open_lines(path), keep=True)
    expected = {(em.record.exception_id, "resolved" if em.kind == "resolved" else "opened") for em in res.emissions}
    expected_ids = {to_cloudevent(em)["id"] for em in res.emissions}
    await ensure_topics(settings)
    total = sum((await publish_lines(open_lines(path), settings)).sent.values())
    kills: list[dict[str, Any]] = []
    for k in range(args.kills):
        log = (work / f"worker-{run}-{k}.log").open("wb")
        proc = spawn_worker(settings, "event", log)
        # A random moment: some kills land during start-up or recovery, most mid-replay.
        wait = rng.uniform(args.min_wait, args.max_wait)
        await asyncio.sleep(wait)
        proc.kill()
        proc.wait()
        log.close()
        seen = len(keys(await read_exceptions(settings)))
        done = await committed_share(settings, total)
        kills.append({"after_seconds": round(wait, 1), "exceptions_so_far": seen, "inputs_committed": done})
        print(
            f"run {run} kill {k + 1}: after {wait:.1f} s, {seen} of {len(expected)} exception events, "
            f"{done:.0%} of the input committed"
        )
    log = (work / f"worker-{run}-final.log").open("wb")
    proc = spawn_worker(settings, "event", log)
    got: set[tuple[str, str]] = set()
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline and not got >= expected:
            await asyncio.sleep(3)
            got = keys(await read_exceptions(settings))
        await asyncio.sleep(5)  # anything extra would show up now
        events = await read_exceptions(settings)
    finally:
        stop_worker(proc)
        log.close()
    got = keys(events)
    ids = Counter(e["id"] for e in events)
    # An episode with two ids shows as an exception id the backtest does not know.
    second_ids = {e["data"]["exception_id"] for e in events} - {x for x, _ in expected}
    out = {
        "run": run,
        "orders": args.orders,
        "expected_exception_events": len(expected),
        "kills": kills,
        "lost": len(expected - got),
        "extra": len(got - expected),
        "episodes_with_a_second_id": len(second_ids),
        "unknown_event_ids": len(set(ids) - expected_ids),
        "republished_copies": sum(n - 1 for n in ids.values()),
    }
    print(json.dumps(out))
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kills", type=int, default=4, help="kills per run before the last worker finishes it")
    parser.add_argument("--orders", type=int, default=600)
    parser.add_argument("--min-wait", type=float, default=4.0)
    parser.add_argument("--max-wait", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--store", default="memory://")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [await one_run(r, args, rng, Path(tmp)) for r in range(args.runs)]
    result = {
        "benchmark": "kill_loop",
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "bench/kill_loop.py " + " ".join(sys.argv[1:]),
        "kills": sum(len(r["kills"]) for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "extra": sum(r["extra"] for r in runs),
        "episodes_with_a_second_id": sum(r["episodes_with_a_second_id"] for r in runs),
        "runs": runs,
    }
    out = ROOT / "bench" / "results" / f"killloop-{started:%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['kills']} kills: lost {result['lost']}, extra {result['extra']}, "
        f"episodes with a second id {result['episodes_with_a_second_id']} -> {out.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
