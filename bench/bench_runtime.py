"""Runtime benchmark on the local stack (issue 10): on one published simulated stream, in one run,
the real `--clock event` worker (bench/worker_shim.py, optionally with in-process levers), a faust
skeleton of orderwatch's shape without its work (bench/faust_skeleton.py) and a bare faust agent
(bench/faust_bare.py): events per second and process CPU per event from spawn (start-up
included), their ratios, what each produced per event (census), a py-spy profile split into
buckets; then a `--clock wall` worker's detection latency after PAYMENT_WITHOUT_ORDER deadlines.

    .venv/bin/python bench/bench_runtime.py [--orders 3000] [--rounds 1] [--levers 'uvloop;flush=0.2:5000']
        [--python-alt /path/to/python3.12 --alt-levers eager] [--profile] [--deadlines 200] [--skip-latency]

--profile needs py-spy in the venv (`.venv/bin/pip install py-spy`). Figures are measured, never
asserted; results go to bench/results/runtime-*.json (bench/results/README.md says what each is).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from bench.bench_backtest import machine  # noqa: E402
from orderwatch.backtest import open_lines  # noqa: E402
from orderwatch.detectors.blocklist import Blocklist  # noqa: E402
from orderwatch.detectors.config import RulesConfig  # noqa: E402
from orderwatch.simulate import simulate  # noqa: E402
from orderwatch.streams.app import AGENTS, agent_specs  # noqa: E402
from orderwatch.streams.publish import publish_lines  # noqa: E402
from orderwatch.streams.settings import Settings  # noqa: E402
from orderwatch.streams.topics import ensure_topics  # noqa: E402
from orderwatch.streams.worker import committed_offsets, worker_env  # noqa: E402
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


def _child_figures(out: str, marker: str) -> dict[str, Any] | None:
    m = re.search(re.escape(marker) + r": (\{.*\})", out)
    return json.loads(m.group(1)) if m else None


def faust_bare(settings: Settings, total: int) -> dict[str, Any]:
    """The ceiling of any faust agent here: bench/faust_bare.py (decode and ack, nothing else)
    reading the same topics in the same run. Wall seconds and CPU seconds include its start-up."""
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
        timeout=900,
        check=False,
    )
    text = out.stdout + out.stderr
    m = re.search(r"faust bare agent: \d+ events, (\d+) events/s", text)
    totals = _child_figures(text, "faust bare totals") or {}
    return {"events_per_s_after_first": float(m.group(1)) if m else None, **totals}


async def faust_skeleton(settings: Settings, total: int, writes: dict[str, float] | None = None) -> dict[str, Any]:
    """bench/faust_skeleton.py: orderwatch's shape without its work, under its own app id (its own
    group, repartition, tick and changelog topics), on the same inputs."""
    await ensure_topics(settings)
    exceptions_before = await exceptions_count(settings)
    env = {**worker_env(settings), "SKEL_TOTAL": str(total)}
    if writes is not None:
        env["SKEL_WRITES"] = json.dumps(writes)
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "faust_skeleton.py"),
        "worker",
        "-l",
        "warn",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    raw, _ = await asyncio.wait_for(proc.communicate(), timeout=900)
    wall = time.perf_counter() - started
    figures = _child_figures(raw.decode(errors="replace"), "faust skeleton")
    if figures is None:
        tail = raw.decode(errors="replace")[-3000:]
        msg = f"the skeleton gave no figures (exit {proc.returncode}):\n{tail}"
        raise RuntimeError(msg)
    figures["wall_seconds_seen_by_bench"] = wall
    figures["census"] = await census(settings, figures["events"], exceptions_before)
    return figures


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (every thread), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def end_offsets(settings: Settings, topics: list[str]) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        existing = await consumer.topics()
        tps = [TopicPartition(t, p) for t in topics if t in existing for p in range(settings.partitions)]
        ends = await consumer.end_offsets(tps) if tps else {}
        starts = await consumer.beginning_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    out: dict[str, int] = {}
    for tp, end in ends.items():
        out[tp.topic] = out.get(tp.topic, 0) + end - starts[tp]
    return out


async def census(settings: Settings, events: int, exceptions_before: int = 0) -> dict[str, Any]:
    """Messages the run produced per input event, by kind (its app id's topics are its own; the
    order-exceptions topic is shared by the runs on one stream: counted from `exceptions_before`)."""
    app = settings.app_id
    kinds = {
        "forwards": [f"{app}-order-inbox", f"{app}-by-address", f"{app}-by-customer", f"{app}-by-provider"],
        "table_writes": [f"{app}-{a}-state-changelog" for a in AGENTS],
        "ticks": [f"{app}-ticks-{a}" for a in AGENTS],
        "exceptions": [settings.topic("order-exceptions")],
    }
    counts = await end_offsets(settings, [t for ts in kinds.values() for t in ts])
    out: dict[str, Any] = {}
    for kind, topics in kinds.items():
        n = sum(counts.get(t, 0) for t in topics) - (exceptions_before if kind == "exceptions" else 0)
        out[kind] = n
        out[f"{kind}_per_event"] = round(n / events, 3) if events else None
    out["table_writes_by_agent"] = {a: counts.get(f"{app}-{a}-state-changelog", 0) for a in AGENTS}
    out["by_topic"] = counts
    return out


def write_rates(settings: Settings, worker_census: dict[str, Any], published: dict[str, int]) -> dict[str, float]:
    """Table writes per event the worker's agents made (changed keys and ledgers, over the events
    each agent read), for the skeleton to make as many."""
    counts = {**worker_census["by_topic"], **published}
    specs = agent_specs(settings, RulesConfig(), Blocklist())
    rates: dict[str, float] = {}
    for name, spec in specs.items():
        read = sum(counts.get(t, 0) for t in spec.inputs)
        rates[name] = worker_census["table_writes_by_agent"][name] / read if read else 0.0
    return rates


async def exceptions_count(settings: Settings) -> int:
    topic = settings.topic("order-exceptions")
    return (await end_offsets(settings, [topic])).get(topic, 0)


async def committed_total(settings: Settings) -> int:
    inputs = {settings.topic(t) for t in INPUTS}
    return sum(off for (topic, _), off in (await committed_offsets(settings)).items() if topic in inputs)


class CommitWatch:
    """A replaying worker's committed input events (its group's offsets on the input topics),
    read every 0.5 s: the last total, when it last moved and the process CPU at that read (so a
    quiet wait after the end is not counted), and (time, total, CPU) at the first commit."""

    def __init__(self, settings: Settings, proc: subprocess.Popen[bytes], name: str, log: Any) -> None:
        self.settings, self.proc, self.name, self.log = settings, proc, name, log
        self.started = self.now = self.last_change = time.perf_counter()
        self.first: tuple[float, int, float] | None = None
        self.last = 0
        self.cpu = self.cpu_at_last = 0.0

    async def poll(self) -> int:
        """Wait 0.5 s, then read the committed total (raises if the worker has exited)."""
        await asyncio.sleep(0.5)
        if self.proc.poll() is not None:
            msg = f"{self.name} exited with {self.proc.returncode}; log: {getattr(self.log, 'name', '?')}"
            raise RuntimeError(msg)
        done = await committed_total(self.settings)
        self.now = time.perf_counter()
        self.cpu = process_cpu_seconds(self.proc.pid)
        if done != self.last:
            self.last, self.last_change, self.cpu_at_last = done, self.now, self.cpu
        if self.first is None and done > 0:
            self.first = (self.now, done, self.cpu)
        return done


def spawn_shim(settings: Settings, log: Any, *, levers: str = "", python: str | None = None) -> subprocess.Popen[bytes]:
    """`orderwatch worker --clock event --no-handlers` through bench/worker_shim.py (levers, profile)."""
    env = {**worker_env(settings), "BENCH_LEVERS": levers}
    return subprocess.Popen(
        [python or sys.executable, str(ROOT / "bench/worker_shim.py"), "worker", "--clock", "event", "--no-handlers"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def worker_run(
    settings: Settings,
    total: int,
    log: Any,
    *,
    levers: str = "",
    profile: Path | None = None,
    python: str | None = None,
    quiet: float | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """One `--clock event` worker replaying the published stream under its own app id, start-up
    included: wall and process CPU seconds from spawn until its committed input offsets stop moving
    (CPU read at the last poll that saw them move, so the quiet wait is not counted). `keep`: the
    worker is left running, returned as `proc`. `quiet` (seconds with nothing committed that end the
    replay) defaults to 5 s past the merge's flight wait: a merge waiting for a forward of its own
    commits nothing meanwhile, and a shorter quiet period would cut such a replay short."""
    if quiet is None:
        quiet = max(20.0, settings.merge_flight_seconds + 5.0)
    await ensure_topics(settings)
    exceptions_before = await exceptions_count(settings)
    proc = spawn_shim(settings, log, levers=levers, python=python)
    spy = None
    if profile is not None:
        # Sampled from outside (every thread, idle excluded, the worker not paused): a
        # deterministic profiler slows faust's call-heavy path ~15x and skews the split.
        cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(proc.pid), "--format", "raw"]
        spy = subprocess.Popen(
            [*cmd, "--rate", "100", "--nonblocking", "--full-filenames", "--output", str(profile)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    watch = CommitWatch(settings, proc, f"worker (levers {levers!r})", log)
    try:
        while True:
            done = await watch.poll()
            # The last minute of event time stays in the reorder buffer (within the lateness), so
            # the committed total stops just short of `total`: done when it stops moving. It can
            # also pause mid-replay while agents wait for their slowest input, hence the quiet period.
            quiet_over = watch.first is not None and watch.now - watch.last_change > quiet
            if done >= total or quiet_over or watch.now - watch.started > 900:
                break
    except BaseException:
        stop_worker(proc)
        raise
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
    if not keep:
        stop_worker(proc)
    first, last, last_change, cpu_at_last = watch.first, watch.last, watch.last_change, watch.cpu_at_last
    assert first is not None
    seconds = last_change - watch.started
    return {
        "levers": levers,
        "events": last,
        "seconds_from_start": round(seconds, 2),
        "events_per_s_from_start": round(last / seconds, 1),
        "events_per_s_after_first_commit": round((last - first[1]) / (last_change - first[0]), 1)
        if last_change > first[0]
        else None,
        "cpu_seconds": round(cpu_at_last, 2),
        "cpu_us_per_event": round(cpu_at_last / last * 1e6, 1),
        "cpu_seconds_to_first_commit": round(first[2], 2),
        "cpu_us_per_event_after_first_commit": round((cpu_at_last - first[2]) / (last - first[1]) * 1e6, 1)
        if last > first[1]
        else None,
        "census": await census(settings, last, exceptions_before),
        "settings": settings,
        **({"proc": proc} if keep else {}),
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


BUCKETS = (
    "faust delivery",
    "produce",
    "our runtime",
    "rules",
    "parsing",
    "metrics",
    "event loop and kafka i/o",
    "start-up and other",
)
_RULES = ("orders/", "windows.py", "stock.py", "skew.py", "shipping.py", "catalog.py", "blocklist.py", "config.py")


def bucket_of(module: str, name: str) -> str:
    """The bucket of one profiled function, by the file it lives in (its own CPU, builtins
    included: the profile does not time builtins apart, so they count in their caller)."""
    m = "/" + module.replace("\\", "/").lstrip("/")
    if "/orderwatch/" in m or "/detectors/" in m or "/streams/" in m or "/schemas/" in m:
        if "/schemas/" in m:
            return "parsing"
        if "/detectors/" in m:
            return "rules" if any(f"/detectors/{r}" in m for r in _RULES) else "our runtime"
        return "our runtime"
    if "/pydantic" in m or m.endswith(("json/decoder.py", "json/encoder.py", "json/__init__.py")):
        return "parsing"
    if "/prometheus_client/" in m:
        return "metrics"
    if "/aiokafka/producer/" in m or "/faust/tables/" in m or "/faust/stores/" in m:
        return "produce"
    if m.endswith("faust/topics.py") or m.endswith("faust/transport/producer.py"):
        return "produce"
    if m.endswith("faust/transport/drivers/aiokafka.py"):
        return "produce" if name.startswith(("Producer.", "AIOKafkaProducer")) else "faust delivery"
    if "/faust/" in m or "/mode/" in m or "/aiokafka/consumer/" in m or "/aiokafka/record/" in m:
        return "faust delivery"
    if "/aiokafka/" in m or "/asyncio/" in m or m.endswith(("selectors.py", "socket.py")) or "uvloop" in m:
        return "event loop and kafka i/o"
    return "start-up and other"


_FRAME = re.compile(r"(.*) \((.*?)(?::\d+)?\)$")
_LOOP = ("Handle._run", "BaseEventLoop._run_once", "BaseEventLoop.run_forever", "BaseEventLoop.run_until_complete")


def _frame(text: str) -> tuple[str, str]:
    m = _FRAME.match(text)
    return (m.group(1), m.group(2)) if m else (text, "")


def profile_buckets(path: Path) -> dict[str, Any]:
    """py-spy's raw output (`frame;frame;... count`, frames `func (file:line)`), each sample
    counted in the bucket of its innermost Python frame (builtins count in their caller).
    `share_by_caller` counts asyncio's own frames (tasks, futures, wait, select) in the bucket
    of the code that called into asyncio, and in "event loop and kafka i/o" only what the loop
    runs with no Python caller (C task steps and callbacks, the selector)."""
    sums = dict.fromkeys(BUCKETS, 0)
    by_caller = dict.fromkeys(BUCKETS, 0)
    funcs: dict[tuple[str, str], int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        name, module = frames[-1]
        b = bucket_of(module, name)
        sums[b] += int(count)
        key = (b, f"{Path(module).name}:{name}")
        funcs[key] = funcs.get(key, 0) + int(count)
        caller = b
        if b == "event loop and kafka i/o" and "/aiokafka/" not in module:
            for fname, fmod in reversed(frames):
                fb = bucket_of(fmod, fname)
                if fb != "event loop and kafka i/o" or "/aiokafka/" in fmod:
                    caller = fb
                    break
                if fname in _LOOP:
                    break
        by_caller[caller] += int(count)
    total = sum(sums.values()) or 1
    top = sorted(funcs.items(), key=lambda kv: -kv[1])[:25]
    return {
        "samples": total,
        "share": {b: round(v / total, 3) for b, v in sums.items()},
        "share_by_caller": {b: round(v / total, 3) for b, v in by_caller.items()},
        "top_functions_own_share": [{"function": f, "bucket": b, "share": round(n / total, 3)} for (b, f), n in top],
    }


@contextlib.contextmanager
def _working_in(path: Path) -> Iterator[None]:
    """Run the children there: faust keeps each app's data directory (`<app id>-data`) in the
    working directory, and a bench run would leave a dozen of them in the checkout."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.asynccontextmanager
