"""Scale-out on the local stack (issue 10, item 5): two `--clock event` workers on one group over
8 partitions against one worker, in the same run on the same published stream (throughput of
each setup and process CPU per event of each worker); then the takeover at many open orders, for
each table store: a worker joins a group whose worker holds the state (changelog recovery of its
half), then the first worker is killed and the second takes everything over.

    .venv/bin/python bench/bench_scaleout.py [--orders 3000] [--open-orders 100000]
        [--stores memory://,rocksdb://] [--skip-pair] [--skip-takeover] [--logs DIR]
        [--replay-levers ';fold-heap'] [--replay-profile]

A replay (one worker, or the pair) counts as over once the group has committed all but the last
ten lateness periods of event time and its committed input offsets have not moved for the merge
flight wait (ORDERWATCH_MERGE_FLIGHT_SECONDS, 30 s by default) plus 10 s: an orders agent may
hold its commits that long while a forward is on its way, and a loaded replay pauses longer mid-
way (5 minutes without a commit ends it anyway). Worker A's open-orders replay runs until every
event older than the lateness behind the newest is committed. Each run's exception events (read
from its own offsets of the shared order-exceptions topic once they stop coming) are compared
with `run_backtest` of the same file (what `orderwatch backtest` runs): `lost`, `extra` and
`duplicates` list CloudEvent ids.

--replay-levers replays the open orders with one worker per lever (bench/worker_shim.py), before
the takeovers (`--stores ''` for none).

Figures are measured, never asserted; results go to bench/results/scaleout-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_backtest import _event  # noqa: E402
from bench.bench_runtime import (  # noqa: E402
    CommitWatch,
    committed_total,
    process_cpu_seconds,
    profile_buckets,
    publish_simulation,
    spawn_shim,
    worker_run,
    write_report,
)
from orderwatch.backtest import open_lines, run_backtest  # noqa: E402
from orderwatch.detectors.records import to_cloudevent  # noqa: E402
from orderwatch.streams.forwarding import partition_of  # noqa: E402
from orderwatch.streams.publish import publish_lines  # noqa: E402
from orderwatch.streams.settings import Settings  # noqa: E402
from orderwatch.streams.topics import ensure_topics  # noqa: E402
from tests.support.worker import free_port, stop_worker  # noqa: E402

PARTITIONS = 8
INPUTS = ("orders", "payments", "inventory", "logistics")


def events_read(port: int, inputs: set[str]) -> int:
    """Valid input events a worker consumed, from its /metrics (orderwatch_events_in_total)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0
    for m in re.finditer(r'^orderwatch_events_in_total\{topic="([^"]+)",type="[^"]+"\} ([\d.e+]+)$', text, re.M):
        if m.group(1) in inputs:
            total += int(float(m.group(2)))
    return total


def brief(ce: dict[str, Any]) -> dict[str, Any]:
    """What tells one exception event from another in a report (its rule, subject and times)."""
    d = ce["data"]
    keys = ("rule", "subject", "order_id", "event_time", "detected_at", "summary")
    return {"type": ce["type"], **{k: d.get(k) for k in keys}}


class ExceptionWatch:
    """The exception events one run adds to the order-exceptions topic its stream shares with the
    other runs: read from the topic's end offsets taken before the run, compared with backtest's."""

    def __init__(self, settings: Settings, expected: dict[str, dict[str, Any]], quiet: float) -> None:
        self.settings = settings
        self.expected = expected
        self.quiet = quiet
        self.start: dict[TopicPartition, int] = {}
        self.ids: Counter[str] = Counter()
        self.seen: dict[str, dict[str, Any]] = {}

    def _tps(self) -> list[TopicPartition]:
        topic = self.settings.topic("order-exceptions")
        return [TopicPartition(topic, p) for p in range(self.settings.partitions)]

    async def mark(self) -> None:
        """Before the run: where its exception events will start."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            self.start = await consumer.end_offsets(self._tps())
        finally:
            await consumer.stop()

    async def read(self) -> Counter[str]:
        """CloudEvent ids of every exception event since `mark`, counted."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        ids: Counter[str] = Counter()
        try:
            tps = self._tps()
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, self.start.get(tp, 0))
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        if r.offset < ends[TopicPartition(r.topic, r.partition)] and r.value is not None:
                            ce = json.loads(r.value)
                            ids[ce["id"]] += 1
                            self.seen[ce["id"]] = brief(ce)
        finally:
            await consumer.stop()
        self.ids = ids
        return ids

    async def settle(self, procs: list[Any]) -> None:
        """Wait (workers up) until the run's exception events equal backtest's, or stop changing
        for `quiet` seconds (at most 300 s): the last event time's deadlines come after the commits."""
        started = last_change = time.perf_counter()
        last: Counter[str] = Counter()
        while time.perf_counter() - started < 300:
            if any(p.poll() is not None for p in procs):
                break
            got = await self.read()
            now = time.perf_counter()
            if got != last:
                last, last_change = got, now
            if set(got) >= set(self.expected) or now - last_change > self.quiet:
                break
            await asyncio.sleep(2)
        if set(last) >= set(self.expected):
            await asyncio.sleep(5)  # anything extra would show by now
            await self.read()

    def outcome(self) -> dict[str, Any]:
        lost = sorted(set(self.expected) - set(self.ids))
        extra = sorted(set(self.ids) - set(self.expected))
        twice = sorted(i for i, n in self.ids.items() if n > 1)
        return {
            "exception_events": sum(self.ids.values()),
            "distinct_ids": len(self.ids),
            "backtest_ids": len(self.expected),
            "equal_to_backtest": not lost and not extra,
            "lost": {i: self.expected[i] for i in lost[:50]},
            "lost_count": len(lost),
            "extra": {i: self.seen[i] for i in extra[:50]},
            "extra_count": len(extra),
            "duplicates": twice[:50],
            "duplicates_count": len(twice),
        }


