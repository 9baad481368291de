"""`orderwatch demo`: the whole pipeline on this machine in one command.

Starts the local stack if Kafka is not reachable, simulates a labelled stream, publishes it, runs
a `--clock event` worker, shows the exceptions as they arrive, and ends with a precision/recall
scorecard against the simulator's labels. Each run uses its own topic prefix and consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from orderwatch.backtest import open_lines
from orderwatch.detectors.catalog import RULES
from orderwatch.errors import InputError
from orderwatch.simulate import simulate
from orderwatch.streams.publish import kafka_client_options, publish_lines
from orderwatch.streams.settings import Settings
from orderwatch.streams.topics import ensure_topics
from orderwatch.streams.worker import worker_env

__all__ = ["run_demo"]

ROOT = Path(__file__).resolve().parent.parent


def _reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_worker(settings: Settings, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """The demo's `--clock event` detection worker, configured by `settings`."""
    cmd = [sys.executable, "-m", "orderwatch.cli", "worker", "--clock", "event", "--no-handlers"]
    return subprocess.Popen(cmd, env=worker_env(settings), stdout=log, stderr=subprocess.STDOUT)


def _stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # faust shuts down cleanly
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class LiveTable:
    """The exception counts while the worker runs. On a terminal the table redraws in place (the
    cursor goes back up over the previous drawing); elsewhere (a pipe, CI, a log file) each
    drawing is appended as plain lines, with no escape sequences."""

    def __init__(self, out: IO[str], tty: bool | None = None) -> None:
        self.out = out
        if tty is None:
            isatty = getattr(out, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        self.drawn = 0  # lines of the previous drawing (terminal only)

    def draw(self, events: list[dict[str, Any]], elapsed: float) -> None:
        opened = Counter(e["data"]["rule"] for e in events if e["type"] == "exception.opened")
        resolved = Counter(e["data"]["rule"] for e in events if e["type"] == "exception.resolved")
        lines = [f"[{elapsed:5.1f} s] {len(events):,} exception events"]
        lines += [
            f"  {code:<26}{opened[code]:>6} opened{resolved[code]:>6} resolved"
            for code in RULES
            if opened[code] or resolved[code]
        ]
        if self.tty:
            # Up to the first line of the previous drawing, clear from there down, draw again.
            self.out.write((f"\x1b[{self.drawn}F" if self.drawn else "") + "\x1b[J" + "\n".join(lines) + "\n")
            self.drawn = len(lines)
        else:
            self.out.write("\n" + "\n".join(lines) + "\n")
        self.out.flush()


def _start_stack(out: IO[str]) -> None:
    script = ROOT / "deploy" / "local" / "stack.sh"
    if not script.exists():
        msg = (
            "Kafka is not reachable and deploy/local/stack.sh is not here: "
            "start a broker and set ORDERWATCH_KAFKA_BOOTSTRAP"
        )
        raise InputError(msg)
    out.write("starting the local stack (Kafka + Redis) ...\n")
    out.flush()
    subprocess.run(["bash", str(script), "up"], check=True, stdout=subprocess.DEVNULL)


async def _watch(
    settings: Settings, labels: list[dict[str, Any]], worker: subprocess.Popen[bytes], timeout: float, out: IO[str]
) -> list[dict[str, Any]]:
    """Read order-exceptions until every label is found and nothing new came for a while."""
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    events: list[dict[str, Any]] = []
    try:
        tps = [TopicPartition(settings.topic("order-exceptions"), p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        expected = {(lab["rule"], lab["subject"]) for lab in labels}
        started = last_new = time.monotonic()
        shown = 0.0
        table = LiveTable(out)
        if table.tty:
            out.write("\n")
        while time.monotonic() - started < timeout:
            if worker.poll() is not None:
                raise InputError(f"the worker stopped (exit {worker.returncode}); see its log")
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    events.append(json.loads(r.value))
                    last_new = time.monotonic()
            if time.monotonic() - shown > 2:
                shown = time.monotonic()
                table.draw(events, time.monotonic() - started)
            found = {(e["data"]["rule"], e["data"]["subject"]) for e in events if e["type"] == "exception.opened"}
            if found >= expected and time.monotonic() - last_new > 5:
                break
        table.draw(events, time.monotonic() - started)
        return events
    finally:
        await consumer.stop()


def run_demo(orders: int = 2000, seed: int = 7, timeout: float = 300.0, out: IO[str] = sys.stdout) -> int:
    """Run the demo; returns the number of rules whose precision or recall is below 1."""
    base = Settings()
    if not _reachable(base.kafka_bootstrap):
        _start_stack(out)
    run = f"demo{int(time.time())}"
    settings = Settings(
        kafka_bootstrap=base.kafka_bootstrap,
        topic_prefix=f"{run}-",
        app_id=f"orderwatch-{run}",
        partitions=base.partitions,
        web_port=_free_port(),
    )
    with tempfile.TemporaryDirectory() as tmp:
        # faust's data directory (default ./<app id>-data) goes with the run's other files.
        settings = settings.model_copy(update={"data_dir": str(Path(tmp) / "data")})
        path = Path(tmp) / "sim.jsonl"
        stats = simulate(
            orders=orders,
            seed=seed,
            output=path,
            labels=Path(tmp) / "labels.jsonl",
            blocklist=Path(tmp) / "blocklist.jsonl",
        )
        labels = [json.loads(line) for line in (Path(tmp) / "labels.jsonl").read_text().splitlines()]
        out.write(
            f"simulated {stats['orders']:,} orders: {stats['lines']:,} events, {len(labels)} labelled anomalies\n"
        )
        # Creates the run's topics and waits until every partition has a leader: a client using
        # a just-created topic before that logs NotLeaderForPartition warnings.
        asyncio.run(ensure_topics(settings))
        res = asyncio.run(publish_lines(open_lines(path), settings))
        out.write(f"published {sum(res.sent.values()):,} events under the topic prefix {settings.topic_prefix}\n")
        # The blocklist entries the simulated stream assumes, as the handlers would write them.
        asyncio.run(_publish_blocklist(settings, Path(tmp) / "blocklist.jsonl"))
        log_path = Path(tmp) / "worker.log"
        with log_path.open("wb") as log:
            worker = _spawn_worker(settings, log)
            out.write(f"worker started (metrics: http://127.0.0.1:{settings.web_port}/metrics)\n")
            try:
                events = asyncio.run(_watch(settings, labels, worker, timeout, out))
            finally:
                _stop_worker(worker)
                asyncio.run(_delete_topics(settings))
    return _scorecard(events, labels, out)


async def _delete_topics(settings: Settings) -> None:
    """The run's topics go when it ends: each run has its own prefix, and a broker keeps a file
    open per partition, so runs left behind add up."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    with contextlib.suppress(KafkaError, OSError):
        await admin.start()
        mine = [t for t in await admin.list_topics() if t.startswith((settings.topic_prefix, settings.app_id + "-"))]
        if mine:
            await admin.delete_topics(mine)
    await admin.close()


async def _publish_blocklist(settings: Settings, path: Path) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**kafka_client_options(settings))
    await producer.start()
    try:
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            value = None if rec.get("value") is None else json.dumps(rec["value"]).encode()
            await producer.send_and_wait(settings.topic("blocklist"), value, key=rec["key"].encode())
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


def _scorecard(events: list[dict[str, Any]], labels: list[dict[str, Any]], out: IO[str]) -> int:
    predicted = {(e["data"]["rule"], e["data"]["subject"]) for e in events if e["type"] == "exception.opened"}
    expected = {(lab["rule"], lab["subject"]) for lab in labels}
    out.write(f"\n  {'rule':<26}{'expected':>9}{'found':>7}{'precision':>11}{'recall':>8}\n")
    misses = 0
    for code in RULES:
        p = {x for x in predicted if x[0] == code}
        e = {x for x in expected if x[0] == code}
        tp = len(p & e)
        precision = tp / len(p) if p else 1.0
        recall = tp / len(e) if e else 1.0
        misses += precision < 1 or recall < 1
        out.write(f"  {code:<26}{len(e):>9}{len(p):>7}{precision:>11.3f}{recall:>8.3f}\n")
    out.write("\nall rules at precision and recall 1.000\n" if not misses else f"\n{misses} rules below 1.000\n")
    return misses