async def _admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def broker_topics(settings: Settings) -> list[str]:
    async with _admin(settings) as admin:
        return list(await admin.list_topics())


async def drop_run_topics(settings: Settings, run: str) -> int:
    """Delete the topics this run created (its contract topics and every app id's internal ones):
    a shared broker that keeps thousands of them answers every metadata request with all of them
    (aiokafka's metadata decoding was about 6 % of a worker's CPU with 1,686 topics on it)."""
    async with _admin(settings) as admin:
        mine = [t for t in await admin.list_topics() if t.startswith((run, f"ow-{run}"))]
        if mine:
            await admin.delete_topics(mine)
    return len(mine)


DEFAULT_LEVERS = ("flush=0.2:5000", "metrics-cache", "no-monitor", "uvloop")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    run = f"bench{int(time.time())}"
    settings = Settings(topic_prefix=f"{run}-", app_id=f"ow-{run}", partitions=4, web_port=6199)
    figures: dict[str, Any] = {"broker_topics_at_start": len(await broker_topics(settings))}
    try:
        await _measure(args, run, settings, figures)
    finally:
        print(f"deleted this run's {await drop_run_topics(settings, run)} topics", flush=True)
    return figures


async def publish_simulation(settings: Settings, orders: int, workdir: Path) -> tuple[Path, dict[str, int]]:
    """`orders` simulated orders (seed 11) written to `workdir`/sim.jsonl and published to the
    settings' topics (created first): the file and the events sent per topic."""
    path = workdir / "sim.jsonl"
    simulate(orders=orders, seed=11, output=path, labels=workdir / "l", blocklist=workdir / "b")
    await ensure_topics(settings)
    res = await publish_lines(open_lines(path), settings)
    return path, dict(res.sent)