async def group_run(
    settings: Settings,
    floor: int,
    logs: list[Any],
    quiet: float,
    stall: float,
    settle: ExceptionWatch | None = None,
) -> dict[str, Any]:
    """One worker per log, of one group, started together: wall seconds from spawn until the
    group's committed input offsets, past `floor`, have not moved for `quiet` seconds (the last
    events stay in the reorder buffers), or have not moved for `stall` seconds at all (a replay
    can pause longer than the merge flight wait mid-way: a rebalance, then flight waits; 40 s
    without a commit is not its end), or 900 s. Each worker's CPU and events read at the last poll
    that saw a move, and the longest pause between commits. `settle`: the workers stay up until
    their exception events stop coming (not timed)."""
    await ensure_topics(settings)
    members = [settings.model_copy(update={"web_port": free_port()}) for _ in logs]
    procs = [spawn_shim(s, log) for s, log in zip(members, logs, strict=True)]
    inputs = {settings.topic(t) for t in INPUTS}
    try:
        started = time.perf_counter()
        last, last_change = 0, started
        cpu = [0.0] * len(procs)
        read = [0] * len(procs)
        longest = 0.0
        while True:
            await asyncio.sleep(0.5)
            if any(p.poll() is not None for p in procs):
                msg = f"a worker of the group exited; logs: {[getattr(log, 'name', '?') for log in logs]}"
                raise RuntimeError(msg)
            done = await committed_total(settings)
            now = time.perf_counter()
            if done != last:
                if last:
                    longest = max(longest, now - last_change)
                last, last_change = done, now
                cpu = [process_cpu_seconds(p.pid) for p in procs]
                read = [events_read(s.web_port, inputs) for s in members]
            idle = now - last_change
            if (done >= floor and idle > quiet) or (last and idle > stall) or now - started > 900:
                break
        if done < floor:
            longest = max(longest, idle)
        if settle is not None:
            await settle.settle(procs)
    finally:
        for p in procs:
            stop_worker(p)
    seconds = last_change - started
    return {
        "workers_in_group": len(procs),
        "events": last,
        "floor": floor,
        "past_floor": last >= floor,
        "longest_pause_between_commits_seconds": round(longest, 1),
        "seconds_from_start": round(seconds, 2),
        "events_per_s_from_start": round(last / seconds, 1),
        "cpu_seconds": round(sum(cpu), 2),
        "cpu_us_per_event": round(sum(cpu) / last * 1e6, 1) if last else None,
        "workers": [
            {
                "events_read": n,
                "cpu_seconds": round(c, 2),
                "cpu_us_per_event_read": round(c / n * 1e6, 1) if n else None,
                **log_counts(Path(log.name)),
            }
            for n, c, log in zip(read, cpu, logs, strict=True)
        ],
    }


def floor_of(path: Path, seconds: float) -> int:
    """Events of the file older than `seconds` behind its newest event time: a replay that has
    committed fewer is not over (ten times the lateness: well short of what it commits)."""
    times: list[float] = []
    for line in open_lines(path):
        try:
            times.append(datetime.fromisoformat(json.loads(line)["time"]).timestamp())
        except (ValueError, KeyError, TypeError):
            continue  # the simulator's malformed lines: the worker dead-letters them
    newest = max(times)
    return sum(1 for t in times if newest - t > seconds)


