"""Waiting on a worker that is still working: the wait goes on while what it watches moves, gives
up only after a quiet spell with nothing moving (or a generous overall cap), and then says what
it saw last and what the worker's log said last.

A fixed deadline around a replay fails a correct worker on a loaded machine (the same replay takes
5 s at load 1 and many times that at load 15) and says nothing about a wrong one: "not in time"
cannot tell a worker that was still going from one that had stopped at a wrong count."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from orderwatch.streams.publish import kafka_client_options
from orderwatch.streams.settings import Settings
from orderwatch.streams.worker import committed_offsets

__all__ = ["CasesLook", "Look", "events_read", "log_report", "wait_for_worker", "worker_progress"]

_LOGGED = re.compile(r"^\[[^]]*\] \[\d+\] \[(WARNING|ERROR|CRITICAL)\] (.*)$")
_NUMBERS = re.compile(r"\w*\d[\w.]*")  # offsets, seconds, ids, a test's topic prefix


@dataclass(frozen=True)
class Look:
    """One look at a worker."""

    done: bool
    """What the test waits for is there: the wait is over."""
    moving: Hashable
    """Whatever shows the worker working (committed offsets, counts): any change from the previous
    look is progress and restarts the quiet spell."""
    seen: str
    """What this look saw, in words, for the failure message."""
    wrong: str | None = None
    """A state the worker cannot leave for the expected one (more cases than the backtest has):
    the wait fails at once with this reason instead of waiting out the quiet spell."""


async def worker_progress(settings: Settings) -> tuple[int, int]:
    """(committed, written): the sum of the worker group's committed offsets and the sum of the
    end offsets of the topics of `settings` it writes to (repartitions, inbox, state changelogs,
    outputs), ticks topics left out in both (a merge that waits gets ticks every 20 ms, which is
    not progress). Both are needed: on a loaded machine the inventory agent went on reading and
    writing for minutes while its committed offsets stayed where they were."""
    committed = sum(off for (topic, _), off in (await committed_offsets(settings)).items() if _counts(topic))
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    ours = (settings.topic_prefix, f"{settings.app_id}-")
    tps = [
        TopicPartition(t["topic"], p["partition"])
        for t in described
        if t["topic"].startswith(ours) and _counts(t["topic"])
        for p in t["partitions"]
    ]
    if not tps:
        return committed, 0
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        written = sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()
    return committed, written


def _counts(topic: str) -> bool:
    return "-ticks-" not in topic


async def events_read(port: int | None) -> float | None:
    """What the worker on `port` has read: the sum of its `orderwatch_events_in_total` (the
    agents) and `orderwatch_handler_messages_total` (the handlers), None before its /metrics
    answers (or without a port). Needed beside `worker_progress`: on a loaded machine a 300-order
    replay read 1,688 -> 12,926 inventory events in 155 s while it wrote nothing and committed
    nothing (held by its merges until the orders agent moved)."""
    if port is None:
        return None
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    names = ("orderwatch_events_in_total{", "orderwatch_handler_messages_total{")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(names))


def log_report(log: Path, lines: int = 40, kinds: int = 8) -> str:
    """What the worker's log said: its warnings and errors counted by kind (numbers masked), the
    most frequent first, then its last `lines` lines. The counts show what a tail flooded by one
    repeated warning hides (hundreds of "late event" lines before the tail's timer warnings)."""
    if not log.exists():
        return "(no log)"
    text = log.read_text(errors="replace").splitlines()
    counted = Counter(
        f"[{m.group(1)}] {_NUMBERS.sub('N', m.group(2)).strip()}" for m in map(_LOGGED.match, text) if m is not None
    )
    warned = [f"  {n} x {kind}" for kind, n in counted.most_common(kinds)]
    if len(counted) > kinds:
        warned.append(f"  ... {len(counted) - kinds} more kinds")
    head = "the worker's warnings and errors, counted:\n" + "\n".join(warned or ["  none"])
    return head + "\nthe worker's log, last lines:\n" + "\n".join(text[-lines:])


async def wait_for_worker(
    look: Callable[[], Awaitable[Look]],
    proc: subprocess.Popen[bytes],
    log: Path,
    *,
    what: str,
    quiet: float = 180.0,
    cap: float = 900.0,
    every: float = 2.0,
    wall: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Look:
    """Look at the worker every `every` seconds until a look is `done`; returns that look.

    Fails (AssertionError naming `what`, the last look, how long nothing moved and the log's tail)
    when the worker exited, when a look is `wrong`, when `quiet` seconds passed without any look
    moving, or after `cap` seconds in all. `quiet` must outlast the longest pause a correct worker
    makes: its start (imports, group join) on a loaded machine, and the merge's wait for forwards
    in flight (ORDERWATCH_MERGE_FLIGHT_SECONDS, 30 s)."""
    start = wall()
    last_move = start
    moving: Hashable = object()  # the first look is always a change
    seen = "nothing yet"
    while True:
        await sleep(every)
        if proc.poll() is not None:
            msg = f"the worker exited ({proc.returncode}) while waiting for {what}; last seen: {seen}"
            raise AssertionError(f"{msg}\n{log_report(log)}")
        got = await look()
        now = wall()
        seen = got.seen
        if got.done:
            return got
        if got.wrong is not None:
            msg = f"waiting for {what}: {got.wrong}; seen: {seen} after {now - start:.0f} s"
            raise AssertionError(f"{msg}\n{log_report(log)}")
        if got.moving != moving:
            moving, last_move = got.moving, now
        if now - last_move >= quiet or now - start >= cap:
            why = f"nothing moved for {now - last_move:.0f} s" if now - last_move >= quiet else f"{cap:.0f} s cap"
            msg = (
                f"the worker did not reach {what} ({why}, {now - start:.0f} s in all); "
                f"last seen: {seen}; unchanged since {last_move - start:.0f} s"
            )
            raise AssertionError(f"{msg}\n{log_report(log)}")


class CasesLook:
    """One look at the worker for `wait_for_worker`: its /ready, its case list's total and
    counts, and its progress (`worker_progress`, `events_read`). Done when ready with the backtest's number of
    cases, none still open; wrong when it lists more cases than the backtest has (a replay that
    went another way than the backtest: more cases never turn into fewer)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str, settings: Settings, expected: int):
        self.session = session
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}
        self.settings = settings
        self.expected = expected

    async def __call__(self) -> Look:
        ready: bool | None = None
        listed: dict[str, Any] = {}
        try:
            async with self.session.get(f"{self.base}/ready") as r:
                ready = r.status == 200
            async with self.session.get(f"{self.base}/cases?limit=1", headers=self.headers) as r:
                listed = await r.json() if r.status == 200 else {"status": r.status}
        except (aiohttp.ClientError, TimeoutError) as exc:  # starting, or too loaded to answer in 15 s
            listed = {"error": type(exc).__name__}
        committed, written = await worker_progress(self.settings)
        read = await events_read(self.settings.web_port)
        total, counts = listed.get("total"), listed.get("counts") or {}
        seen = (
            f"ready {ready}, cases {total} of {self.expected}, counts {counts or listed}, "
            f"committed {committed}, written {written}, read {read}"
        )
        wrong = None
        if isinstance(total, int) and total > self.expected:
            wrong = f"{total} cases listed, the backtest of the same stream has {self.expected}"
        done = bool(ready) and total == self.expected and counts.get("open") == 0
        return Look(done, (ready, total, tuple(sorted(counts.items())), committed, written, read), seen, wrong)