async def _measure(args: argparse.Namespace, run: str, settings: Settings, figures: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp, _working_in(Path(tmp)):
        _, sent = await publish_simulation(settings, args.orders, Path(tmp))
        total = sum(sent.values())
        figures["events"] = total
        print(f"published {total:,} events", flush=True)
        raw = await raw_consume_seconds(settings, total)
        figures["raw_consumer_events_per_s"] = round(total / raw)
        print(f"raw aiokafka consumer: {total / raw:,.0f} events/s", flush=True)
        rounds: list[dict[str, Any]] = []
        n = 0

        def own(tag: str) -> Settings:
            nonlocal n
            n += 1
            return settings.model_copy(update={"app_id": f"ow-{run}-{tag}{n}"})

        levers = [lv for lv in (args.levers.split(";") if args.levers is not None else DEFAULT_LEVERS) if lv]
        for r in range(args.rounds):
            row: dict[str, Any] = {}
            # The worker first: the skeleton makes as many table writes per event as it did.
            variants = [("worker", ""), *((f"worker+{lv}", lv) for lv in levers)]
            if args.python_alt:
                alt = [lv for lv in args.alt_levers.split(";") if lv]
                variants += [("worker@alt", ""), *((f"worker@alt+{lv}", lv) for lv in alt)]
            for label, lv in variants:
                python = args.python_alt if "@alt" in label else None
                with (Path(tmp) / f"{label}.log").open("wb") as log:
                    try:
                        wr = await worker_run(own("w"), total, log, levers=lv, python=python)
                    except RuntimeError as exc:
                        wr = {"levers": lv, "error": str(exc)[-2000:]}
                if "error" in wr:
                    wr["log_tail"] = (Path(tmp) / f"{label}.log").read_text(errors="replace")[-3000:]
                row[label] = wr
                shown = {k: v for k, v in wr.items() if k not in ("census", "settings")}
                print(f"[round {r}] {label}: {json.dumps(shown)}", flush=True)
                if label == "worker":
                    rates = write_rates(wr["settings"], wr["census"], sent)
                    skel = await faust_skeleton(own("skel"), total, rates)
                    skel["write_rates_from_worker"] = {a: round(v, 4) for a, v in rates.items()}
                    skel["events_per_s_from_start"] = round(skel["events"] / skel["seconds_from_start"], 1)
                    skel["cpu_us_per_event"] = round(skel["cpu_seconds"] / skel["events"] * 1e6, 1)
                    row["skeleton"] = skel
                    print(f"[round {r}] faust skeleton: {json.dumps(skel)}", flush=True)
                    bare = faust_bare(own("bare"), total)
                    row["bare"] = {**bare, "cpu_us_per_event": round(bare["cpu_seconds"] / bare["events"] * 1e6, 1)}
                    print(f"[round {r}] faust bare agent: {row['bare']}", flush=True)
                wr.pop("settings", None)
            w = row["worker"]
            row["ratios"] = {
                "worker_to_skeleton_events_per_s": round(
                    w["events_per_s_from_start"] / skel["events_per_s_from_start"], 3
                ),
                "worker_to_bare_events_per_s": round(
                    w["events_per_s_from_start"] / (bare["events"] / bare["seconds_from_start"]), 3
                ),
                "skeleton_to_worker_cpu_per_event": round(skel["cpu_us_per_event"] / w["cpu_us_per_event"], 3),
                "bare_to_worker_cpu_per_event": round(row["bare"]["cpu_us_per_event"] / w["cpu_us_per_event"], 3),
            }
            print(f"[round {r}] ratios: {row['ratios']}", flush=True)
            rounds.append(row)
        figures["rounds"] = rounds
        if args.profile:
            prof = Path(tmp) / "worker.prof"
            with (Path(tmp) / "worker-prof.log").open("wb") as log:
                wr = await worker_run(own("prof"), total, log, profile=prof)
            wr.pop("settings", None)
            kept = Path(tempfile.gettempdir()) / f"orderwatch-profile-{run}.txt"
            kept.write_bytes(prof.read_bytes())  # for a second look; too big for bench/results
            figures["profile"] = {
                "raw": str(kept),
                "note": "py-spy 100 Hz, every thread, idle excluded, spawn to end of replay (+ the quiet "
                "wait), innermost Python frame's file decides the bucket; a separate run",
                "worker_under_profile": {k: v for k, v in wr.items() if k != "census"},
                **profile_buckets(prof),
            }
            print(f"profile: {json.dumps(figures['profile']['share'])}", flush=True)
        if not args.skip_latency:
            lat_settings = Settings(topic_prefix=f"{run}l-", app_id=f"ow-{run}l", partitions=4, web_port=6198)
            await ensure_topics(lat_settings)
            with (Path(tmp) / "worker-lat.log").open("wb") as log:
                lat = await detection_latency(lat_settings, args.deadlines, log)
            lat_sorted = sorted(lat)
            figures["latency_samples"] = len(lat)
            figures["latency_expected"] = args.deadlines
            figures["latency_p50_ms"] = round(statistics.median(lat) * 1000) if lat else None
            figures["latency_p99_ms"] = (
                round(lat_sorted[min(len(lat_sorted) - 1, int(0.99 * len(lat_sorted)))] * 1000) if lat else None
            )
            print(f"latency p50 {figures['latency_p50_ms']} ms, p99 {figures['latency_p99_ms']} ms", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=3000, help="simulated orders (3000: about 56k events)")
    ap.add_argument("--deadlines", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=1, help="bare, skeleton, worker and levers, this many times")
    ap.add_argument("--levers", default=None, help="';'-separated BENCH_LEVERS, one worker run each ('' for none)")
    ap.add_argument("--python-alt", default=None, help="a python with orderwatch installed: more runs")
    ap.add_argument("--alt-levers", default="eager", help="';'-separated levers of the --python-alt runs")
    ap.add_argument(
        "--profile", action="store_true", help="one more worker run sampled by py-spy: CPU split into buckets"
    )
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--broker-restart", action="store_true", help="also restart the stack and time the broker start")
    args = ap.parse_args()
    start = broker_start_seconds() if args.broker_restart else {}
    figures = asyncio.run(main_async(args))
    figures.update(start)
    write_report("runtime", figures)
    return 0


def write_report(benchmark: str, figures: dict[str, Any]) -> Path:
    """bench/results/<benchmark>-<UTC stamp>.json: machine, date, this command, the figures."""
    stamp = datetime.now(UTC)
    report = {
        "benchmark": benchmark,
        "date": stamp.isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join([".venv/bin/python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "figures": figures,
    }
    out = ROOT / "bench" / "results" / f"{benchmark}-{stamp:%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps(figures, indent=2, default=str))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