def log_counts(path: Path) -> dict[str, int]:
    """How often a worker of the pair had partitions assigned: faust's `Worker ready` lines and
    the driver's `partition N ready` lines (once per agent partition per assignment)."""
    text = path.read_bytes()
    return {
        "worker_ready_lines": text.count(b"Worker ready"),
        "orders_partition_ready_lines": len(re.findall(rb"orders: partition \d+ ready", text)),
        "partition_ready_lines": len(re.findall(rb": partition \d+ ready, \d+ keys restored", text)),
    }


def open_order_lines(n: int, end: datetime) -> list[bytes]:
    """`n` order.created events (each its own customer and address), 10 ms of event time apart,
    the last at `end`: orders that stay open, with their address and customer windows."""
    t0 = end - timedelta(seconds=n / 100)
    out = []
    for i in range(n):
        ev = json.loads(_event(i, 1, t0))
        ev["time"] = (t0 + timedelta(seconds=i / 100)).isoformat()
        out.append(json.dumps(ev).encode())
    return out


def probe_lines(tag: str, when: datetime) -> list[bytes]:
    """One order.created per orders partition: each agent partition rebuilds its state from the
    table on its first message (streams.driver), which these set off."""
    out: list[bytes] = []
    seen: set[int] = set()
    i = 0
    while len(seen) < PARTITIONS:
        ev = json.loads(_event(10_000_000 + i, 1, when))
        oid = f"probe-{tag}-{i}"
        ev["data"]["order_id"] = ev["subject"] = oid
        ev["id"] = f"{oid}-1"
        ev["time"] = when.isoformat()
        p = partition_of(oid.encode(), PARTITIONS)
        if p not in seen:
            seen.add(p)
            out.append(json.dumps(ev).encode())
        i += 1
    return out


class LogWatch:
    """Lines of a worker's log as they come: faust's `Worker ready` after each recovery, and the
    driver's `orders: partition N ready, K keys restored`."""

    READY = re.compile(r"orders: partition (\d+) ready, (\d+) keys restored")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.worker_ready: list[float] = []
        self.partitions: dict[int, tuple[float, int]] = {}

    def poll(self) -> None:
        with self.path.open("rb") as f:
            f.seek(self.pos)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self.pos += end
        now = time.perf_counter()
        for line in chunk[:end].decode(errors="replace").splitlines():
            if "Worker ready" in line:
                self.worker_ready.append(now)
            m = self.READY.search(line)
            if m:
                self.partitions[int(m.group(1))] = (now, int(m.group(2)))

    async def settled(self, still: float, timeout: float) -> None:
        """Until a partition has reported and none more for `still` seconds (or `timeout`)."""
        deadline = time.perf_counter() + timeout
        seen, since = 0, time.perf_counter()
        while time.perf_counter() < deadline:
            self.poll()
            if len(self.partitions) != seen:
                seen, since = len(self.partitions), time.perf_counter()
            elif seen and time.perf_counter() - since > still:
                return
            await asyncio.sleep(0.1)

    async def until(self, check: Any, timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            self.poll()
            if check():
                return True
            await asyncio.sleep(0.1)
        return False


async def replay_until(
    settings: Settings, target: int, log: Any, stall: float
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Worker A replays the open orders under its own app id: from spawn until the committed input
    offsets reach `target`, or stop moving for `stall` seconds (a replay that pauses for a while,
    its merges waiting on a forward, is not over), or 1,800 s. Its progress every 15 s; the
    worker is left running."""
    await ensure_topics(settings)
    proc = spawn_shim(settings, log)
    watch = CommitWatch(settings, proc, "worker A", log)
    progress: list[tuple[float, int, float]] = []
    try:
        while True:
            done = await watch.poll()
            elapsed = watch.now - watch.started
            if not progress or elapsed - progress[-1][0] >= 15:
                progress.append((round(elapsed, 1), done, round(watch.cpu, 1)))
            if done >= target or watch.now - watch.last_change > stall or elapsed > 1800:
                break
    except BaseException:
        stop_worker(proc)
        raise
    first, last, cpu_at_last = watch.first, watch.last, watch.cpu_at_last
    seconds = watch.last_change - watch.started
    return proc, {
        "events": last,
        "target": target,
        "reached_target": last >= target,
        "seconds_from_start": round(seconds, 2),
        "events_per_s_from_start": round(last / seconds, 1) if seconds > 0 else None,
        "cpu_seconds": round(cpu_at_last, 2),
        "cpu_us_per_event": round(cpu_at_last / last * 1e6, 1) if last else None,
        "cpu_seconds_to_first_commit": round(first[2], 2) if first else None,
        "seconds_to_first_commit": round(first[0] - watch.started, 2) if first else None,
        "progress_seconds_committed_cpu": progress,
    }


async def takeover(
    base: Settings, store: str, total: int, last_time: datetime, tmp: Path, quiet: float
) -> dict[str, Any]:
    tag = store.split(":")[0]
    settings = base.model_copy(update={"app_id": f"{base.app_id}-{tag}", "store": store})
    a_set = settings.model_copy(update={"web_port": free_port(), "data_dir": str(tmp / f"{tag}-a")})
    b_set = settings.model_copy(update={"web_port": free_port(), "data_dir": str(tmp / f"{tag}-b")})
    out: dict[str, Any] = {"store": store}
    with (tmp / f"{tag}-a.log").open("wb") as a_log:
        # Worker A alone reads every order: its replay as one more figure.
        # Every event older than the lateness behind the newest gets applied and committed; the
        # rest stays in the reorder buffer.
        target = total - int(settings.lateness_seconds * 100)
        proc_a, out["first_worker_replay"] = await replay_until(a_set, target, a_log, max(quiet, 120))
        b_path = tmp / f"{tag}-b.log"
        try:
            with b_path.open("wb") as b_log:
                started = time.perf_counter()
                proc_b = spawn_shim(b_set, b_log)
                watch = LogWatch(b_path)
                try:
                    ok = await watch.until(lambda: watch.worker_ready, 300)
                    out["join_seconds_to_worker_ready"] = round(watch.worker_ready[0] - started, 2) if ok else None
                    await publish_lines(probe_lines(f"{tag}j", last_time + timedelta(seconds=1)), settings)
                    probed = time.perf_counter()
                    # The partitions B got rebuild their state: done once no other has for 10 s.
                    await watch.settled(10, 180)
                    joined = dict(watch.partitions)
                    out["join_partitions"] = sorted(joined)
                    out["join_keys_restored"] = sum(k for _, k in joined.values())
                    out["join_rebuild_seconds_after_probe"] = (
                        round(max(t for t, _ in joined.values()) - probed, 2) if joined else None
                    )
                    # Failover: A dies without leaving the group; B owns everything after the
                    # session timeout, from its standbys (table_standby_replicas=1) and the changelog.
                    ready_before = len(watch.worker_ready)
                    proc_a.send_signal(signal.SIGKILL)
                    killed = time.perf_counter()
                    ok = await watch.until(lambda: len(watch.worker_ready) > ready_before, 300)
                    out["failover_seconds_to_worker_ready"] = (
                        round(watch.worker_ready[ready_before] - killed, 2) if ok else None
                    )
                    await publish_lines(probe_lines(f"{tag}f", last_time + timedelta(seconds=2)), settings)
                    ok = await watch.until(lambda: len(watch.partitions) >= PARTITIONS, 120)
                    taken = {p: v for p, v in watch.partitions.items() if p not in joined}
                    out["failover_partitions"] = sorted(taken)
                    out["failover_keys_restored"] = sum(k for _, k in taken.values())
                    out["failover_seconds_to_all_partitions_rebuilt"] = (
                        round(max(t for t, _ in taken.values()) - killed, 2) if ok and taken else None
                    )
                    out["keys_restored_total"] = sum(k for _, k in watch.partitions.values())
                    out["session_timeout_seconds"] = settings.session_timeout_seconds
                finally:
                    stop_worker(proc_b)
        finally:
            if proc_a.poll() is None:
                stop_worker(proc_a)
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    run = f"scale{int(time.time())}"
    git = ["git", "rev-parse", "--short", "HEAD"]
    head = subprocess.run(git, cwd=ROOT, capture_output=True, text=True, check=False)
    figures: dict[str, Any] = {
        "partitions": PARTITIONS,
        "commit": head.stdout.strip() or None,
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(args.logs) if args.logs else Path(tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        if not args.skip_pair:
            settings = Settings(topic_prefix=f"{run}-", app_id=f"ow-{run}", partitions=PARTITIONS, web_port=free_port())
            path, sent = await publish_simulation(settings, args.orders, tmp)
            total = sum(sent.values())
            figures["events"] = total
            print(f"published {total:,} events over {PARTITIONS} partitions", flush=True)
            expected = {}
            for em in run_backtest(open_lines(path), keep=True).emissions:
                ce = to_cloudevent(em)
                expected[ce["id"]] = brief(ce)
            figures["backtest_exception_ids"] = len(expected)
            quiet = settings.merge_flight_seconds + 10
            figures["quiet_seconds"] = quiet
            floor = floor_of(path, 10 * settings.lateness_seconds)
            figures["floor"] = floor
            watch = ExceptionWatch(settings, expected, quiet)
            await watch.mark()
            with (tmp / "one.log").open("wb") as log:
                one = await group_run(
                    settings.model_copy(update={"app_id": f"ow-{run}-one"}), floor, [log], quiet, 300, watch
                )
            one["exceptions"] = watch.outcome()
            single_ids = set(watch.ids)
            figures["one_worker"] = one
            print(f"one worker: {json.dumps(one)}", flush=True)
            watch = ExceptionWatch(settings, expected, quiet)
            await watch.mark()
            with (tmp / "p1.log").open("wb") as l1, (tmp / "p2.log").open("wb") as l2:
                pair = await group_run(
                    settings.model_copy(update={"app_id": f"ow-{run}-pair"}), floor, [l1, l2], quiet, 300, watch
                )
            pair["exceptions"] = watch.outcome()
            pair["exceptions"]["equal_to_one_worker"] = set(watch.ids) == single_ids
            pair["exceptions"]["not_in_one_worker"] = sorted(set(watch.ids) - single_ids)[:50]
            pair["exceptions"]["only_in_one_worker"] = sorted(single_ids - set(watch.ids))[:50]
            figures["two_workers"] = pair
            figures["pair_to_one_events_per_s"] = round(
                pair["events_per_s_from_start"] / one["events_per_s_from_start"], 3
            )
            print(f"two workers: {json.dumps(pair)}", flush=True)
        if not args.skip_takeover:
            base = Settings(topic_prefix=f"{run}t-", app_id=f"ow-{run}t", partitions=PARTITIONS, web_port=free_port())
            await ensure_topics(base)
            end = datetime.now(UTC) - timedelta(minutes=2)
            res = await publish_lines(open_order_lines(args.open_orders, end), base)
            n = sum(res.sent.values())
            figures["open_orders_published"] = n
            print(f"published {n:,} order.created", flush=True)
            if args.replay_levers is not None:
                # The replay of the open orders alone, once per lever (bench/worker_shim.py).
                figures["open_orders_replay"] = []
                for i, lv in enumerate(args.replay_levers.split(";")):
                    own = base.model_copy(update={"app_id": f"{base.app_id}-r{i}"})
                    prof = tmp / f"replay{i}.prof" if args.replay_profile else None
                    with (tmp / f"replay{i}.log").open("wb") as log:
                        r = await worker_run(own, n, log, levers=lv, profile=prof, quiet=base.merge_flight_seconds + 10)
                    r.pop("settings", None)
                    if prof is not None:
                        r["profile"] = profile_buckets(prof)  # py-spy samples it, a little slower
                    figures["open_orders_replay"].append(r)
                    shown = {k: v for k, v in r.items() if k != "census"}
                    print(f"open orders replay {lv or 'baseline'}: {json.dumps(shown)}", flush=True)
            figures["takeover"] = []
            for store in filter(None, args.stores.split(",")):
                try:
                    t = await takeover(base, store, n, end, tmp, base.merge_flight_seconds + 10)
                except Exception as exc:  # a store that cannot run here is a figure too
                    t = {"store": store, "error": f"{type(exc).__name__}: {exc}"[-2000:]}
                figures["takeover"].append(t)
                print(f"takeover {store}: {json.dumps(t)}", flush=True)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=3000, help="simulated orders of the pair run (about 56k events)")
    ap.add_argument("--open-orders", type=int, default=100_000)
    ap.add_argument("--stores", default="memory://,rocksdb://")
    ap.add_argument("--skip-pair", action="store_true")
    ap.add_argument("--logs", default=None, help="keep the workers' logs (and the simulated file) in this folder")
    ap.add_argument("--skip-takeover", action="store_true")
    ap.add_argument("--replay-profile", action="store_true", help="sample those replays with py-spy")
    ap.add_argument(
        "--replay-levers", default=None, help="';'-separated levers: replay the open orders once per lever ('' = none)"
    )
    args = ap.parse_args()
    if not args.skip_takeover and args.open_orders / 100 < 3 * Settings().lateness_seconds:
        # 10 ms apart: worker A commits nothing while every event is within the lateness of the
        # newest (held in its reorder buffer), and its replay would wait the whole 900 s.
        ap.error("--open-orders must span 3 x the lateness in event time (at 100 per second: 18,000 for 60 s)")
    write_report("scaleout", asyncio.run(main_async(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
